//! The shim against kernel OpenZFS. Every test makes its own pool (see `common`).

mod common;

use std::time::Duration;

use common::{NEEDS_ZFS, TestPool, sha256_file, write_noise};
use tokio::io::AsyncReadExt;
use zfs_sys_shim::{
    DatasetType, Depth, DestroyOptions, ErrorKind, HoldTag, ListQuery, Prop, ReceiveArgs, SendArgs, SendFrom,
    VolumeOptions, Zfs,
};

fn props(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn send_all(zfs: &Zfs, args: &SendArgs) -> Vec<u8> {
    let mut stream = zfs.send(args).await.expect("send");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.expect("read send stream");
    stream.finish().await.expect("send finished");
    bytes
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn create_list_get_set_inherit() {
    let _ = NEEDS_ZFS;
    let t = TestPool::new("list").await;
    let zfs = &t.zfs;
    zfs.create_filesystem(&t.ds("a/b/c"), true, &props(&[("compression", "lz4"), ("tankd:owner", "test")]))
        .await
        .unwrap();
    zfs.create_volume(
        &t.ds("vols/v1"),
        &VolumeOptions { size: 32 << 20, sparse: true, volblocksize: Some(16384), parents: true, props: vec![] },
    )
    .await
    .unwrap();

    let fs = zfs
        .list(&ListQuery::recursive(
            t.root.clone(),
            DatasetType::Filesystem,
            &[Prop::Used, Prop::Compression, Prop::user("tankd:owner").unwrap()],
        ))
        .await
        .unwrap();
    let names: Vec<_> = fs.iter().map(|d| d.name.as_str()).collect();
    let root = t.root.as_str();
    assert_eq!(
        names,
        [root.to_owned(), format!("{root}/a"), format!("{root}/a/b"), format!("{root}/a/b/c"), format!("{root}/vols")]
    );
    let c = fs.last().filter(|d| d.name.ends_with("/vols")).map(|_| &fs[3]).unwrap();
    assert_eq!(c.compression.as_deref(), Some("lz4"));
    assert_eq!(c.user.get("tankd:owner").map(String::as_str), Some("test"));
    assert!(c.used.unwrap() > 0, "exact byte counts are parsed");

    // Depth-limited listing sees only direct children.
    let shallow = zfs
        .list(&ListQuery::recursive(t.root.clone(), DatasetType::Filesystem, &[]).depth(Depth::Max(1)))
        .await
        .unwrap();
    assert_eq!(shallow.len(), 3, "{shallow:?}");

    let vols = zfs
        .list(&ListQuery::recursive(t.root.clone(), DatasetType::Volume, &[Prop::Volsize, Prop::Volblocksize]))
        .await
        .unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0].volsize, Some(32 << 20));
    assert_eq!(vols[0].volblocksize, Some(16384));

    let v = zfs.get(&t.ds("a/b"), &[Prop::Compression, Prop::user("tankd:owner").unwrap()]).await.unwrap();
    assert_eq!(v.kind, Some(DatasetType::Filesystem));
    assert_eq!(v.user.get("tankd:owner"), None, "a/b never had it set");

    zfs.set(&t.ds("a"), &props(&[("tankd:status", "complete"), ("tankd:size", "12")])).await.unwrap();
    let user = zfs.user_props(&t.ds("a/b/c"), "tankd:").await.unwrap();
    assert_eq!(user.get("tankd:status").map(String::as_str), Some("complete"), "inherited");
    assert_eq!(user.get("tankd:owner").map(String::as_str), Some("test"));
    zfs.inherit(&t.ds("a"), &Prop::user("tankd:status").unwrap(), false).await.unwrap();
    let user = zfs.user_props(&t.ds("a"), "tankd:").await.unwrap();
    assert!(!user.contains_key("tankd:status"), "{user:?}");

    let info = zfs.pool_info(&t.pool).await.unwrap();
    assert_eq!(info.health, "ONLINE");
    assert!(info.size > info.allocated && info.free > 0);
    let version = zfs.version().await.unwrap();
    assert!(version.userland.starts_with("zfs-2."), "{version:?}");
    assert!(version.kernel.starts_with("zfs-kmod-2."), "{version:?}");
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn snapshots_rollback_clone_promote_rename() {
    let t = TestPool::new("snap").await;
    let zfs = &t.zfs;
    zfs.create_filesystem(&t.ds("fs/child"), true, &[]).await.unwrap();
    zfs.create_filesystem(&t.ds("other"), false, &[]).await.unwrap();

    // Several names in one atomic call, plus a recursive snapshot.
    zfs.snapshot(&[t.snap("fs@s1"), t.snap("other@s1")], false, &[]).await.unwrap();
    zfs.snapshot(&[t.snap("fs@s2")], true, &props(&[("tankd:note", "r")])).await.unwrap();
    let snaps = zfs
        .list(&ListQuery::recursive(
            t.ds("fs"),
            DatasetType::Snapshot,
            &[Prop::Createtxg, Prop::user("tankd:note").unwrap()],
        ))
        .await
        .unwrap();
    let names: Vec<_> = snaps.iter().map(|s| s.name.rsplit('/').next().unwrap().to_owned()).collect();
    assert_eq!(names, ["fs@s1", "fs@s2", "child@s2"]);
    assert_eq!(snaps[1].user.get("tankd:note").map(String::as_str), Some("r"));
    let only_fs =
        zfs.list(&ListQuery::recursive(t.ds("fs"), DatasetType::Snapshot, &[]).depth(Depth::Max(1))).await.unwrap();
    assert_eq!(only_fs.len(), 2);

    // Rollback past a newer snapshot names it; -r destroys it.
    let err = zfs.rollback(&t.snap("fs@s1"), false).await.unwrap_err();
    match &err {
        zfs_sys_shim::Error::NewerSnapshots { newer, .. } => {
            assert_eq!(newer, &[t.snap("fs@s2").to_string()])
        }
        other => panic!("expected NewerSnapshots, got {other:?}"),
    }
    assert!(zfs.exists(&t.snap("fs@s2")).await.unwrap());
    zfs.rollback(&t.snap("fs@s1"), true).await.unwrap();
    assert!(!zfs.exists(&t.snap("fs@s2")).await.unwrap());

    // Clone with properties, promote, rename.
    zfs.clone_snapshot(&t.snap("fs@s1"), &t.ds("clones/c1"), true, &props(&[("compression", "lz4")])).await.unwrap();
    let c1 = zfs.get(&t.ds("clones/c1"), &[Prop::Origin, Prop::Compression]).await.unwrap();
    assert_eq!(c1.origin.as_deref(), Some(t.snap("fs@s1").as_str()));
    assert_eq!(c1.compression.as_deref(), Some("lz4"));
    let err = zfs.destroy(&t.snap("fs@s1"), DestroyOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    zfs.promote(&t.ds("clones/c1")).await.unwrap();
    let fs = zfs.get(&t.ds("fs"), &[Prop::Origin]).await.unwrap();
    assert_eq!(fs.origin.as_deref(), Some(t.snap("clones/c1@s1").as_str()), "promote swapped the origin");

    zfs.rename(&t.ds("clones/c1"), &t.ds("moved/c1"), true).await.unwrap();
    assert!(zfs.exists(&t.ds("moved/c1")).await.unwrap());
    zfs.rename_snapshot(&t.snap("moved/c1@s1"), &t.snap("moved/c1@base")).await.unwrap();
    assert!(zfs.exists(&t.snap("moved/c1@base")).await.unwrap());
    assert!(zfs.rename_snapshot(&t.snap("moved/c1@base"), &t.snap("fs@x")).await.is_err());

    // Recursive destroy; destroy of what is gone succeeds.
    zfs.destroy(&t.ds("other"), DestroyOptions { recursive: true, ..Default::default() }).await.unwrap();
    assert!(!zfs.exists(&t.ds("other")).await.unwrap());
    zfs.destroy(&t.ds("other"), DestroyOptions::default()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn holds_bookmarks_and_deferred_destroy() {
    let t = TestPool::new("hold").await;
    let zfs = &t.zfs;
    zfs.create_filesystem(&t.ds("fs"), false, &[]).await.unwrap();
    let err = zfs.snapshot(&[t.snap("fs@a"), t.snap("fs@b")], false, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName, "one snapshot per dataset per call: {err}");
    zfs.snapshot(&[t.snap("fs@a")], false, &[]).await.unwrap();
    zfs.snapshot(&[t.snap("fs@b")], false, &[]).await.unwrap();
    let tag = HoldTag::new("send").unwrap();
    zfs.hold(&[t.snap("fs@a")], &tag, false).await.unwrap();
    zfs.hold(&[t.snap("fs@a")], &tag, false).await.expect("holding twice is success");
    assert_eq!(zfs.holds(&t.snap("fs@a")).await.unwrap(), ["tankd_send"]);

    // A held snapshot survives a destroy; a deferred destroy completes on release.
    let err = zfs.destroy(&t.snap("fs@a"), DestroyOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    zfs.destroy(&t.snap("fs@a"), DestroyOptions { deferred: true, ..Default::default() }).await.unwrap();
    assert!(zfs.exists(&t.snap("fs@a")).await.unwrap());
    zfs.release(&[t.snap("fs@a")], &tag, false).await.unwrap();
    assert!(!zfs.exists(&t.snap("fs@a")).await.unwrap(), "deferred destroy ran at release");
    zfs.release(&[t.snap("fs@b")], &tag, false).await.expect("releasing what is not held is success");

    let mark = t.ds("fs").bookmark("b-mark").unwrap();
    zfs.bookmark(&t.snap("fs@b"), &mark).await.unwrap();
    zfs.bookmark(&t.snap("fs@b"), &mark).await.expect("same bookmark again is success");
    zfs.snapshot(&[t.snap("fs@c")], false, &[]).await.unwrap();
    let err = zfs.bookmark(&t.snap("fs@c"), &mark).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "a bookmark of another snapshot");
    let marks = zfs.list(&ListQuery::recursive(t.ds("fs"), DatasetType::Bookmark, &[Prop::Guid])).await.unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].guid, zfs.get(&t.snap("fs@b"), &[Prop::Guid]).await.unwrap().guid);
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn zvol_device_node_appears() {
    let t = TestPool::new("zvol").await;
    let zfs = &t.zfs;
    let vol = t.ds("vols/disk0");
    zfs.create_volume(&vol, &VolumeOptions { size: 16 << 20, parents: true, ..Default::default() }).await.unwrap();
    let dev = zfs.zvol_device(&vol, Duration::from_secs(10)).await.unwrap();
    assert_zvol_link(&dev, vol.as_str());
    let meta = std::fs::metadata(&dev).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(meta.file_type().is_block_device(), "{} is a block device", dev.display());
    // Write through the device, read it back through a snapshot clone's device.
    std::fs::write(&dev, vec![0xabu8; 4096]).unwrap();
    zfs.snapshot(&[t.snap("vols/disk0@s")], false, &[]).await.unwrap();
    zfs.clone_snapshot(&t.snap("vols/disk0@s"), &t.ds("vols/disk1"), false, &[]).await.unwrap();
    let dev1 = zfs.zvol_device(&t.ds("vols/disk1"), Duration::from_secs(10)).await.unwrap();
    assert_ne!(dev, dev1);
    let mut head = vec![0u8; 4096];
    use std::io::Read;
    std::fs::File::open(&dev1).unwrap().read_exact(&mut head).unwrap();
    assert!(head.iter().all(|&b| b == 0xab));
    // A volume that never appears times out (bounded, not forever).
    let err = zfs.zvol_device(&t.ds("vols/none"), Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

/// The stable `/dev/zvol/<name>` link leading to the volume's zd node (tankd answers
/// nothing else where /dev takes links, as the test VM's does).
fn assert_zvol_link(dev: &std::path::Path, name: &str) {
    assert_eq!(dev, std::path::Path::new("/dev/zvol").join(name), "the stable link");
    let real = std::fs::canonicalize(dev).unwrap();
    let zd = real.strip_prefix("/dev").ok().and_then(|p| p.to_str()).unwrap_or("");
    assert!(
        zd.starts_with("zd") && zd[2..].bytes().all(|b| b.is_ascii_digit()),
        "{} -> {}",
        dev.display(),
        real.display()
    );
}

/// Whether `path` is gone within 10 s (udev removes its links after the kernel's event).
fn gone_soon(path: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::symlink_metadata(path).is_ok() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Links follow the volume whether udev runs or not: a destroy removes the link, and a
/// link left by a volume destroyed behind tankd's back is never answered for it (its zd
/// number may be another volume's by then).
#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn zvol_links_follow_the_volume() {
    let t = TestPool::new("zlink").await;
    let zfs = &t.zfs;
    let opts = VolumeOptions { size: 8 << 20, parents: true, ..Default::default() };
    let a = t.ds("vols/a");
    zfs.create_volume(&a, &opts).await.unwrap();
    let dev_a = zfs.zvol_device(&a, Duration::from_secs(10)).await.unwrap();
    assert_zvol_link(&dev_a, a.as_str());
    assert_eq!(zfs.zvol_device(&a, Duration::ZERO).await.unwrap(), dev_a, "asked again: the same link");
    assert_eq!(zfs.zvol_device_now(&a), Some(dev_a.clone()));

    // Destroyed through the shim: the link goes.
    zfs.destroy(&a, DestroyOptions::default()).await.unwrap();
    assert!(gone_soon(&dev_a), "{} outlived its volume", dev_a.display());
    assert_eq!(zfs.zvol_device_now(&a), None);

    // Destroyed behind tankd's back: whatever link is left is not answered, and another
    // volume (likely given the same zd number) gets its own.
    zfs.create_volume(&a, &opts).await.unwrap();
    let dev_a = zfs.zvol_device(&a, Duration::from_secs(10)).await.unwrap();
    let zd_a = std::fs::canonicalize(&dev_a).unwrap();
    // Right after creation udev's probe may hold the new zvol open for a moment ("dataset
    // is busy"): retry as an operator would (the shim's own destroy does the same).
    let mut tries = 0;
    loop {
        let out = std::process::Command::new("zfs").args(["destroy", a.as_str()]).output().unwrap();
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        tries += 1;
        assert!(stderr.contains("busy") && tries < 20, "zfs destroy: {stderr}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let b = t.ds("vols/b");
    zfs.create_volume(&b, &opts).await.unwrap();
    let dev_b = zfs.zvol_device(&b, Duration::from_secs(10)).await.unwrap();
    assert_zvol_link(&dev_b, b.as_str());
    eprintln!("a was {}, b is {}", zd_a.display(), std::fs::canonicalize(&dev_b).unwrap().display());
    assert_eq!(zfs.zvol_device_now(&a), None, "a's link is not answered for a");
    assert!(gone_soon(&dev_a), "a's stale link is removed");

    // Renamed: the old name has no device, the new one its link.
    let c = t.ds("vols/c");
    zfs.rename(&b, &c, false).await.unwrap();
    let dev_c = zfs.zvol_device(&c, Duration::from_secs(10)).await.unwrap();
    assert_zvol_link(&dev_c, c.as_str());
    assert!(gone_soon(&dev_b), "b's link outlived the rename");
    assert_eq!(zfs.zvol_device_now(&b), None);
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn send_receive_round_trips_full_and_incremental() {
    let t = TestPool::new("send").await;
    let zfs = &t.zfs;
    zfs.create_filesystem(&t.ds("src"), false, &[]).await.unwrap();
    write_noise(&t.mountpoint("src/one.bin"), 3 << 20, 1);
    zfs.snapshot(&[t.snap("src@1")], false, &[]).await.unwrap();
    write_noise(&t.mountpoint("src/two.bin"), 2 << 20, 2);
    zfs.snapshot(&[t.snap("src@2")], false, &[]).await.unwrap();
    write_noise(&t.mountpoint("src/three.bin"), 1 << 20, 3);
    zfs.snapshot(&[t.snap("src@3")], false, &[]).await.unwrap();

    let full = SendArgs::full(t.snap("src@1"));
    let estimate = zfs.send_estimate(&full).await.unwrap();
    let bytes = send_all(zfs, &full).await;
    assert!(estimate > 3 << 20 && (bytes.len() as u64) > 3 << 20, "estimate {estimate}, sent {}", bytes.len());
    let got = zfs.receive(&ReceiveArgs::into(t.ds("dst")), &bytes[..]).await.unwrap();
    assert_eq!(got.bytes, bytes.len() as u64);
    // The mounted copy has changed since @1 (atime); an incremental needs -F, and says so.
    let inc = SendArgs::incremental(t.snap("src@2"), SendFrom::Snapshot(t.snap("src@1"))).unwrap();
    let bytes = send_all(zfs, &inc).await;
    zfs.set(&t.ds("dst"), &props(&[("atime", "on")])).await.unwrap();
    std::fs::read(t.mountpoint("dst/one.bin")).unwrap();
    std::fs::write(t.mountpoint("dst/touched"), b"x").unwrap();
    let err = zfs.receive(&ReceiveArgs::into(t.ds("dst")), &bytes[..]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let forced = ReceiveArgs { force: true, ..ReceiveArgs::into(t.ds("dst")) };
    zfs.receive(&forced, &bytes[..]).await.unwrap();
    zfs.rollback(&t.snap("dst@1"), true).await.unwrap();

    let mut inc = SendArgs::incremental(t.snap("src@3"), SendFrom::Intermediates(t.snap("src@1"))).unwrap();
    inc.compressed = true;
    inc.large_blocks = true;
    let bytes = send_all(zfs, &inc).await;
    zfs.receive(&forced, &bytes[..]).await.unwrap();

    for file in ["one.bin", "two.bin", "three.bin"] {
        assert_eq!(
            sha256_file(&t.mountpoint(&format!("src/{file}"))),
            sha256_file(&t.mountpoint(&format!("dst/{file}"))),
            "{file}"
        );
    }
    for s in ["1", "2", "3"] {
        let a = zfs.get(&t.snap(&format!("src@{s}")), &[Prop::Guid]).await.unwrap().guid;
        let b = zfs.get(&t.snap(&format!("dst@{s}")), &[Prop::Guid]).await.unwrap().guid;
        assert_eq!(a, b, "snapshot @{s} arrived with its guid (-I carried intermediates)");
    }

    // From a bookmark, after the base snapshot is gone.
    zfs.bookmark(&t.snap("src@3"), &t.ds("src").bookmark("m3").unwrap()).await.unwrap();
    write_noise(&t.mountpoint("src/four.bin"), 1 << 20, 4);
    zfs.snapshot(&[t.snap("src@4")], false, &[]).await.unwrap();
    zfs.destroy(&t.snap("src@3"), DestroyOptions::default()).await.unwrap();
    let from_mark =
        SendArgs::incremental(t.snap("src@4"), SendFrom::Bookmark(t.ds("src").bookmark("m3").unwrap())).unwrap();
    let bytes = send_all(zfs, &from_mark).await;
    zfs.receive(&forced, &bytes[..]).await.unwrap();
    assert_eq!(sha256_file(&t.mountpoint("src/four.bin")), sha256_file(&t.mountpoint("dst/four.bin")));

    // Replication stream of a tree, received with -F into a fresh place, and as a clone.
    zfs.create_filesystem(&t.ds("tree/leaf"), true, &props(&[("tankd:kind", "leaf")])).await.unwrap();
    zfs.snapshot(&[t.snap("tree@r")], true, &[]).await.unwrap();
    let mut rep = SendArgs::full(t.snap("tree@r"));
    rep.replicate = true;
    let bytes = send_all(zfs, &rep).await;
    let args = ReceiveArgs { force: true, unmounted: true, ..ReceiveArgs::into(t.ds("copy")) };
    zfs.receive(&args, &bytes[..]).await.unwrap();
    let leaf = zfs.user_props(&t.ds("copy/leaf"), "tankd:").await.unwrap();
    assert_eq!(leaf.get("tankd:kind").map(String::as_str), Some("leaf"), "-R carried properties");

    let inc = SendArgs::incremental(t.snap("src@4"), SendFrom::Snapshot(t.snap("src@2"))).unwrap();
    let bytes = send_all(zfs, &inc).await;
    let as_clone = ReceiveArgs { origin: Some(t.snap("dst@2")), ..ReceiveArgs::into(t.ds("as-clone")) };
    zfs.receive(&as_clone, &bytes[..]).await.unwrap();
    let c = zfs.get(&t.ds("as-clone"), &[Prop::Origin]).await.unwrap();
    assert_eq!(c.origin.as_deref(), Some(t.snap("dst@2").as_str()));
}

/// A reader that yields `limit` bytes of `data` and then fails, as a client that
/// disconnects mid-upload does.
struct BreaksAfter<'a> {
    data: &'a [u8],
    limit: usize,
}

impl tokio::io::AsyncRead for BreaksAfter<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.limit == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            )));
        }
        let n = buf.remaining().min(self.limit).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.limit -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn interrupted_receive_resumes_from_its_token() {
    let t = TestPool::new("resume").await;
    let zfs = &t.zfs;
    zfs.create_filesystem(&t.ds("src"), false, &[]).await.unwrap();
    write_noise(&t.mountpoint("src/big.bin"), 8 << 20, 7);
    zfs.snapshot(&[t.snap("src@s")], false, &[]).await.unwrap();
    let stream = send_all(zfs, &SendArgs::full(t.snap("src@s"))).await;

    let dest = t.ds("dst");
    let args = ReceiveArgs { resumable: true, ..ReceiveArgs::into(dest.clone()) };
    let err = zfs.receive(&args, BreaksAfter { data: &stream, limit: stream.len() / 2 }).await.unwrap_err();
    let token = match err {
        zfs_sys_shim::Error::Interrupted { resume_token: Some(token), .. } => token,
        other => panic!("expected a resumable interruption, got {other:?}"),
    };
    assert_eq!(zfs.resume_token(&dest).await.unwrap().as_deref(), Some(token.as_str()));
    assert_eq!(zfs.resume_token_target(&token).await.unwrap(), t.snap("src@s"));

    let rest = send_all(zfs, &SendArgs::resume(&token).unwrap()).await;
    assert!(rest.len() < stream.len(), "the resumed stream skips what arrived ({} of {})", rest.len(), stream.len());
    zfs.receive(&args, &rest[..]).await.unwrap();
    assert_eq!(zfs.resume_token(&dest).await.unwrap(), None);
    assert_eq!(sha256_file(&t.mountpoint("src/big.bin")), sha256_file(&t.mountpoint("dst/big.bin")));

    // An interrupted receive can also be abandoned; nothing is left behind.
    let other = t.ds("dst2");
    let args = ReceiveArgs { resumable: true, ..ReceiveArgs::into(other.clone()) };
    zfs.receive(&args, BreaksAfter { data: &stream, limit: stream.len() / 3 }).await.unwrap_err();
    assert!(zfs.resume_token(&other).await.unwrap().is_some());
    zfs.abort_receive(&other).await.unwrap();
    assert!(!zfs.exists(&other).await.unwrap());
    zfs.abort_receive(&other).await.expect("aborting nothing is success");
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn raw_send_of_an_encrypted_dataset() {
    let t = TestPool::new("raw").await;
    let zfs = &t.zfs;
    let keyfile = t.vdev.with_extension("key");
    std::fs::write(&keyfile, [0x42u8; 32]).unwrap();
    let enc = props(&[
        ("encryption", "aes-256-gcm"),
        ("keyformat", "raw"),
        ("keylocation", &format!("file://{}", keyfile.display())),
    ]);
    zfs.create_filesystem(&t.ds("secret"), false, &enc).await.unwrap();
    write_noise(&t.mountpoint("secret/data.bin"), 1 << 20, 9);
    zfs.snapshot(&[t.snap("secret@s")], false, &[]).await.unwrap();

    let mut raw = SendArgs::full(t.snap("secret@s"));
    raw.raw = true;
    let bytes = send_all(zfs, &raw).await;
    zfs.receive(&ReceiveArgs { unmounted: true, ..ReceiveArgs::into(t.ds("copy")) }, &bytes[..]).await.unwrap();
    let out = std::process::Command::new("zfs")
        .args(["get", "-H", "-o", "value", "encryption,keystatus"])
        .arg(t.ds("copy").as_str())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().collect::<Vec<_>>(), ["aes-256-gcm", "unavailable"], "arrived encrypted, key not loaded");
    // A non-raw send of an encrypted dataset with its key loaded would be plaintext;
    // raw is what keeps it sealed. Plain data in the raw stream would show the pattern.
    assert!(!bytes.windows(32).any(|w| w == [0x42u8; 32]));
    let _ = std::fs::remove_file(keyfile);
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn refused_calls_change_nothing() {
    let t = TestPool::new("err").await;
    let zfs = &t.zfs;
    zfs.create_filesystem(&t.ds("fs"), false, &[]).await.unwrap();
    zfs.snapshot(&[t.snap("fs@s")], false, &[]).await.unwrap();
    let before = t.fingerprint();

    let err = zfs.get(&t.ds("missing"), &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(t.ds("missing").as_str()), "names the dataset: {err}");
    assert!(err.to_string().contains("zfs get"), "names the command: {err}");
    let err = zfs.create_filesystem(&t.ds("fs"), false, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let err = zfs.snapshot(&[t.snap("fs@s")], false, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let err = zfs.rollback(&t.snap("fs@nope"), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = zfs.clone_snapshot(&t.snap("fs@nope"), &t.ds("c"), false, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = zfs.create_filesystem(&t.ds("no/parent"), false, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Outside the roots, and bad names, never reach a command.
    let outside: zfs_sys_shim::DatasetName = format!("{}/elsewhere", t.pool).parse().unwrap();
    let err = zfs.create_filesystem(&outside, false, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    assert!(err.to_string().contains("outside"), "{err}");
    assert!(t.root.join("../escape").is_err());
    assert!(t.root.join("-R").is_err());
    let bad_props = props(&[("-o", "x")]);
    assert!(zfs.create_filesystem(&t.ds("p"), false, &bad_props).await.is_err());
    let err = zfs.create_volume(&t.ds("v"), &VolumeOptions { size: 0, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName, "{err}");

    // Garbage into receive: refused, nothing created.
    let garbage = vec![0x5au8; 1 << 20];
    let err = zfs
        .receive(&ReceiveArgs { resumable: true, ..ReceiveArgs::into(t.ds("junk")) }, &garbage[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidStream, "{err}");

    assert_eq!(before, t.fingerprint(), "the pool is unchanged");
}

#[tokio::test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
async fn dropping_a_send_stream_ends_zfs_send() {
    let t = TestPool::new("drop").await;
    let zfs = &t.zfs;
    zfs.create_filesystem(&t.ds("src"), false, &[]).await.unwrap();
    write_noise(&t.mountpoint("src/big.bin"), 16 << 20, 5);
    zfs.snapshot(&[t.snap("src@s")], false, &[]).await.unwrap();
    let mut stream = zfs.send(&SendArgs::full(t.snap("src@s"))).await.unwrap();
    let mut first = vec![0u8; 64 << 10];
    stream.read_exact(&mut first).await.unwrap();
    drop(stream);
    // The child is killed on drop; give the kernel a moment, then no `zfs send` of ours is left.
    let snap = t.snap("src@s").to_string();
    for _ in 0..50 {
        let ps = std::process::Command::new("pgrep").args(["-f", &format!("zfs send {snap}")]).output().unwrap();
        if ps.stdout.is_empty() {
            // And the snapshot can be destroyed: nothing holds it.
            zfs.destroy(&t.snap("src@s"), DestroyOptions::default()).await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("zfs send still running after its stream was dropped");
}
