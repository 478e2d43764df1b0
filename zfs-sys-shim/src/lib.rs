//! `zfs-sys-shim`: the only code in tankd that talks to ZFS.
//!
//! A typed, async wrapper over the OpenZFS 2.1–2.3 `zfs` and `zpool` commands. Names are
//! validated newtypes ([`name`]), every command is an argument vector run by one helper
//! ([`command`]), and failures come back as typed [`Error`]s that name the target and
//! the command line.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zfs_sys_shim::Error> {
//! use zfs_sys_shim::{Zfs, Roots, ListQuery, DatasetType, Prop};
//! let root = "tank/tankd".parse()?;
//! let zfs = Zfs::new(Roots::new(vec![root]));
//! let snaps = zfs
//!     .list(&ListQuery::recursive("tank/tankd".parse()?, DatasetType::Snapshot, &[Prop::Used]))
//!     .await?;
//! # Ok(()) }
//! ```

mod command;
pub mod error;
pub mod list;
pub mod name;
pub mod pool;
pub mod receive;
pub mod send;
pub mod stats;
pub mod write;
pub mod zvol;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{Detail, Error, ErrorKind};
pub use list::{Dataset, DatasetType, Depth, ListQuery, Prop};
pub use name::{BookmarkName, DatasetName, HoldTag, NameError, PoolName, Roots, SnapshotName, UserProp, ZfsName};
pub use pool::{PoolInfo, ZfsVersion};
pub use receive::{ReceiveArgs, ReceiveOutcome};
pub use send::{SendArgs, SendFrom, SendSource, SendStream};
pub use write::{DestroyOptions, VolumeOptions};

use command::Invocation;

/// Handle to the ZFS command-line tools, scoped to a set of dataset roots.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Zfs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    zfs_bin: PathBuf,
    zpool_bin: PathBuf,
    roots: Roots,
}

impl Zfs {
    /// Use `zfs` and `zpool` from `PATH`.
    pub fn new(roots: Roots) -> Self {
        Self::with_binaries(roots, "zfs".into(), "zpool".into())
    }

    pub fn with_binaries(roots: Roots, zfs_bin: PathBuf, zpool_bin: PathBuf) -> Self {
        Zfs { inner: Arc::new(Inner { zfs_bin, zpool_bin, roots }) }
    }

    pub fn roots(&self) -> &Roots {
        &self.inner.roots
    }

    /// A `zfs` invocation about `target`, after checking that it lies within the roots.
    fn zfs(&self, target: &dyn ZfsName) -> Result<Invocation, Error> {
        self.check_root(target)?;
        Ok(Invocation::new(&self.inner.zfs_bin, target.as_str()))
    }

    fn zpool(&self, target: &str) -> Invocation {
        Invocation::new(&self.inner.zpool_bin, target)
    }

    fn check_root(&self, target: &dyn ZfsName) -> Result<(), Error> {
        if self.inner.roots.contains(&target.owning_dataset()) {
            Ok(())
        } else {
            Err(Error::OutsideRoots { target: target.as_str().to_owned(), roots: self.inner.roots.describe() })
        }
    }
}
