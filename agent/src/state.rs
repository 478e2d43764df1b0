//! What every handler can reach: the resolved config and the ZFS handle scoped to the
//! dataset root. Cheap to clone (Arcs inside).

use std::sync::Arc;
use std::time::Instant;

use zfs_sys_shim::Zfs;

use crate::config::Config;
use crate::imagestore::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub zfs: Zfs,
    pub started: Instant,
    pub store: Store,
    pub imageapi: crate::imageapi::Registry,
    pub containers: crate::containers::Containers,
}
