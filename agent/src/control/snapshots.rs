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
    ResourceSnapshot, ResourcesRestoreRequest, ResourcesRestoreResponse, ResourcesRestoreStepResponse,
    ResourcesSnapshotRequest, ResourcesSnapshotResponse, ServiceId, VolumeList, VolumeName, VolumeRestoreRequest,
    VolumeRestoreResponse, VolumeSnapshotRequest,
};
use zfs_sys_shim::{DatasetName, DatasetType, DestroyOptions, ListQuery, Prop, SnapshotName};

use super::Control;
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

/// Archives a snapshot just taken (`archive: true`): incremental on the dataset's newest
/// archived snapshot when there is one; the archive's id goes into the answer's tags.
async fn archive_into(
    c: &Control,
    snap: &SnapshotName,
    owner: Option<String>,
    out: &mut ResourceSnapshot,
) -> Result<()> {
    let m = c
        .archives
        .archive_snapshot(&c.zfs, &c.root, snap, owner, crate::archives::Base::WhenPossible, BTreeMap::new())
        .await?;
    out.tags.insert("archiveId".to_owned(), m.id);
    Ok(())
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
    let mut out = describe(&c, &snap, "volume", &req.name).await?;
    if req.archive {
        let owner = c.volumes.owner(&req.name).await?;
        archive_into(&c, &snap, owner, &mut out).await?;
    }
    Ok(Json(out))
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
        // Its buckets and database: child datasets, so one `zfs snapshot` takes them
        // with the rest.
        for (ds, bucket) in service_buckets(c, &own).await? {
            out.push((ds, "objectstorage", bucket));
        }
        let db = own.join("db").map_err(|e| Error::internal(e.reason))?;
        if c.zfs.exists(&db).await? {
            out.push((db, "database", crate::db::db_name(service)));
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
        let mut described = describe(&c, snap, capability, resource).await?;
        if req.archive {
            archive_into(&c, snap, Some(req.service_id.clone()), &mut described).await?;
        }
        out.push(described);
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

/// How long a service restore waits for the S3 requests and database commands in flight.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn restore_resources(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ResourcesRestoreResponse>, ApiError> {
    let caller = c.token_caller(&headers)?;
    let req: ResourcesRestoreRequest = json(&bytes)?;
    check_name("serviceId", &req.service_id)?;
    c.require_service(&caller, Some(&req.service_id))?;
    let own = c.service_dataset(&req.service_id)?;
    let resources = service_resources(&c, &req.service_id).await?;
    // Every entry is checked before anything is restored.
    let mut plan = Vec::new();
    // Buckets named in the request: they come back with their service's dataset.
    let mut with_own = Vec::new();
    for (i, s) in req.snapshots.iter().enumerate() {
        let field = format!("snapshots[{i}].snapshotId");
        let Some((ds, capability, name)) = resources.iter().find(|(ds, _, _)| {
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
        if matches!(*capability, "objectstorage" | "database") {
            with_own.push((i, snap, name.clone()));
            continue;
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
    // A bucket or the database is a child of the service's dataset: it is restored by the
    // same swap, from the same snapshot, or not at all.
    let own_snap = plan.iter().find(|(snap, _)| snap.dataset() == own).map(|(snap, _)| snap.clone());
    for (i, snap, _) in &with_own {
        let same = own_snap
            .as_ref()
            .is_some_and(|o| o.as_str().rsplit_once('@').map(|p| p.1) == snap.as_str().rsplit_once('@').map(|p| p.1));
        if !same {
            return Err(ApiError::from(Error::invalid(
                &format!("snapshots[{i}].snapshotId"),
                format!(
                    "snapshot {} restores with its service's dataset: add the service's `filesystem` entry of the same snapshot",
                    snapshot_id(&c, snap)
                ),
            )));
        }
    }
    let buckets = if own_snap.is_some() { service_buckets(&c, &own).await? } else { Vec::new() };
    if !buckets.is_empty() {
        c.s3.suspend(&req.service_id, DRAIN).await?;
    }
    if own_snap.is_some()
        && let Err(e) = c.db.suspend(&req.service_id, DRAIN).await
    {
        if !buckets.is_empty() {
            let _ = c.s3.reopen(&req.service_id).await;
        }
        return Err(ApiError::from(e));
    }
    let result = restore_plan(&c, &plan).await;
    if own_snap.is_some() {
        // The next command opens the restored file.
        c.db.resume(&req.service_id);
    }
    if !buckets.is_empty()
        && let Err(e) = c.s3.reopen(&req.service_id).await
    {
        tracing::error!(service = %req.service_id, error = %e, "buckets not all reopened after a restore");
    }
    let mut restored = result?;
    for (_, snap, name) in with_own {
        let kept = restore::Swap::of(&c.root, &snap.dataset())?.kept;
        restored.push(VolumeRestoreResponse { name, snapshot_id: snapshot_id(&c, &snap), kept_as: kept.to_string() });
    }
    Ok(Json(ResourcesRestoreResponse { service_id: req.service_id, restored }))
}

/// Restores each snapshot; all or nothing: a failure undoes what the call already did.
async fn restore_plan(c: &Control, plan: &[(SnapshotName, String)]) -> Result<Vec<VolumeRestoreResponse>> {
    let mut restored = Vec::new();
    for (snap, name) in plan {
        match restore::restore(&c.zfs, &c.root, snap).await {
            Ok(kept) => restored.push(VolumeRestoreResponse {
                name: name.clone(),
                snapshot_id: snapshot_id(c, snap),
                kept_as: kept.to_string(),
            }),
            Err(e) => {
                for (done, _) in plan.iter().take(restored.len()) {
                    if let Err(u) = restore::undo(&c.zfs, &c.root, &done.dataset()).await {
                        tracing::error!(dataset = %done.dataset(), error = %u, "could not undo a partial resource restore");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(restored)
}

/// The service's datasets (its own and its volumes') with a restore awaiting a step.
async fn pending_of_service(c: &Control, headers: &HeaderMap, bytes: &Bytes) -> Result<(String, Vec<DatasetName>)> {
    let caller = c.token_caller(headers)?;
    let req: ServiceId = json(bytes)?;
    check_name("serviceId", &req.service_id)?;
    c.require_service(&caller, Some(&req.service_id))?;
    let own = c.service_dataset(&req.service_id)?;
    let mut candidates = vec![own];
    for v in c.volumes.owned_by(&req.service_id).await? {
        candidates.push(c.volumes.dataset(&v)?);
    }
    let mut pending = Vec::new();
    for ds in candidates {
        if c.zfs.exists(&ds).await? && restore::pending(&c.zfs, &c.root, &ds).await?.is_some() {
            pending.push(ds);
        }
    }
    if pending.is_empty() {
        return Err(Error::conflict(format!("service {} has no restore awaiting confirm or undo", req.service_id)));
    }
    Ok((req.service_id, pending))
}

fn relative(c: &Control, ds: &DatasetName) -> String {
    ds.relative_to(&c.root).unwrap_or(ds.as_str()).to_owned()
}

/// `POST /resources/restore/confirm {serviceId}`: keeps every restored state of the
/// service and drops what was kept from before.
pub async fn confirm_resources_restore(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ResourcesRestoreStepResponse>, ApiError> {
    let (service_id, pending) = pending_of_service(&c, &headers, &bytes).await?;
    for ds in &pending {
        restore::confirm(&c.zfs, &c.root, ds).await?;
    }
    let datasets = pending.iter().map(|d| relative(&c, d)).collect();
    Ok(Json(ResourcesRestoreStepResponse { service_id, datasets }))
}

/// `POST /resources/restore/undo {serviceId}`: puts every pre-restore state of the
/// service back, its buckets with its dataset.
pub async fn undo_resources_restore(
    State(c): State<Control>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<ResourcesRestoreStepResponse>, ApiError> {
    let (service_id, pending) = pending_of_service(&c, &headers, &bytes).await?;
    let own = c.service_dataset(&service_id)?;
    let buckets = pending.contains(&own) && !service_buckets(&c, &own).await?.is_empty();
    if buckets {
        c.s3.suspend(&service_id, DRAIN).await?;
    }
    if pending.contains(&own)
        && let Err(e) = c.db.suspend(&service_id, DRAIN).await
    {
        if buckets {
            let _ = c.s3.reopen(&service_id).await;
        }
        return Err(ApiError::from(e));
    }
    let mut result = Ok(());
    for ds in &pending {
        result = restore::undo(&c.zfs, &c.root, ds).await;
        if result.is_err() {
            break;
        }
    }
    if pending.contains(&own) {
        c.db.resume(&service_id);
    }
    if buckets && let Err(e) = c.s3.reopen(&service_id).await {
        tracing::error!(service = %service_id, error = %e, "buckets not all reopened after an undo");
    }
    result?;
    let datasets = pending.iter().map(|d| relative(&c, d)).collect();
    Ok(Json(ResourcesRestoreStepResponse { service_id, datasets }))
}
