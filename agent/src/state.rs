//! What every handler can reach: the resolved config, the ZFS handle scoped to the
//! dataset root, and each capability's handle. Cheap to clone (Arcs inside).

use std::sync::Arc;
use std::time::Instant;

use zfs_sys_shim::Zfs;

use crate::config::Config;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub zfs: Zfs,
    pub started: Instant,
    pub store: Store,
    pub streams: crate::streams::Streams,
    pub imageapi: crate::imageapi::Registry,
    pub containers: crate::containers::Containers,
    /// Docker volumes and the control API: `None` with `zfs = false`.
    pub control: Option<crate::control::Control>,
    pub http: crate::metrics::HttpMetrics,
}
