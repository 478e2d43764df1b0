//! The object-as-file store behind tankd's S3 endpoint: one bucket is one directory
//! tree (a ZFS dataset's mountpoint, or a plain directory), each object one regular
//! file named by its key, its S3 metadata in an extended attribute of that file.
//!
//! ```text
//! <root>/objects/<key>          the only tree holding tenant data; a key "a/b/c" is objects/a/b/c
//! <root>/.tmp/<random>          temp files of PUTs, copies and assemblies in flight
//! <root>/.uploads/<uploadId>/   one dir per multipart upload: xattr with the upload's Meta + key;
//!                               part-00001 … part-10000, each with a PartMeta xattr
//! ```
//!
//! All three live on one filesystem, so publishing an object is a rename (or link) and
//! assembling one from parts can clone blocks with copy_file_range. A write becomes
//! visible only when committed: metadata set, file fsynced, renamed into place, parent
//! directories fsynced. A crash at any point leaves the old object or the new one, and
//! at most a stray file in `.tmp/` that the next [`Bucket::open`] removes.
//!
//! Every path under `objects/` is resolved beneath the bucket root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so neither a key nor a symlink
//! planted inside the dataset reaches outside it.
//!
//! The code is synchronous and blocking (the agent calls it from `spawn_blocking`);
//! [`Bucket`] is `Send + Sync` and every method takes `&self`.

mod error;
mod fsops;
mod key;
mod list;
mod locks;
mod meta;
mod multipart;
mod object;
mod temp;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

pub use error::{Error, ErrorKind, Result};
pub use key::{check_bucket_name, check_key};
pub use list::{Entry, Page};
pub use meta::{META_MAX, Meta};
pub use multipart::{PartInfo, PartMeta, UploadInfo};
pub use object::{Commit, ObjectInfo};
pub use temp::Temp;

use locks::Stripes;

const OBJECTS: &str = "objects";
const TMP: &str = ".tmp";
const UPLOADS: &str = ".uploads";

pub struct Bucket {
    root: PathBuf,
    /// Everything below is reached from this descriptor, never by absolute path.
    root_dir: OwnedFd,
    /// Shared with every [`Temp`] of this bucket, which unlinks itself there on drop.
    tmp_dir: Arc<OwnedFd>,
    uploads_dir: OwnedFd,
    /// Turns per key: a commit's condition check and its rename, or a delete, are one step.
    key_locks: Stripes,
    /// Turns per upload id: a part, a completion and an abort of one upload do not interleave.
    upload_locks: Stripes,
    /// Runs once, between a commit making the key's directories and moving the file
    /// there: where tests play the concurrent delete that removes a directory.
    #[cfg(test)]
    before_move: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Bucket {
    /// Makes the root (and its parents) and the layout inside it; nothing happens to
    /// what already exists.
    pub fn create(root: &Path) -> Result<()> {
        std::fs::create_dir_all(root).map_err(|e| Error::sys_internal(fsops::errno_of(&e), "create bucket root"))?;
        let root_dir = open_root(root)?;
        make_layout(&root_dir)
    }

    /// Opens the bucket at `root` (which must exist), making the layout if missing,
    /// checking that the filesystem stores user xattrs, and removing whatever an
    /// earlier run left in `.tmp/`.
    pub fn open(root: &Path) -> Result<Bucket> {
        let root_dir = open_root(root)?;
        make_layout(&root_dir)?;
        let open_layout_dir = |name: &str| {
            fsops::open_dir(root_dir.as_fd(), name).map_err(|e| Error::sys_internal(e, format!("open bucket: {name}")))
        };
        let tmp_dir = open_layout_dir(TMP)?;
        let uploads_dir = open_layout_dir(UPLOADS)?;
        meta::probe(tmp_dir.as_fd()).map_err(|e| {
            Error::sys_internal(e, "open bucket: the filesystem does not store user extended attributes")
        })?;
        sweep(&root_dir, &tmp_dir)?;
        Ok(Bucket {
            root: root.to_path_buf(),
            root_dir,
            tmp_dir: Arc::new(tmp_dir),
            uploads_dir,
            key_locks: Stripes::new(),
            upload_locks: Stripes::new(),
            #[cfg(test)]
            before_move: std::sync::Mutex::new(None),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the bucket holds no object. Uploads in progress do not count, nor do
    /// empty directories a crash left behind.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.list("", None, None, 1)?.entries.is_empty())
    }

    /// A new file in `.tmp/` to write an object or part into; see [`Bucket::commit`]
    /// and [`Bucket::put_part`].
    pub fn temp(&self) -> Result<Temp> {
        Temp::create(self.tmp_dir.clone())
    }
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(root, flags, Mode::empty()).map_err(|e| Error::sys(e, "open bucket root"))
}

fn make_layout(root_dir: &OwnedFd) -> Result<()> {
    let mut created = false;
    for name in [OBJECTS, TMP, UPLOADS] {
        created |= fsops::make_dir(root_dir.as_fd(), name)
            .map_err(|e| Error::sys_internal(e, format!("make bucket layout: {name}")))?;
        // Something else by that name (a file, a symlink) is not a layout to work in.
        fsops::open_dir(root_dir.as_fd(), name)
            .map_err(|e| Error::sys_internal(e, format!("make bucket layout: {name}")))?;
    }
    if created {
        fsops::sync(root_dir).map_err(|e| Error::sys_internal(e, "make bucket layout: sync"))?;
    }
    Ok(())
}

/// Removes every entry of `.tmp/`: at open, nothing in it belongs to a live request.
fn sweep(root_dir: &OwnedFd, tmp_dir: &OwnedFd) -> Result<()> {
    // Read through an fd of its own: reading advances a directory offset that dups share.
    let listing = fsops::open_dir(root_dir.as_fd(), TMP).map_err(|e| Error::sys_internal(e, "sweep .tmp"))?;
    let entries = fsops::read_dir(listing).map_err(|e| Error::sys_internal(e, "sweep .tmp"))?;
    for (name, _) in entries {
        match fsops::remove_tree(tmp_dir.as_fd(), &name) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(Error::sys_internal(errno, "sweep .tmp")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
