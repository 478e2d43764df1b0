//! The control API (corestore's routes, on their own listener) and the Docker
//! VolumeDriver protocol. corestore's member names are camelCase; Docker's are
//! PascalCase. Both are kept exactly, because existing clients send and read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a service asks to be provisioned with, beyond its own dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// A MongoDB-wire database endpoint (not on this node yet: refused as unavailable).
    Database,
    /// An S3 endpoint (not on this node yet: refused as unavailable).
    Objectstorage,
    /// A filesystem dataset for the service (always made; naming it is allowed).
    Filesystem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionRequest {
    pub service_id: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Quota of the service's dataset, e.g. `10G` (unset: no quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionResponse {
    pub service_id: String,
    pub service_name: String,
    /// True when this call made the service; false when it already existed.
    pub created: bool,
    /// Full name of the service's dataset.
    pub dataset: String,
    pub mountpoint: String,
    /// Environment variables for the service's containers, credentials included.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeprovisionRequest {
    pub service_id: String,
    /// Destroy the service's volumes even while Docker has them mounted.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeprovisionResponse {
    pub service_id: String,
    /// Datasets destroyed by this call (empty when there was nothing left to remove).
    pub removed: Vec<String>,
}

/// A managed volume, as `GET /volumes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeInfo {
    pub name: String,
    pub dataset: String,
    pub mountpoint: String,
    /// The owning service, when one was given at creation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
    /// `refquota` in bytes, when the volume has a size.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    pub used: u64,
    pub referenced: u64,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Docker mount ids currently holding the volume.
    pub mounts: Vec<String>,
    /// Snapshot ids, oldest first.
    pub snapshots: Vec<String>,
    /// A restore awaiting confirm or undo.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pending_restore: Option<PendingRestore>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRestore {
    /// The snapshot the volume was restored to.
    pub snapshot_id: String,
    /// Where the pre-restore state is kept until confirm or undo.
    pub kept_as: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeList {
    pub volumes: Vec<VolumeInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSnapshotRequest {
    pub name: String,
    pub snapshot_name: String,
    /// Also archive the snapshot (incremental on the newest archived one when there is
    /// one); its id is in the answer's `tags.archiveId`.
    #[serde(default)]
    pub archive: bool,
}

/// One snapshot of one resource, in corestore's shape (`/resources/restore` takes these
/// back). Sizes in bytes: `originalSize` is what the resource referenced, `storedSize`
/// what the snapshot holds on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSnapshot {
    pub capability: String,
    pub resource_name: String,
    pub snapshot_id: String,
    #[serde(default)]
    pub original_size: u64,
    #[serde(default)]
    pub stored_size: u64,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeRestoreRequest {
    pub name: String,
    pub snapshot_id: String,
    /// Restore even while Docker has the volume mounted (its containers keep the old data
    /// until they remount).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreResponse {
    pub name: String,
    pub snapshot_id: String,
    /// Where the pre-restore state is kept until `/volumes/restore/confirm` or `/undo`.
    pub kept_as: String,
}

/// `/volumes/restore/confirm` and `/volumes/restore/undo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeName {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcesSnapshotRequest {
    pub service_id: String,
    pub snapshot_name: String,
    /// Also archive each snapshot (as `VolumeSnapshotRequest::archive`).
    #[serde(default)]
    pub archive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSnapshotResponse {
    pub service_id: String,
    pub snapshots: Vec<ResourceSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcesRestoreRequest {
    pub service_id: String,
    pub snapshots: Vec<ResourceSnapshot>,
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesRestoreResponse {
    pub service_id: String,
    pub restored: Vec<VolumeRestoreResponse>,
}

/// `/resources/restore/confirm` and `/resources/restore/undo`: every restore of the
/// service's datasets awaiting one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceId {
    pub service_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesRestoreStepResponse {
    pub service_id: String,
    /// The datasets confirmed or undone, relative to the dataset root.
    pub datasets: Vec<String>,
}

/// Docker's legacy VolumeDriver protocol. Requests may come without a Content-Type and
/// with members Docker adds over the years, so unknown members are ignored here.
pub mod docker {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    /// The media type every plugin reply carries.
    pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.1+json";

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Request {
        #[serde(rename = "Name", default)]
        pub name: String,
        #[serde(rename = "Opts", default)]
        pub opts: Option<BTreeMap<String, String>>,
        #[serde(rename = "ID", default)]
        pub id: String,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Volume {
        #[serde(rename = "Name")]
        pub name: String,
        #[serde(rename = "Mountpoint", skip_serializing_if = "String::is_empty", default)]
        pub mountpoint: String,
        /// RFC 3339.
        #[serde(rename = "CreatedAt", skip_serializing_if = "String::is_empty", default)]
        pub created_at: String,
        #[serde(rename = "Status", skip_serializing_if = "BTreeMap::is_empty", default)]
        pub status: BTreeMap<String, serde_json::Value>,
    }

    /// Every reply: `Err` is empty on success; the other members are filled per call.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Reply {
        #[serde(rename = "Err")]
        pub err: String,
        #[serde(rename = "Mountpoint", skip_serializing_if = "Option::is_none", default)]
        pub mountpoint: Option<String>,
        #[serde(rename = "Volume", skip_serializing_if = "Option::is_none", default)]
        pub volume: Option<Volume>,
        #[serde(rename = "Volumes", skip_serializing_if = "Option::is_none", default)]
        pub volumes: Option<Vec<Volume>>,
        #[serde(rename = "Capabilities", skip_serializing_if = "Option::is_none", default)]
        pub capabilities: Option<serde_json::Value>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corestore_shapes_are_camel_case() {
        let req: ProvisionRequest = serde_json::from_str(
            r#"{"serviceId":"svc-123","serviceName":"api","capabilities":["database","objectstorage"]}"#,
        )
        .unwrap();
        assert_eq!(req.capabilities, vec![Capability::Database, Capability::Objectstorage]);
        assert!(serde_json::from_str::<ProvisionRequest>(r#"{"serviceId":"a","bogus":1}"#).is_err());
        let snap: ResourceSnapshot = serde_json::from_str(
            r#"{"capability":"volume","resourceName":"db","snapshotId":"x","originalSize":1,"storedSize":1,"createdAt":1,"tags":{}}"#,
        )
        .unwrap();
        assert_eq!(serde_json::to_value(&snap).unwrap()["resourceName"], "db");
    }

    #[test]
    fn docker_reply_carries_only_what_was_filled() {
        let r = docker::Reply { mountpoint: Some("/m".into()), ..Default::default() };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"Err":"","Mountpoint":"/m"}"#);
        let req: docker::Request = serde_json::from_str(r#"{"Name":"v1","ID":"abc","Extra":true}"#).unwrap();
        assert_eq!((req.name.as_str(), req.id.as_str(), req.opts), ("v1", "abc", None));
    }
}
