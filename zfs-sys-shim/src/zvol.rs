//! Resolving a zvol's block device.
//!
//! With udev running, `/dev/zvol/<name>` appears shortly after `zfs create -V`. Without it
//! (minimal hosts, containers, the test VM) only `/dev/zdN` exists, so tankd asks each zd
//! device its dataset name with the `BLKZNAME` ioctl, as udev's `zvol_id` helper does.

use std::path::{Path, PathBuf};
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

/// `zd0`, `zd16`: whole devices, not partitions (`zd0p1`).
fn is_zd_device(file_name: &str) -> bool {
    file_name.strip_prefix("zd").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Look for the device of `name`: the udev link first, then a scan of `/dev/zd*`.
pub(crate) fn find_device(dev_root: &Path, name: &str) -> Option<PathBuf> {
    let link = dev_root.join("zvol").join(name);
    if link.exists() {
        return Some(link);
    }
    std::fs::read_dir(dev_root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_zd_device))
        .map(|e| e.path())
        .find(|p| zvol_name_of(p).as_deref() == Some(name))
}

impl Zfs {
    /// The block device of a volume, waiting up to `timeout` for the kernel (and udev,
    /// where it runs) to create it. Returns `/dev/zvol/<name>` when that link exists,
    /// else the `/dev/zdN` node itself.
    /// The device node of `vol` if it has one now (no waiting, no command): whether a
    /// volume exists, known from /dev alone.
    pub fn zvol_device_now(&self, vol: &DatasetName) -> Option<PathBuf> {
        find_device(Path::new("/dev"), vol.as_str())
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_whole_zd_devices() {
        assert!(is_zd_device("zd0"));
        assert!(is_zd_device("zd112"));
        assert!(!is_zd_device("zd0p1"));
        assert!(!is_zd_device("zd"));
        assert!(!is_zd_device("sda"));
    }

    #[test]
    fn prefers_the_udev_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("zvol/tank/vols")).unwrap();
        std::fs::write(dir.path().join("zvol/tank/vols/v1"), b"").unwrap();
        assert_eq!(find_device(dir.path(), "tank/vols/v1"), Some(dir.path().join("zvol/tank/vols/v1")));
        assert_eq!(find_device(dir.path(), "tank/vols/v2"), None);
    }
}
