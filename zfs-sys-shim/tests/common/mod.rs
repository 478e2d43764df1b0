//! A throw-away pool per test, on a sparse file, destroyed when the test ends (also when
//! it panics). Needs kernel ZFS: `scripts/test` runs these inside the test VM.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use zfs_sys_shim::{DatasetName, PoolName, Roots, Zfs};

pub const NEEDS_ZFS: &str = "needs kernel ZFS; scripts/test runs it in the test VM";

pub struct TestPool {
    pub pool: PoolName,
    pub root: DatasetName,
    pub zfs: Zfs,
    pub vdev: PathBuf,
    pub mnt: PathBuf,
}

fn vdev_dir() -> PathBuf {
    std::env::var_os("TANKD_TEST_VDEV_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

impl TestPool {
    /// A 1 GiB sparse pool `tkNNNN<tag>` with the root dataset `<pool>/tankd` mounted
    /// under the vdev dir.
    pub async fn new(tag: &str) -> TestPool {
        assert!(
            std::path::Path::new("/dev/zfs").exists(),
            "/dev/zfs is missing: run this through scripts/test, which boots the kernel-ZFS VM"
        );
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("tk{}x{n}{tag}", std::process::id() % 100_000);
        let pool: PoolName = name.parse().unwrap();
        let vdev = vdev_dir().join(format!("{name}.img"));
        let mnt = vdev_dir().join(format!("{name}.mnt"));
        std::fs::File::create(&vdev).unwrap().set_len(1 << 30).unwrap();
        let root: DatasetName = format!("{name}/tankd").parse().unwrap();
        let admin = Zfs::new(Roots::new(vec![pool.as_str().parse().unwrap()]));
        admin.create_pool(&pool, &vdev, &[]).await.expect("zpool create");
        let props = [("mountpoint".to_owned(), mnt.to_str().unwrap().to_owned())];
        admin.create_filesystem(&root, false, &props).await.expect("create root");
        let zfs = Zfs::new(Roots::new(vec![root.clone()]));
        TestPool { pool, root, zfs, vdev, mnt }
    }

    pub fn ds(&self, rel: &str) -> DatasetName {
        self.root.join(rel).unwrap()
    }

    pub fn snap(&self, rel: &str) -> zfs_sys_shim::SnapshotName {
        format!("{}/{rel}", self.root).parse().unwrap()
    }

    /// Every dataset, snapshot and bookmark in the pool with its guid: a fingerprint to
    /// prove a refused call changed nothing.
    pub fn fingerprint(&self) -> String {
        let out = std::process::Command::new("zfs")
            .args(["list", "-H", "-p", "-o", "name,guid,written", "-t", "all", "-r", self.pool.as_str()])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn mountpoint(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop runs during unwinding too.
        let _ = std::process::Command::new("zpool").args(["destroy", "-f", self.pool.as_str()]).status();
        let _ = std::fs::remove_file(&self.vdev);
        let _ = std::fs::remove_dir_all(&self.mnt);
    }
}

/// Write `len` bytes of deterministic pseudo-random data (incompressible, so streams
/// have real size).
pub fn write_noise(path: &std::path::Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        buf.extend_from_slice(&x.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes());
    }
    buf.truncate(len);
    std::fs::write(path, buf).unwrap();
}

pub fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    format!("{:x}", sha2::Sha256::digest(bytes))
}
