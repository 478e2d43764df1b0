//! Snapshot streams over HTTP: `zfs send` downloads and `zfs receive` uploads.
//!
//! Names in requests are relative to the agent's dataset root (a full name under the
//! root is accepted too); names in responses are full.

use serde::{Deserialize, Serialize};

/// Response header carrying `zfs send -nP`'s estimate of the stream's size in bytes. It
/// is an estimate: the body is sent chunked, without a Content-Length.
pub const ESTIMATED_SIZE_HEADER: &str = "x-estimated-size";

/// `POST /snapshots/download` (JSON body) or `GET /snapshots/download?…` (query).
/// `{"id": "<snapshot>"}` alone is the mistify request: a plain full stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    /// The snapshot to send, `dataset@snap`. Not needed with `resume_token`.
    #[serde(default)]
    pub id: String,
    /// Base of an incremental stream: a snapshot (`@s1`, `s1`, or `dataset@s1`) or a
    /// bookmark (`#b1` or `dataset#b1`) of the same dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// With `from`: include every snapshot in between (`-I` rather than `-i`).
    #[serde(default, deserialize_with = "flag")]
    pub intermediates: bool,
    /// `-R`: the dataset, its descendants, their snapshots and properties.
    #[serde(default, deserialize_with = "flag")]
    pub replicate: bool,
    /// `-w`: blocks as stored, so encrypted datasets travel without their key.
    #[serde(default, deserialize_with = "flag")]
    pub raw: bool,
    /// `-c`: blocks compressed as on disk.
    #[serde(default, deserialize_with = "flag")]
    pub compressed: bool,
    /// `-L`: blocks larger than 128 KiB kept whole.
    #[serde(default, deserialize_with = "flag")]
    pub large_blocks: bool,
    /// Continue an interrupted transfer: the receiving side's `receive_resume_token`.
    /// The token carries the snapshot and flags, so no other option may be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
}

/// `POST /snapshots/upload?dest=…`: the body is a `zfs send` stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The dataset to receive into.
    pub dest: String,
    /// `-F`: roll `dest` back to the stream's base, destroying what the stream lacks.
    #[serde(default, deserialize_with = "flag")]
    pub force: bool,
    /// Receive an incremental stream as a clone of this snapshot (`-o origin=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// Full name of the dataset received into.
    pub dest: String,
    /// Full name of the snapshot the stream carried, when its header names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Bytes of stream received.
    pub bytes: u64,
}

/// `GET` / `DELETE /snapshots/resume-token?dest=…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeTokenQuery {
    pub dest: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTokenResponse {
    pub dest: String,
    /// Pass as `resume_token` to the sending side's download.
    pub token: String,
}

/// Booleans from JSON (`true`) and from query strings (`true`, `1`, `yes`, or present
/// with no value).
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(t) => match t.as_str() {
            "" | "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(serde::de::Error::custom(format!("{other:?} is not a boolean"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistify_download_request_is_just_an_id() {
        let r: DownloadRequest = serde_json::from_str(r#"{"id":"vols/v1@s1"}"#).unwrap();
        assert_eq!(r, DownloadRequest { id: "vols/v1@s1".into(), ..Default::default() });
        let e = serde_json::from_str::<DownloadRequest>(r#"{"id":"a@b","recursive":true}"#).unwrap_err();
        assert!(e.to_string().contains("recursive"), "{e}");
    }

    #[test]
    fn flags_come_from_json_or_query_text() {
        let r: DownloadRequest = serde_json::from_str(r#"{"id":"a@b","raw":true,"replicate":"1"}"#).unwrap();
        assert!(r.raw && r.replicate && !r.compressed);
        let e = serde_json::from_str::<DownloadRequest>(r#"{"id":"a@b","raw":"maybe"}"#).unwrap_err();
        assert!(e.to_string().contains("maybe"), "{e}");
        let q: UploadQuery = serde_json::from_str(r#"{"dest":"x","force":""}"#).unwrap();
        assert!(q.force);
    }
}

/// `GET /snapshots/points?dataset=…`: the dataset's snapshots and bookmarks, what a node
/// replicating it compares with its own copy (by GUID) to find the next stream's base.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsQuery {
    pub dataset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsResponse {
    /// The full name.
    pub dataset: String,
    /// Oldest first (by creation txg).
    pub points: Vec<SnapshotPoint>,
}

/// A snapshot or a bookmark of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPoint {
    /// The short name, after `@` (a snapshot) or `#` (a bookmark).
    pub name: String,
    /// ZFS's GUID, in decimal: a 64-bit number, which many JSON readers would round.
    pub guid: String,
    pub createtxg: u64,
    pub bookmark: bool,
}
