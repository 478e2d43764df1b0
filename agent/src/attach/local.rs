//! `local` attachments: a host block device the operator listed in `local_devices`, and
//! never one the host is using. Without the list, a caller with the token could attach
//! the host's root disk and mount it elsewhere, or hand it to a container.
//!
//! "In use" covers the device itself, its partitions and whatever is stacked on them
//! (device-mapper, md: sysfs `holders`), each checked against the mount table and the
//! swap list. zvols are attached with kind `zvol`, which keeps them inside tankd's root.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::mounts::sys::{MountEntry, parse_mountinfo};

const FIELD: &str = "local.path";

/// What the check reads of the host: the syscall seam, so tests give their own.
pub struct Host {
    /// `/sys/dev/block`: one link per device, named `major:minor`.
    pub sys_dev_block: PathBuf,
    pub mounts: Vec<MountEntry>,
    /// `/proc/swaps`.
    pub swaps: String,
}

impl Host {
    pub fn real() -> Host {
        Host {
            sys_dev_block: PathBuf::from("/sys/dev/block"),
            mounts: parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()),
            swaps: std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
        }
    }
}

/// The device `path` names, if the operator allowed it and the host does not use it.
pub fn allowed(path: &str, allowlist: &[PathBuf], host: &Host) -> Result<PathBuf> {
    if allowlist.is_empty() {
        return Err(Error::invalid(
            FIELD,
            "local attachments are off on this node: list the devices they may use in local_devices",
        ));
    }
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
        return Err(Error::invalid(FIELD, format!("{path:?} must be an absolute path without . or ..")));
    }
    let real = std::fs::canonicalize(p).map_err(|e| Error::invalid(FIELD, format!("{path}: {e}")))?;
    if !allowlist.iter().filter_map(|d| std::fs::canonicalize(d).ok()).any(|d| d == real) {
        return Err(Error::invalid(FIELD, format!("{path} is not one of the configured local_devices")));
    }
    let meta = std::fs::metadata(&real).map_err(|e| Error::invalid(FIELD, format!("{path}: {e}")))?;
    if !meta.file_type().is_block_device() {
        return Err(Error::invalid(FIELD, format!("{path} is not a block device")));
    }
    let dev = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    if let Some(why) = in_use(host, dev) {
        return Err(Error::invalid(FIELD, format!("{path} is in use by the host: {why}")));
    }
    Ok(real)
}

/// A device's kernel name (`sda1`, `dm-0`, `zd16`) from its sysfs link.
fn name_of(host: &Host, dev: (u32, u32)) -> Option<String> {
    let link = std::fs::read_link(host.sys_dev_block.join(format!("{}:{}", dev.0, dev.1))).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The device, its partitions and what is stacked on any of them, as (dev, name).
fn family(host: &Host, dev: (u32, u32)) -> Vec<((u32, u32), String)> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![dev];
    let mut out = Vec::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d) || seen.len() > 256 {
            continue;
        }
        let dir = host.sys_dev_block.join(format!("{}:{}", d.0, d.1));
        out.push((d, name_of(host, d).unwrap_or_default()));
        // Partitions are subdirectories with a `partition` file; holders link to the
        // devices stacked on this one.
        let children = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("partition").exists())
            .chain(std::fs::read_dir(dir.join("holders")).into_iter().flatten().flatten().map(|e| e.path()));
        for child in children {
            if let Some(d) = std::fs::read_to_string(child.join("dev")).ok().as_deref().and_then(parse_dev) {
                todo.push(d);
            }
        }
    }
    out
}

/// Why the host uses `dev` (a mount or swap on it or on a partition or holder of it).
fn in_use(host: &Host, dev: (u32, u32)) -> Option<String> {
    let family = family(host, dev);
    if family.iter().any(|(_, name)| name.starts_with("zd")) {
        return Some("it is a zvol: attach it with kind zvol".into());
    }
    let is_ours = |source: &str| {
        let real = std::fs::canonicalize(source).unwrap_or_else(|_| PathBuf::from(source));
        let base = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        family.iter().any(|(_, name)| !name.is_empty() && *name == base)
    };
    for m in &host.mounts {
        if family.iter().any(|(d, _)| *d == m.dev) || (m.source.starts_with("/dev/") && is_ours(&m.source)) {
            return Some(format!("it backs the filesystem mounted at {}", m.mountpoint.display()));
        }
    }
    for line in host.swaps.lines().skip(1) {
        if let Some(source) = line.split_whitespace().next()
            && is_ours(source)
        {
            return Some(format!("{source} is swap"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/dev/block` with sda (8:0), its partitions sda1 (8:1) and sda2 (8:2),
    /// dm-0 (253:0) stacked on sda2, sdb (8:16) alone, zd0 (230:0).
    fn sysfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let devices = t.path().join("devices");
        let mk = |rel: &str, dev: &str| {
            let d = devices.join(rel);
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            d
        };
        let sda = mk("sda", "8:0");
        let sda1 = mk("sda/sda1", "8:1");
        let sda2 = mk("sda/sda2", "8:2");
        std::fs::write(sda1.join("partition"), "1").unwrap();
        std::fs::write(sda2.join("partition"), "2").unwrap();
        let dm = mk("dm-0", "253:0");
        std::os::unix::fs::symlink(&dm, sda2.join("holders/dm-0")).unwrap();
        let sdb = mk("sdb", "8:16");
        let zd = mk("zd0", "230:0");
        let links = t.path().join("dev-block");
        std::fs::create_dir_all(&links).unwrap();
        for (dev, dir) in
            [("8:0", &sda), ("8:1", &sda1), ("8:2", &sda2), ("253:0", &dm), ("8:16", &sdb), ("230:0", &zd)]
        {
            std::os::unix::fs::symlink(dir, links.join(dev)).unwrap();
        }
        t
    }

    fn host(t: &tempfile::TempDir, mountinfo: &str, swaps: &str) -> Host {
        Host { sys_dev_block: t.path().join("dev-block"), mounts: parse_mountinfo(mountinfo), swaps: swaps.into() }
    }

    #[test]
    fn a_disk_is_in_use_through_a_mounted_partition_or_a_holder() {
        let t = sysfs();
        let root = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        let h = host(&t, root, "");
        assert!(in_use(&h, (8, 0)).unwrap().contains("mounted at /"), "the disk of /");
        assert!(in_use(&h, (8, 1)).is_some(), "the partition of /");
        assert_eq!(in_use(&h, (8, 16)), None, "another disk is free");
        let lvm = host(&t, "30 1 253:0 / /srv rw - xfs /dev/mapper/vg-srv rw\n", "");
        assert!(in_use(&lvm, (8, 0)).unwrap().contains("/srv"), "dm-0 sits on sda2");
        let swap = host(&t, "", "Filename Type Size Used Priority\n/dev/sda2 partition 1024 0 -2\n");
        assert!(in_use(&swap, (8, 0)).unwrap().contains("swap"));
        // btrfs and friends show an anonymous device number: the source names the device.
        let btrfs = host(&t, "40 1 0:45 / /data rw - btrfs /dev/sdb rw\n", "");
        assert!(in_use(&btrfs, (8, 16)).unwrap().contains("/data"));
        assert!(in_use(&host(&t, "", ""), (230, 0)).unwrap().contains("kind zvol"));
    }

    #[test]
    fn without_a_list_or_outside_it_nothing_is_attached() {
        let h = Host { sys_dev_block: PathBuf::from("/nonexistent"), mounts: vec![], swaps: String::new() };
        let off = allowed("/dev/null", &[], &h).unwrap_err();
        assert!(off.message.contains("local_devices"), "{off:?}");
        let outside = allowed("/dev/null", &[PathBuf::from("/dev/zero")], &h).unwrap_err();
        assert!(outside.message.contains("not one of"), "{outside:?}");
        let dots = allowed("/dev/../dev/null", &[PathBuf::from("/dev/null")], &h).unwrap_err();
        assert!(dots.message.contains(".."), "{dots:?}");
        let chr = allowed("/dev/null", &[PathBuf::from("/dev/null")], &h).unwrap_err();
        assert!(chr.message.contains("not a block device"), "{chr:?}");
    }
}
