//! The record of one attachment: what tankd needs to find and undo it after a restart.
//! Kept by the imageapi registry's state file; the attach code fills it in as it goes.

use std::path::PathBuf;

use rpc_schema::imageapi::Attach;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Creating,
    Ready,
}

/// One attachment and what tankd needs to find and undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRec {
    pub id: u64,
    pub phase: Phase,
    /// The request, normalised; the rbd secret is never serialised.
    pub spec: Attach,
    /// The block device (`/dev/loopN`, `/dev/rbdN`, `/dev/zvol/<name>`, a local device).
    #[serde(default)]
    pub device: Option<String>,
    /// The file a loop device holds (loop attachments and the rbd-fuse path).
    #[serde(default)]
    pub backing: Option<PathBuf>,
    #[serde(default)]
    pub krbd_id: Option<u64>,
    /// The kernel rbd devices that existed before this attachment's map, recorded with
    /// the record: after a crash between the map and the record of its id, the device
    /// the map made is the same image's one not in this list (and no record's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub krbd_before: Option<Vec<u64>>,
    /// rbd-fuse's private directory.
    #[serde(default)]
    pub fuse_dir: Option<PathBuf>,
    /// The mount that created this attachment inline and tears it down with itself (if
    /// that mount goes while another is on the attachment, that other one).
    #[serde(default)]
    pub owner: Option<u64>,
}
