//! What every dataset capability (images, snapshots, volumes, guest disks) works on:
//! the ZFS handle, the dataset root and the image fetcher. The ImageStore codecs
//! dispatch onto these capabilities; the capabilities do not know about the codecs.

use std::sync::Arc;

use zfs_sys_shim::{DatasetName, Zfs};

use crate::config::Config;
use crate::images::{FetchConfig, Fetcher};

/// Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub zfs: Zfs,
    pub root: DatasetName,
    pub images: Arc<Fetcher>,
}

impl Store {
    /// The handle `config` describes: its dataset root, its fetch limits, the image
    /// spool under its data dir.
    pub fn new(config: &Config, zfs: Zfs) -> Store {
        let fetch = FetchConfig {
            image_server: config.image_server.clone(),
            image_sources: config.image_sources.clone(),
            timeout: config.image_fetch_timeout,
            max_size: config.max_image_size,
            num_fetchers: config.num_fetchers,
            max_pending: config.max_pending,
        };
        Store {
            zfs,
            root: config.dataset_root.clone(),
            images: Arc::new(Fetcher::new(fetch, config.data_dir.join("spool"))),
        }
    }
}
