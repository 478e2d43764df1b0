//! Pool-level reads and the few pool writes tankd needs: its embedded file-backed pool,
//! and the test suite's per-test pools.

use std::path::Path;

use crate::name::PoolName;
use crate::{Error, Zfs};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub size: u64,
    pub allocated: u64,
    pub free: u64,
    /// ONLINE, DEGRADED, FAULTED, OFFLINE, UNAVAIL, REMOVED, SUSPENDED.
    pub health: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ZfsVersion {
    /// e.g. `zfs-2.3.2-2~bpo12+2`
    pub userland: String,
    /// e.g. `zfs-kmod-2.3.2-2~bpo12+2`; empty when the module is not loaded.
    pub kernel: String,
}

pub(crate) fn parse_pool_line(line: &str, command: &str) -> Result<PoolInfo, Error> {
    let f: Vec<&str> = line.split('\t').collect();
    let bad = |reason: String| Error::Parse { command: command.to_owned(), reason };
    if f.len() != 5 {
        return Err(bad(format!("expected 5 columns: {line:?}")));
    }
    let num = |s: &str| s.parse::<u64>().map_err(|_| bad(format!("not a number: {s:?}")));
    Ok(PoolInfo {
        name: f[0].to_owned(),
        size: num(f[1])?,
        allocated: num(f[2])?,
        free: num(f[3])?,
        health: f[4].to_owned(),
    })
}

fn check_vdev_path(path: &Path) -> Result<String, Error> {
    let s = path.to_str().filter(|s| s.starts_with('/') && !s.contains("..") && !s.chars().any(|c| c.is_control()));
    s.map(str::to_owned).ok_or_else(|| Error::InvalidArgument {
        field: "vdev",
        reason: format!("{} must be an absolute path without '..' or control characters", path.display()),
    })
}

impl Zfs {
    /// `zpool list -H -p -o name,size,allocated,free,health pool`.
    pub async fn pool_info(&self, pool: &PoolName) -> Result<PoolInfo, Error> {
        let inv = self.zpool(pool.as_str()).args([
            "list",
            "-H",
            "-p",
            "-o",
            "name,size,allocated,free,health",
            pool.as_str(),
        ]);
        let out = inv.run().await?;
        parse_pool_line(out.lines().next().unwrap_or_default(), &inv.display())
    }

    /// Whether `pool` is imported.
    pub async fn pool_imported(&self, pool: &PoolName) -> Result<bool, Error> {
        match self.pool_info(pool).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `zfs version`: userland and kernel module versions.
    pub async fn version(&self) -> Result<ZfsVersion, Error> {
        let inv = self.zfs_unscoped("zfs").arg("version");
        let out = inv.run().await?;
        let mut lines = out.lines();
        Ok(ZfsVersion {
            userland: lines.next().unwrap_or_default().trim().to_owned(),
            kernel: lines.next().unwrap_or_default().trim().to_owned(),
        })
    }

    /// `zpool create [-o k=v] [-O k=v] -m none pool vdev`: a pool on one file or device.
    /// The root dataset is not mounted (`-m none`): tankd mounts what it creates itself.
    pub async fn create_pool(&self, pool: &PoolName, vdev: &Path, fs_props: &[(String, String)]) -> Result<(), Error> {
        let vdev = check_vdev_path(vdev)?;
        let mut inv = self.zpool(pool.as_str()).args(["create", "-m", "none", "-o", "ashift=12"]);
        for (k, v) in fs_props {
            inv = inv.arg("-O").arg(crate::write::check_one_prop(k, v)?);
        }
        inv.arg(pool.as_str()).arg(vdev).run().await.map(drop)
    }

    /// `zpool import -d dir pool`: re-import a pool whose vdevs live in `dir`.
    pub async fn import_pool(&self, pool: &PoolName, search_dir: &Path) -> Result<(), Error> {
        let dir = check_vdev_path(search_dir)?;
        self.zpool(pool.as_str()).args(["import", "-d"]).arg(dir).arg(pool.as_str()).run().await.map(drop)
    }

    /// `zpool export pool`, then the pool's `/dev/zvol` links that now lead nowhere.
    pub async fn export_pool(&self, pool: &PoolName) -> Result<(), Error> {
        self.zpool(pool.as_str()).arg("export").arg(pool.as_str()).retry_busy().run().await?;
        self.forget_zvol_links(pool.as_str()).await;
        Ok(())
    }

    /// `zpool destroy -f pool`, then the pool's `/dev/zvol` links that now lead nowhere.
    /// For tests and for undoing a failed embedded-pool setup.
    pub async fn destroy_pool(&self, pool: &PoolName) -> Result<(), Error> {
        self.zpool(pool.as_str()).args(["destroy", "-f"]).arg(pool.as_str()).retry_busy().run().await?;
        self.forget_zvol_links(pool.as_str()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pool_line() {
        let p = parse_pool_line("tank\t8321499136\t110592\t8321388544\tONLINE", "zpool list").unwrap();
        assert_eq!(p.size, 8321499136);
        assert_eq!(p.free, 8321388544);
        assert_eq!(p.health, "ONLINE");
        assert!(parse_pool_line("tank\t1\t2", "zpool list").is_err());
    }

    #[test]
    fn vdev_paths_are_checked() {
        assert!(check_vdev_path(Path::new("/var/lib/tankd/pool.img")).is_ok());
        for bad in ["pool.img", "-f", "/a/../b", "/a\nb"] {
            assert!(check_vdev_path(Path::new(bad)).is_err(), "{bad:?}");
        }
    }
}
