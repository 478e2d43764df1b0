//! Service volumes: one dataset per volume at `<root>/volumes/<name>`, mounted where ZFS
//! mounts it. Docker's plugin and the control API both work through here.
//!
//! Everything about a volume lives on its dataset: the owner (`tankd:service`), the size
//! (`refquota`) and the Docker mount ids holding it (`tankd:docker-mounts`), so a
//! restarted tankd rebuilds its mount counts from one `zfs list`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::http::StatusCode;
use rpc_schema::ErrorKind;
use rpc_schema::control::{PendingRestore, VolumeInfo};
use tokio::sync::Mutex;
use zfs_sys_shim::{Dataset, DatasetName, DatasetType, Depth, DestroyOptions, ListQuery, Prop, Zfs};

use crate::api_error::ApiError;

pub const OWNER_PROP: &str = "tankd:service";
pub const MOUNTS_PROP: &str = "tankd:docker-mounts";

/// Options `docker volume create --opt` may pass, already checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeOpts {
    /// `refquota` in bytes: snapshots do not eat into the volume's own size.
    pub size: Option<u64>,
    /// A snapshot of another volume to clone, `<volume>@<snapshot>`.
    pub from_snapshot: Option<(String, String)>,
    pub compression: Option<String>,
    pub recordsize: Option<u64>,
    pub service: Option<String>,
}

const COMPRESSION: &[&str] = &["on", "off", "lz4", "zstd", "zstd-fast", "gzip", "zle", "lzjb"];

impl VolumeOpts {
    /// Parse Docker's `Opts` map; an unknown or bad option names itself (`Opts.<key>`).
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<VolumeOpts, ApiError> {
        let mut out = VolumeOpts::default();
        for (key, value) in opts {
            let field = format!("Opts.{key}");
            let bad = |why: String| ApiError::invalid(&field, format!("{key}={value:?}: {why}"));
            match key.as_str() {
                "size" | "quota" => {
                    let bytes = crate::config::parse_size(value)
                        .filter(|b| *b >= 1 << 20)
                        .ok_or_else(|| bad("not a size of at least 1M (e.g. 64M, 10G)".into()))?;
                    out.size = Some(bytes);
                }
                "from_snapshot" => {
                    let id = value.strip_prefix("volumes/").unwrap_or(value);
                    let (vol, snap) = id.split_once('@').ok_or_else(|| bad("not <volume>@<snapshot>".into()))?;
                    check_name(&field, vol)?;
                    check_snapshot_name(&field, snap)?;
                    out.from_snapshot = Some((vol.to_owned(), snap.to_owned()));
                }
                "compression" => {
                    let base = value.split_once('-').map_or(value.as_str(), |(b, level)| {
                        if level.chars().all(|c| c.is_ascii_digit()) { b } else { value.as_str() }
                    });
                    if !COMPRESSION.contains(&base) {
                        return Err(bad(format!("not one of {}", COMPRESSION.join(", "))));
                    }
                    out.compression = Some(value.clone());
                }
                "recordsize" => {
                    let bytes = crate::config::parse_size(value)
                        .filter(|b| b.is_power_of_two() && (512..=16 << 20).contains(b))
                        .ok_or_else(|| bad("not a power of two from 512 to 16M".into()))?;
                    out.recordsize = Some(bytes);
                }
                "service" => {
                    check_name(&field, value)?;
                    out.service = Some(value.clone());
                }
                _ => {
                    return Err(ApiError::invalid(
                        &field,
                        format!(
                            "unknown option {key:?} (size, quota, from_snapshot, compression, recordsize, service)"
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn props(&self) -> Vec<(String, String)> {
        let mut props = vec![(MOUNTS_PROP.to_owned(), String::new())];
        if let Some(s) = self.size {
            props.push(("refquota".into(), s.to_string()));
        }
        if let Some(c) = &self.compression {
            props.push(("compression".into(), c.clone()));
        }
        if let Some(r) = self.recordsize {
            props.push(("recordsize".into(), r.to_string()));
        }
        if let Some(s) = &self.service {
            props.push((OWNER_PROP.into(), s.clone()));
        }
        props
    }
}

/// Docker's volume name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), which also fits ZFS; also
/// used for service ids.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = name.len() >= 2
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{name:?} is not a name: 2-128 of [A-Za-z0-9_.-], starting with a letter or digit"),
        ))
    }
}

/// A snapshot's short name: the same alphabet, may start with `_`, at most 128.
pub fn check_snapshot_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
    if ok { Ok(()) } else { Err(ApiError::invalid(field, format!("{name:?} is not a snapshot name"))) }
}

/// Docker mount ids come from Docker, but they still end up in a `zfs set` argument.
fn check_mount_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok { Ok(()) } else { Err(ApiError::invalid("ID", format!("{id:?} is not a mount id"))) }
}

#[derive(Clone)]
pub struct VolumeStore {
    pub zfs: Zfs,
    pub root: DatasetName,
    /// Volume name → Docker mount id → how many times that id mounted it.
    mounts: Arc<Mutex<HashMap<String, BTreeMap<String, u32>>>>,
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
    p
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, format!("no volume named {name:?}"))
}

fn parse_mounts(text: &str) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for id in text.split(',').filter(|s| !s.is_empty()) {
        *m.entry(id.to_owned()).or_insert(0) += 1;
    }
    m
}

fn format_mounts(m: &BTreeMap<String, u32>) -> String {
    m.iter().flat_map(|(id, n)| std::iter::repeat_n(id.as_str(), *n as usize)).collect::<Vec<_>>().join(",")
}

impl VolumeStore {
    /// Make the parents (`volumes`, `services`, `prerestore`) and rebuild the mount counts
    /// from the datasets.
    pub async fn start(zfs: Zfs, root: DatasetName) -> Result<VolumeStore, zfs_sys_shim::Error> {
        let store = VolumeStore { zfs, root, mounts: Arc::default() };
        for parent in [store.parent("volumes"), store.parent("services")] {
            if !store.zfs.exists(&parent).await? {
                store.zfs.create_filesystem(&parent, true, &[]).await?;
            }
        }
        let pre = store.parent("prerestore");
        if !store.zfs.exists(&pre).await? {
            // Kept pre-restore states are never mounted: nobody may write to them.
            let props = [("mountpoint".to_owned(), "none".to_owned()), ("canmount".to_owned(), "off".to_owned())];
            store.zfs.create_filesystem(&pre, true, &props).await?;
        }
        let mut counts = HashMap::new();
        for ds in store.list_datasets().await? {
            let m = parse_mounts(ds.user.get(MOUNTS_PROP).map(String::as_str).unwrap_or(""));
            if !m.is_empty() {
                counts.insert(store.short(&ds.name).to_owned(), m);
            }
        }
        let held: usize = counts.values().map(|m| m.values().sum::<u32>() as usize).sum();
        tracing::info!(volumes_mounted = counts.len(), mounts = held, "docker volume mounts rebuilt from ZFS");
        *store.mounts.lock().await = counts;
        Ok(store)
    }

    pub fn parent(&self, what: &str) -> DatasetName {
        self.root.join(what).expect("a fixed name")
    }

    pub fn dataset(&self, name: &str) -> Result<DatasetName, ApiError> {
        check_name("Name", name)?;
        self.parent("volumes").join(name).map_err(|e| ApiError::invalid("Name", e.reason))
    }

    fn short<'a>(&self, full: &'a str) -> &'a str {
        full.rsplit('/').next().unwrap_or(full)
    }

    async fn list_datasets(&self) -> Result<Vec<Dataset>, zfs_sys_shim::Error> {
        let q =
            ListQuery::recursive(self.parent("volumes"), DatasetType::Filesystem, &list_props()).depth(Depth::Max(1));
        let all = self.zfs.list(&q).await?;
        let parent = self.parent("volumes");
        Ok(all.into_iter().filter(|d| d.name != parent.as_str()).collect())
    }

    async fn find(&self, name: &str) -> Result<Dataset, ApiError> {
        let ds = self.dataset(name)?;
        match self.zfs.get(&ds, &list_props()).await {
            Ok(d) => Ok(d),
            Err(e) if e.is_not_found() => Err(not_found(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Create a volume. An existing one is success (Docker asks `Get` first, but two
    /// daemons' worth of retries must not fail), and its options are left as they are.
    pub async fn create(&self, name: &str, opts: &VolumeOpts) -> Result<(), ApiError> {
        let ds = self.dataset(name)?;
        let _serial = self.mounts.lock().await;
        if self.zfs.exists(&ds).await? {
            tracing::info!(volume = name, "create of an existing volume: left as it is");
            return Ok(());
        }
        match &opts.from_snapshot {
            None => self.zfs.create_filesystem(&ds, false, &opts.props()).await?,
            Some((vol, snap)) => {
                let source =
                    self.dataset(vol)?.snapshot(snap).map_err(|e| ApiError::invalid("Opts.from_snapshot", e.reason))?;
                if !self.zfs.exists(&source).await? {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        ErrorKind::NotFound,
                        format!("from_snapshot: no snapshot {vol}@{snap}"),
                    ));
                }
                self.zfs.clone_snapshot(&source, &ds, false, &opts.props()).await?;
            }
        }
        tracing::info!(volume = name, dataset = %ds, "volume created");
        Ok(())
    }

    /// Destroy a volume with its snapshots (and a pending restore's kept state). Refused
    /// while mounted, or while another volume is a clone of one of its snapshots.
    pub async fn remove(&self, name: &str) -> Result<(), ApiError> {
        let ds = self.dataset(name)?;
        let mounts = self.mounts.lock().await;
        if let Some(m) = mounts.get(name).filter(|m| !m.is_empty()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorKind::Busy,
                format!("volume {name} is mounted (mount ids: {})", m.keys().cloned().collect::<Vec<_>>().join(", ")),
            ));
        }
        if !self.zfs.exists(&ds).await? {
            return Err(not_found(name));
        }
        self.destroy_unlocked(&ds).await
    }

    async fn destroy_unlocked(&self, ds: &DatasetName) -> Result<(), ApiError> {
        let kept = super::restore::Swap::of(&self.root, ds)?.kept;
        if self.zfs.exists(&kept).await? {
            super::restore::confirm(&self.zfs, &self.root, ds).await?;
        }
        match self.zfs.destroy(ds, DestroyOptions { recursive: true, ..Default::default() }).await {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("dependent clones") || e.to_string().contains("has dependent") => {
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorKind::Busy,
                    format!("{ds} has snapshots that other volumes were cloned from; remove those first: {e}"),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remove every volume owned by `service`; with `force` even mounted ones (their mount
    /// records go with them). Returns the datasets destroyed.
    pub async fn remove_owned(&self, service: &str, force: bool) -> Result<Vec<String>, ApiError> {
        let owned: Vec<Dataset> = self
            .list_datasets()
            .await?
            .into_iter()
            .filter(|d| d.user.get(OWNER_PROP).map(String::as_str) == Some(service))
            .collect();
        let mut mounts = self.mounts.lock().await;
        let busy: Vec<&str> = owned
            .iter()
            .map(|d| self.short(&d.name))
            .filter(|n| mounts.get(*n).is_some_and(|m| !m.is_empty()))
            .collect();
        if !busy.is_empty() && !force {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorKind::Busy,
                format!("volumes of service {service} are mounted: {} (force to remove anyway)", busy.join(", ")),
            ));
        }
        let mut removed = Vec::new();
        for d in &owned {
            let ds: DatasetName =
                d.name.parse().map_err(|e: zfs_sys_shim::NameError| ApiError::invalid("name", e.reason))?;
            self.destroy_unlocked(&ds).await?;
            mounts.remove(self.short(&d.name));
            removed.push(d.name.clone());
        }
        Ok(removed)
    }

    /// Count a mount by `id` and make sure the dataset is mounted; returns the path.
    pub async fn mount(&self, name: &str, id: &str) -> Result<String, ApiError> {
        check_mount_id(id)?;
        let found = self.find(name).await?;
        let ds = self.dataset(name)?;
        if found.mounted != Some(true) {
            self.zfs.mount(&ds).await?;
        }
        let mut mounts = self.mounts.lock().await;
        let mut next = mounts.get(name).cloned().unwrap_or_default();
        *next.entry(id.to_owned()).or_insert(0) += 1;
        // Recorded on the dataset before it counts here, so a crash never forgets a mount.
        self.zfs.set(&ds, &[(MOUNTS_PROP.to_owned(), format_mounts(&next))]).await?;
        mounts.insert(name.to_owned(), next);
        Ok(found.mountpoint.unwrap_or_default())
    }

    /// Undo one `mount` by `id`. An id that holds no mount is an error Docker logs.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), ApiError> {
        check_mount_id(id)?;
        let ds = self.dataset(name)?;
        let mut mounts = self.mounts.lock().await;
        let mut next = mounts.get(name).cloned().unwrap_or_default();
        match next.get_mut(id) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                next.remove(id);
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorKind::Conflict,
                    format!("volume {name} is not mounted by {id}"),
                ));
            }
        }
        self.zfs.set(&ds, &[(MOUNTS_PROP.to_owned(), format_mounts(&next))]).await?;
        if next.is_empty() {
            mounts.remove(name);
        } else {
            mounts.insert(name.to_owned(), next);
        }
        Ok(())
    }

    pub async fn mount_ids(&self, name: &str) -> Vec<String> {
        self.mounts.lock().await.get(name).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Number of volumes, for the metrics.
    pub async fn count(&self) -> Result<usize, ApiError> {
        Ok(self.list_datasets().await?.len())
    }

    /// Total mounts held, for the metrics.
    pub async fn mount_count(&self) -> usize {
        self.mounts.lock().await.values().map(|m| m.values().sum::<u32>() as usize).sum()
    }

    /// One volume as Docker's Get and Path see it: a single `zfs get`. Docker asks for it
    /// several times per `docker run`; its snapshots and a pending restore (two more
    /// commands) are the control API's to show, so they are left empty here.
    pub async fn brief(&self, name: &str) -> Result<VolumeInfo, ApiError> {
        let d = self.find(name).await?;
        self.describe(d, None).await
    }

    pub async fn list(&self) -> Result<Vec<VolumeInfo>, ApiError> {
        let snaps = self.snapshots().await?;
        let mut out = Vec::new();
        for d in self.list_datasets().await? {
            out.push(self.describe(d, Some(&snaps)).await?);
        }
        Ok(out)
    }

    /// Snapshot names per volume dataset, oldest first, in one listing.
    async fn snapshots(&self) -> Result<HashMap<String, Vec<String>>, ApiError> {
        let q = ListQuery::recursive(self.parent("volumes"), DatasetType::Snapshot, &[]).depth(Depth::Max(2));
        let mut by_volume: HashMap<String, Vec<String>> = HashMap::new();
        for s in self.zfs.list(&q).await? {
            if let Some((ds, _)) = s.name.split_once('@') {
                let id = s.name.strip_prefix(&format!("{}/", self.root)).unwrap_or(&s.name).to_owned();
                by_volume.entry(ds.to_owned()).or_default().push(id);
            }
        }
        Ok(by_volume)
    }

    /// `history`: the snapshots of every volume, when the caller wants each volume's
    /// snapshots and pending restore filled in.
    async fn describe(
        &self,
        d: Dataset,
        history: Option<&HashMap<String, Vec<String>>>,
    ) -> Result<VolumeInfo, ApiError> {
        let name = self.short(&d.name).to_owned();
        let ds: DatasetName =
            d.name.parse().map_err(|e: zfs_sys_shim::NameError| ApiError::invalid("name", e.reason))?;
        let (snapshots, pending) = match history {
            Some(snaps) => (
                snaps.get(&d.name).cloned().unwrap_or_default(),
                super::restore::pending(&self.zfs, &self.root, &ds).await?,
            ),
            None => (Vec::new(), None),
        };
        Ok(VolumeInfo {
            mounts: self.mount_ids(&name).await,
            snapshots,
            pending_restore: pending.map(|(snapshot_id, kept_as)| PendingRestore { snapshot_id, kept_as }),
            name,
            dataset: d.name,
            mountpoint: d.mountpoint.unwrap_or_default(),
            service: d.user.get(OWNER_PROP).cloned(),
            size: d.refquota,
            used: d.used.unwrap_or(0),
            referenced: d.referenced.unwrap_or(0),
            created_at: d.creation.unwrap_or(0),
        })
    }

    /// Volume names owned by `service`.
    pub async fn owned_by(&self, service: &str) -> Result<Vec<String>, ApiError> {
        Ok(self
            .list_datasets()
            .await?
            .into_iter()
            .filter(|d| d.user.get(OWNER_PROP).map(String::as_str) == Some(service))
            .map(|d| self.short(&d.name).to_owned())
            .collect())
    }

    /// The owner of a volume, if any (for service-token checks).
    pub async fn owner(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self.find(name).await?.user.get(OWNER_PROP).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<VolumeOpts, ApiError> {
        VolumeOpts::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn options_parse_into_properties() {
        let o =
            opts(&[("size", "64M"), ("compression", "zstd-3"), ("recordsize", "16K"), ("service", "svc-1")]).unwrap();
        assert_eq!(o.size, Some(64 << 20));
        let props = o.props();
        assert!(props.contains(&("refquota".into(), (64u64 << 20).to_string())));
        assert!(props.contains(&("compression".into(), "zstd-3".into())));
        assert!(props.contains(&("recordsize".into(), "16384".into())));
        assert!(props.contains(&(OWNER_PROP.into(), "svc-1".into())));
        assert_eq!(opts(&[("quota", "1G")]).unwrap().size, Some(1 << 30));
        assert_eq!(
            opts(&[("from_snapshot", "volumes/v1@s1")]).unwrap().from_snapshot,
            Some(("v1".into(), "s1".into()))
        );
    }

    #[test]
    fn bad_options_name_themselves() {
        for (k, v) in [
            ("size", "lots"),
            ("size", "12"),
            ("compression", "brotli"),
            ("compression", "zstd-x"),
            ("recordsize", "3000"),
            ("from_snapshot", "v1"),
            ("from_snapshot", "../x@s"),
            ("from_snapshot", "v1@-s"),
            ("service", "-svc"),
            ("mountpoint", "/etc"),
        ] {
            let err = opts(&[(k, v)]).unwrap_err();
            assert_eq!(err.detail.field.as_deref(), Some(format!("Opts.{k}").as_str()), "{k}={v}");
        }
    }

    #[test]
    fn names() {
        for good in ["v1", "my.vol_2-x", "A9"] {
            assert!(check_name("Name", good).is_ok(), "{good}");
        }
        for bad in ["", "v", "-v", ".v", "a/b", "a..b/c", "a b", "v@s", &"x".repeat(129)] {
            assert!(check_name("Name", bad).is_err(), "{bad:?}");
        }
        assert!(check_mount_id("0123abcdef").is_ok());
        assert!(check_mount_id("a,b").is_err(), "a comma would corrupt the mount list");
    }

    #[test]
    fn mount_lists_round_trip_with_repeats() {
        let m = parse_mounts("b,a,b");
        assert_eq!(m.get("b"), Some(&2));
        assert_eq!(format_mounts(&m), "a,b,b");
        assert!(parse_mounts("").is_empty());
    }
}
