//! The archive routes on the control listener.
//!
//! | route | who |
//! |---|---|
//! | `GET /archives[?serviceId=]` | the node's token (all, or one service's), a service's (its own, naming itself) |
//! | `GET /archives/{id}/manifest`, `GET /archives/{id}/objects/{sha256}` | node, or the owning service |
//! | `DELETE /archives/{id}[?force=true]` | node, or the owning service |
//! | `POST /archives/{id}/replicate {target}` | node, or the owning service |
//! | `POST /archives/receive {manifest}` → missing objects; `PUT /archives/{id}/objects/{sha256}`; `POST /archives/{id}/complete` | node, or the service the manifest names |
//! | `POST /archives {snapshotId, incremental}`, `POST /archives/restore` | node, or the owning service (ZFS only) |
//!
//! A service's token that does not own the archive gets 401, as a missing token does:
//! it learns nothing, not even whether the archive exists.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest};
use crate::control::{Caller, Control};
use crate::error::{Error, Result};
use crate::wire::{ApiError, json};

/// Largest object a client may upload: a chunk plus age's overhead, with room.
pub const MAX_OBJECT_BYTES: usize = super::pack::CHUNK_SIZE + (1 << 20);
/// Object uploads served at once (each is held in memory until its SHA-256 is checked);
/// more wait.
pub const MAX_OBJECT_UPLOADS: usize = 4;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSummary {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub dataset: String,
    pub snapshot: String,
    pub guid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub encrypted: bool,
    pub objects: usize,
    pub original_size: u64,
    pub stored_size: u64,
    pub created_at: u64,
}

impl From<&Manifest> for ArchiveSummary {
    fn from(m: &Manifest) -> Self {
        ArchiveSummary {
            id: m.id.clone(),
            service: m.service.clone(),
            dataset: m.dataset.clone(),
            snapshot: m.snapshot.clone(),
            guid: m.guid.clone(),
            parent_id: m.parent_id.clone(),
            encrypted: m.encryption.is_some(),
            objects: m.objects.len(),
            original_size: m.original_size,
            stored_size: m.stored_size,
            created_at: m.created_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveList {
    pub archives: Vec<ArchiveSummary>,
    pub targets: Vec<String>,
}

/// The archive `id`, if the caller may reach it. Decided before anything is said
/// about the archive: another service's token gets the same 401 as no token.
fn reachable(c: &Control, caller: &Caller, id: &str) -> Result<Manifest> {
    manifest::check_id("id", id)?;
    match caller {
        Caller::Anonymous => Err(Error::unauthorized()),
        Caller::Admin => c.archives.repo.manifest(id),
        Caller::Bearer(_) => {
            let m = c.archives.repo.manifest(id).map_err(|_| Error::unauthorized())?;
            c.require_service(caller, m.service.as_deref())?;
            Ok(m)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    service_id: Option<String>,
}

/// `GET /archives[?serviceId=<svc>]`: the node's token sees every archive (or one
/// service's); a service's token names its service and sees its own. A token that is
/// neither gets 401, as no token does: it is told nothing, not even the target names.
pub async fn list(
    State(c): State<Control>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<ArchiveList>, ApiError> {
    let caller = c.token_caller(&headers)?;
    if let Some(svc) = &q.service_id {
        crate::docker::store::check_name("serviceId", svc)?;
    }
    if !matches!(caller, Caller::Admin) {
        let Some(svc) = q.service_id.as_deref() else {
            return Err(ApiError::from(Error::unauthorized()));
        };
        c.require_service(&caller, Some(svc))?;
    }
    c.archives.ready().await?;
    let archives = c
        .archives
        .repo
        .manifests()?
        .iter()
        .filter(|m| q.service_id.is_none() || m.service == q.service_id)
        .map(ArchiveSummary::from)
        .collect();
    Ok(Json(ArchiveList { archives, targets: c.archives.target_names() }))
}

pub async fn get_manifest(
    State(c): State<Control>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Manifest>, ApiError> {
    let caller = c.token_caller(&headers)?;
    c.archives.ready().await?;
    Ok(Json(reachable(&c, &caller, &id)?))
}

/// `GET /archives/{id}/objects/{sha256}`: one stored object as it is (encrypted).
pub async fn get_object(
    State(c): State<Control>,
    headers: HeaderMap,
    Path((id, sha)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let caller = c.token_caller(&headers)?;
    c.archives.ready().await?;
    let m = reachable(&c, &caller, &id)?;
    manifest::check_sha256("sha256", &sha)?;
    let o = m.object(&sha).ok_or_else(|| Error::not_found(format!("archive {id} has no object {sha}")))?;
    let path = c.archives.repo.object_path(&sha);
    let file = tokio::fs::File::open(&path).await.map_err(|e| Error::not_found(format!("object {sha}: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, o.stored_size.to_string()),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub deleted: Vec<String>,
}

pub async fn delete(
    State(c): State<Control>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let caller = c.token_caller(&headers)?;
    c.archives.ready().await?;
    reachable(&c, &caller, &id)?;
    Ok(Json(Deleted { deleted: c.archives.delete(&id, q.force)? }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateRequest {
    target: String,
}

pub async fn replicate(
    State(c): State<Control>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<super::Replicated>, ApiError> {
    let caller = c.token_caller(&headers)?;
    c.archives.ready().await?;
    let req: ReplicateRequest = json(&bytes)?;
    reachable(&c, &caller, &id)?;
    Ok(Json(c.archives.replicate(&id, &req.target).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    manifest: Manifest,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivePrepared {
    pub archive_id: String,
    /// The objects this node lacks: upload these, then complete.
    pub missing: Vec<String>,
}

/// `POST /archives/receive {manifest}`: the first step of pushing an archive here
/// (cloudly's prepareBackupReplication): what this node lacks of it.
pub async fn receive(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ReceivePrepared>, ApiError> {
    let caller = c.token_caller(&headers)?;
    c.archives.ready().await?;
    let req: ReceiveRequest = json(&bytes)?;
    let m = req.manifest;
    m.check()?;
    c.require_service(&caller, m.service.as_deref())?;
    if let Ok(m) = c.archives.repo.manifest(&m.id) {
        return Ok(Json(ReceivePrepared { archive_id: m.id, missing: Vec::new() }));
    }
    c.archives.repo.put_pending(&m)?;
    let missing = m
        .objects
        .iter()
        .filter(|o| c.archives.repo.object_size(&o.sha256) != Some(o.stored_size))
        .map(|o| o.sha256.clone())
        .collect();
    Ok(Json(ReceivePrepared { archive_id: m.id, missing }))
}

/// The pending manifest `id` (from `receive`), if the caller may push it.
fn pending(c: &Control, caller: &Caller, id: &str) -> Result<Manifest> {
    manifest::check_id("id", id)?;
    let m = c.archives.repo.pending(id).map_err(|e| match caller {
        Caller::Admin => e,
        _ => Error::unauthorized(),
    })?;
    c.require_service(caller, m.service.as_deref())?;
    Ok(m)
}

/// `PUT /archives/{id}/objects/{sha256}`: one object of a pending archive, stored only
/// if it is the size and SHA-256 its manifest says (uploadBackupArchiveObject).
pub async fn put_object(
    State(c): State<Control>,
    headers: HeaderMap,
    Path((id, sha)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = c.token_caller(&headers)?;
    c.archives.ready().await?;
    let m = pending(&c, &caller, &id)?;
    manifest::check_sha256("sha256", &sha)?;
    let o = m.object(&sha).ok_or_else(|| Error::invalid("sha256", format!("archive {id} names no object {sha}")))?;
    if bytes.len() as u64 != o.stored_size || hex::encode(Sha256::digest(&bytes)) != sha {
        return Err(ApiError::from(Error::invalid(
            "body",
            format!("object {sha}: {} bytes that are not the {} bytes with that SHA-256", bytes.len(), o.stored_size),
        )));
    }
    let repo = c.archives.repo.clone();
    tokio::task::spawn_blocking(move || repo.put_object(&sha, &bytes))
        .await
        .map_err(|e| Error::internal(format!("storing an object: {e}")))??;
    Ok(Json(serde_json::json!({})))
}

/// `POST /archives/{id}/complete`: every object present and checked, the manifest
/// written: the archive exists (completeBackupReplication).
pub async fn complete(
    State(c): State<Control>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ArchiveSummary>, ApiError> {
    let caller = c.token_caller(&headers)?;
    c.archives.ready().await?;
    if let Ok(m) = reachable(&c, &caller, &id) {
        return Ok(Json(ArchiveSummary::from(&m)));
    }
    let m = pending(&c, &caller, &id)?;
    let archives = c.archives.clone();
    let m = tokio::task::spawn_blocking(move || -> Result<Manifest> {
        archives.verify_objects(&m)?;
        if let Some(parent) = &m.parent_id {
            archives.repo.manifest(parent).map_err(|_| {
                Error::conflict(format!("archive {} applies on {parent}, which this node lacks: send that first", m.id))
            })?;
        }
        archives.repo.put_manifest(&m)?;
        archives.repo.drop_pending(&m.id);
        Ok(m)
    })
    .await
    .map_err(|e| Error::internal(format!("completing an archive: {e}")))??;
    Ok(Json(ArchiveSummary::from(&m)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    /// `services/<svc>@<name>`, `volumes/<v>@<name>`: as the snapshot routes answer.
    snapshot_id: String,
    #[serde(default)]
    incremental: bool,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
}

/// The snapshot a `snapshotId` names and the service owning it (`None`: the node's).
async fn snapshot_of(c: &Control, id: &str) -> Result<(zfs_sys_shim::SnapshotName, Option<String>)> {
    let (rel, short) =
        id.split_once('@').ok_or_else(|| Error::invalid("snapshotId", "a snapshot id is <dataset>@<snapshot>"))?;
    crate::docker::store::check_snapshot_name("snapshotId", short)?;
    let owner = match rel.split('/').collect::<Vec<_>>().as_slice() {
        ["services", svc, ..] => {
            crate::docker::store::check_name("snapshotId", svc)?;
            Some((*svc).to_owned())
        }
        ["volumes", v] => c.volumes.owner(v).await.ok().flatten(),
        _ => None,
    };
    let ds = c.root.join(rel).map_err(|e| Error::invalid("snapshotId", e.reason))?;
    let snap = ds.snapshot(short).map_err(|e| Error::invalid("snapshotId", e.reason))?;
    Ok((snap, owner))
}

/// `POST /archives {snapshotId, incremental?, tags?}`: the snapshot archived here.
pub async fn create(State(c): State<Control>, headers: HeaderMap, bytes: Bytes) -> Result<Json<Manifest>, ApiError> {
    let caller = c.token_caller(&headers)?;
    let req: CreateRequest = json(&bytes)?;
    let (snap, owner) = snapshot_of(&c, &req.snapshot_id).await?;
    c.require_service(&caller, owner.as_deref())?;
    if req.tags.len() > 32 || req.tags.iter().any(|(k, v)| k.len() > 128 || v.len() > 1024) {
        return Err(ApiError::from(Error::invalid("tags", "at most 32 tags, keys of 128 and values of 1024 bytes")));
    }
    let base = if req.incremental { super::Base::Required } else { super::Base::Full };
    let m = c.archives.archive_snapshot(&c.zfs, &c.root, &snap, owner, base, req.tags).await?;
    Ok(Json(m))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    archive_id: String,
    /// Fetch the chain from this target (what a new node does); else this node's.
    #[serde(default)]
    target: Option<String>,
    /// The new dataset, relative to the dataset root (`services/<svc>/restored`).
    into: String,
}

/// `POST /archives/restore {archiveId, target?, into}`.
pub async fn restore(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = c.token_caller(&headers)?;
    let req: RestoreRequest = json(&bytes)?;
    manifest::check_id("archiveId", &req.archive_id)?;
    if let Some(t) = &req.target {
        super::target::check_target_name(t).map_err(|e| e.with_field("target"))?;
    }
    let into = c.root.join(&req.into).map_err(|e| Error::invalid("into", e.reason))?;
    if !matches!(caller, Caller::Admin) {
        // A service restores its own archive, already here, into its own dataset.
        let m = reachable(&c, &caller, &req.archive_id)?;
        let svc = m.service.as_deref().unwrap_or_default();
        if !req.into.starts_with(&format!("services/{svc}/")) {
            return Err(ApiError::from(Error::invalid("into", format!("a service restores under services/{svc}/"))));
        }
    }
    let plan = c.archives.prepare_restore(&req.archive_id, req.target.as_deref()).await?;
    let received = c.archives.restore_into(&c.zfs, plan, &into).await?;
    Ok(Json(serde_json::json!({ "into": req.into, "snapshots": received })))
}
