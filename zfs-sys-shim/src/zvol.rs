//! Resolving a zvol's block device.
//!
//! tankd always answers the stable `/dev/zvol/<name>` link: `/dev/zdN` numbers are handed
//! out in creation order and change across reboots, so a caller that stored one would later
//! open another volume. With udev running, udev makes the link (60-zvol.rules, `zvol_id`)
//! shortly after `zfs create -V`. Where no udev runs (minimal hosts, containers), or udev
//! has not got to it yet, only `/dev/zdN` exists: tankd asks each zd device its dataset name
//! with the `BLKZNAME` ioctl, as `zvol_id` does, and makes the link itself, relative as udev
//! makes it (udev then keeps it as its own).
//!
//! A link is answered only after its target has said, by `BLKZNAME`, that it is the volume:
//! a link tankd made may be left pointing at a number the kernel has since given to another
//! volume (a volume destroyed or renamed behind tankd's back); such a link is replaced. If
//! the link cannot be made (a read-only `/dev`, no privilege), the `/dev/zdN` node is
//! answered instead. Destroying, renaming or exporting through the shim removes the links
//! left leading nowhere.

use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::name::DatasetName;
use crate::{Error, Zfs};

/// ZFS_MAX_DATASET_NAME_LEN.
const ZNAME_LEN: usize = 256;

// BLKZNAME = _IOR(0x12, 125, char[ZFS_MAX_DATASET_NAME_LEN]), from include/sys/zvol.h.
nix::ioctl_read!(blkzname, 0x12, 125, [u8; ZNAME_LEN]);

/// The dataset name a zd device reports, or `None` if it is not a zvol we can open.
fn zvol_name_of(dev: &Path) -> Option<String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(dev).ok()?;
    let mut buf = [0u8; ZNAME_LEN];
    // SAFETY: the fd is open for the duration of the call and buf is the exact size the
    // ioctl's encoding declares.
    unsafe { blkzname(file.as_raw_fd(), &mut buf) }.ok()?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(ZNAME_LEN);
    String::from_utf8(buf[..end].to_vec()).ok()
}

/// How the name of a zd device is learnt: [`zvol_name_of`], or a table in unit tests.
type Lookup<'a> = &'a dyn Fn(&Path) -> Option<String>;

/// `zd0`, `zd16`: whole devices, not partitions (`zd0p1`).
fn is_zd_device(file_name: &str) -> bool {
    file_name.strip_prefix("zd").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A name that can become a path under `/dev/zvol` without leaving it.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('\0') && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// `<dev_root>/zvol/<name>`.
fn link_path(dev_root: &Path, name: &str) -> PathBuf {
    dev_root.join("zvol").join(name)
}

/// The link's target as udev writes it: `../../zd0` for `zvol/tank/v1`, one `..` per
/// component of the name.
fn relative_target(name: &str, zd: &str) -> PathBuf {
    let mut t = "../".repeat(name.split('/').count());
    t.push_str(zd);
    PathBuf::from(t)
}

/// What is at `<dev_root>/zvol/<name>`.
#[derive(Debug, PartialEq)]
enum Link {
    Absent,
    /// A symlink to a whole zd device that names itself `name`.
    Good,
    /// A symlink that leads nowhere, to something not a zd device, or to a zd device of
    /// another name. Carries what the link read, to remove only what was judged.
    Stale(PathBuf),
    /// A symlink to a zd device that could not be asked its name (busy, going away).
    Unknown(PathBuf),
    /// Not a symlink: someone else's, never touched.
    Other,
}

fn examine(link: &Path, name: &str, lookup: Lookup) -> Link {
    let meta = match std::fs::symlink_metadata(link) {
        Ok(m) => m,
        Err(e) if e.kind() == IoKind::NotFound => return Link::Absent,
        Err(_) => return Link::Other,
    };
    if !meta.file_type().is_symlink() {
        return Link::Other;
    }
    let Ok(read) = std::fs::read_link(link) else { return Link::Absent };
    let Ok(target) = std::fs::canonicalize(link) else { return Link::Stale(read) };
    if !target.file_name().and_then(|f| f.to_str()).is_some_and(is_zd_device) {
        return Link::Stale(read);
    }
    match lookup(&target) {
        Some(n) if n == name => Link::Good,
        Some(_) => Link::Stale(read),
        None => Link::Unknown(read),
    }
}

/// Remove `link` if it still reads `was` (what was judged stale). A concurrent udev may
/// have replaced it since; then it is left alone.
fn remove_if_unchanged(link: &Path, was: &Path) {
    if std::fs::read_link(link).is_ok_and(|now| now == was) {
        let _ = std::fs::remove_file(link);
    }
}

/// The whole zd device under `dev_root` that names itself `name`.
fn scan(dev_root: &Path, name: &str, lookup: Lookup) -> Option<PathBuf> {
    std::fs::read_dir(dev_root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_zd_device))
        .map(|e| e.path())
        .find(|p| lookup(p).as_deref() == Some(name))
}

/// Point `link`, found as `state`, at `zd` (relative, as udev does). A new link is made with
/// `symlink`, so one udev made meanwhile is not overwritten (EEXIST: look at it again); a
/// stale one is replaced atomically by renaming a fresh link over it. Done when the link
/// checks out as `Good`.
fn make_link(
    dev_root: &Path,
    link: &Path,
    name: &str,
    zd: &Path,
    mut state: Link,
    lookup: Lookup,
) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let zd_name = zd.file_name().and_then(|f| f.to_str()).ok_or_else(|| std::io::Error::other("bad zd path"))?;
    let target = relative_target(name, zd_name);
    let dir = link.parent().expect("a link under <dev>/zvol has a parent");
    debug_assert!(dir.starts_with(dev_root));
    let mut last = std::io::Error::other("the link did not check out");
    for _ in 0..3 {
        let res = match state {
            Link::Good => return Ok(()),
            Link::Other => return Err(std::io::Error::new(IoKind::AlreadyExists, "not a symlink")),
            Link::Absent => {
                std::fs::create_dir_all(dir).and_then(|()| std::os::unix::fs::symlink(&target, link)).or_else(|e| {
                    // udev (or another tankd task) made it first: judge what it made.
                    if e.kind() == IoKind::AlreadyExists { Ok(()) } else { Err(e) }
                })
            }
            Link::Stale(_) | Link::Unknown(_) => {
                let base = link.file_name().and_then(|f| f.to_str()).unwrap_or("zvol");
                let seq = SEQ.fetch_add(1, Ordering::Relaxed);
                let tmp = dir.join(format!(".{base}.tankd-{}-{seq}", std::process::id()));
                let r = std::os::unix::fs::symlink(&target, &tmp).and_then(|()| std::fs::rename(&tmp, link));
                if r.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                r
            }
        };
        match res {
            Ok(()) => {}
            // A parent directory pruned meanwhile: make it again.
            Err(e) if e.kind() == IoKind::NotFound => last = e,
            Err(e) => return Err(e),
        }
        state = examine(link, name, lookup);
    }
    match state {
        Link::Good => Ok(()),
        _ => Err(last),
    }
}

/// Warned once per process: on a host where /dev cannot take links, every lookup fails alike.
static LINK_WARNED: AtomicBool = AtomicBool::new(false);

/// The device of `name`: `<dev_root>/zvol/<name>` once it is checked to lead to the zd
/// device of that name (made or replaced here if needed), else that zd device itself.
pub(crate) fn find_device(dev_root: &Path, name: &str) -> Option<PathBuf> {
    find_device_with(dev_root, name, &zvol_name_of)
}

fn find_device_with(dev_root: &Path, name: &str, lookup: Lookup) -> Option<PathBuf> {
    if !safe_name(name) {
        return None;
    }
    let link = link_path(dev_root, name);
    let state = examine(&link, name, lookup);
    if state == Link::Good {
        return Some(link);
    }
    let Some(zd) = scan(dev_root, name, lookup) else {
        // No device of this name: a stale link must not outlive it (an unknown one may be
        // the volume, busy for a moment; it is left).
        if let Link::Stale(was) = &state {
            remove_if_unchanged(&link, was);
        }
        return None;
    };
    if state == Link::Other {
        return Some(zd);
    }
    match make_link(dev_root, &link, name, &zd, state, lookup) {
        Ok(()) => Some(link),
        Err(e) => {
            if !LINK_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(link = %link.display(), device = %zd.display(), error = %e,
                    "cannot make the zvol link; answering the zd device, whose number can change across reboots");
            } else {
                tracing::debug!(link = %link.display(), device = %zd.display(), error = %e, "cannot make the zvol link");
            }
            Some(zd)
        }
    }
}

/// After `name` (and anything below it) stopped being a volume: remove the links under
/// `<dev_root>/zvol/<name>` that lead nowhere or to a zd device of another name, and the
/// directories left empty, up to `<dev_root>/zvol` (as udev does with its own). Links to
/// devices that cannot be asked their name, and anything not a symlink, are left.
pub(crate) fn prune_links(dev_root: &Path, name: &str) {
    prune_links_with(dev_root, name, &zvol_name_of)
}

fn prune_links_with(dev_root: &Path, name: &str, lookup: Lookup) {
    if !safe_name(name) {
        return;
    }
    let top = link_path(dev_root, name);
    prune_tree(&top, name, lookup);
    let stop = dev_root.join("zvol");
    let mut dir = top.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(&stop) && *d != stop) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

fn prune_tree(path: &Path, name: &str, lookup: Lookup) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if meta.file_type().is_symlink() {
        let Ok(read) = std::fs::read_link(path) else { return };
        let stale = match std::fs::canonicalize(path) {
            Err(_) => true,
            // A partition link (udev's `-partN`) answers its volume's name: judged by
            // whether it leads anywhere only.
            Ok(t) if t.file_name().and_then(|f| f.to_str()).is_some_and(is_zd_device) => {
                lookup(&t).is_some_and(|n| n != name)
            }
            Ok(_) => false,
        };
        if stale {
            remove_if_unchanged(path, &read);
        }
    } else if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.filter_map(Result::ok) {
                if let Some(child) = e.file_name().to_str() {
                    prune_tree(&e.path(), &format!("{name}/{child}"), lookup);
                }
            }
        }
        let _ = std::fs::remove_dir(path);
    }
}

impl Zfs {
    /// The device node of `vol` if it has one now (no waiting, no command): whether a
    /// volume exists, known from /dev alone. Like [`Zfs::zvol_device`], `/dev/zvol/<name>`
    /// where that link can be made.
    pub fn zvol_device_now(&self, vol: &DatasetName) -> Option<PathBuf> {
        find_device(Path::new("/dev"), vol.as_str())
    }

    /// The block device of a volume, waiting up to `timeout` for the kernel to create it:
    /// `/dev/zvol/<name>` (udev's link, or one made here where udev has not made it), or
    /// the `/dev/zdN` node itself where no link can be made.
    pub async fn zvol_device(&self, vol: &DatasetName, timeout: Duration) -> Result<PathBuf, Error> {
        self.check_root(vol)?;
        let deadline = Instant::now() + timeout;
        loop {
            let name = vol.as_str().to_owned();
            let found = tokio::task::spawn_blocking(move || find_device(Path::new("/dev"), &name)).await.ok().flatten();
            if let Some(dev) = found {
                return Ok(dev);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    target: vol.as_str().to_owned(),
                    what: format!("its device node ({timeout:?})"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After `name` and everything below it stopped being volumes (destroyed, renamed, its
    /// pool exported): drop the `/dev/zvol` links under it that now lead nowhere or to
    /// another volume. Also where udev runs: a link tankd made before udev saw the device
    /// is not udev's if the name changed before udev asked it (a quick rename or destroy),
    /// and udev would leave it. Links udev removes itself are simply found gone. Snapshot
    /// and bookmark names have no links of tankd's.
    pub(crate) async fn forget_zvol_links(&self, name: &str) {
        if name.contains(['@', '#']) {
            return;
        }
        let name = name.to_owned();
        let _ = tokio::task::spawn_blocking(move || prune_links(Path::new("/dev"), &name)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// A fake /dev: empty files standing for zd devices, and a name table for BLKZNAME.
    struct Dev {
        dir: tempfile::TempDir,
        names: HashMap<String, String>,
    }

    impl Dev {
        fn new(devices: &[(&str, &str)]) -> Dev {
            let dir = tempfile::tempdir().unwrap();
            for (zd, _) in devices {
                std::fs::write(dir.path().join(zd), b"").unwrap();
            }
            Dev { dir, names: devices.iter().map(|(zd, n)| (zd.to_string(), n.to_string())).collect() }
        }
        fn root(&self) -> &Path {
            self.dir.path()
        }
        fn lookup(&self) -> impl Fn(&Path) -> Option<String> + '_ {
            |p: &Path| self.names.get(p.file_name()?.to_str()?).cloned()
        }
        fn find(&self, name: &str) -> Option<PathBuf> {
            find_device_with(self.root(), name, &self.lookup())
        }
        fn link(&self, name: &str, target: &str) {
            let l = link_path(self.root(), name);
            std::fs::create_dir_all(l.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, l).unwrap();
        }
        fn read_link(&self, name: &str) -> Option<PathBuf> {
            std::fs::read_link(link_path(self.root(), name)).ok()
        }
        fn canonical(&self, zd: &str) -> PathBuf {
            std::fs::canonicalize(self.root().join(zd)).unwrap()
        }
    }

    #[test]
    fn recognises_whole_zd_devices() {
        assert!(is_zd_device("zd0"));
        assert!(is_zd_device("zd112"));
        assert!(!is_zd_device("zd0p1"));
        assert!(!is_zd_device("zd"));
        assert!(!is_zd_device("sda"));
    }

    #[test]
    fn relative_targets_climb_one_level_per_name_component() {
        assert_eq!(relative_target("tank/v1", "zd0"), Path::new("../../zd0"));
        assert_eq!(relative_target("tank/a/b/v", "zd16"), Path::new("../../../../zd16"));
        // Resolved from the link's directory, each lands on <dev>/zdN.
        let dev = Dev::new(&[("zd0", "p/a/b/c/v"), ("zd16", "p/v")]);
        assert_eq!(dev.find("p/a/b/c/v"), Some(link_path(dev.root(), "p/a/b/c/v")));
        assert_eq!(dev.read_link("p/a/b/c/v").unwrap(), Path::new("../../../../../zd0"));
        assert_eq!(std::fs::canonicalize(link_path(dev.root(), "p/a/b/c/v")).unwrap(), dev.canonical("zd0"));
        assert_eq!(dev.find("p/v"), Some(link_path(dev.root(), "p/v")));
        assert_eq!(dev.read_link("p/v").unwrap(), Path::new("../../zd16"));
        assert_eq!(std::fs::canonicalize(link_path(dev.root(), "p/v")).unwrap(), dev.canonical("zd16"));
    }

    #[test]
    fn makes_the_link_where_none_is() {
        let dev = Dev::new(&[("zd0", "tank/vols/a"), ("zd16", "tank/vols/b"), ("zd16p1", "tank/vols/b")]);
        assert_eq!(dev.find("tank/vols/b"), Some(dev.root().join("zvol/tank/vols/b")));
        assert_eq!(dev.read_link("tank/vols/b").unwrap(), Path::new("../../../zd16"));
        assert_eq!(dev.read_link("tank/vols/a"), None, "only the asked volume is linked");
        assert_eq!(dev.find("tank/vols/none"), None);
        assert!(!link_path(dev.root(), "tank/vols/none").exists());
    }

    #[test]
    fn keeps_a_link_that_leads_to_the_volume() {
        let dev = Dev::new(&[("zd0", "tank/v1"), ("zd16", "tank/v2")]);
        // udev's own form, and an absolute link someone else made: both left as they are.
        dev.link("tank/v1", "../../zd0");
        let abs = dev.root().join("zd16");
        dev.link("tank/v2", abs.to_str().unwrap());
        let asked = Cell::new(0);
        let lookup = |p: &Path| {
            asked.set(asked.get() + 1);
            dev.lookup()(p)
        };
        assert_eq!(find_device_with(dev.root(), "tank/v1", &lookup), Some(link_path(dev.root(), "tank/v1")));
        assert_eq!(asked.get(), 1, "the link's target is asked; no scan");
        assert_eq!(dev.read_link("tank/v1").unwrap(), Path::new("../../zd0"));
        assert_eq!(dev.find("tank/v2"), Some(link_path(dev.root(), "tank/v2")));
        assert_eq!(dev.read_link("tank/v2").unwrap(), abs);
    }

    #[test]
    fn replaces_a_link_to_a_number_another_volume_now_has() {
        // tankd linked v1 to zd0; v1 went away behind its back and zd0 is now v2's.
        let dev = Dev::new(&[("zd0", "tank/v2"), ("zd16", "tank/v1")]);
        dev.link("tank/v1", "../../zd0");
        assert_eq!(dev.find("tank/v1"), Some(link_path(dev.root(), "tank/v1")));
        assert_eq!(dev.read_link("tank/v1").unwrap(), Path::new("../../zd16"));
        // A link leading nowhere, or to something that is not a zd device, is replaced too.
        let dev = Dev::new(&[("zd32", "tank/v3"), ("sda", "")]);
        dev.link("tank/v3", "../../zd99");
        assert_eq!(dev.find("tank/v3"), Some(link_path(dev.root(), "tank/v3")));
        assert_eq!(dev.read_link("tank/v3").unwrap(), Path::new("../../zd32"));
        dev.link("tank/v4", "../../sda");
        assert_eq!(dev.find("tank/v4"), None, "no device of that name");
        assert_eq!(dev.read_link("tank/v4"), None, "and the stale link is gone");
        assert_eq!(std::fs::read_dir(dev.root().join("zvol/tank")).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn stale_link_without_a_device_is_removed_but_an_unknown_one_is_not() {
        let dev = Dev::new(&[("zd0", "tank/other")]);
        dev.link("tank/gone", "../../zd0");
        assert_eq!(dev.find("tank/gone"), None);
        assert_eq!(dev.read_link("tank/gone"), None);
        // zd16 cannot be asked (busy, going away): its link may be right; it stays.
        std::fs::write(dev.root().join("zd16"), b"").unwrap();
        dev.link("tank/busy", "../../zd16");
        assert_eq!(dev.find("tank/busy"), None);
        assert_eq!(dev.read_link("tank/busy").unwrap(), Path::new("../../zd16"));
    }

    #[test]
    fn a_link_udev_makes_meanwhile_is_taken() {
        let dev = Dev::new(&[("zd0", "tank/v1")]);
        // udev makes the link while tankd scans, so tankd's symlink meets EEXIST. (udev's is
        // absolute here only to tell it from one tankd would make.)
        let udevs = dev.root().join("zd0");
        let lookup = |p: &Path| {
            let l = link_path(dev.root(), "tank/v1");
            if std::fs::symlink_metadata(&l).is_err() {
                std::fs::create_dir_all(l.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(&udevs, &l).unwrap();
            }
            dev.lookup()(p)
        };
        assert_eq!(find_device_with(dev.root(), "tank/v1", &lookup), Some(link_path(dev.root(), "tank/v1")));
        assert_eq!(dev.read_link("tank/v1").unwrap(), udevs, "udev's link is kept");
    }

    #[test]
    fn answers_the_zd_node_where_no_link_can_be_made() {
        let dev = Dev::new(&[("zd0", "tank/v1"), ("zd16", "pool/v2")]);
        // <dev>/zvol/tank cannot become a directory (as a read-only /dev refuses mkdir).
        std::fs::create_dir_all(dev.root().join("zvol")).unwrap();
        std::os::unix::fs::symlink("nowhere", dev.root().join("zvol/tank")).unwrap();
        assert_eq!(dev.find("tank/v1"), Some(dev.root().join("zd0")));
        // Something not a symlink where the link would be: left alone.
        std::fs::create_dir_all(dev.root().join("zvol/pool")).unwrap();
        std::fs::write(dev.root().join("zvol/pool/v2"), b"").unwrap();
        assert_eq!(dev.find("pool/v2"), Some(dev.root().join("zd16")));
        assert!(std::fs::symlink_metadata(dev.root().join("zvol/pool/v2")).unwrap().is_file());
    }

    #[test]
    fn names_that_would_leave_the_link_tree_are_refused() {
        let dev = Dev::new(&[("zd0", "../x"), ("zd16", "/abs")]);
        for bad in ["../x", "/abs", "a//b", "a/./b", ""] {
            assert_eq!(dev.find(bad), None, "{bad:?}");
        }
        assert!(!dev.root().join("zvol").exists());
    }

    #[test]
    fn pruning_drops_dead_and_foreign_links_and_empty_directories() {
        let dev = Dev::new(&[("zd0", "tank/keep"), ("zd16", "tank/fs/moved-elsewhere"), ("zd32", "tank/fs/live")]);
        dev.link("tank/keep", "../../zd0");
        dev.link("tank/fs/a", "../../../zd99");
        dev.link("tank/fs/sub/b", "../../../../zd98");
        dev.link("tank/fs/c", "../../../zd16");
        dev.link("tank/fs/c-part1", "../../../zd16p1");
        dev.link("tank/fs/live", "../../../zd32");
        std::fs::write(dev.root().join("zd64"), b"").unwrap();
        dev.link("tank/fs/busy", "../../../zd64");
        std::fs::write(dev.root().join("zvol/tank/fs/file"), b"").unwrap();
        prune_links_with(dev.root(), "tank/fs", &dev.lookup());
        let left: Vec<String> = {
            let mut v: Vec<_> = std::fs::read_dir(dev.root().join("zvol/tank/fs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(left, ["busy", "file", "live"], "dead, foreign and empty are gone; live, unknown, files stay");
        assert_eq!(dev.read_link("tank/keep").unwrap(), Path::new("../../zd0"), "outside the name: untouched");

        // A destroyed volume alone: its link and the directories it leaves empty go, up to zvol/.
        let dev = Dev::new(&[]);
        dev.link("pool/a/b/v", "../../../../zd0");
        prune_links_with(dev.root(), "pool/a/b/v", &dev.lookup());
        assert!(dev.root().join("zvol").is_dir());
        assert_eq!(std::fs::read_dir(dev.root().join("zvol")).unwrap().count(), 0);
    }
}
