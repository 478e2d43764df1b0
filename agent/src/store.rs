//! What every dataset capability (images, snapshots, volumes, guest disks) works on:
//! the ZFS handle, the dataset root and the image fetcher. The ImageStore codecs
//! dispatch onto these capabilities; the capabilities do not know about the codecs.

use std::sync::Arc;

use zfs_sys_shim::{DatasetName, Zfs};

use crate::images::Fetcher;

/// Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub zfs: Zfs,
    pub root: DatasetName,
    pub images: Arc<Fetcher>,
}
