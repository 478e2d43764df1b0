//! Before serving: check the host can run tankd at all, then make sure the pool and the
//! dataset root exist. With no pool configured, tankd creates (or re-imports) its
//! embedded pool on a sparse file in the data dir, so it runs on any ZFS host.

use std::path::Path;

use zfs_sys_shim::{DatasetName, Roots, Zfs};

use crate::config::Config;

/// User property marking a pool as tankd's embedded one, with its backing file as value.
/// An imported pool called `tankd` without it is someone else's and is not touched.
const EMBEDDED_MARK: &str = "tankd:embedded-vdev";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("tankd cannot start:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Host(Vec<String>),
    #[error("pool {pool} is not imported (`zpool import {pool}`), or set no pool to use the embedded one")]
    PoolMissing { pool: String },
    #[error(
        "pool {pool} is imported but is not tankd's embedded pool (no {EMBEDDED_MARK}); configure `pool = \"{pool}\"` to use it"
    )]
    ForeignPool { pool: String },
    #[error("embedded pool: {0}")]
    Embedded(String),
    #[error(transparent)]
    Zfs(#[from] zfs_sys_shim::Error),
}

/// Everything that would make tankd useless, reported together.
pub async fn check_host(zfs: &Zfs, dev_zfs: &Path) -> Result<(), StartupError> {
    let mut problems = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        problems.push("not running as root: tankd manages pools, devices and mounts".to_owned());
    }
    if !dev_zfs.exists() {
        problems.push(format!(
            "{} is missing: the ZFS kernel module is not loaded (`modprobe zfs`, package zfs-dkms)",
            dev_zfs.display()
        ));
    }
    if let Err(e) = zfs.version().await {
        let why = match e {
            zfs_sys_shim::Error::Spawn { .. } => "no `zfs` command on PATH (package zfsutils-linux)".to_owned(),
            other => format!("`zfs version` failed: {other}"),
        };
        problems.push(why);
    }
    if problems.is_empty() { Ok(()) } else { Err(StartupError::Host(problems)) }
}

/// A node without ZFS still needs root: devices and mounts.
pub fn check_root() -> Result<(), StartupError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(StartupError::Host(vec!["not running as root: tankd manages devices and mounts".to_owned()]))
    }
}

/// Make sure the pool is there (creating or importing the embedded one) and the dataset
/// root exists. Returns a shim handle scoped to the dataset root.
pub async fn prepare_storage(config: &Config) -> Result<Zfs, StartupError> {
    let pool_root: DatasetName = config.pool.as_str().parse().expect("a pool name is a dataset name");
    let admin = Zfs::new(Roots::new(vec![pool_root.clone()]));
    let mut new_pool = false;
    if config.embedded_pool {
        new_pool = ensure_embedded_pool(&admin, config, &pool_root).await?;
    } else if !admin.pool_imported(&config.pool).await? {
        return Err(StartupError::PoolMissing { pool: config.pool.to_string() });
    }
    // A pool made a moment ago has no dataset root: no need to ask.
    if new_pool || !admin.exists(&config.dataset_root).await? {
        let mut props = Vec::new();
        if config.embedded_pool {
            let mnt = config.data_dir.join("mnt");
            props.push(("mountpoint".to_owned(), mnt.to_string_lossy().into_owned()));
        }
        // Every dataset below inherits these: no setuid program or device node on a
        // tankd dataset takes effect on the host, unless the operator allows it.
        if !config.allow_suid_dev {
            props.push(("setuid".to_owned(), "off".to_owned()));
            props.push(("devices".to_owned(), "off".to_owned()));
        }
        tracing::info!(root = %config.dataset_root, "creating the dataset root");
        admin.create_filesystem(&config.dataset_root, true, &props).await?;
    }
    Ok(Zfs::new(Roots::new(vec![config.dataset_root.clone()])))
}

/// True when the pool was created now (not imported, not already there).
async fn ensure_embedded_pool(admin: &Zfs, config: &Config, pool_root: &DatasetName) -> Result<bool, StartupError> {
    let vdev = config.embedded_vdev();
    let vdev_text = vdev.to_string_lossy().into_owned();
    if admin.pool_imported(&config.pool).await? {
        let marks = admin.user_props(pool_root, EMBEDDED_MARK).await?;
        return match marks.get(EMBEDDED_MARK) {
            Some(_) => Ok(false),
            None => Err(StartupError::ForeignPool { pool: config.pool.to_string() }),
        };
    }
    let dir = vdev.parent().expect("vdev path has a parent");
    if vdev.exists() {
        tracing::info!(pool = %config.pool, vdev = %vdev.display(), "importing the embedded pool");
        admin.import_pool(&config.pool, dir).await?;
        return Ok(false);
    }
    tracing::info!(pool = %config.pool, vdev = %vdev.display(), size = config.embedded_pool_size, "creating the embedded pool");
    std::fs::create_dir_all(dir).map_err(|e| StartupError::Embedded(format!("{}: {e}", dir.display())))?;
    let file = std::fs::File::create(&vdev).map_err(|e| StartupError::Embedded(format!("{}: {e}", vdev.display())))?;
    file.set_len(config.embedded_pool_size).map_err(|e| StartupError::Embedded(format!("{}: {e}", vdev.display())))?;
    drop(file);
    let props = [("compression".to_owned(), "lz4".to_owned()), (EMBEDDED_MARK.to_owned(), vdev_text)];
    if let Err(e) = admin.create_pool(&config.pool, &vdev, &props).await {
        // Leave nothing half-made: the next start would try to import a file with no pool.
        let _ = std::fs::remove_file(&vdev);
        return Err(e.into());
    }
    Ok(true)
}
