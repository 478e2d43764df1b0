//! The system calls the store is built from, each relative to a directory descriptor.
//! Paths under a bucket are resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! so that no symlink (planted by anyone who can write inside the dataset) and no `..`
//! leads a key outside its bucket; every descriptor is close-on-exec so none leaks into
//! the processes tankd spawns.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, OFlag, OpenHow, ResolveFlag, fcntl, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, linkat, unlinkat};

/// Directories and files hold tenant data: only tankd (root) reads them directly.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// What a directory entry is, as far as the store cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    /// Symlinks, fifos, sockets, devices: never an object, never descended into.
    Other,
}

/// Opens `path` (relative, no leading "/") beneath `dir`, refusing symlinks anywhere on
/// the way, the last component included (ELOOP).
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // EAGAIN means a concurrent rename raced the kernel's check that the walk stayed
    // beneath `dir`; the kernel asks callers to retry.
    let mut attempts = 0;
    loop {
        match openat2(dir, path, how) {
            Err(Errno::EAGAIN) if attempts < 8 => attempts += 1,
            result => return result,
        }
    }
}

/// A directory beneath `dir`, open for reading its entries and for fsync.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, path: &str) -> nix::Result<OwnedFd> {
    open_beneath(dir, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// A regular file beneath `dir`, open for reading, with its stat. Anything else (a
/// directory, a fifo) answers ENOENT: for a reader it is not an object.
pub(crate) fn open_regular(dir: BorrowedFd<'_>, path: &str) -> nix::Result<(File, FileStat)> {
    // O_NONBLOCK so that a fifo planted at the path cannot hang the open; it is cleared
    // again below once the file is known to be regular.
    let fd = open_beneath(dir, path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let stat = fstat(&fd)?;
    if !is(&stat, SFlag::S_IFREG) {
        return Err(Errno::ENOENT);
    }
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_RDONLY))?;
    Ok((File::from(fd), stat))
}

/// Creates a new file `name` in `dir`, mode 0600, failing if the name exists (a symlink
/// included: O_EXCL never follows one).
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: &str) -> nix::Result<File> {
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::from_bits_truncate(FILE_MODE))?;
    Ok(File::from(fd))
}

/// Makes directory `name` in `dir`; false when something already has the name.
pub(crate) fn make_dir(dir: BorrowedFd<'_>, name: &str) -> nix::Result<bool> {
    match mkdirat(dir, name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(errno) => Err(errno),
    }
}

/// What `name` in `dir` is, without following a symlink; None when nothing is there.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, name: &str) -> nix::Result<Option<Kind>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(kind_of(&stat))),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno),
    }
}

pub(crate) fn rename_at(from_dir: BorrowedFd<'_>, from: &str, to_dir: BorrowedFd<'_>, to: &str) -> nix::Result<()> {
    nix::fcntl::renameat(from_dir, from, to_dir, to)
}

/// A second name for a file; EEXIST when `to` exists, whatever it is.
pub(crate) fn link_at(from_dir: BorrowedFd<'_>, from: &str, to_dir: BorrowedFd<'_>, to: &str) -> nix::Result<()> {
    linkat(from_dir, from, to_dir, to, AtFlags::empty())
}

pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
}

/// Removes directory `name` from `dir` if it is empty (ENOTEMPTY otherwise).
pub(crate) fn remove_dir(dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

pub(crate) fn sync(fd: impl AsFd) -> nix::Result<()> {
    fsync(fd)
}

/// The entries of the directory `dir` (without "." and ".."), unsorted. Names are
/// raw bytes: a name that is not UTF-8 (not one tankd made) can still be removed.
pub(crate) fn read_dir(dir: OwnedFd) -> nix::Result<Vec<(CString, Kind)>> {
    let mut listing = nix::dir::Dir::from_fd(dir)?;
    let mut entries = Vec::new();
    let mut unknown = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let kind = match entry.file_type() {
            Some(nix::dir::Type::File) => Kind::File,
            Some(nix::dir::Type::Directory) => Kind::Dir,
            Some(_) => Kind::Other,
            // Filesystems without d_type: ask after the walk, the stream is not reentrant.
            None => {
                unknown.push(name.to_owned());
                continue;
            }
        };
        entries.push((name.to_owned(), kind));
    }
    for name in unknown {
        match fstatat(listing.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => entries.push((name, kind_of(&stat))),
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(entries)
}

/// Removes `name` from `dir`, and everything in it when it is a directory. Only for
/// the store's own trees (`.tmp`, `.uploads`), never for objects.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<()> {
    let Ok(name_str) = name.to_str() else {
        // A name that is not UTF-8 cannot go through open_beneath's &str; it cannot be
        // a directory tankd made, so only unlink it.
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    };
    match kind_at(dir, name_str)? {
        None => Ok(()),
        Some(Kind::Dir) => {
            let sub = open_dir(dir, name_str)?;
            // Only unlinks go through the dup, so sharing the listing's offset is harmless.
            let held = sub.try_clone().map_err(|e| errno_of(&e))?;
            for (entry, _) in read_dir(sub)? {
                remove_tree(held.as_fd(), &entry)?;
            }
            remove_dir(dir, name_str)
        }
        Some(_) => unlink_at(dir, name_str),
    }
}

/// Appends `len` bytes of `src` from `offset` to `dst` at its file position, returning
/// how many were copied (fewer when `src` ends first). copy_file_range lets ZFS clone
/// blocks instead of copying them; where the kernel or filesystem cannot do it for
/// these two files, plain reads and writes do.
pub(crate) fn copy_range(src: &File, offset: u64, dst: &File, len: u64) -> nix::Result<u64> {
    let mut copied = 0u64;
    let mut src_offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
    while copied < len {
        // At most 1 GiB a call: the kernel caps a call near 2 GiB anyway.
        let chunk = (len - copied).min(1 << 30) as usize;
        match nix::fcntl::copy_file_range(src, Some(&mut src_offset), dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => copied += n as u64,
            Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL) => {
                return Ok(copied + copy_by_reading(src, offset + copied, dst, len - copied)?);
            }
            Err(errno) => return Err(errno),
        }
    }
    Ok(copied)
}

fn copy_by_reading(src: &File, offset: u64, mut dst: &File, len: u64) -> nix::Result<u64> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut copied = 0u64;
    while copied < len {
        let want = (len - copied).min(buf.len() as u64) as usize;
        let n = match src.read_at(&mut buf[..want], offset + copied) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno_of(&e)),
        };
        dst.write_all(&buf[..n]).map_err(|e| errno_of(&e))?;
        copied += n as u64;
    }
    Ok(copied)
}

pub(crate) fn errno_of(err: &std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

/// The modification time a stat reports (S3's Last-Modified).
pub(crate) fn modified(stat: &FileStat) -> SystemTime {
    let secs = u64::try_from(stat.st_mtime).unwrap_or(0);
    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

pub(crate) fn size(stat: &FileStat) -> u64 {
    u64::try_from(stat.st_size).unwrap_or(0)
}

fn kind_of(stat: &FileStat) -> Kind {
    if is(stat, SFlag::S_IFREG) {
        Kind::File
    } else if is(stat, SFlag::S_IFDIR) {
        Kind::Dir
    } else {
        Kind::Other
    }
}

fn is(stat: &FileStat, kind: SFlag) -> bool {
    stat.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn root() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let fd = nix::fcntl::open(dir.path(), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .unwrap();
        (dir, fd)
    }

    #[test]
    fn a_symlink_anywhere_on_the_path_is_refused() {
        let (dir, fd) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("file-link")).unwrap();
        assert_eq!(open_regular(fd.as_fd(), "link/secret").unwrap_err(), Errno::ELOOP);
        assert_eq!(open_regular(fd.as_fd(), "file-link").unwrap_err(), Errno::ELOOP);
        assert_eq!(open_dir(fd.as_fd(), "link").unwrap_err(), Errno::ELOOP);
        assert_eq!(open_regular(fd.as_fd(), "../x").unwrap_err(), Errno::EXDEV, "no escape by ..");
    }

    #[test]
    fn only_a_regular_file_opens_as_one_and_a_fifo_does_not_hang() {
        let (dir, fd) = root();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        assert_eq!(open_regular(fd.as_fd(), "d").unwrap_err(), Errno::ENOENT);
        assert_eq!(open_regular(fd.as_fd(), "fifo").unwrap_err(), Errno::ENOENT);
        let (file, stat) = open_regular(fd.as_fd(), "f").unwrap();
        assert_eq!(size(&stat), 4);
        let flags = fcntl(&file, FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0, "non-blocking mode is cleared");
        let fd_flags = fcntl(&file, FcntlArg::F_GETFD).unwrap();
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "close-on-exec");
    }

    #[test]
    fn created_files_and_dirs_are_private() {
        let (dir, fd) = root();
        create_file(fd.as_fd(), "f").unwrap();
        assert_eq!(create_file(fd.as_fd(), "f").unwrap_err(), Errno::EEXIST);
        assert!(make_dir(fd.as_fd(), "d").unwrap());
        assert!(!make_dir(fd.as_fd(), "d").unwrap());
        let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("f"), 0o600);
        assert_eq!(mode("d"), 0o700);
    }

    #[test]
    fn remove_tree_removes_nested_entries() {
        let (dir, fd) = root();
        std::fs::create_dir_all(dir.path().join("t/a/b")).unwrap();
        std::fs::write(dir.path().join("t/a/b/f"), b"x").unwrap();
        std::fs::write(dir.path().join("t/g"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("t/l")).unwrap();
        remove_tree(fd.as_fd(), c"t").unwrap();
        assert!(!dir.path().join("t").exists());
        assert!(std::path::Path::new("/etc").is_dir(), "the symlink's target is untouched");
        remove_tree(fd.as_fd(), c"t").unwrap();
    }

    #[test]
    fn copy_range_appends_the_range_and_stops_at_the_source_end() {
        let (dir, _fd) = root();
        std::fs::write(dir.path().join("src"), b"0123456789").unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let mut dst = File::create(dir.path().join("dst")).unwrap();
        dst.write_all(b"<").unwrap();
        assert_eq!(copy_range(&src, 2, &dst, 3).unwrap(), 3);
        assert_eq!(copy_range(&src, 8, &dst, 100).unwrap(), 2, "short at the source end");
        assert_eq!(copy_by_reading(&src, 0, &dst, 2).unwrap(), 2);
        dst.write_all(b">").unwrap();
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), b"<2348901>");
    }
}
