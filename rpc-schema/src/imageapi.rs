//! imageapi wire types: attachments (block devices), mounts and overlays, under
//! `/imageapi/v1`.
//!
//! Two shapes share these types. The v0.1 routes (`/attach/rbd`, `/mount/rbd`,
//! `/mount/overlay`) take and return the kind-specific objects (`Rbd`, `MountRbd`,
//! `MountOverlay`) exactly as upstream; the general v0.2 routes (`/attach`, `/mount`) take
//! and return `Attach` and `Mount`, tagged by `kind`, with the same kind-specific parts.
//! Ids are numbers assigned by tankd, unique for the life of its state file.
//! Errors are `{"code": <http status>, "message": …, "field"?: …}` as upstream.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Upstream's error model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
    /// The request field that was refused, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Kernel rbd map options, as upstream (`/sys/bus/rbd/add_single_major` options).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RbdOptions {
    /// Ceph user (`name=`), without `client.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's key. Accepted on create, never returned.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ro: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub rw: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclusive: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub lock_on_read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub notrim: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How an rbd image reached the block layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RbdPath {
    /// Kernel rbd (`/dev/rbdN`).
    Krbd,
    /// `rbd-fuse` exposes the image as a file, which a loop device attaches.
    RbdFuse,
}

/// The v0.1 `rbd` object, also the `rbd` part of an `Attach`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Rbd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Kernel rbd device id (N of /dev/rbdN), or the loop number on the userspace path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_file: Option<String>,
    #[serde(default)]
    pub refs: u64,
    /// `host:port` (v1) addresses of the monitors.
    #[serde(default)]
    pub monitors: Vec<String>,
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub options: RbdOptions,
    /// Set by tankd: which path attached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RbdPath>,
}

/// A loop attachment: an image file under an allowed image root, or a file inside a
/// tankd dataset (`dataset` + `file`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoopSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A tankd filesystem dataset, relative to the dataset root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The file inside `dataset`, relative to its mountpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Set by tankd: the backing file the loop device holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    /// Set by tankd: whether direct I/O was possible.
    #[serde(default, skip_serializing_if = "is_false")]
    pub direct_io: bool,
}

/// A zvol attachment: a tankd volume, relative to the dataset root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZvolSpec {
    pub volume: String,
}

/// An existing block device, by path (`/dev/...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachKind {
    Rbd,
    Loop,
    Zvol,
    Local,
}

/// The general (v0.2) attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub kind: AttachKind,
    /// An optional label, unique among attachments; filter with `?name=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_file: Option<String>,
    #[serde(default)]
    pub refs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<Rbd>,
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_: Option<LoopSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zvol: Option<ZvolSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSpec>,
}

impl Attach {
    /// An rbd attachment request, read-only when the rbd options say `ro` (v0.1's form).
    pub fn of_rbd(rbd: Rbd) -> Attach {
        Attach {
            id: None,
            kind: AttachKind::Rbd,
            name: None,
            read_only: rbd.options.ro,
            device_file: None,
            refs: 0,
            rbd: Some(rbd),
            loop_: None,
            zvol: None,
            local: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// Mount an attachment's filesystem.
    Attach,
    /// v0.1's name for an attachment mount of an rbd attachment.
    Rbd,
    Overlay,
    Bind,
}

/// The filesystem on an attachment: v0.2's `attach` part, and v0.1's `mount_rbd`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MountAttach {
    /// An existing attachment …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_id: Option<u64>,
    /// … or one to create with the mount (and to tear down with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<Box<Attach>>,
    pub fs_type: String,
    #[serde(default)]
    pub mount_options: Vec<String>,
}

/// Overlay: lower mounts (top first, as overlayfs lists them), and a writable upper that
/// is either a managed directory or a tankd filesystem dataset (so it can be snapshotted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MountOverlay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    #[serde(default)]
    pub refs: u64,
    /// Mount ids, top first.
    pub lower: Vec<u64>,
    /// A tankd filesystem dataset for the upper layer, relative to the dataset root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_dataset: Option<String>,
    /// Set by tankd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upperdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// A bind mount of a path under the mount root or a tankd dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountBind {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Inside the mount or dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The general (v0.2) mount; v0.1's `/mount` uses the same object with kind `rbd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// v0.1's name for `id`; tankd fills both in answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<u64>,
    pub kind: MountKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Set by tankd, always under its mount root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub refs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<MountAttach>,
    /// v0.1 spelling of `attach` for kind `rbd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<MountRbd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<MountOverlay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<MountBind>,
}

impl Mount {
    /// A request of `kind` with nothing else set; callers fill in their part.
    pub fn new(kind: MountKind) -> Mount {
        Mount {
            id: None,
            mount_id: None,
            kind,
            name: None,
            mountpoint: None,
            read_only: false,
            refs: 0,
            attach: None,
            rbd: None,
            overlay: None,
            bind: None,
        }
    }
}

/// The v0.1 `mount_rbd` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MountRbd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    #[serde(default)]
    pub refs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<Rbd>,
    pub fs_type: String,
    #[serde(default)]
    pub mount_options: Vec<String>,
}

/// Query of the general collections: `GET|DELETE /attach?id=&kind=&name=&force=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub force: Option<bool>,
}

/// Objects found on the host that look like tankd's but are not in its state: reported,
/// never touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unknown {
    /// Loop devices whose backing file is under tankd's roots.
    pub loop_devices: Vec<String>,
    /// Mountpoints under tankd's mount root.
    pub mounts: Vec<String>,
    /// rbd-fuse mounts under tankd's data dir.
    pub rbd_fuse: Vec<String>,
    /// Kernel rbd devices (`/dev/rbdN (pool/image@snap)`) no attachment names.
    #[serde(default)]
    pub rbd_devices: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_secret_is_taken_but_never_given_back() {
        let rbd: Rbd = serde_json::from_value(json!({
            "monitors": ["127.0.0.1:6789"], "pool": "rbd", "image": "sys",
            "options": {"name": "admin", "secret": "AQB…==", "ro": true}
        }))
        .unwrap();
        assert_eq!(rbd.options.secret.as_deref(), Some("AQB…=="));
        let out = serde_json::to_value(&rbd).unwrap();
        assert_eq!(out["options"], json!({"name": "admin", "ro": true}));
    }

    #[test]
    fn v01_mount_id_and_loop_parts_parse() {
        let m: Mount = serde_json::from_value(json!({"mount_id": 7, "kind": "rbd"})).unwrap();
        assert_eq!((m.id.or(m.mount_id), m.kind), (Some(7), MountKind::Rbd));
        let a: Attach = serde_json::from_value(json!({"kind": "loop", "loop": {"path": "/x"}})).unwrap();
        assert_eq!(a.loop_.unwrap().path.as_deref(), Some("/x"));
    }
}
