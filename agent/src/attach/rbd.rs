//! Ceph RBD images as block devices, by one of two paths:
//! - kernel rbd: one line written to `/sys/bus/rbd/add_single_major`, the device found in
//!   `/sys/bus/rbd/devices`, removed through `remove_single_major`;
//! - where the kernel has no rbd: `rbd-fuse` exposes the image as a file in a private
//!   directory, and a loop device attaches that file.
//!
//! The secret goes to the kernel in the sysfs write, or to rbd-fuse in a 0600 key file;
//! never on a command line (visible in `ps`) and never in a log line.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rpc_schema::imageapi::Rbd;

pub const SYS_RBD: &str = "/sys/bus/rbd";

/// Characters allowed in pools, images, snapshots, users and namespaces: what Ceph
/// allows minus anything that separates fields in the sysfs line or the conf file.
fn check_word(field: &str, value: &str) -> Result<(), (String, String)> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && !value.starts_with('-')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
        && value != "."
        && value != "..";
    if ok {
        Ok(())
    } else {
        Err((field.to_owned(), format!("{value:?}: use letters, digits and _ - . + (not leading -)")))
    }
}

/// Check an rbd request; `Err((field, reason))`.
pub fn validate(rbd: &Rbd) -> Result<(), (String, String)> {
    if rbd.monitors.is_empty() {
        return Err(("rbd.monitors".into(), "at least one monitor address (host:port) is needed".into()));
    }
    for m in &rbd.monitors {
        let ok = !m.is_empty()
            && m.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-'))
            && !m.starts_with('-');
        if !ok {
            return Err(("rbd.monitors".into(), format!("{m:?} is not a monitor address (host:port)")));
        }
    }
    check_word("rbd.pool", &rbd.pool)?;
    check_word("rbd.image", &rbd.image)?;
    if let Some(s) = &rbd.snapshot {
        check_word("rbd.snapshot", s)?;
    }
    if let Some(n) = &rbd.options.name {
        check_word("rbd.options.name", n)?;
    }
    if let Some(n) = &rbd.options.namespace {
        check_word("rbd.options.namespace", n)?;
    }
    if let Some(s) = &rbd.options.secret {
        let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if !ok {
            return Err(("rbd.options.secret".into(), "not a base64 Ceph key".into()));
        }
    }
    if rbd.options.ro && rbd.options.rw {
        return Err(("rbd.options".into(), "ro and rw together".into()));
    }
    if rbd.options.queue_depth == Some(0) {
        return Err(("rbd.options.queue_depth".into(), "must be at least 1".into()));
    }
    Ok(())
}

pub fn kernel_has_rbd(sys_rbd: &Path) -> bool {
    sys_rbd.join("add_single_major").exists()
}

/// The line for `add_single_major`: `<mons> <options> <pool> <image> <snap>`.
pub fn krbd_add_line(rbd: &Rbd, read_only: bool) -> String {
    let o = &rbd.options;
    let mut opts = vec![format!("name={}", o.name.as_deref().unwrap_or("admin"))];
    if let Some(s) = &o.secret {
        opts.push(format!("secret={s}"));
    }
    if let Some(ns) = &o.namespace {
        opts.push(format!("_pool_ns={ns}"));
    }
    if read_only || o.ro {
        opts.push("ro".into());
    }
    for (on, word) in [(o.exclusive, "exclusive"), (o.lock_on_read, "lock_on_read"), (o.notrim, "notrim")] {
        if on {
            opts.push(word.into());
        }
    }
    if let Some(q) = o.queue_depth {
        opts.push(format!("queue_depth={q}"));
    }
    format!(
        "{} {} {} {} {}",
        rbd.monitors.join(","),
        opts.join(","),
        rbd.pool,
        rbd.image,
        rbd.snapshot.as_deref().unwrap_or("-")
    )
}

/// Mapped kernel rbd devices: (id, pool, namespace, image, snapshot).
pub fn krbd_devices(sys_rbd: &Path) -> Vec<(u64, String, String, String, String)> {
    let Ok(entries) = std::fs::read_dir(sys_rbd.join("devices")) else {
        return Vec::new();
    };
    let read =
        |dir: &Path, f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_owned()).unwrap_or_default();
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.parse::<u64>().ok()?;
            let d = e.path();
            Some((id, read(&d, "pool"), read(&d, "pool_ns"), read(&d, "name"), read(&d, "current_snap")))
        })
        .collect();
    out.sort();
    out
}

fn same_image(dev: &(u64, String, String, String, String), rbd: &Rbd) -> bool {
    dev.1 == rbd.pool
        && dev.2 == rbd.options.namespace.clone().unwrap_or_default()
        && dev.3 == rbd.image
        && dev.4 == rbd.snapshot.clone().unwrap_or_else(|| "-".into())
}

/// Map with kernel rbd; returns the device id.
pub fn krbd_map(sys_rbd: &Path, rbd: &Rbd, read_only: bool) -> std::io::Result<u64> {
    let before: Vec<u64> = krbd_devices(sys_rbd).iter().map(|d| d.0).collect();
    let mut f = std::fs::OpenOptions::new().write(true).open(sys_rbd.join("add_single_major"))?;
    f.write_all(krbd_add_line(rbd, read_only).as_bytes())?;
    krbd_devices(sys_rbd)
        .into_iter()
        .find(|d| !before.contains(&d.0) && same_image(d, rbd))
        .map(|d| d.0)
        .ok_or_else(|| std::io::Error::other("the kernel mapped the image but it is not in /sys/bus/rbd/devices"))
}

pub fn krbd_unmap(sys_rbd: &Path, id: u64) -> std::io::Result<()> {
    if !sys_rbd.join("devices").join(id.to_string()).exists() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(sys_rbd.join("remove_single_major"))?
        .write_all(id.to_string().as_bytes())
}

/// The device a map of `rbd` made that is not in `before` (the devices before the map)
/// nor in `claimed` (other records'): how start-up finds a map a crash left unrecorded.
pub fn krbd_made_after(sys_rbd: &Path, rbd: &Rbd, before: &[u64], claimed: &[u64]) -> Option<u64> {
    krbd_devices(sys_rbd)
        .into_iter()
        .find(|d| !before.contains(&d.0) && !claimed.contains(&d.0) && same_image(d, rbd))
        .map(|d| d.0)
}

pub fn krbd_present(sys_rbd: &Path, id: u64, rbd: &Rbd) -> bool {
    krbd_devices(sys_rbd).iter().any(|d| d.0 == id && same_image(d, rbd))
}

/// The userspace path's private directory for one attachment: `ceph.conf`, `keyfile`,
/// and the FUSE mountpoint `fuse/` in which the image appears as a file.
pub struct FuseDir(pub PathBuf);

impl FuseDir {
    pub fn mountpoint(&self) -> PathBuf {
        self.0.join("fuse")
    }
    pub fn image_file(&self, rbd: &Rbd) -> PathBuf {
        self.mountpoint().join(&rbd.image)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// The client configuration rbd-fuse reads: monitors and, with a secret, a key file.
pub fn fuse_conf(dir: &FuseDir, rbd: &Rbd) -> String {
    let mut conf = format!(
        "[global]\nmon host = {}\n[client]\nadmin socket =\nlog file = {}\n",
        rbd.monitors.join(","),
        dir.0.join("rbd-fuse.log").display()
    );
    if rbd.options.secret.is_some() {
        conf.push_str(&format!("keyfile = {}\n", dir.0.join("keyfile").display()));
    } else {
        conf.push_str("auth client required = none\nauth supported = none\n");
    }
    conf
}

/// Ceph quotes a key it cannot use in its errors; those errors reach clients and logs.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "<secret>"),
        _ => text.to_owned(),
    }
}

/// Start rbd-fuse for one image and wait until its file appears.
pub async fn fuse_start(dir: &FuseDir, rbd: &Rbd) -> Result<PathBuf, String> {
    if rbd.snapshot.is_some() {
        return Err(
            "rbd-fuse cannot open snapshots and this kernel has no rbd: attach the image, not a snapshot".into()
        );
    }
    if rbd.options.namespace.is_some() {
        return Err("rbd-fuse has no namespaces and this kernel has no rbd".into());
    }
    let mnt = dir.mountpoint();
    std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    let conf = dir.0.join("ceph.conf");
    write_private(&conf, &fuse_conf(dir, rbd)).map_err(|e| format!("{}: {e}", conf.display()))?;
    if let Some(secret) = &rbd.options.secret {
        let key = dir.0.join("keyfile");
        write_private(&key, secret).map_err(|e| format!("{}: {e}", key.display()))?;
    }
    let mut cmd = tokio::process::Command::new("rbd-fuse");
    cmd.arg("-c").arg(&conf).arg("-p").arg(&rbd.pool).arg("-r").arg(&rbd.image);
    if let Some(name) = &rbd.options.name {
        cmd.arg("--id").arg(name);
    }
    cmd.arg(&mnt).stdin(std::process::Stdio::null());
    // rbd-fuse mounts, then goes to the background; the parent's exit says how it went.
    let out = cmd.output().await.map_err(|e| format!("rbd-fuse: {e} (package rbd-fuse)"))?;
    if !out.status.success() {
        let _ = fuse_stop(dir);
        let stderr = redact(String::from_utf8_lossy(&out.stderr).trim(), rbd.options.secret.as_deref());
        return Err(format!("rbd-fuse -p {} -r {} failed ({}): {stderr}", rbd.pool, rbd.image, out.status));
    }
    let file = dir.image_file(rbd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        if Instant::now() > deadline {
            let _ = fuse_stop(dir);
            return Err(format!("rbd-fuse is running but {} did not appear (does the image exist?)", file.display()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(file)
}

/// The rbd-fuse processes serving `mnt` (their last argument).
fn fuse_processes(mnt: &Path) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
            let is_fuse = args.first()?.ends_with(b"rbd-fuse");
            (is_fuse && *args.last()? == mnt.as_os_str().as_encoded_bytes()).then_some(pid)
        })
        .collect()
}

/// Unmount the FUSE directory, see rbd-fuse exit (TERM after 5 s), and remove the
/// private files, key included.
pub fn fuse_stop(dir: &FuseDir) -> std::io::Result<()> {
    let mnt = dir.mountpoint();
    match nix::mount::umount2(&mnt, nix::mount::MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(std::io::Error::from(e)),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = fuse_processes(&mnt);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for pid in left {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match std::fs::remove_dir_all(&dir.0) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_schema::imageapi::RbdOptions;

    fn rbd() -> Rbd {
        Rbd {
            monitors: vec!["10.0.0.1:6789".into(), "10.0.0.2:6789".into()],
            pool: "rbd".into(),
            image: "sys".into(),
            options: RbdOptions { name: Some("boot".into()), secret: Some("QUJD".into()), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn krbd_line_has_upstreams_fields_and_order() {
        let mut r = rbd();
        r.snapshot = Some("v1".into());
        r.options.namespace = Some("ns".into());
        r.options.queue_depth = Some(64);
        r.options.exclusive = true;
        assert_eq!(
            krbd_add_line(&r, true),
            "10.0.0.1:6789,10.0.0.2:6789 name=boot,secret=QUJD,_pool_ns=ns,ro,exclusive,queue_depth=64 rbd sys v1"
        );
        assert_eq!(krbd_add_line(&rbd(), false), "10.0.0.1:6789,10.0.0.2:6789 name=boot,secret=QUJD rbd sys -");
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = rbd();
        r.image = "a b".into();
        assert_eq!(validate(&r).unwrap_err().0, "rbd.image");
        let mut r = rbd();
        r.pool = "-x".into();
        assert_eq!(validate(&r).unwrap_err().0, "rbd.pool");
        let mut r = rbd();
        r.options.secret = Some("x,ro".into());
        assert_eq!(validate(&r).unwrap_err().0, "rbd.options.secret");
        let mut r = rbd();
        r.monitors = vec!["1.2.3.4:6789 evil".into()];
        assert_eq!(validate(&r).unwrap_err().0, "rbd.monitors");
        let mut r = rbd();
        r.monitors.clear();
        assert_eq!(validate(&r).unwrap_err().0, "rbd.monitors");
        assert!(validate(&rbd()).is_ok());
    }

    #[test]
    fn devices_are_read_from_sysfs_and_matched() {
        let dir = tempfile::tempdir().unwrap();
        for (id, pool, name, snap) in [(0, "rbd", "sys", "-"), (3, "rbd", "sys", "v1")] {
            let d = dir.path().join("devices").join(id.to_string());
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in [("pool", pool), ("name", name), ("current_snap", snap), ("pool_ns", "")] {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        }
        let r = rbd();
        assert!(krbd_present(dir.path(), 0, &r));
        assert!(!krbd_present(dir.path(), 3, &r), "a snapshot mapping is another image");
        assert!(!kernel_has_rbd(dir.path()));
    }

    #[test]
    fn errors_never_quote_the_secret() {
        assert_eq!(redact("failed to decode key 'QUJD'", Some("QUJD")), "failed to decode key '<secret>'");
        assert_eq!(redact("no key", None), "no key");
    }

    #[test]
    fn the_fuse_conf_points_at_the_key_file_not_the_key() {
        let d = FuseDir("/var/lib/tankd/rbd/4".into());
        let conf = fuse_conf(&d, &rbd());
        assert!(conf.contains("mon host = 10.0.0.1:6789,10.0.0.2:6789\n"));
        assert!(conf.contains("keyfile = /var/lib/tankd/rbd/4/keyfile\n"));
        assert!(!conf.contains("QUJD"));
    }
}
