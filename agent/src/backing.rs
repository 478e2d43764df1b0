//! Where a service's storage lives: ZFS datasets under the dataset root, or, on a node
//! with `zfs = false`, directories under the data dir. The control API provisions
//! through this seam and the S3 endpoint keeps its buckets through it, so the same
//! capability code runs on both (the host tier tests it on directories, fast).
//!
//! | what | ZFS | directories |
//! |---|---|---|
//! | service | `<root>/services/<svc>` (quota) | `<data_dir>/services/<svc>` |
//! | bucket | `<root>/services/<svc>/s3/<bucket>`, mounted at `<data_dir>/s3/<svc>/<bucket>` | `<data_dir>/s3/<svc>/<bucket>` |
//! | database | `<root>/services/<svc>/db`, mounted at `<data_dir>/db/<svc>` | `<data_dir>/db/<svc>` |
//!
//! A bucket is a child of its service's dataset, so the service's quota covers it and a
//! recursive snapshot of the service takes it in the same transaction group; it is
//! mounted under tankd's own data dir, not inside the service's mountpoint, so a
//! workload that mounts its service dataset can neither see nor plant symlinks in it.

use std::path::{Path, PathBuf};

use zfs_sys_shim::{DatasetName, DatasetType, DestroyOptions, ListQuery, Prop, Zfs};

use crate::error::{Error, Result};

/// Properties of a bucket's dataset: large records for whole-object reads and writes,
/// cheap compression, metadata xattrs in the dnode (HEAD reads no extra block), and no
/// access-time writes on GET.
const BUCKET_PROPS: &[(&str, &str)] =
    &[("recordsize", "1M"), ("compression", "lz4"), ("xattr", "sa"), ("dnodesize", "auto"), ("atime", "off")];

/// Properties of a database's dataset: SQLite pages are small and rewritten in place, and
/// a commit waits for its WAL write: small records, the ZIL for latency.
const DB_PROPS: &[(&str, &str)] =
    &[("recordsize", "16K"), ("logbias", "latency"), ("compression", "lz4"), ("atime", "off")];

/// Properties of the archive repository's dataset.
const ARCHIVE_PROPS: &[(&str, &str)] = &[("recordsize", "1M"), ("compression", "off"), ("atime", "off")];

const NAME_PROP: &str = "tankd:service-name";

#[derive(Clone)]
pub enum Backing {
    Datasets { zfs: Zfs, root: DatasetName, data_dir: PathBuf },
    Dirs { data_dir: PathBuf },
}

/// A provisioned service's own storage.
pub struct ServiceStorage {
    /// The dataset, when the node has ZFS.
    pub dataset: Option<String>,
    pub path: PathBuf,
    pub created: bool,
}

/// A bucket found at start-up.
pub struct FoundBucket {
    pub service: String,
    pub bucket: String,
    pub path: PathBuf,
}

impl Backing {
    pub fn new(config: &crate::config::Config, zfs: &Zfs) -> Backing {
        if config.zfs {
            Backing::Datasets { zfs: zfs.clone(), root: config.dataset_root.clone(), data_dir: config.data_dir.clone() }
        } else {
            Backing::Dirs { data_dir: config.data_dir.clone() }
        }
    }

    fn data_dir(&self) -> &Path {
        match self {
            Backing::Datasets { data_dir, .. } | Backing::Dirs { data_dir } => data_dir,
        }
    }

    /// Where a bucket's files are (its dataset's mountpoint, or its directory).
    pub fn bucket_path(&self, service: &str, bucket: &str) -> PathBuf {
        self.data_dir().join("s3").join(service).join(bucket)
    }

    fn service_dir(&self, service: &str) -> PathBuf {
        self.data_dir().join("services").join(service)
    }

    fn service_dataset(root: &DatasetName, service: &str) -> Result<DatasetName> {
        root.join(&format!("services/{service}")).map_err(|e| Error::invalid("serviceId", e.reason))
    }

    /// Makes the service's storage or, when it exists, applies the name and quota to it.
    pub async fn ensure_service(&self, service: &str, name: &str, quota: Option<u64>) -> Result<ServiceStorage> {
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let ds = Self::service_dataset(root, service)?;
                let mut props = vec![(NAME_PROP.to_owned(), name.to_owned())];
                if let Some(q) = quota {
                    props.push(("quota".to_owned(), q.to_string()));
                }
                let created = if zfs.exists(&ds).await? {
                    // Provisioning is "make it so": a new name or quota applies to the existing one.
                    zfs.set(&ds, &props).await?;
                    false
                } else {
                    zfs.create_filesystem(&ds, true, &props).await?;
                    true
                };
                let mountpoint = zfs.get(&ds, &[Prop::Mountpoint]).await?.mountpoint.unwrap_or_default();
                Ok(ServiceStorage { dataset: Some(ds.to_string()), path: PathBuf::from(mountpoint), created })
            }
            Backing::Dirs { .. } => {
                if quota.is_some() {
                    tracing::warn!(service, "zfs = false: the quota is not enforced on a directory");
                }
                let path = self.service_dir(service);
                let created = !path.is_dir();
                make_private_dir(&path).map_err(|e| Error::os(format!("service directory {}", path.display()), e))?;
                Ok(ServiceStorage { dataset: None, path, created })
            }
        }
    }

    /// Removes the service's storage with everything in it (its buckets too). Returns
    /// what was removed; nothing when it was gone already.
    pub async fn remove_service(&self, service: &str) -> Result<Option<String>> {
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let ds = Self::service_dataset(root, service)?;
                if !zfs.exists(&ds).await? {
                    return Ok(None);
                }
                zfs.destroy(&ds, DestroyOptions { recursive: true, ..Default::default() }).await.map_err(|e| {
                    if e.kind() == zfs_sys_shim::ErrorKind::Busy {
                        Error::busy(format!("{ds} is in use: {e}"))
                    } else {
                        e.into()
                    }
                })?;
                let _ = std::fs::remove_dir_all(self.data_dir().join("s3").join(service));
                let _ = std::fs::remove_dir_all(self.database_path(service));
                Ok(Some(ds.to_string()))
            }
            Backing::Dirs { .. } => {
                let mut removed = None;
                for path in
                    [self.data_dir().join("s3").join(service), self.database_path(service), self.service_dir(service)]
                {
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => removed = Some(path.display().to_string()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::os(format!("removing {}", path.display()), e)),
                    }
                }
                Ok(removed)
            }
        }
    }

    /// Makes the bucket's dataset (or directory) if missing; returns where its files are.
    pub async fn ensure_bucket(&self, service: &str, bucket: &str) -> Result<PathBuf> {
        let path = self.bucket_path(service, bucket);
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let ds = Self::service_dataset(root, service)?
                    .join(&format!("s3/{bucket}"))
                    .map_err(|e| Error::invalid("bucket", e.reason))?;
                if !zfs.exists(&ds).await? {
                    // The buckets' parent mounts nowhere: each bucket has its own place.
                    let container =
                        Self::service_dataset(root, service)?.join("s3").map_err(|e| Error::internal(e.reason))?;
                    if !zfs.exists(&container).await? {
                        zfs.create_filesystem(&container, true, &[("canmount".to_owned(), "off".to_owned())]).await?;
                    }
                    let mut props: Vec<(String, String)> =
                        BUCKET_PROPS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                    props.push(("mountpoint".to_owned(), path.display().to_string()));
                    zfs.create_filesystem(&ds, true, &props).await?;
                    tracing::info!(service, bucket, dataset = %ds, "bucket dataset created");
                } else {
                    zfs.mount(&ds).await?;
                }
                objstore::Bucket::create(&path).map_err(|e| Error::from(e).with_field("bucket"))?;
            }
            Backing::Dirs { .. } => {
                make_private_dir(path.parent().expect("under the data dir"))
                    .map_err(|e| Error::os(format!("bucket directory {}", path.display()), e))?;
                objstore::Bucket::create(&path).map_err(|e| Error::from(e).with_field("bucket"))?;
            }
        }
        Ok(path)
    }

    /// Where a service's database files are (its dataset's mountpoint, or a directory).
    pub fn database_path(&self, service: &str) -> PathBuf {
        self.data_dir().join("db").join(service)
    }

    /// Makes the service's database dataset (or directory) if missing and mounts it;
    /// returns where its files go.
    pub async fn ensure_database(&self, service: &str) -> Result<PathBuf> {
        let path = self.database_path(service);
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let ds = Self::service_dataset(root, service)?.join("db").map_err(|e| Error::internal(e.reason))?;
                let parent = path.parent().expect("under the data dir");
                make_private_dir(parent)
                    .map_err(|e| Error::os(format!("database directory {}", parent.display()), e))?;
                if ensure_mounted(zfs, &ds, DB_PROPS, &path, false).await? {
                    tracing::info!(service, dataset = %ds, "database dataset created");
                }
            }
            Backing::Dirs { .. } => {
                make_private_dir(&path).map_err(|e| Error::os(format!("database directory {}", path.display()), e))?;
            }
        }
        Ok(path)
    }

    pub fn archives_path(&self) -> PathBuf {
        self.data_dir().join("archives")
    }

    /// Makes (or mounts) the local archive repository: the `<root>/archives` dataset
    /// mounted at `<data_dir>/archives`, or that directory. Its objects are encrypted
    /// (incompressible) and written whole: large records, no compression.
    pub async fn ensure_archives(&self) -> Result<PathBuf> {
        let path = self.archives_path();
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let ds = root.join("archives").map_err(|e| Error::internal(e.reason))?;
                if ensure_mounted(zfs, &ds, ARCHIVE_PROPS, &path, true).await? {
                    tracing::info!(dataset = %ds, "archive repository dataset created");
                }
            }
            Backing::Dirs { .. } => {
                make_private_dir(&path).map_err(|e| Error::os(format!("archive directory {}", path.display()), e))?;
            }
        }
        Ok(path)
    }

    /// Every service database that exists (mounted), for the database endpoint at start.
    pub async fn databases(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let services = root.join("services").map_err(|e| Error::internal(e.reason))?;
                let q = ListQuery::recursive(services.clone(), DatasetType::Filesystem, &[])
                    .depth(zfs_sys_shim::Depth::Max(2));
                // No services dataset yet: no databases (one command, not a probe and a list).
                for d in zfs.list_if_exists(&q).await? {
                    let Some(rest) = d.name.strip_prefix(&format!("{services}/")) else { continue };
                    if let Some((service, "db")) = rest.split_once('/') {
                        let ds: DatasetName =
                            d.name.parse().map_err(|e: zfs_sys_shim::NameError| Error::internal(e.to_string()))?;
                        zfs.mount(&ds).await?;
                        out.push((service.to_owned(), self.database_path(service)));
                    }
                }
            }
            Backing::Dirs { data_dir } => {
                for service in read_dir_names(&data_dir.join("db"))? {
                    let path = self.database_path(&service);
                    out.push((service, path));
                }
            }
        }
        Ok(out)
    }

    /// The buckets of one service, mounted: what the S3 endpoint reopens after the
    /// service's datasets were restored.
    pub async fn service_buckets(&self, service: &str) -> Result<Vec<FoundBucket>> {
        let mut out = Vec::new();
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let s3 = Self::service_dataset(root, service)?.join("s3").map_err(|e| Error::internal(e.reason))?;
                if !zfs.exists(&s3).await? {
                    return Ok(out);
                }
                let q =
                    ListQuery::recursive(s3.clone(), DatasetType::Filesystem, &[]).depth(zfs_sys_shim::Depth::Max(1));
                for d in zfs.list(&q).await? {
                    if let Some(bucket) = d.name.strip_prefix(&format!("{s3}/")) {
                        out.push(self.mount_bucket(zfs, &d.name, service, bucket).await?);
                    }
                }
            }
            Backing::Dirs { data_dir } => {
                for bucket in read_dir_names(&data_dir.join("s3").join(service))? {
                    let path = self.bucket_path(service, &bucket);
                    out.push(FoundBucket { service: service.to_owned(), bucket, path });
                }
            }
        }
        Ok(out)
    }

    /// Every bucket that exists, for the S3 endpoint's index at start.
    pub async fn buckets(&self) -> Result<Vec<FoundBucket>> {
        let mut out = Vec::new();
        match self {
            Backing::Datasets { zfs, root, .. } => {
                let services = root.join("services").map_err(|e| Error::internal(e.reason))?;
                let q = ListQuery::recursive(services.clone(), DatasetType::Filesystem, &[]);
                for d in zfs.list_if_exists(&q).await? {
                    let Some(rest) = d.name.strip_prefix(&format!("{services}/")) else { continue };
                    let parts: Vec<&str> = rest.split('/').collect();
                    if let [service, "s3", bucket] = parts[..] {
                        out.push(self.mount_bucket(zfs, &d.name, service, bucket).await?);
                    }
                }
            }
            Backing::Dirs { data_dir } => {
                for service in read_dir_names(&data_dir.join("s3"))? {
                    out.extend(self.service_buckets(&service).await?);
                }
            }
        }
        Ok(out)
    }

    /// Mounts a bucket's dataset `name` (already mounted is fine) and says where it is.
    async fn mount_bucket(&self, zfs: &Zfs, name: &str, service: &str, bucket: &str) -> Result<FoundBucket> {
        let ds: DatasetName = name.parse().map_err(|e: zfs_sys_shim::NameError| Error::internal(e.to_string()))?;
        zfs.mount(&ds).await?;
        Ok(FoundBucket {
            service: service.to_owned(),
            bucket: bucket.to_owned(),
            path: self.bucket_path(service, bucket),
        })
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::os(format!("reading {}", dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::os(format!("reading {}", dir.display()), e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A mounted dataset's root made root's only (a new dataset's root is 0755).
fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::os(format!("directory {}", path.display()), e))
}

/// Creates `ds` with `props`, mounted at `path`, or mounts it when it exists; the mount
/// point is then root's only. True when it was created now.
async fn ensure_mounted(
    zfs: &Zfs,
    ds: &DatasetName,
    props: &[(&str, &str)],
    path: &Path,
    parents: bool,
) -> Result<bool> {
    let created = if zfs.exists(ds).await? {
        zfs.mount(ds).await?;
        false
    } else {
        let mut props: Vec<(String, String)> = props.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        props.push(("mountpoint".to_owned(), path.display().to_string()));
        zfs.create_filesystem(ds, parents, &props).await?;
        true
    };
    restrict(path)?;
    Ok(created)
}

/// `mkdir -p` with the last levels 0700: tenants' data is root's only.
fn make_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}
