//! What the control API and the metrics read about volumes: usage, snapshots, pending
//! restores, owners and counts. Reads only; the index's changes are in `store`.

use std::collections::HashMap;

use rpc_schema::control::{PendingRestore, VolumeInfo};
use zfs_sys_shim::{Dataset, DatasetName, DatasetType, Depth, ListQuery};

use super::known::KnownVolume;
use super::store::{OWNER_PROP, VolumeStore, created_at};
use crate::error::{Error, Result};

impl VolumeStore {
    /// Number of volumes, for the metrics: listed without taking the lock, so a scrape
    /// never holds up Docker's calls.
    pub async fn count(&self) -> Result<usize> {
        Ok(self.list_datasets().await?.len())
    }

    /// Total mounts held, for the metrics.
    pub async fn mount_count(&self) -> usize {
        self.known.lock().await.values().map(KnownVolume::mount_count).sum()
    }

    /// Every volume with its usage, snapshots and pending restore, for the control API.
    pub async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let snaps = self.snapshots().await?;
        let mut out = Vec::new();
        for d in self.listed().await? {
            out.push(self.describe(d, &snaps).await?);
        }
        Ok(out)
    }

    /// Snapshot names per volume dataset, oldest first, in one listing.
    async fn snapshots(&self) -> Result<HashMap<String, Vec<String>>> {
        let q = ListQuery::recursive(self.parent("volumes"), DatasetType::Snapshot, &[]).depth(Depth::Max(2));
        let mut by_volume: HashMap<String, Vec<String>> = HashMap::new();
        for s in self.zfs.list(&q).await? {
            if let Some((ds, _)) = s.name.split_once('@') {
                let id = s.name.strip_prefix(&format!("{}/", self.root)).unwrap_or(&s.name).to_owned();
                by_volume.entry(ds.to_owned()).or_default().push(id);
            }
        }
        Ok(by_volume)
    }

    async fn describe(&self, d: Dataset, snaps: &HashMap<String, Vec<String>>) -> Result<VolumeInfo> {
        let name = self.short(&d.name).to_owned();
        let ds: DatasetName = d.name.parse().map_err(|e: zfs_sys_shim::NameError| Error::invalid("name", e.reason))?;
        let pending = super::restore::pending(&self.zfs, &self.root, &ds).await?;
        let created_at = created_at(&d);
        Ok(VolumeInfo {
            mounts: self.mount_ids(&name).await,
            snapshots: snaps.get(&d.name).cloned().unwrap_or_default(),
            pending_restore: pending.map(|(snapshot_id, kept_as)| PendingRestore { snapshot_id, kept_as }),
            name,
            dataset: d.name,
            mountpoint: d.mountpoint.unwrap_or_default(),
            service: d.user.get(OWNER_PROP).cloned(),
            size: d.refquota,
            used: d.used.unwrap_or(0),
            referenced: d.referenced.unwrap_or(0),
            created_at,
        })
    }

    /// Volume names owned by `service`.
    pub async fn owned_by(&self, service: &str) -> Result<Vec<String>> {
        Ok(self
            .list_datasets()
            .await?
            .into_iter()
            .filter(|d| d.user.get(OWNER_PROP).map(String::as_str) == Some(service))
            .map(|d| self.short(&d.name).to_owned())
            .collect())
    }

    /// The owner of a volume, if any (for service-token checks).
    pub async fn owner(&self, name: &str) -> Result<Option<String>> {
        Ok(self.find(name).await?.user.get(OWNER_PROP).cloned())
    }
}
