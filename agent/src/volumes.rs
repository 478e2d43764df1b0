//! zvols under the dataset root: create (waiting for the device node), get, list, and
//! DeleteDataset, which removes any dataset under the root but never the root itself.

use std::time::Duration;

use rpc_schema::imagestore::{Volume, VolumeRequest, VolumeResponse};
use zfs_sys_shim::{Dataset, DatasetName, DatasetType, DestroyOptions, ListQuery, Prop, VolumeOptions};

use crate::error::{Error, Result};
use crate::ids::{self, MIB, to_mib};
use crate::store::Store;

/// How long to wait for a new zvol's device node (its `/dev/zvol` link: udev's, or made
/// by the shim where no udev runs).
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(10);

const PROPS: [Prop; 1] = [Prop::Volsize];

/// The device of an existing volume, without waiting: listing many volumes must not
/// stall on one whose node is missing.
pub async fn device_now(store: &Store, name: &DatasetName) -> String {
    match store.zfs.zvol_device(name, Duration::ZERO).await {
        Ok(p) => p.display().to_string(),
        Err(_) => format!("/dev/zvol/{name}"),
    }
}

async fn wire(store: &Store, ds: &Dataset) -> Result<Volume> {
    let name: DatasetName =
        ds.name.parse().map_err(|e: zfs_sys_shim::NameError| Error::from(zfs_sys_shim::Error::from(e)))?;
    Ok(Volume { id: ds.name.clone(), size: to_mib(ds.volsize.unwrap_or(0)), device: device_now(store, &name).await })
}

/// Create a zvol (lz4, parents, and `props`) without waiting for its device.
pub async fn make_zvol(
    store: &Store,
    name: &DatasetName,
    size_mib: u64,
    mut props: Vec<(String, String)>,
    parents: bool,
) -> Result<()> {
    props.insert(0, ("compression".into(), "lz4".into()));
    let opts = VolumeOptions { size: size_mib * MIB, parents, props, ..Default::default() };
    Ok(store.zfs.create_volume(name, &opts).await?)
}

/// Create a zvol and wait for its device; undo it if the device never shows.
pub async fn create_zvol(
    store: &Store,
    name: &DatasetName,
    size_mib: u64,
    props: Vec<(String, String)>,
) -> Result<String> {
    make_zvol(store, name, size_mib, props, true).await?;
    match store.zfs.zvol_device(name, DEVICE_TIMEOUT).await {
        Ok(dev) => Ok(dev.display().to_string()),
        Err(e) => {
            let _ = store.zfs.destroy(name, DestroyOptions::default()).await;
            Err(e.into())
        }
    }
}

pub async fn create(store: &Store, req: VolumeRequest) -> Result<VolumeResponse> {
    let name = ids::dataset(&store.root, "id", &req.id)?;
    let size = ids::size_mib("size", req.size)?;
    let device = create_zvol(store, &name, size, Vec::new()).await?;
    Ok(VolumeResponse { volumes: vec![Volume { id: name.to_string(), size, device }] })
}

pub async fn get(store: &Store, req: VolumeRequest) -> Result<VolumeResponse> {
    let name = ids::dataset(&store.root, "id", &req.id)?;
    let ds = store.zfs.get(&name, &PROPS).await?;
    if ds.kind != Some(DatasetType::Volume) {
        return Err(Error::not_found(format!("{name} is not a volume")));
    }
    Ok(VolumeResponse { volumes: vec![wire(store, &ds).await?] })
}

pub async fn list(store: &Store, _req: VolumeRequest) -> Result<VolumeResponse> {
    let all = store.zfs.list(&ListQuery::recursive(store.root.clone(), DatasetType::Volume, &PROPS)).await?;
    let mut volumes = Vec::with_capacity(all.len());
    for ds in &all {
        volumes.push(wire(store, ds).await?);
    }
    Ok(VolumeResponse { volumes })
}

/// Destroy a dataset (and its snapshots and children) under the root. Clones elsewhere
/// that depend on it make this a conflict rather than a cascade.
pub async fn delete_dataset(store: &Store, req: VolumeRequest) -> Result<VolumeResponse> {
    let name = ids::dataset(&store.root, "id", &req.id)?;
    let ds = store.zfs.get(&name, &PROPS).await?;
    store.zfs.destroy(&name, DestroyOptions { recursive: true, ..Default::default() }).await?;
    let volumes = if ds.kind == Some(DatasetType::Volume) {
        vec![Volume { id: ds.name.clone(), size: to_mib(ds.volsize.unwrap_or(0)), device: String::new() }]
    } else {
        vec![]
    };
    Ok(VolumeResponse { volumes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeZfs, rule, store};

    fn req(id: &str) -> VolumeRequest {
        VolumeRequest { id: id.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn delete_dataset_answers_what_it_destroyed_and_never_the_root() {
        let vol = "type\tvolume\nvolsize\t67108864\n";
        let fake = FakeZfs::new("tank/tankd", vec![rule("\"get\"*\"tank/tankd/vols/v1\"", 0, vol)]);
        let spool = tempfile::tempdir().unwrap();
        let s = store(&fake, spool.path().into());
        let out = delete_dataset(&s, req("vols/v1")).await.unwrap();
        assert_eq!((out.volumes[0].id.as_str(), out.volumes[0].size), ("tank/tankd/vols/v1", 64));
        assert_eq!(fake.calls_of("destroy"), vec!["destroy -r tank/tankd/vols/v1".to_owned()]);
        for bad in ["", "../x", "-r", "vols/v1@s"] {
            let e = delete_dataset(&s, req(bad)).await.unwrap_err();
            assert_eq!(e.field.as_deref(), Some("id"), "{bad:?}");
        }
        assert_eq!(fake.calls_of("destroy").len(), 1, "a refused id reaches no command");
    }

    #[tokio::test]
    async fn get_volume_of_a_filesystem_is_not_found() {
        let fs = "type\tfilesystem\n";
        let fake = FakeZfs::new("tank/tankd", vec![rule("\"get\"*\"tank/tankd/fs\"", 0, fs)]);
        let spool = tempfile::tempdir().unwrap();
        let e = get(&store(&fake, spool.path().into()), req("fs")).await.unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::NotFound, "{e}");
    }
}
