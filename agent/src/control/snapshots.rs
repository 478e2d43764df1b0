//! Volumes and snapshots through the control API: `GET /volumes`, `/volumes/snapshot`,
//! `/volumes/restore` (+ `/confirm`, `/undo`), `/resources/snapshot` and
//! `/resources/restore`.
//!
//! A snapshot id is the snapshot's name relative to the dataset root
//! (`volumes/v1@before-deploy`, `services/svc-1@backup-1`): stable, readable, and
//! resolvable without a lookup table.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use rpc_schema::control::{
    Capability, ResourceSnapshot, ResourcesRestoreRequest, ResourcesRestoreResponse, ResourcesSnapshotRequest,
    ResourcesSnapshotResponse, VolumeList, VolumeName, VolumeRestoreRequest, VolumeRestoreResponse,
    VolumeSnapshotRequest,
};
use zfs_sys_shim::{DatasetName, DatasetType, DestroyOptions, ListQuery, Prop, SnapshotName};

use super::{Control, unavailable};
use crate::docker::restore;
use crate::docker::store::{check_name, check_snapshot_name};
use crate::error::{Error, Result};
use crate::wire::ApiError;
use crate::wire::json;

pub async fn list_volumes(State(c): State<Control>, headers: HeaderMap) -> Result<Json<VolumeList>, ApiError> {
    c.require_admin(&c.caller(&headers))?;
    Ok(Json(VolumeList { volumes: c.volumes.list().await? }))
}

/// The snapshot id of a full snapshot name.
fn snapshot_id(c: &Control, snap: &SnapshotName) -> String {
    snap.as_str().strip_prefix(&format!("{}/", c.root)).unwrap_or(snap.as_str()).to_owned()
}

async fn describe(c: &Control, snap: &SnapshotName, capability: &str, resource: &str) -> Result<ResourceSnapshot> {
    let s = c.zfs.get(snap, &[Prop::Referenced, Prop::Written, Prop::Creation, Prop::Guid]).await?;
    let mut tags = BTreeMap::new();
    tags.insert("guid".to_owned(), s.guid.unwrap_or(0).to_string());
    Ok(ResourceSnapshot {
        capability: capability.to_owned(),
        resource_name: resource.to_owned(),
        snapshot_id: snapshot_id(c, snap),
        original_size: s.referenced.unwrap_or(0),
        stored_size: s.written.unwrap_or(0),
        created_at: s.creation.unwrap_or(0),
        tags,
    })
}

/// A `{name, snapshotName}` body checked, its caller allowed: the volume's dataset and
/// the snapshot named.
async fn volume_snapshot_request(
    c: &Control,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<(VolumeSnapshotRequest, DatasetName, SnapshotName)> {
    let caller = c.token_caller(headers)?;
    let req: VolumeSnapshotRequest = json(bytes)?;
    let ds = c.volume(&req.name)?;
    check_snapshot_name("snapshotName", &req.snapshot_name)?;
    c.require_volume_access(&caller, &req.name).await?;
    let snap = ds.snapshot(&req.snapshot_name).map_err(|e| Error::invalid("snapshotName", e.reason))?;
    Ok((req, ds, snap))
}

/// A `{serviceId, snapshotName}` body checked, its caller allowed.
fn service_snapshot_request(c: &Control, headers: &HeaderMap, bytes: &Bytes) -> Result<ResourcesSnapshotRequest> {
    let caller = c.token_caller(headers)?;
    let req: ResourcesSnapshotRequest = json(bytes)?;
    check_name("serviceId", &req.service_id)?;
    check_snapshot_name("snapshotName", &req.snapshot_name)?;
    c.require_service(&caller, Some(&req.service_id))?;
    Ok(req)
}

pub async fn snapshot_volume(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ResourceSnapshot>, ApiError> {
    let (req, ds, snap) = volume_snapshot_request(&c, &headers, &bytes).await?;
    // A volume a service owns counts towards that service's bound; one without an
    // owner (made by the node's operator) towards its own.
    let counted = match c.volumes.owner(&req.name).await? {
        Some(service) => service_datasets(&c, &service).await?,
        None => vec![ds.clone()],
    };
    check_snapshot_room(&c, &req.name, &counted, 1).await?;
    c.zfs.snapshot(std::slice::from_ref(&snap), false, &[]).await?;
    Ok(Json(describe(&c, &snap, "volume", &req.name).await?))
}

/// Refuse (429) a request that would take `whose` past `max_service_snapshots`,
/// counting the snapshots of `datasets` in one listing.
async fn check_snapshot_room(c: &Control, whose: &str, datasets: &[DatasetName], adding: usize) -> Result<()> {
    let held = snapshots_of(c, datasets).await?.len();
    if held + adding > c.max_service_snapshots {
        return Err(Error::too_many(format!(
            "{whose} holds {held} snapshots and may hold {} (max_service_snapshots); destroy some first",
            c.max_service_snapshots
        )));
    }
    Ok(())
}

/// The names of the snapshots of `datasets` (not of their children), in one listing.
async fn snapshots_of(c: &Control, datasets: &[DatasetName]) -> Result<Vec<String>> {
    let all = c.zfs.list(&ListQuery::recursive(c.root.clone(), DatasetType::Snapshot, &[])).await?;
    Ok(all
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.split_once('@').is_some_and(|(ds, _)| datasets.iter().any(|d| d.as_str() == ds)))
        .collect())
}

fn no_such_snapshot(whose: &str, name: &str) -> Error {
    Error::not_found(format!("{whose} has no snapshot named {name}"))
}

/// `POST /volumes/snapshot/destroy {name, snapshotName}`: the way back under the bound.
pub async fn destroy_volume_snapshot(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (req, _, snap) = volume_snapshot_request(&c, &headers, &bytes).await?;
    // zfs destroy of a missing snapshot succeeds (the shim makes destroy idempotent):
    // ask first, so the answer says what really went.
    if !c.zfs.exists(&snap).await? {
        return Err(ApiError::from(no_such_snapshot(&format!("volume {}", req.name), &req.snapshot_name)));
    }
    c.zfs.destroy(&snap, DestroyOptions::default()).await?;
    Ok(Json(serde_json::json!({ "destroyed": [snapshot_id(&c, &snap)] })))
}

/// A snapshot id for `live`: its full relative id, or just the part after `@`.
fn resolve_snapshot(c: &Control, live: &DatasetName, field: &str, id: &str) -> Result<SnapshotName> {
    let (ds, short) = match id.split_once('@') {
        Some((ds, short)) => (Some(ds), short),
        None => (None, id),
    };
    check_snapshot_name(field, short)?;
    if let Some(ds) = ds {
        let named = c.root.join(ds).map_err(|e| Error::invalid(field, e.reason))?;
        if &named != live {
            return Err(Error::invalid(field, format!("{id:?} is not a snapshot of {live}")));
        }
    }
    live.snapshot(short).map_err(|e| Error::invalid(field, e.reason))
}

fn busy(name: &str, ids: &[String]) -> Error {
    Error::busy(format!(
        "volume {name} is mounted by containers ({}); their mounts would keep the old data. Stop them, or force",
        ids.join(", ")
    ))
}

pub async fn restore_volume(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<VolumeRestoreResponse>, ApiError> {
    let caller = c.token_caller(&headers)?;
    let req: VolumeRestoreRequest = json(&bytes)?;
    let live = c.volume(&req.name)?;
    let snap = resolve_snapshot(&c, &live, "snapshotId", &req.snapshot_id)?;
    c.require_volume_access(&caller, &req.name).await?;
    let mounted = c.volumes.mount_ids(&req.name).await;
    if !mounted.is_empty() && !req.force {
        return Err(ApiError::from(busy(&req.name, &mounted)));
    }
    let kept = restore::restore(&c.zfs, &c.root, &snap).await?;
    Ok(Json(VolumeRestoreResponse { name: req.name, snapshot_id: snapshot_id(&c, &snap), kept_as: kept.to_string() }))
}

async fn volume_for_restore_step(c: &Control, headers: &HeaderMap, bytes: &Bytes) -> Result<DatasetName> {
    let caller = c.token_caller(headers)?;
    let req: VolumeName = json(bytes)?;
    let live = c.volume(&req.name)?;
    c.require_volume_access(&caller, &req.name).await?;
    Ok(live)
}

pub async fn confirm_restore(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let live = volume_for_restore_step(&c, &headers, &bytes).await?;
    restore::confirm(&c.zfs, &c.root, &live).await?;
    Ok(Json(serde_json::json!({ "confirmed": live.to_string() })))
}

pub async fn undo_restore(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let live = volume_for_restore_step(&c, &headers, &bytes).await?;
    restore::undo(&c.zfs, &c.root, &live).await?;
    Ok(Json(serde_json::json!({ "undone": live.to_string() })))
}

/// The datasets of a service: its own (`filesystem`, resource `data`) when provisioned,
/// and the volumes it owns (`volume`, resource = the volume's name).
async fn service_resources(c: &Control, service: &str) -> Result<Vec<(DatasetName, &'static str, String)>> {
    let own = c.service_dataset(service)?;
    let mut out = Vec::new();
    if c.zfs.exists(&own).await? {
        out.push((own.clone(), "filesystem", "data".to_owned()));
        // Its buckets: child datasets, so one `zfs snapshot` takes them with the rest.
        for (ds, bucket) in service_buckets(c, &own).await? {
            out.push((ds, "objectstorage", bucket));
        }
    }
    for v in c.volumes.owned_by(service).await? {
        out.push((c.volumes.dataset(&v)?, "volume", v));
    }
    Ok(out)
}

/// The bucket datasets under a service's dataset (`<service>/s3/<bucket>`).
async fn service_buckets(c: &Control, own: &DatasetName) -> Result<Vec<(DatasetName, String)>> {
    let s3 = own.join("s3").map_err(|e| Error::internal(e.reason))?;
    if !c.zfs.exists(&s3).await? {
        return Ok(Vec::new());
    }
    let q = ListQuery::recursive(s3.clone(), DatasetType::Filesystem, &[]).depth(zfs_sys_shim::Depth::Max(1));
    let mut out = Vec::new();
    for d in c.zfs.list(&q).await? {
        if let Some(bucket) = d.name.strip_prefix(&format!("{s3}/"))
            && let Ok(ds) = d.name.parse::<DatasetName>()
        {
            out.push((ds, bucket.to_owned()));
        }
    }
    Ok(out)
}

/// The datasets of [`service_resources`], what its snapshot bound counts.
async fn service_datasets(c: &Control, service: &str) -> Result<Vec<DatasetName>> {
    Ok(service_resources(c, service).await?.into_iter().map(|(d, _, _)| d).collect())
}

pub async fn snapshot_resources(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ResourcesSnapshotResponse>, ApiError> {
    let req = service_snapshot_request(&c, &headers, &bytes)?;
    let resources = service_resources(&c, &req.service_id).await?;
    if resources.is_empty() {
        return Err(ApiError::from(Error::not_found(format!(
            "service {} has no dataset and no volumes on this node",
            req.service_id
        ))));
    }
    let snaps = resources
        .iter()
        .map(|(ds, _, _)| ds.snapshot(&req.snapshot_name).map_err(|e| Error::invalid("snapshotName", e.reason)))
        .collect::<Result<Vec<_>, _>>()?;
    let datasets: Vec<DatasetName> = resources.iter().map(|(d, _, _)| d.clone()).collect();
    check_snapshot_room(&c, &format!("service {}", req.service_id), &datasets, snaps.len()).await?;
    // One command: ZFS takes all of them in one transaction group, so the service's
    // datasets are captured at the same instant.
    c.zfs.snapshot(&snaps, false, &[]).await?;
    let mut out = Vec::new();
    for ((_, capability, resource), snap) in resources.iter().zip(&snaps) {
        out.push(describe(&c, snap, capability, resource).await?);
    }
    Ok(Json(ResourcesSnapshotResponse { service_id: req.service_id, snapshots: out }))
}

/// `POST /resources/snapshot/destroy {serviceId, snapshotName}`: the snapshot of that
/// name of each of the service's datasets that has one.
pub async fn destroy_resource_snapshots(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = service_snapshot_request(&c, &headers, &bytes)?;
    let datasets = service_datasets(&c, &req.service_id).await?;
    let present = snapshots_of(&c, &datasets).await?;
    let mut destroyed = Vec::new();
    for ds in &datasets {
        let snap = ds.snapshot(&req.snapshot_name).map_err(|e| Error::invalid("snapshotName", e.reason))?;
        if present.iter().any(|p| p == snap.as_str()) {
            c.zfs.destroy(&snap, DestroyOptions::default()).await?;
            destroyed.push(snapshot_id(&c, &snap));
        }
    }
    if destroyed.is_empty() {
        return Err(ApiError::from(no_such_snapshot(&format!("service {}", req.service_id), &req.snapshot_name)));
    }
    Ok(Json(serde_json::json!({ "destroyed": destroyed })))
}

pub async fn restore_resources(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ResourcesRestoreResponse>, ApiError> {
    let caller = c.token_caller(&headers)?;
    let req: ResourcesRestoreRequest = json(&bytes)?;
    check_name("serviceId", &req.service_id)?;
    c.require_service(&caller, Some(&req.service_id))?;
    let resources = service_resources(&c, &req.service_id).await?;
    // Every entry is checked before anything is restored.
    let mut plan = Vec::new();
    for (i, s) in req.snapshots.iter().enumerate() {
        let field = format!("snapshots[{i}].snapshotId");
        if let Ok(Capability::Database | Capability::Objectstorage) =
            serde_json::from_value::<Capability>(serde_json::json!(s.capability))
        {
            return Err(ApiError::from(unavailable(
                &format!("snapshots[{i}].capability"),
                format!("restoring capability {} is not available on this node yet", s.capability),
            )));
        }
        // The clone-and-swap restore renames the service's dataset, which would carry its
        // bucket datasets away with it: refused until buckets restore with it.
        if s.capability == "filesystem" && !service_buckets(&c, &c.service_dataset(&req.service_id)?).await?.is_empty()
        {
            return Err(ApiError::from(unavailable(
                &format!("snapshots[{i}].capability"),
                format!(
                    "service {} has buckets: restoring its dataset with them is not available on this node yet",
                    req.service_id
                ),
            )));
        }
        let Some((ds, _, name)) = resources.iter().find(|(ds, _, _)| {
            s.snapshot_id.split_once('@').is_some_and(|(d, _)| c.root.join(d).ok().as_ref() == Some(ds))
        }) else {
            return Err(ApiError::from(Error::invalid(
                &field,
                format!("{:?} is not a snapshot of a resource of service {}", s.snapshot_id, req.service_id),
            )));
        };
        let snap = resolve_snapshot(&c, ds, &field, &s.snapshot_id)?;
        if !c.zfs.exists(&snap).await? {
            return Err(ApiError::from(Error::not_found(format!("{field}: no snapshot {snap}"))));
        }
        if restore::pending(&c.zfs, &c.root, ds).await?.is_some() {
            return Err(ApiError::from(Error::conflict(format!("{ds} has a restore awaiting confirm or undo"))));
        }
        let mounted = c.volumes.mount_ids(name).await;
        if !mounted.is_empty() && !req.force {
            return Err(ApiError::from(busy(name, &mounted)));
        }
        plan.push((snap, name.clone()));
    }
    let mut restored = Vec::new();
    for (snap, name) in &plan {
        match restore::restore(&c.zfs, &c.root, snap).await {
            Ok(kept) => restored.push(VolumeRestoreResponse {
                name: name.clone(),
                snapshot_id: snapshot_id(&c, snap),
                kept_as: kept.to_string(),
            }),
            Err(e) => {
                // All or nothing: put back what this call already restored.
                for (done, _) in plan.iter().take(restored.len()) {
                    if let Err(u) = restore::undo(&c.zfs, &c.root, &done.dataset()).await {
                        tracing::error!(dataset = %done.dataset(), error = %u, "could not undo a partial resource restore");
                    }
                }
                return Err(ApiError::from(e));
            }
        }
    }
    Ok(Json(ResourcesRestoreResponse { service_id: req.service_id, restored }))
}
