//! Images: fetched disk images and filesystems that guest disks are cloned from.
//!
//! Each image is one dataset, `<root>/images/<id>` (a filesystem or a zvol), whose
//! `tankd:status` says how far it got:
//! - `downloading`: being received. `zfs receive -s -o tankd:…` sets the properties
//!   before the first byte lands, so even a receive cut short by a crash carries its
//!   source, and start-up restarts it ([`recover`]).
//! - `complete`: received and verified; `tankd:snapshot` is what guest disks clone.
//!   Only this status is ever reported as complete.
//! - `error`: a failed fetch, kept as an empty placeholder whose `tankd:error` says why
//!   until the image is requested again or deleted.
//!
//! `pending` (waiting for a free fetcher) is held in memory only: nothing is on disk
//! yet. All other metadata lives in `tankd:*` user properties, so it survives restarts
//! and `zpool export/import`; there is no side database.

mod catalog;
pub(crate) mod checksum;
pub mod decode;
mod fetch;
pub mod sources;

use std::collections::BTreeMap;

use rpc_schema::ErrorKind;
use rpc_schema::imagestore::{Image, ImageRequest, ImageResponse, ImageStatus};
use zfs_sys_shim::{Dataset, DatasetName, DatasetType, Depth, DestroyOptions, ListQuery, Prop};

pub use catalog::{Entry, ReadyImage};
pub use fetch::{FetchConfig, Fetcher};

use crate::error::{Error, Result};
use crate::ids::{self, to_mib};
use crate::store::Store;

/// The user properties tankd keeps on images.
pub mod prop {
    pub const STATUS: &str = "tankd:status";
    pub const SOURCE: &str = "tankd:source";
    pub const SHA256: &str = "tankd:sha256";
    /// Bytes of a raw image as served; received datasets are sized by ZFS.
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

fn image_dataset(store: &Store, id: &str) -> Result<DatasetName> {
    images_root(store).join(&ids::component("id", id)?).map_err(|e| Error::invalid("id", e.reason))
}

pub(crate) fn props() -> Vec<Prop> {
    let mut p = vec![Prop::Volsize, Prop::Referenced];
    p.extend(
        [prop::STATUS, prop::SOURCE, prop::SHA256, prop::SIZE, prop::CREATED, prop::TYPE, prop::ERROR, prop::SNAPSHOT]
            .iter()
            .map(|p| Prop::user(p).expect("valid")),
    );
    p
}

fn last_component(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn status_of(ds: &Dataset) -> Option<ImageStatus> {
    ds.user.get(prop::STATUS).and_then(|s| ImageStatus::parse(s))
}

fn size_of(ds: &Dataset) -> u64 {
    ds.user.get(prop::SIZE).and_then(|s| s.parse().ok()).or(ds.volsize).or(ds.referenced).unwrap_or(0)
}

/// An image as the wire shows it, from its dataset and, while it is being fetched, the
/// fetcher's live progress. A `downloading` dataset with no fetch behind it is a fetch
/// that died with a previous agent and could not be restarted.
pub(crate) fn wire(store: &Store, ds: &Dataset) -> Image {
    let u = |k: &str| ds.user.get(k).cloned();
    let status = status_of(ds);
    let complete = status == Some(ImageStatus::Complete);
    let id = last_component(&ds.name).to_owned();
    let mut img = Image {
        kind: u(prop::TYPE).unwrap_or_default(),
        volume: complete.then(|| ds.name.clone()),
        snapshot: if complete { u(prop::SNAPSHOT) } else { None },
        size: to_mib(size_of(ds)),
        status: status.or(Some(ImageStatus::Error)),
        source: u(prop::SOURCE),
        sha256: u(prop::SHA256),
        created: u(prop::CREATED).and_then(|s| s.parse().ok()),
        error: if complete { None } else { u(prop::ERROR) },
        ..Default::default()
    };
    if !store.images.overlay_progress(&id, &mut img) && status == Some(ImageStatus::Downloading) {
        img.status = Some(ImageStatus::Error);
        img.error = Some("the fetch was interrupted; request the image again".into());
    }
    img.id = id;
    img
}

pub(crate) fn ready_of(ds: &Dataset) -> Option<ReadyImage> {
    if status_of(ds) != Some(ImageStatus::Complete) {
        return None;
    }
    Some(ReadyImage {
        snapshot: ds.user.get(prop::SNAPSHOT)?.parse().ok()?,
        is_volume: ds.kind == Some(DatasetType::Volume),
        size: size_of(ds),
    })
}

/// Every image dataset, from one scoped `zfs list`.
async fn list_datasets(store: &Store) -> Result<Vec<Dataset>> {
    Ok(list_images_root(store).await?.unwrap_or_default())
}

/// The images root's children, or None without an images root.
async fn list_images_root(store: &Store) -> Result<Option<Vec<Dataset>>> {
    let root = images_root(store);
    let types = [DatasetType::Filesystem, DatasetType::Volume];
    let query = ListQuery::recursive(root.clone(), DatasetType::Volume, &props()).types(&types).depth(Depth::Max(1));
    match store.zfs.list(&query).await {
        Ok(rows) => Ok(Some(rows.into_iter().filter(|d| d.name != root.as_str()).collect())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn entry_of(ds: &Dataset) -> Entry {
    ready_of(ds).map_or(Entry::Unfinished, Entry::Ready)
}

fn index(rows: &[Dataset]) -> BTreeMap<String, Entry> {
    rows.iter().map(|d| (last_component(&d.name).to_owned(), entry_of(d))).collect()
}

/// Every image dataset: from the catalog, listed once when it is not loaded.
async fn entries(store: &Store) -> Result<BTreeMap<String, Entry>> {
    if let Some(map) = store.images.catalog.entries() {
        return Ok(map);
    }
    let map = index(&list_datasets(store).await?);
    store.images.catalog.load(map.clone());
    Ok(map)
}

/// Every complete image: from the catalog, listed once when it is not loaded.
pub async fn ready_images(store: &Store) -> Result<BTreeMap<String, ReadyImage>> {
    if let Some(map) = store.images.catalog.ready() {
        return Ok(map);
    }
    entries(store).await?;
    Ok(store.images.catalog.ready().unwrap_or_default())
}

pub async fn list(store: &Store, _req: ImageRequest) -> Result<ImageResponse> {
    let rows = list_datasets(store).await?;
    let mut images: BTreeMap<String, Image> =
        rows.iter().map(|ds| wire(store, ds)).map(|img| (img.id.clone(), img)).collect();
    // Fetches still waiting for a fetcher have nothing on disk yet.
    for id in store.images.in_flight_ids() {
        images.entry(id.clone()).or_insert_with(|| pending(store, &id));
    }
    Ok(ImageResponse { images: images.into_values().collect() })
}

fn pending(store: &Store, id: &str) -> Image {
    let mut img = Image { id: id.to_owned(), ..Default::default() };
    store.images.overlay_progress(id, &mut img);
    img
}

/// One image: its dataset, or a fetch that has not made one yet.
async fn one(store: &Store, id: &str) -> Result<Image> {
    match store.zfs.get(&image_dataset(store, id)?, &props()).await {
        Ok(ds) => Ok(wire(store, &ds)),
        Err(e) if e.is_not_found() && store.images.in_flight(id) => Ok(pending(store, id)),
        Err(e) if e.is_not_found() => Err(Error::not_found(format!("image {id} does not exist"))),
        Err(e) => Err(e.into()),
    }
}

pub async fn get(store: &Store, req: ImageRequest) -> Result<ImageResponse> {
    Ok(ImageResponse { images: vec![one(store, &req.id).await?] })
}

/// Remove an image, or what a failed fetch left. Guest disks cloned from it make this a
/// conflict: they would otherwise be destroyed with it.
pub async fn delete(store: &Store, req: ImageRequest) -> Result<ImageResponse> {
    let image = one(store, &req.id).await?;
    if store.images.in_flight(&req.id) {
        return Err(Error::new(ErrorKind::Busy, format!("image {} is being fetched", req.id)));
    }
    store.images.catalog.remove(&req.id);
    store
        .zfs
        .destroy(&image_dataset(store, &req.id)?, DestroyOptions { recursive: true, ..Default::default() })
        .await?;
    Ok(ImageResponse { images: vec![image] })
}

/// Clone an image's snapshot to `dest` (root-relative, or a full name under the root).
pub async fn clone(store: &Store, req: ImageRequest) -> Result<ImageResponse> {
    let mut image = one(store, &req.id).await?;
    let snapshot = match (&image.status, &image.snapshot) {
        (Some(ImageStatus::Complete), Some(snap)) => {
            snap.parse().map_err(|e: zfs_sys_shim::NameError| Error::new(ErrorKind::Internal, e.to_string()))?
        }
        _ => return Err(Error::not_found(format!("id: image {} is not complete", req.id))),
    };
    let dest = ids::dataset(&store.root, "dest", ids::relative(&store.root, &req.dest))?;
    let props = [("compression".to_owned(), "lz4".to_owned())];
    store.zfs.clone_snapshot(&snapshot, &dest, true, &props).await?;
    image.volume = Some(dest.to_string());
    Ok(ImageResponse { images: vec![image] })
}

/// Fetch an image unless it is complete. The catalog answers what is there, so a new
/// fetch costs no command before its receive; the finished fetch hands back the image
/// it made.
pub async fn request(store: &Store, req: ImageRequest) -> Result<ImageResponse> {
    let id = ids::component("id", &req.id)?;
    let url = store.images.resolve_url(&id, &req.source)?;
    // A dataset that is there but not complete (a failed or orphaned fetch) is replaced.
    let stale = match entries(store).await?.get(&id) {
        Some(Entry::Ready(_)) => match one(store, &id).await {
            Ok(img) => return Ok(ImageResponse { images: vec![img] }),
            Err(e) if e.kind == ErrorKind::NotFound => {
                store.images.catalog.forget();
                false
            }
            Err(e) => return Err(e),
        },
        // The rare path, so it may cost a command: make sure it is not complete by now.
        Some(Entry::Unfinished) => match one(store, &id).await {
            Ok(img) if img.status == Some(ImageStatus::Complete) => return Ok(ImageResponse { images: vec![img] }),
            Ok(_) => true,
            Err(e) if e.kind == ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        },
        None => false,
    };
    let done = store.images.start(store, &id, &url, &req.kind, stale)?;
    if req.is_async {
        return Ok(ImageResponse { images: vec![pending(store, &id)] });
    }
    let image = fetch::wait(done).await?;
    Ok(ImageResponse { images: vec![image] })
}

/// On start: make the images root, load the catalog, and restart every fetch that a crash or restart cut
/// short, from its recorded source, after destroying its partial data. Failed fetches
/// stay failed until requested again.
pub async fn recover(store: &Store) -> Result<()> {
    // `zfs receive` makes no parents: the images root must be there before any fetch.
    // One `zfs list` answers both whether the root is there and what is in it.
    let rows = match list_images_root(store).await? {
        Some(rows) => rows,
        None => {
            store.zfs.create_filesystem(&images_root(store), true, &[("canmount".into(), "off".into())]).await?;
            Vec::new()
        }
    };
    store.images.catalog.load(index(&rows));
    for ds in rows.iter().filter(|d| status_of(d) == Some(ImageStatus::Downloading)) {
        let id = last_component(&ds.name).to_owned();
        let Some(source) = ds.user.get(prop::SOURCE).cloned() else {
            continue;
        };
        tracing::info!(image = %id, %source, "restarting a fetch interrupted by the last shutdown");
        let kind = ds.user.get(prop::TYPE).cloned().unwrap_or_default();
        if let Err(e) = store.images.start(store, &id, &source, &kind, true) {
            tracing::warn!(image = %id, error = %e, "could not restart the fetch");
        }
    }
    Ok(())
}
