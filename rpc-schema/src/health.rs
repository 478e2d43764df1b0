//! `GET /health`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The pool is ONLINE.
    Ok,
    /// The pool serves I/O but has lost redundancy (DEGRADED).
    Degraded,
    /// The pool cannot serve I/O (FAULTED, UNAVAIL, SUSPENDED) or cannot be read.
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolHealth {
    pub name: String,
    /// `zpool list -o health`: ONLINE, DEGRADED, FAULTED, ...
    pub health: String,
    /// Bytes.
    pub size: u64,
    pub allocated: u64,
    pub free: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZfsVersions {
    pub userland: String,
    pub kernel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    /// tankd's own version.
    pub version: String,
    pub pool: Option<PoolHealth>,
    pub zfs: Option<ZfsVersions>,
    pub dataset_root: String,
    /// Whether tankd created the pool itself on a file (the embedded default).
    pub embedded_pool: bool,
    pub uptime_seconds: u64,
    /// What went wrong reading the pool or ZFS, when status is `down`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub problem: Option<String>,
}

impl HealthStatus {
    /// From `zpool list -o health`.
    pub fn from_pool_health(health: &str) -> Self {
        match health {
            "ONLINE" => HealthStatus::Ok,
            "DEGRADED" => HealthStatus::Degraded,
            _ => HealthStatus::Down,
        }
    }
}
