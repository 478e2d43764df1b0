//! A file being written in `.tmp/` before it becomes an object or a part. It keeps the
//! MD5 of what went through it (S3's etag) and removes itself unless published, so an
//! aborted PUT leaves nothing behind.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use md5::{Digest, Md5};

use crate::error::{Error, ErrorKind, Result};
use crate::fsops;

pub struct Temp {
    pub(crate) file: File,
    /// The name inside `.tmp/`.
    pub(crate) name: String,
    /// `.tmp/` of the bucket that made it: a temp is only committed there.
    pub(crate) tmp_dir: Arc<OwnedFd>,
    len: u64,
    /// Bytes that went through `Write` (and so through the hasher).
    hashed: u64,
    hasher: Md5,
    /// Set once the name was renamed away: nothing left to unlink.
    published: bool,
}

impl Temp {
    /// Creates `.tmp/<16 random hex>`, private to tankd.
    pub(crate) fn create(tmp_dir: Arc<OwnedFd>) -> Result<Temp> {
        // A name collision is a 2^-64 event, but EEXIST costs only another try.
        for _ in 0..4 {
            let name = random_hex(8)?;
            match fsops::create_file(tmp_dir.as_fd(), &name) {
                Ok(file) => {
                    return Ok(Temp { file, name, tmp_dir, len: 0, hashed: 0, hasher: Md5::new(), published: false });
                }
                Err(nix::errno::Errno::EEXIST) => continue,
                Err(errno) => return Err(Error::sys_internal(errno, "create temp file")),
            }
        }
        Err(Error::new(ErrorKind::Io, "create temp file: no free name"))
    }

    /// Bytes in the file: written and appended.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The MD5 of the bytes written through `Write` so far. Bytes added with
    /// [`Temp::append_from`] are not in it.
    pub fn md5(&self) -> [u8; 16] {
        self.hasher.clone().finalize().into()
    }

    /// Whether every byte in the file went through `Write`, so [`Temp::md5`] is the
    /// MD5 of the whole file.
    pub fn md5_covers_all(&self) -> bool {
        self.hashed == self.len
    }

    /// Appends `len` bytes of `src` from `offset` with copy_file_range (ZFS block cloning
    /// where the pool has it), falling back to read/write on EXDEV/EOPNOTSUPP/ENOSYS/EINVAL.
    /// Returns the number of bytes appended, fewer than `len` when `src` ends first.
    ///
    /// This does NOT update the MD5: reading the bytes back would undo the point of
    /// cloning. Callers that need an etag use the source's known MD5.
    pub fn append_from(&mut self, src: &File, offset: u64, len: u64) -> Result<u64> {
        let copied = fsops::copy_range(src, offset, &self.file, len)
            .map_err(|errno| Error::sys_internal(errno, "append to temp file"))?;
        self.len += copied;
        Ok(copied)
    }

    /// The rename published the file under another name: dropping must not unlink.
    pub(crate) fn mark_published(&mut self) {
        self.published = true;
    }
}

impl Write for Temp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        self.hashed += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.published {
            // Nothing to report to: a name left behind is removed by the sweep at open.
            let _ = fsops::unlink_at(self.tmp_dir.as_fd(), &self.name);
        }
    }
}

impl std::fmt::Debug for Temp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Temp").field("name", &self.name).field("len", &self.len).finish_non_exhaustive()
    }
}

/// `bytes` random bytes as lowercase hex: temp names and upload ids.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::new(ErrorKind::Io, format!("random name: {e}")))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;

    fn tmp_dir() -> (tempfile::TempDir, Arc<OwnedFd>) {
        let dir = tempfile::tempdir().unwrap();
        let fd = nix::fcntl::open(dir.path(), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .unwrap();
        (dir, Arc::new(fd))
    }

    #[test]
    fn md5_is_of_what_was_written_so_far() {
        let (_dir, fd) = tmp_dir();
        let mut temp = Temp::create(fd).unwrap();
        assert_eq!(hex::encode(temp.md5()), "d41d8cd98f00b204e9800998ecf8427e");
        temp.write_all(b"The quick brown fox ").unwrap();
        temp.write_all(b"jumps over the lazy dog").unwrap();
        assert_eq!(hex::encode(temp.md5()), "9e107d9d372bb6826bd81d3542a419d6");
        assert_eq!(temp.len(), 43);
        assert!(temp.md5_covers_all());
    }

    #[test]
    fn append_from_adds_bytes_but_not_to_the_md5() {
        let (dir, fd) = tmp_dir();
        std::fs::write(dir.path().join("src"), b"abcdef").unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let mut temp = Temp::create(fd).unwrap();
        temp.write_all(b"xy").unwrap();
        let md5_before = temp.md5();
        assert_eq!(temp.append_from(&src, 1, 3).unwrap(), 3);
        temp.write_all(b"z").unwrap();
        assert_eq!(temp.len(), 6);
        assert!(!temp.md5_covers_all());
        assert_ne!(temp.md5(), md5_before, "the written byte counts");
        let mut expected = Md5::new();
        expected.update(b"xyz");
        assert_eq!(temp.md5(), <[u8; 16]>::from(expected.finalize()), "the appended bytes do not");
        assert_eq!(std::fs::read(dir.path().join(&temp.name)).unwrap(), b"xybcdz");
    }

    #[test]
    fn a_dropped_temp_removes_its_file_and_names_are_random() {
        let (dir, fd) = tmp_dir();
        let a = Temp::create(fd.clone()).unwrap();
        let b = Temp::create(fd).unwrap();
        assert_eq!(a.name.len(), 16);
        assert!(a.name.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.name, b.name);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        drop(a);
        drop(b);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
