//! Service volumes: one dataset per volume at `<root>/volumes/<name>`, mounted where ZFS
//! mounts it. Docker's plugin and the control API both work through here.
//!
//! Everything about a volume lives on its dataset: the owner (`tankd:service`), the size
//! (`refquota`) and the Docker mount ids holding it (`tankd:docker-mounts`), so a
//! restarted tankd rebuilds what it knows ([`KnownVolume`]) from one `zfs list`.
//!
//! This file is the volume index and the changes that keep it true (create, remove,
//! mount, unmount); `options` holds the option and name rules, `report` what the
//! control API and the metrics read.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use zfs_sys_shim::{Dataset, DatasetName, DatasetType, Depth, DestroyOptions, ListQuery, Prop, Zfs};

use super::known::{KnownVolume, format_mounts};
use super::options::check_mount_id;
pub use super::options::{VolumeOpts, check_name, check_snapshot_name};
use crate::error::{Error, Result};
use crate::mounts::sys::MountEntry;

pub const OWNER_PROP: &str = "tankd:service";
pub const MOUNTS_PROP: &str = "tankd:docker-mounts";
/// When tankd asked ZFS to make the volume (seconds since the epoch): Docker's CreatedAt,
/// the same before and after a restart without a `zfs get` after each create. ZFS's own
/// `creation` is a second or two later under a slow machine; volumes made outside tankd
/// have only that one.
pub const CREATED_PROP: &str = "tankd:created";

/// A volume's creation time: tankd's record, else ZFS's.
pub fn created_at(d: &Dataset) -> u64 {
    d.user.get(CREATED_PROP).and_then(|v| v.parse().ok()).or(d.creation).unwrap_or(0)
}

#[derive(Clone)]
pub struct VolumeStore {
    pub zfs: Zfs,
    pub root: DatasetName,
    /// Volume name → what tankd knows of it. The lock also serializes the changes that
    /// keep it true (create, remove, mount, unmount).
    pub(super) known: Arc<Mutex<HashMap<String, KnownVolume>>>,
}

const PROPS: [Prop; 8] = [
    Prop::Used,
    Prop::Referenced,
    Prop::Creation,
    Prop::Mountpoint,
    Prop::Mounted,
    Prop::Refquota,
    Prop::Origin,
    Prop::Guid,
];

fn list_props() -> Vec<Prop> {
    let mut p = PROPS.to_vec();
    p.push(Prop::user(OWNER_PROP).expect("valid"));
    p.push(Prop::user(MOUNTS_PROP).expect("valid"));
    p.push(Prop::user(CREATED_PROP).expect("valid"));
    p
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("no volume named {name:?}"))
}

/// Where the kernel has `dataset` mounted, preferring `expected` when it is one of the
/// places. Read from the mount table, so an already mounted volume costs no `zfs` command.
fn mounted_at(table: &[MountEntry], dataset: &str, expected: &str) -> Option<String> {
    let places: Vec<String> = table
        .iter()
        .filter(|m| m.fs_type == "zfs" && m.source == dataset)
        .map(|m| m.mountpoint.display().to_string())
        .collect();
    places.iter().find(|p| *p == expected).or(places.first()).cloned()
}

impl VolumeStore {
    /// Make the parents (`volumes`, `services`, `prerestore`) and learn the volumes, with
    /// their mount counts, from the datasets.
    /// The store of a node without ZFS: it holds no volume and is never asked for one
    /// (the volume routes and the plugin are off there).
    pub fn off(zfs: Zfs, root: DatasetName) -> VolumeStore {
        VolumeStore { zfs, root, known: Arc::default() }
    }

    pub async fn start(zfs: Zfs, root: DatasetName) -> Result<VolumeStore, zfs_sys_shim::Error> {
        let store = VolumeStore { zfs, root, known: Arc::default() };
        // Which parents are there, in one command rather than a probe each.
        let children: Vec<String> = store
            .zfs
            .list(&ListQuery::recursive(store.root.clone(), DatasetType::Filesystem, &[]).depth(Depth::Max(1)))
            .await?
            .into_iter()
            .map(|d| d.name)
            .collect();
        let missing = |d: &DatasetName| !children.iter().any(|c| c == d.as_str());
        for parent in [store.parent("volumes"), store.parent("services")] {
            if missing(&parent) {
                store.zfs.create_filesystem(&parent, true, &[]).await?;
            }
        }
        let pre = store.parent("prerestore");
        if missing(&pre) {
            // Kept pre-restore states are never mounted: nobody may write to them.
            let props = [("mountpoint".to_owned(), "none".to_owned()), ("canmount".to_owned(), "off".to_owned())];
            store.zfs.create_filesystem(&pre, true, &props).await?;
        }
        let known = store.index(&store.list_datasets().await?);
        let mounted = known.values().filter(|k| !k.mounts.is_empty()).count();
        let held: usize = known.values().map(KnownVolume::mount_count).sum();
        tracing::info!(
            volumes = known.len(),
            volumes_mounted = mounted,
            mounts = held,
            "docker volume mounts rebuilt from ZFS"
        );
        *store.known.lock().await = known;
        Ok(store)
    }

    pub fn parent(&self, what: &str) -> DatasetName {
        self.root.join(what).expect("a fixed name")
    }

    pub fn dataset(&self, name: &str) -> Result<DatasetName> {
        check_name("Name", name)?;
        self.parent("volumes").join(name).map_err(|e| Error::invalid("Name", e.reason))
    }

    pub(super) fn short<'a>(&self, full: &'a str) -> &'a str {
        full.rsplit('/').next().unwrap_or(full)
    }

    pub(super) async fn list_datasets(&self) -> Result<Vec<Dataset>, zfs_sys_shim::Error> {
        let q =
            ListQuery::recursive(self.parent("volumes"), DatasetType::Filesystem, &list_props()).depth(Depth::Max(1));
        let all = self.zfs.list(&q).await?;
        let parent = self.parent("volumes");
        Ok(all.into_iter().filter(|d| d.name != parent.as_str()).collect())
    }

    /// The volumes as ZFS lists them now, which also makes that what tankd knows: a
    /// volume made or destroyed behind its back shows up or goes.
    pub(super) async fn listed(&self) -> Result<Vec<Dataset>> {
        let mut known = self.known.lock().await;
        let all = self.list_datasets().await?;
        *known = self.index(&all);
        Ok(all)
    }

    fn index(&self, datasets: &[Dataset]) -> HashMap<String, KnownVolume> {
        datasets.iter().map(|d| (self.short(&d.name).to_owned(), KnownVolume::from_dataset(d))).collect()
    }

    pub(super) async fn find(&self, name: &str) -> Result<Dataset> {
        let ds = self.dataset(name)?;
        match self.zfs.get(&ds, &list_props()).await {
            Ok(d) => Ok(d),
            Err(e) if e.is_not_found() => Err(not_found(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Create a volume. An existing one is success (Docker asks `Get` first, but two
    /// daemons' worth of retries must not fail), and its options are left as they are.
    pub async fn create(&self, name: &str, opts: &VolumeOpts) -> Result<()> {
        let ds = self.dataset(name)?;
        let mut known = self.known.lock().await;
        let existing = || tracing::info!(volume = name, "create of an existing volume: left as it is");
        if known.contains_key(name) {
            existing();
            return Ok(());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut props = opts.props();
        props.push((CREATED_PROP.to_owned(), now.to_string()));
        match &opts.from_snapshot {
            // ZFS says whether it exists: no separate question first.
            None => match self.zfs.create_filesystem(&ds, false, &props).await {
                Ok(()) => {
                    tracing::info!(volume = name, dataset = %ds, "volume created");
                    // What it was made with, and where ZFS mounted it: no `zfs get` needed.
                    let table = crate::mounts::sys::mountinfo();
                    if let Some(place) = mounted_at(&table, ds.as_str(), "") {
                        known.insert(name.to_owned(), KnownVolume::made(&ds, place, opts, now));
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == zfs_sys_shim::ErrorKind::AlreadyExists => existing(),
                Err(e) => return Err(e.into()),
            },
            Some(_) if self.zfs.exists(&ds).await? => existing(),
            Some((vol, snap)) => {
                let source =
                    self.dataset(vol)?.snapshot(snap).map_err(|e| Error::invalid("Opts.from_snapshot", e.reason))?;
                if !self.zfs.exists(&source).await? {
                    return Err(Error::not_found(format!("from_snapshot: no snapshot {vol}@{snap}")));
                }
                self.zfs.clone_snapshot(&source, &ds, false, &props).await?;
                tracing::info!(volume = name, dataset = %ds, origin = %source, "volume created");
            }
        }
        known.insert(name.to_owned(), KnownVolume::from_dataset(&self.find(name).await?));
        Ok(())
    }

    /// Destroy a volume with its snapshots (and a pending restore's kept state). Refused
    /// while mounted, or while another volume is a clone of one of its snapshots.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let ds = self.dataset(name)?;
        let mut known = self.known.lock().await;
        match known.get(name) {
            Some(k) if !k.mounts.is_empty() => {
                return Err(Error::busy(format!(
                    "volume {name} is mounted (mount ids: {})",
                    k.mounts.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            Some(_) => {}
            None if !self.zfs.exists(&ds).await? => return Err(not_found(name)),
            None => {}
        }
        self.destroy_unlocked(&ds).await?;
        known.remove(name);
        Ok(())
    }

    async fn destroy_unlocked(&self, ds: &DatasetName) -> Result<()> {
        let kept = super::restore::Swap::of(&self.root, ds)?.kept;
        if self.zfs.exists(&kept).await? {
            super::restore::confirm(&self.zfs, &self.root, ds).await?;
        }
        match self.zfs.destroy(ds, DestroyOptions { recursive: true, ..Default::default() }).await {
            Ok(()) => Ok(()),
            Err(e) if e.says(zfs_sys_shim::Detail::DependentClones) => Err(Error::busy(format!(
                "{ds} has snapshots that other volumes were cloned from; remove those first: {e}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove every volume owned by `service`; with `force` even mounted ones (their mount
    /// records go with them). Returns the datasets destroyed.
    pub async fn remove_owned(&self, service: &str, force: bool) -> Result<Vec<String>> {
        let owned: Vec<Dataset> = self
            .list_datasets()
            .await?
            .into_iter()
            .filter(|d| d.user.get(OWNER_PROP).map(String::as_str) == Some(service))
            .collect();
        let mut known = self.known.lock().await;
        let busy: Vec<&str> = owned
            .iter()
            .map(|d| self.short(&d.name))
            .filter(|n| known.get(*n).is_some_and(|k| !k.mounts.is_empty()))
            .collect();
        if !busy.is_empty() && !force {
            return Err(Error::busy(format!(
                "volumes of service {service} are mounted: {} (force to remove anyway)",
                busy.join(", ")
            )));
        }
        let mut removed = Vec::new();
        for d in &owned {
            let ds: DatasetName =
                d.name.parse().map_err(|e: zfs_sys_shim::NameError| Error::invalid("name", e.reason))?;
            self.destroy_unlocked(&ds).await?;
            known.remove(self.short(&d.name));
            removed.push(d.name.clone());
        }
        Ok(removed)
    }

    /// Count a mount by `id` and make sure the dataset is mounted; returns the path, as
    /// the kernel's mount table has it.
    pub async fn mount(&self, name: &str, id: &str) -> Result<String> {
        check_mount_id(id)?;
        let ds = self.dataset(name)?;
        let mut known = self.known.lock().await;
        let mut vol = match known.get(name) {
            Some(k) => k.clone(),
            None => KnownVolume::from_dataset(&self.find(name).await?),
        };
        let table = crate::mounts::sys::mountinfo();
        vol.mountpoint = match mounted_at(&table, ds.as_str(), &vol.mountpoint) {
            Some(place) => place,
            None => {
                if let Err(e) = self.zfs.mount(&ds).await {
                    if e.is_not_found() {
                        known.remove(name);
                        return Err(not_found(name));
                    }
                    return Err(e.into());
                }
                let table = crate::mounts::sys::mountinfo();
                match mounted_at(&table, ds.as_str(), &vol.mountpoint) {
                    Some(place) => place,
                    None => self.find(name).await?.mountpoint.unwrap_or_default(),
                }
            }
        };
        *vol.mounts.entry(id.to_owned()).or_insert(0) += 1;
        // Recorded on the dataset before it counts here, so a crash never forgets a mount.
        self.zfs.set(&ds, &[(MOUNTS_PROP.to_owned(), format_mounts(&vol.mounts))]).await?;
        let place = vol.mountpoint.clone();
        known.insert(name.to_owned(), vol);
        Ok(place)
    }

    /// Undo one `mount` by `id`. An id that holds no mount is an error Docker logs.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<()> {
        check_mount_id(id)?;
        let ds = self.dataset(name)?;
        let mut known = self.known.lock().await;
        let mut next = known.get(name).map(|k| k.mounts.clone()).unwrap_or_default();
        match next.get_mut(id) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                next.remove(id);
            }
            None => {
                return Err(Error::conflict(format!("volume {name} is not mounted by {id}")));
            }
        }
        self.zfs.set(&ds, &[(MOUNTS_PROP.to_owned(), format_mounts(&next))]).await?;
        if let Some(k) = known.get_mut(name) {
            k.mounts = next;
        }
        Ok(())
    }

    pub async fn mount_ids(&self, name: &str) -> Vec<String> {
        self.known.lock().await.get(name).map(|k| k.mounts.keys().cloned().collect()).unwrap_or_default()
    }

    /// One volume as Docker's Get and Path see it, from memory. A name tankd does not
    /// know is asked of ZFS only if the kernel has such a dataset mounted (one `zfs
    /// receive` put there): Docker asks `Get` before every create, and a name that is
    /// nowhere then costs no command. An unmounted stranger is found by `List` or adopted
    /// by a create of its name.
    pub async fn known(&self, name: &str) -> Result<KnownVolume> {
        let ds = self.dataset(name)?;
        let mut known = self.known.lock().await;
        if let Some(k) = known.get(name) {
            return Ok(k.clone());
        }
        if mounted_at(&crate::mounts::sys::mountinfo(), ds.as_str(), "").is_none() {
            return Err(not_found(name));
        }
        let k = KnownVolume::from_dataset(&self.find(name).await?);
        known.insert(name.to_owned(), k.clone());
        Ok(k)
    }

    /// Every volume, fresh from ZFS (one `zfs list`), for Docker's `List`.
    pub async fn known_all(&self) -> Result<Vec<(String, KnownVolume)>> {
        let all = self.listed().await?;
        let mut volumes: Vec<_> =
            all.iter().map(|d| (self.short(&d.name).to_owned(), KnownVolume::from_dataset(d))).collect();
        volumes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(volumes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_at_reads_the_mount_table() {
        let table = crate::mounts::sys::parse_mountinfo(
            "36 25 0:40 / /srv/tank/volumes/v1 rw,relatime shared:20 - zfs tank/tankd/volumes/v1 rw,xattr\n\
             37 25 0:40 / /mnt/elsewhere rw,relatime shared:20 - zfs tank/tankd/volumes/v1 rw,xattr\n\
             38 25 0:41 / /srv/tank/volumes/v10 rw,relatime shared:21 - zfs tank/tankd/volumes/v10 rw,xattr\n\
             39 25 0:42 / /srv/tank/volumes/v2 rw,relatime - ext4 tank/tankd/volumes/v2 rw\n",
        );
        let at = |ds: &str, expected: &str| mounted_at(&table, ds, expected);
        assert_eq!(at("tank/tankd/volumes/v1", "/mnt/elsewhere").as_deref(), Some("/mnt/elsewhere"));
        assert_eq!(at("tank/tankd/volumes/v1", "/old/place").as_deref(), Some("/srv/tank/volumes/v1"));
        assert_eq!(at("tank/tankd/volumes/v2", "/srv/tank/volumes/v2"), None, "only zfs mounts count");
        assert_eq!(at("tank/tankd/volumes/v3", ""), None);
    }
}
