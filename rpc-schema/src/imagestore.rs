//! The ImageStore wire types, as mistify's clients send and expect them (member names,
//! sizes in MiB, ids relative to the dataset root in requests and full dataset names in
//! responses). tankd's additions are optional members that Go clients ignore.
//!
//! Request types refuse unknown members: a misspelt `destroyMoreRecent` must fail, not
//! be ignored. `Guest` and `Nic` belong to the orchestrator and accept anything.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every ImageStore method, under its `ImageStore.<Method>` wire name.
pub const METHODS: &[&str] = &[
    "RequestImage",
    "ListImages",
    "GetImage",
    "DeleteImage",
    "CloneImage",
    "CreateSnapshot",
    "DeleteSnapshot",
    "GetSnapshot",
    "ListSnapshots",
    "RollbackSnapshot",
    "ListVolumes",
    "CreateVolume",
    "GetVolume",
    "DeleteDataset",
    "VerifyDisks",
    "CreateGuestDisks",
    "DeleteGuestsDisks",
];

/// Names mistify's README used for two methods; accepted as aliases.
pub const ALIASES: &[(&str, &str)] = &[("ListSnapshot", "ListSnapshots"), ("DeleteGuestDisks", "DeleteGuestsDisks")];

/// Lifecycle of a fetched image. Upstream only ever reported `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    Pending,
    Downloading,
    Complete,
    Error,
}

impl ImageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Pending => "pending",
            ImageStatus::Downloading => "downloading",
            ImageStatus::Complete => "complete",
            ImageStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ImageStatus::Pending,
            "downloading" => ImageStatus::Downloading,
            "complete" => ImageStatus::Complete,
            "error" => ImageStatus::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Image {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Full dataset name of the image (filesystem or zvol).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub volume: Option<String>,
    /// Full name of the snapshot guest disks are cloned from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snapshot: Option<String>,
    /// MiB.
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<ImageStatus>,
    // tankd additions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    /// Hex SHA-256 of the bytes as served, when the server gave one and they matched.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes_expected: Option<u64>,
    /// Seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Volume {
    pub id: String,
    /// MiB.
    pub size: u64,
    pub device: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    pub id: String,
    /// `written`, in MiB.
    pub size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub dest: String,
    /// Ignored by upstream; tankd uses it as the URL when given (relative URLs get the
    /// configured image server prepended).
    #[serde(default)]
    pub source: String,
    /// tankd: return at once instead of blocking until the fetch ends.
    #[serde(rename = "async", default)]
    pub is_async: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageResponse {
    pub images: Vec<Image>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    #[serde(default)]
    pub id: String,
    /// MiB.
    #[serde(default)]
    pub size: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeResponse {
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub dest: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(rename = "destroyMoreRecent", default)]
    pub destroy_more_recent: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotResponse {
    pub snapshots: Vec<Snapshot>,
}

/// Every member is always emitted, as upstream (no omitempty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    #[serde(default)]
    pub bus: String,
    #[serde(default)]
    pub device: String,
    /// MiB.
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub volume: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Nic {
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub name: String,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub model: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub mac: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub netmask: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub device: String,
    #[serde(default)]
    pub vlans: Option<Vec<i64>>,
}

/// A guest as the orchestrator knows it; ImageStore reads `id` and `disks` and hands
/// the rest back untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Guest {
    pub id: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nics: Option<Vec<Nic>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub disks: Option<Vec<Disk>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vnc: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestRequest {
    pub guest: Option<Guest>,
    #[serde(default)]
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub args: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuestResponse {
    pub guest: Option<Guest>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry: Option<i64>,
}

/// The whole ImageStore schema as one JSON Schema document: `$defs` holds every type,
/// and `methods` maps each method to its request and response types.
pub fn json_schema() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    // Each call registers the type (and what it contains) among the definitions.
    generator.subschema_for::<ImageRequest>();
    generator.subschema_for::<ImageResponse>();
    generator.subschema_for::<VolumeRequest>();
    generator.subschema_for::<VolumeResponse>();
    generator.subschema_for::<SnapshotRequest>();
    generator.subschema_for::<SnapshotResponse>();
    generator.subschema_for::<GuestRequest>();
    generator.subschema_for::<GuestResponse>();
    let defs = serde_json::Value::Object(generator.definitions().clone());
    let io = |req: &str, resp: &str| serde_json::json!({"params": format!("#/$defs/{req}"), "result": format!("#/$defs/{resp}")});
    let methods: serde_json::Map<String, serde_json::Value> = METHODS
        .iter()
        .map(|m| {
            let v = match *m {
                "RequestImage" | "ListImages" | "GetImage" | "DeleteImage" | "CloneImage" => {
                    io("ImageRequest", "ImageResponse")
                }
                "ListVolumes" | "CreateVolume" | "GetVolume" | "DeleteDataset" => io("VolumeRequest", "VolumeResponse"),
                "VerifyDisks" | "CreateGuestDisks" | "DeleteGuestsDisks" => io("GuestRequest", "GuestResponse"),
                _ => io("SnapshotRequest", "SnapshotResponse"),
            };
            (format!("ImageStore.{m}"), v)
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tankd ImageStore",
        "$defs": defs,
        "methods": methods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in schema is what the types generate. Regenerate with
    /// `UPDATE_SCHEMA=1 cargo test -p rpc-schema`.
    #[test]
    fn checked_in_schema_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/imagestore.json");
        let generated = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(checked_in == generated, "{} is stale: run UPDATE_SCHEMA=1 cargo test -p rpc-schema", path.display());
    }

    #[test]
    fn disk_emits_every_member_and_requests_tolerate_missing_ones() {
        let d = serde_json::to_value(Disk { size: 2048, ..Default::default() }).unwrap();
        assert_eq!(d, serde_json::json!({"bus":"","device":"","size":2048,"volume":"","image":"","source":""}));
        let r: SnapshotRequest = serde_json::from_str(r#"{"id":"guests/g1/disk-0","destroyMoreRecent":true}"#).unwrap();
        assert!(r.destroy_more_recent && !r.recursive);
        let i: ImageRequest = serde_json::from_str(r#"{"id":"x","async":true}"#).unwrap();
        assert!(i.is_async);
    }

    #[test]
    fn image_wire_shape() {
        let img = Image {
            id: "u1".into(),
            volume: Some("tank/images/u1".into()),
            snapshot: Some("tank/images/u1@image".into()),
            size: 1,
            status: Some(ImageStatus::Complete),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&img).unwrap(),
            serde_json::json!({"id":"u1","type":"","volume":"tank/images/u1","snapshot":"tank/images/u1@image","size":1,"status":"complete"})
        );
    }
}
