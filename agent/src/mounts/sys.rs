//! mount(2), umount(2) and `/proc/self/mountinfo`: the syscall seam for mounts.
//!
//! mountinfo is parsed here rather than with the `procfs` crate: the parse is thirty
//! lines (the escapes are unit-tested) and the crate would bring a dozen dependencies
//! for it.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// One line of mountinfo, the parts tankd uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    /// The device (major, minor) the mounted filesystem is on.
    pub dev: (u32, u32),
    pub fs_type: String,
    pub source: String,
    pub options: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_owned();
            let source = unescape(right.next()?);
            let options = right.next().unwrap_or_default().to_owned();
            let (major, minor) = left.get(2)?.split_once(':')?;
            let dev = (major.parse().ok()?, minor.parse().ok()?);
            Some(MountEntry { mountpoint: PathBuf::from(unescape(left.get(4)?)), dev, fs_type, source, options })
        })
        .collect()
}

pub fn mountinfo() -> Vec<MountEntry> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

pub fn is_mounted(table: &[MountEntry], path: &Path) -> bool {
    table.iter().any(|m| m.mountpoint == path)
}

pub fn mount(source: &str, target: &Path, fs_type: &str, flags: MsFlags, data: &str) -> nix::Result<()> {
    let data = if data.is_empty() { None } else { Some(data) };
    nix::mount::mount(Some(source), target, Some(fs_type), flags, data)
}

/// A bind mount, `nosuid,nodev` like every mount tankd makes (a bind keeps its source's
/// flags until remounted), and read-only on request.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> nix::Result<()> {
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
        let _ = nix::mount::umount2(target, MntFlags::empty());
        return Err(e);
    }
    Ok(())
}

/// Unmount; a path that is not mounted is not an error.
pub fn umount(target: &Path) -> nix::Result<()> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:5 / /var/lib/tankd/mounts/4 ro shared:2 master:3 - overlay overlay rw,lowerdir=/x\n";
        let t = parse_mountinfo(text);
        assert_eq!(t[0].mountpoint, PathBuf::from("/mnt/a b"));
        assert_eq!((t[0].fs_type.as_str(), t[0].source.as_str()), ("ext3", "/dev/root"));
        assert_eq!((t[0].dev, t[1].dev), ((98, 0), (0, 5)));
        assert_eq!(t[1].fs_type, "overlay");
        assert!(is_mounted(&t, Path::new("/var/lib/tankd/mounts/4")));
        assert!(!is_mounted(&t, Path::new("/var/lib/tankd/mounts")));
    }
}
