//! Images: fetched disk images and filesystems that guest disks are cloned from.
//!
//! Layout under the dataset root:
//! - `images/<id>`: a complete image (filesystem or zvol) with its snapshot. Only a
//!   finished, verified fetch is ever renamed here, so nothing half-made is listed.
//! - `incoming/<id>`: a small placeholder holding the state of a fetch that is pending,
//!   downloading, or failed (`tankd:status`, `tankd:error`), with the data being
//!   received at `incoming/<id>/data`.
//!
//! All metadata lives in `tankd:*` user properties, so it survives restarts and
//! `zpool export/import`; there is no side database.

mod checksum;
mod decode;
mod fetch;

use std::collections::BTreeMap;

use rpc_schema::ErrorKind;
use rpc_schema::imagestore::{Image, ImageRequest, ImageResponse, ImageStatus};
use zfs_sys_shim::{Dataset, DatasetName, DatasetType, Depth, DestroyOptions, ListQuery, Prop, SnapshotName};

pub use fetch::{FetchConfig, Fetcher};

use crate::imagestore::Store;
use crate::imagestore::error::{StoreError, StoreResult};
use crate::imagestore::ids::{self, to_mib};

/// The user properties tankd keeps on images.
pub mod prop {
    pub const STATUS: &str = "tankd:status";
    pub const SOURCE: &str = "tankd:source";
    pub const SHA256: &str = "tankd:sha256";
    /// Bytes of the image (volsize for raw images, stream size for received ones).
    pub const SIZE: &str = "tankd:size";
    /// Seconds since the epoch.
    pub const CREATED: &str = "tankd:created";
    pub const TYPE: &str = "tankd:type";
    pub const ERROR: &str = "tankd:error";
    /// Full name of the snapshot guest disks are cloned from.
    pub const SNAPSHOT: &str = "tankd:snapshot";
}

pub fn images_root(store: &Store) -> DatasetName {
    store.root.join("images").expect("valid")
}

pub fn incoming_root(store: &Store) -> DatasetName {
    store.root.join("incoming").expect("valid")
}

fn image_dataset(store: &Store, id: &str) -> StoreResult<DatasetName> {
    images_root(store).join(&ids::component("id", id)?).map_err(|e| StoreError::invalid("id", e.reason))
}

fn incoming_dataset(store: &Store, id: &str) -> StoreResult<DatasetName> {
    incoming_root(store).join(&ids::component("id", id)?).map_err(|e| StoreError::invalid("id", e.reason))
}

fn user_props() -> Vec<Prop> {
    [prop::STATUS, prop::SOURCE, prop::SHA256, prop::SIZE, prop::CREATED, prop::TYPE, prop::ERROR, prop::SNAPSHOT]
        .iter()
        .map(|p| Prop::user(p).expect("valid"))
        .collect()
}

fn props() -> Vec<Prop> {
    let mut p = vec![Prop::Volsize, Prop::Referenced];
    p.extend(user_props());
    p
}

fn last_component(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// An image as the wire shows it, from a dataset's properties.
fn wire(ds: &Dataset, complete: bool) -> Image {
    let u = |k: &str| ds.user.get(k).cloned();
    let status = u(prop::STATUS).and_then(|s| ImageStatus::parse(&s));
    let size_bytes = u(prop::SIZE).and_then(|s| s.parse().ok()).or(ds.volsize).or(ds.referenced).unwrap_or(0);
    Image {
        id: last_component(&ds.name).to_owned(),
        kind: u(prop::TYPE).unwrap_or_default(),
        volume: complete.then(|| ds.name.clone()),
        snapshot: if complete { u(prop::SNAPSHOT) } else { None },
        size: to_mib(size_bytes),
        status: if complete { Some(ImageStatus::Complete) } else { status.or(Some(ImageStatus::Pending)) },
        source: u(prop::SOURCE),
        sha256: u(prop::SHA256),
        created: u(prop::CREATED).and_then(|s| s.parse().ok()),
        error: if complete { None } else { u(prop::ERROR) },
        ..Default::default()
    }
}

/// The snapshot to clone guest disks from, for a complete image.
pub async fn ready_snapshot(store: &Store, field: &str, id: &str) -> StoreResult<SnapshotName> {
    let name =
        images_root(store).join(&ids::component(field, id)?).map_err(|e| StoreError::invalid(field, e.reason))?;
    let ds = match store.zfs.get(&name, &user_props()).await {
        Ok(ds) => ds,
        Err(e) if e.is_not_found() => {
            return Err(StoreError::not_found(format!("{field}: image {id} does not exist (RequestImage it first)")));
        }
        Err(e) => return Err(e.into()),
    };
    let snap =
        ds.user.get(prop::SNAPSHOT).ok_or_else(|| StoreError::not_found(format!("image {id} has no snapshot")))?;
    snap.parse().map_err(|e: zfs_sys_shim::NameError| StoreError::new(ErrorKind::Internal, e.to_string()))
}

/// What guest disks need of a complete image.
pub struct ReadyImage {
    pub snapshot: SnapshotName,
    pub is_volume: bool,
    /// Bytes.
    pub size: u64,
}

/// Every complete image, from one scoped `zfs list`.
pub async fn ready_images(store: &Store) -> StoreResult<BTreeMap<String, ReadyImage>> {
    let root = images_root(store);
    let types = [DatasetType::Filesystem, DatasetType::Volume];
    let query = ListQuery::recursive(root.clone(), DatasetType::Volume, &props()).types(&types).depth(Depth::Max(1));
    let rows = match store.zfs.list(&query).await {
        Ok(rows) => rows,
        Err(e) if e.is_not_found() => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(rows
        .iter()
        .filter(|d| d.name != root.as_str())
        .filter_map(|d| {
            let snapshot = d.user.get(prop::SNAPSHOT)?.parse().ok()?;
            let ready = ReadyImage {
                snapshot,
                is_volume: d.kind == Some(DatasetType::Volume),
                size: d.volsize.or(d.referenced).unwrap_or(0),
            };
            Some((last_component(&d.name).to_owned(), ready))
        })
        .collect())
}

/// Complete images and the state of fetches in progress or failed.
async fn all(store: &Store) -> StoreResult<BTreeMap<String, Image>> {
    let mut out = BTreeMap::new();
    let types = [DatasetType::Filesystem, DatasetType::Volume];
    for (root, complete) in [(incoming_root(store), false), (images_root(store), true)] {
        let query =
            ListQuery::recursive(root.clone(), DatasetType::Filesystem, &props()).types(&types).depth(Depth::Max(1));
        let rows = match store.zfs.list(&query).await {
            Ok(rows) => rows,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        for ds in rows.iter().filter(|d| d.name != root.as_str()) {
            let img = wire(ds, complete);
            out.insert(img.id.clone(), img);
        }
    }
    for (id, img) in out.iter_mut() {
        store.images.overlay_progress(id, img);
    }
    Ok(out)
}

pub async fn list(store: &Store, _req: ImageRequest) -> StoreResult<ImageResponse> {
    Ok(ImageResponse { images: all(store).await?.into_values().collect() })
}

async fn one(store: &Store, id: &str) -> StoreResult<Image> {
    let complete = image_dataset(store, id)?;
    match store.zfs.get(&complete, &props()).await {
        Ok(ds) => return Ok(wire(&ds, true)),
        Err(e) if !e.is_not_found() => return Err(e.into()),
        Err(_) => {}
    }
    let incoming = incoming_dataset(store, id)?;
    match store.zfs.get(&incoming, &props()).await {
        Ok(ds) => {
            let mut img = wire(&ds, false);
            store.images.overlay_progress(id, &mut img);
            Ok(img)
        }
        // Just requested: the fetch task has not made its placeholder yet.
        Err(e) if e.is_not_found() && store.images.in_flight(id) => {
            let mut img = Image { id: id.to_owned(), ..Default::default() };
            store.images.overlay_progress(id, &mut img);
            Ok(img)
        }
        Err(e) if e.is_not_found() => Err(StoreError::not_found(format!("image {id} does not exist"))),
        Err(e) => Err(e.into()),
    }
}

pub async fn get(store: &Store, req: ImageRequest) -> StoreResult<ImageResponse> {
    Ok(ImageResponse { images: vec![one(store, &req.id).await?] })
}

/// Remove an image (and a failed fetch's leftovers). Guest disks cloned from it make
/// this a conflict: they would otherwise be destroyed with it.
pub async fn delete(store: &Store, req: ImageRequest) -> StoreResult<ImageResponse> {
    let image = one(store, &req.id).await?;
    if store.images.in_flight(&req.id) {
        return Err(StoreError::new(ErrorKind::Busy, format!("image {} is being fetched", req.id)));
    }
    let recursive = DestroyOptions { recursive: true, ..Default::default() };
    store.zfs.destroy(&image_dataset(store, &req.id)?, recursive).await?;
    store.zfs.destroy(&incoming_dataset(store, &req.id)?, recursive).await?;
    Ok(ImageResponse { images: vec![image] })
}

/// Clone an image's snapshot to `dest` (root-relative, or a full name under the root).
pub async fn clone(store: &Store, req: ImageRequest) -> StoreResult<ImageResponse> {
    let snapshot = ready_snapshot(store, "id", &req.id).await?;
    let dest_rel = req.dest.strip_prefix(&format!("{}/", store.root)).unwrap_or(&req.dest);
    let dest = ids::dataset(&store.root, "dest", dest_rel)?;
    let props = [("compression".to_owned(), "lz4".to_owned())];
    store.zfs.clone_snapshot(&snapshot, &dest, true, &props).await?;
    let mut image = one(store, &req.id).await?;
    image.volume = Some(dest.to_string());
    Ok(ImageResponse { images: vec![image] })
}

pub async fn request(store: &Store, req: ImageRequest) -> StoreResult<ImageResponse> {
    let id = ids::component("id", &req.id)?;
    if let Ok(img) = one(store, &id).await
        && img.status == Some(ImageStatus::Complete)
    {
        return Ok(ImageResponse { images: vec![img] });
    }
    let url = store.images.resolve_url(&id, &req.source)?;
    let done = store.images.start(store, &id, &url, &req.kind)?;
    if req.is_async {
        return Ok(ImageResponse { images: vec![one(store, &id).await?] });
    }
    fetch::wait(done).await?;
    Ok(ImageResponse { images: vec![one(store, &id).await?] })
}

/// On start: fetches cut short by a crash or restart are restarted from their recorded
/// source; their partial data is destroyed first. Failed fetches stay failed.
pub async fn recover(store: &Store) -> StoreResult<()> {
    let root = incoming_root(store);
    let query = ListQuery::recursive(root.clone(), DatasetType::Filesystem, &props()).depth(Depth::Max(1));
    let rows = match store.zfs.list(&query).await {
        Ok(rows) => rows,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for ds in rows.iter().filter(|d| d.name != root.as_str()) {
        let status = ds.user.get(prop::STATUS).and_then(|s| ImageStatus::parse(s));
        if !matches!(status, Some(ImageStatus::Pending | ImageStatus::Downloading)) {
            continue;
        }
        let id = last_component(&ds.name).to_owned();
        let Some(source) = ds.user.get(prop::SOURCE).cloned() else {
            continue;
        };
        tracing::info!(image = %id, %source, "restarting a fetch interrupted by the last shutdown");
        let kind = ds.user.get(prop::TYPE).cloned().unwrap_or_default();
        if let Err(e) = store.images.start(store, &id, &source, &kind) {
            tracing::warn!(image = %id, error = %e, "could not restart the fetch");
        }
    }
    Ok(())
}
