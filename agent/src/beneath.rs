//! Paths a request names under one of tankd's roots (loop files, bind sources), held
//! open from the moment they are checked. The check and the use are one descriptor:
//! the file is opened `O_PATH` with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from the root, and later used as `/proc/self/fd/N`, so a symlink swapped into the
//! path after the check (by a tenant who can write inside the root) redirects nothing.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// A checked path and the descriptor opened at the check.
#[derive(Debug)]
pub struct Held {
    /// The resolved path (for messages, records and matching `/sys/block/*/loop`).
    pub path: PathBuf,
    fd: OwnedFd,
}

impl Held {
    /// The path that reaches the held file itself: reopening it (with other flags) or
    /// passing it to mount(2) walks no directory.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    pub fn is_file(&self) -> bool {
        nix::sys::stat::fstat(&self.fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG)
    }
}

/// Open `path` (already resolved, inside `root`) beneath `root`, refusing any symlink
/// on the way, the last component included.
pub fn open(root: &Path, path: &Path) -> std::io::Result<Held> {
    let rel = path.strip_prefix(root).map_err(|_| std::io::Error::other("not under the root"))?;
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let dir = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&dir, rel, how)?;
    Ok(Held { path: path.to_path_buf(), fd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_swapped_in_after_the_check_redirects_nothing() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        std::fs::create_dir(root_path.join("d")).unwrap();
        std::fs::write(root_path.join("d/disk.img"), b"inside").unwrap();
        std::fs::write(outside.path().join("disk.img"), b"outside").unwrap();

        let held = open(&root_path, &root_path.join("d/disk.img")).unwrap();
        assert!(held.is_file());
        // The tenant swaps the directory for a link to somewhere else.
        std::fs::rename(root_path.join("d"), root_path.join("d.old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("d")).unwrap();
        assert_eq!(std::fs::read(held.fd_path()).unwrap(), b"inside", "the held file is still the checked one");
        // A fresh open through the swapped path is refused, not followed.
        let err = open(&root_path, &root_path.join("d/disk.img")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        // So is a symlink as the last component, and a path outside the root.
        std::os::unix::fs::symlink(outside.path().join("disk.img"), root_path.join("last.img")).unwrap();
        assert!(open(&root_path, &root_path.join("last.img")).is_err());
        assert!(open(&root_path, outside.path()).is_err());
        assert!(open(&root_path, &root_path).unwrap().fd_path().is_dir(), "the root itself");
    }
}
