//! Snapshots of anything under the dataset root: create (optionally recursive), delete,
//! get, list, rollback. Ids are root-relative; responses carry full names and the
//! snapshot's `written` in MiB, as mistify did.

use rpc_schema::ErrorKind;
use rpc_schema::imagestore::{Snapshot, SnapshotRequest, SnapshotResponse};
use zfs_sys_shim::{Dataset, DatasetType, DestroyOptions, ListQuery, Prop};

use crate::error::{Error, Result};
use crate::ids::{self, to_mib};
use crate::store::Store;

const PROPS: [Prop; 1] = [Prop::Written];

fn wire(ds: &Dataset) -> Snapshot {
    Snapshot { id: ds.name.clone(), size: to_mib(ds.written.unwrap_or(0)) }
}

fn response(list: Vec<Snapshot>) -> SnapshotResponse {
    SnapshotResponse { snapshots: list }
}

pub async fn create(store: &Store, req: SnapshotRequest) -> Result<SnapshotResponse> {
    let ds = ids::dataset(&store.root, "id", &req.id)?;
    let short = ids::component("dest", &req.dest)?;
    let snap = ds.snapshot(&short).map_err(|e| Error::invalid("dest", e.reason))?;
    store.zfs.snapshot(std::slice::from_ref(&snap), req.recursive, &[]).await?;
    if !req.recursive {
        return Ok(response(vec![wire(&store.zfs.get(&snap, &PROPS).await?)]));
    }
    // A recursive snapshot made one per descendant; report them all.
    let all = store.zfs.list(&ListQuery::recursive(ds, DatasetType::Snapshot, &PROPS)).await?;
    let suffix = format!("@{short}");
    Ok(response(all.iter().filter(|s| s.name.ends_with(&suffix)).map(wire).collect()))
}

pub async fn delete(store: &Store, req: SnapshotRequest) -> Result<SnapshotResponse> {
    let snap = ids::snapshot(&store.root, "id", &req.id)?;
    let found = store.zfs.get(&snap, &PROPS).await?;
    store.zfs.destroy(&snap, DestroyOptions { recursive: req.recursive, ..Default::default() }).await?;
    Ok(response(vec![wire(&found)]))
}

pub async fn get(store: &Store, req: SnapshotRequest) -> Result<SnapshotResponse> {
    let snap = ids::snapshot(&store.root, "id", &req.id)?;
    Ok(response(vec![wire(&store.zfs.get(&snap, &PROPS).await?)]))
}

/// Every snapshot under `id` (or the whole root when `id` is empty), oldest first, in
/// one scoped `zfs list`.
pub async fn list(store: &Store, req: SnapshotRequest) -> Result<SnapshotResponse> {
    let base = if req.id.is_empty() { store.root.clone() } else { ids::dataset(&store.root, "id", &req.id)? };
    let all = store.zfs.list(&ListQuery::recursive(base, DatasetType::Snapshot, &PROPS)).await?;
    Ok(response(all.iter().map(wire).collect()))
}

/// `destroyMoreRecent` is `rollback -r`; without it, newer snapshots are named in the error.
pub async fn rollback(store: &Store, req: SnapshotRequest) -> Result<SnapshotResponse> {
    let snap = ids::snapshot(&store.root, "id", &req.id)?;
    match store.zfs.rollback(&snap, req.destroy_more_recent).await {
        Ok(()) => {}
        Err(zfs_sys_shim::Error::NewerSnapshots { newer, .. }) => {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{snap} is not the most recent snapshot; newer: {} (set destroyMoreRecent to destroy them)",
                    newer.join(", ")
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(response(vec![wire(&store.zfs.get(&snap, &PROPS).await?)]))
}
