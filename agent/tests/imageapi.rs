//! imageapi against the real kernel: loop devices, squashfs, overlayfs, bind mounts,
//! rbd through Ceph (rbd-fuse on a kernel without rbd), zvols (kernel ZFS, in the VM).
//!
//! Host-tier tests run tankd with `zfs = false`; they need root, /dev/loop-control and
//! mksquashfs. The Ceph test needs the cluster `scripts/test` starts
//! (`TANKD_TEST_CEPH_MON`, `CEPH_CONF`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::imageapi_client::{TOKEN, call, host_agent, loops_of, ok, refused, squashfs};
use common::{Agent, NEEDS_ZFS, mounts_under, sh};
use serde_json::{Value, json};

fn mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(path))
}

fn id(v: &Value) -> u64 {
    v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// Write through an overlay and check where each change lands.
fn write_through_overlay(overlay: &Path, lower: &Path, upper: &Path) {
    assert_eq!(std::fs::read_to_string(overlay.join("hello")).unwrap(), "hello from the image\n");
    std::fs::write(overlay.join("new-file"), "written above\n").unwrap();
    std::fs::write(overlay.join("etc/motd"), "upper motd\n").unwrap();
    std::fs::remove_file(overlay.join("hello")).unwrap();

    assert_eq!(std::fs::read_to_string(upper.join("new-file")).unwrap(), "written above\n");
    assert_eq!(std::fs::read_to_string(upper.join("etc/motd")).unwrap(), "upper motd\n");
    assert_eq!(std::fs::read_to_string(lower.join("etc/motd")).unwrap(), "lower motd\n", "the lower is unchanged");
    assert!(lower.join("hello").exists(), "the lower keeps the deleted file");
    assert!(!overlay.join("hello").exists());
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(upper.join("hello")).expect("a whiteout in the upper");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout is a 0:0 character device");
}

#[test]
fn loop_squashfs_overlay_refcounts_and_teardown() {
    let mut agent = host_agent("ia1");
    let images = agent.data_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let img = squashfs(&images, "base");

    // v0.2: attach the file read-only, mount it, overlay it.
    let a = ok(
        &agent,
        "POST",
        "/imageapi/v1/attach",
        Some(json!({"kind": "loop", "read_only": true, "loop": {"path": img}})),
    );
    let dev = a["device_file"].as_str().unwrap().to_owned();
    assert!(dev.starts_with("/dev/loop"), "{a}");
    assert_eq!(loops_of(&img).len(), 1);
    assert_eq!(a["loop"]["backing_file"], img.to_str().unwrap());
    let m = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(json!({"kind": "attach", "attach": {"attach_id": id(&a), "fs_type": "squashfs"}})),
    );
    assert_eq!(m["read_only"], true, "a read-only attachment mounts read-only");
    let lower = PathBuf::from(m["mountpoint"].as_str().unwrap());
    assert!(lower.starts_with(agent.data_dir.join("mounts")) && mounted(lower.to_str().unwrap()));
    let o = ok(&agent, "POST", "/imageapi/v1/mount", Some(json!({"kind": "overlay", "overlay": {"lower": [id(&m)]}})));
    let merged = PathBuf::from(o["mountpoint"].as_str().unwrap());
    let upper = PathBuf::from(o["overlay"]["upperdir"].as_str().unwrap());
    write_through_overlay(&merged, &lower, &upper);

    // A bind mount of the overlay, read-only.
    let b = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(json!({"kind": "bind", "read_only": true, "bind": {"mount_id": id(&o), "path": "etc"}})),
    );
    let bound = PathBuf::from(b["mountpoint"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(bound.join("motd")).unwrap(), "upper motd\n");
    assert!(std::fs::write(bound.join("x"), "no").is_err(), "the bind is read-only");

    // Refcounts and filters.
    let listed = ok(&agent, "GET", &format!("/imageapi/v1/attach?id={}", id(&a)), None);
    assert_eq!(listed[0]["refs"], 1);
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/mount?kind=overlay", None).as_array().unwrap().len(), 1);
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/mount?id={}", id(&m)), None)[0]["refs"], 1);
    refused(&agent, "DELETE", &format!("/imageapi/v1/attach?id={}", id(&a)), None, 409);
    refused(&agent, "DELETE", &format!("/imageapi/v1/mount?id={}", id(&m)), None, 409);
    assert!(mounted(merged.to_str().unwrap()), "a refused delete changes nothing");

    // force takes down bind, overlay, mount, then the device.
    ok(&agent, "DELETE", &format!("/imageapi/v1/attach?id={}&force=true", id(&a)), None);
    assert!(mounts_under(&agent.data_dir).is_empty(), "left mounted: {:?}", mounts_under(&agent.data_dir));
    assert!(loops_of(&img).is_empty());
    assert!(!upper.exists(), "the managed upper dir goes with its overlay");
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/mount", None), json!([]));
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/attach", None), json!([]));

    // An inline attachment lives and dies with its mount.
    let m2 = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(
            json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "loop": {"path": img}, "read_only": true}, "fs_type": "squashfs", "mount_options": ["noatime"]}}),
        ),
    );
    let inline = m2["attach"]["attach_id"].as_u64().unwrap();
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/attach?id={inline}"), None)[0]["refs"], 1);
    ok(&agent, "DELETE", &format!("/imageapi/v1/mount?id={}", id(&m2)), None);
    assert!(loops_of(&img).is_empty(), "the inline attachment went with its mount");
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/attach", None), json!([]));

    // A local block device (here one the operator set up) is mounted but never detached.
    // It must be listed in local_devices: without the list, local attachments are off.
    let own = sh("losetup", &["-r", "-f", "--show", img.to_str().unwrap()]).trim().to_owned();
    let local = json!({"kind": "local", "read_only": true, "local": {"path": own}});
    assert_eq!(refused(&agent, "POST", "/imageapi/v1/attach", Some(local.clone()), 400)["field"], "local.path");
    assert_eq!(agent.stop(), Some(0));
    agent.extra_env.push(("TANKD_LOCAL_DEVICES".into(), own.clone()));
    agent.start();
    let l = ok(&agent, "POST", "/imageapi/v1/attach", Some(local));
    assert_eq!(l["device_file"], own.as_str());
    let lm = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(json!({"kind": "attach", "attach": {"attach_id": id(&l), "fs_type": "squashfs"}})),
    );
    assert!(Path::new(lm["mountpoint"].as_str().unwrap()).join("etc/motd").exists());
    ok(&agent, "DELETE", &format!("/imageapi/v1/attach?id={}&force=true", id(&l)), None);
    assert_eq!(loops_of(&img), vec![own.trim_start_matches("/dev/").to_owned()], "tankd leaves a local device alone");
    sh("losetup", &["-d", &own]);
    refused(&agent, "GET", "/imageapi/v1/attach/rbd/x1", None, 400);
}

#[test]
fn bad_input_names_the_field_and_makes_nothing() {
    let agent = host_agent("ia2");
    let images = agent.data_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let img = squashfs(&images, "base");
    let outside = squashfs(&agent.data_dir, "outside");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/imageapi/v1/attach", json!({"kind": "loop", "loop": {"path": outside}}), "loop.path"),
        (
            "/imageapi/v1/attach",
            json!({"kind": "loop", "loop": {"path": format!("{}/../outside.sqfs", images.display())}}),
            "loop.path",
        ),
        ("/imageapi/v1/attach", json!({"kind": "loop", "loop": {"path": "images/base.sqfs"}}), "loop.path"),
        ("/imageapi/v1/attach", json!({"kind": "loop"}), "loop"),
        ("/imageapi/v1/attach", json!({"kind": "loop", "loop": {"path": img, "extra": 1}}), "loop.extra"),
        ("/imageapi/v1/attach", json!({"kind": "floppy"}), "kind"),
        ("/imageapi/v1/attach", json!({"kind": "local", "local": {"path": "/etc/passwd"}}), "local.path"),
        ("/imageapi/v1/attach", json!({"kind": "zvol", "zvol": {"volume": "v"}}), ""),
        (
            "/imageapi/v1/attach",
            json!({"kind": "rbd", "rbd": {"monitors": ["1.2.3.4:6789"], "pool": "rbd", "image": "-x"}}),
            "rbd.image",
        ),
        ("/imageapi/v1/attach", json!({"kind": "loop", "name": "-n", "loop": {"path": img}}), "name"),
        (
            "/imageapi/v1/mount",
            json!({"kind": "attach", "attach": {"attach_id": 999, "fs_type": "squashfs"}}),
            "attach.attach_id",
        ),
        (
            "/imageapi/v1/mount",
            json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "loop": {"path": img}}, "fs_type": "nfs"}}),
            "attach.fs_type",
        ),
        (
            "/imageapi/v1/mount",
            json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "loop": {"path": img}}, "fs_type": "squashfs", "mount_options": ["ro,suid"]}}),
            "attach.mount_options",
        ),
        (
            "/imageapi/v1/mount",
            json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "loop": {"path": img}}, "fs_type": "squashfs", "mount_options": ["dev"]}}),
            "attach.mount_options",
        ),
        (
            "/imageapi/v1/mount",
            json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "loop": {"path": img}}, "fs_type": "squashfs", "mount_options": ["upperdir=/etc"]}}),
            "attach.mount_options",
        ),
        ("/imageapi/v1/mount", json!({"kind": "overlay", "overlay": {"lower": [12345]}}), "overlay.lower"),
        ("/imageapi/v1/mount", json!({"kind": "overlay", "overlay": {"lower": []}}), "overlay.lower"),
        ("/imageapi/v1/mount", json!({"kind": "bind", "bind": {"mount_id": 4242}}), "bind.mount_id"),
        (
            "/imageapi/v1/mount",
            json!({"kind": "attach", "mountpoint": "/etc", "attach": {"attach_id": 1, "fs_type": "ext4"}}),
            "mountpoint",
        ),
    ];
    for (path, body, field) in cases {
        let want = if field.is_empty() { 503 } else { 400 };
        let v = refused(&agent, "POST", path, Some(body.clone()), want);
        if !field.is_empty() {
            assert!(v["field"].as_str().is_some_and(|f| f.starts_with(field)), "{body}: {v}");
        }
    }
    // A lower that is listed twice, and an overlay on top of an overlay that would cycle
    // back, need real mounts to refer to.
    let m = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(
            json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "loop": {"path": img}}, "fs_type": "squashfs"}}),
        ),
    );
    let v = refused(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(json!({"kind": "overlay", "overlay": {"lower": [id(&m), id(&m)]}})),
        400,
    );
    assert_eq!(v["field"], "overlay.lower");
    refused(&agent, "GET", "/imageapi/v1/mount?kind=nfs", None, 400);
    refused(&agent, "DELETE", "/imageapi/v1/mount", None, 400);
    refused(&agent, "DELETE", "/imageapi/v1/attach?id=777", None, 404);
    let unauth = agent.tcp_anon(
        "POST",
        "/imageapi/v1/attach",
        &[],
        json!({"kind": "loop", "loop": {"path": img}}).to_string().as_bytes(),
    );
    assert_eq!(unauth.status, 401);

    // Nothing was made by any refused call: one mount, one loop device (the good one).
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/mount", None).as_array().unwrap().len(), 1);
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/attach", None).as_array().unwrap().len(), 1);
    assert_eq!(loops_of(&img).len(), 1);
    assert!(loops_of(&outside).is_empty());
    assert_eq!(mounts_under(&agent.data_dir).len(), 1);
    ok(&agent, "DELETE", &format!("/imageapi/v1/mount?id={}", id(&m)), None);
    assert!(loops_of(&img).is_empty() && mounts_under(&agent.data_dir).is_empty());
}

fn kill9(agent: &mut Agent) {
    let mut child = agent.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn restart_and_kill9_keep_or_clean_every_chain() {
    let mut agent = host_agent("ia3");
    let images = agent.data_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let img = squashfs(&images, "base");
    let m = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(
            json!({"kind": "attach", "name": "sys", "attach": {"attach": {"kind": "loop", "loop": {"path": img}}, "fs_type": "squashfs"}}),
        ),
    );
    let o = ok(&agent, "POST", "/imageapi/v1/mount", Some(json!({"kind": "overlay", "overlay": {"lower": [id(&m)]}})));
    let merged = PathBuf::from(o["mountpoint"].as_str().unwrap());
    std::fs::write(merged.join("kept"), "across restarts\n").unwrap();

    // A clean restart and a kill -9 both re-adopt everything as it was.
    assert_eq!(agent.stop(), Some(0));
    agent.start();
    kill9(&mut agent);
    agent.start();
    let mounts = ok(&agent, "GET", "/imageapi/v1/mount", None);
    assert_eq!(mounts.as_array().unwrap().len(), 2, "{mounts}");
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/mount?name=sys", None)[0]["refs"], 1);
    assert_eq!(std::fs::read_to_string(merged.join("kept")).unwrap(), "across restarts\n");

    // Something under the mount root that tankd did not make is reported, not touched.
    let stray = agent.data_dir.join("mounts/stray");
    std::fs::create_dir_all(&stray).unwrap();
    sh("mount", &["-t", "tmpfs", "-o", "size=1M", "stray", stray.to_str().unwrap()]);
    agent.stop();
    agent.start();
    let unknown = ok(&agent, "GET", "/imageapi/v1/unknown", None);
    assert_eq!(unknown["mounts"], json!([stray.to_str().unwrap()]));
    assert!(mounted(stray.to_str().unwrap()), "an unknown mount is left alone");
    sh("umount", &[stray.to_str().unwrap()]);

    // Something tankd recorded that vanished behind its back is dropped on start.
    agent.stop();
    sh("umount", &[merged.to_str().unwrap()]);
    agent.start();
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/mount", None).as_array().unwrap().len(), 1);

    // A crash between the attach and the mount of a chain: the next start undoes the attach.
    agent.stop();
    let chain = img.with_file_name("chain.sqfs");
    std::fs::copy(&img, &chain).unwrap();
    agent.extra_env.push(("TANKD_FAULT".into(), "after-attach".into()));
    agent.start();
    let body = json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "loop": {"path": chain}}, "fs_type": "squashfs"}});
    let auth = format!("Bearer {TOKEN}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    use std::io::{Read, Write};
    let req = format!(
        "POST /imageapi/v1/mount HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
        body.to_string().len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    common::wait_until("the fault hook to abort tankd", Duration::from_secs(30), || {
        agent.child.as_mut().unwrap().try_wait().unwrap().is_some()
    });
    agent.child = None;
    // The crash left both records half made (the loop device itself had autoclear, so
    // the kernel let it go with tankd's last handle).
    let state: Value =
        serde_json::from_slice(&std::fs::read(agent.data_dir.join("imageapi/state.json")).unwrap()).unwrap();
    let creating = |v: &Value| v.as_object().unwrap().values().filter(|r| r["phase"] == "creating").count();
    assert_eq!((creating(&state["mounts"]), state["attachments"].as_object().unwrap().len()), (1, 2), "{state}");
    agent.extra_env.retain(|(k, _)| k != "TANKD_FAULT");
    agent.start();
    assert!(loops_of(&chain).is_empty(), "no device of the half-made chain is left");
    let mounts = ok(&agent, "GET", "/imageapi/v1/mount", None);
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/attach", None).as_array().unwrap().len(), 1);
    assert!(agent.log_text().contains("a recorded mount is gone"));

    ok(&agent, "DELETE", &format!("/imageapi/v1/mount?id={}&force=true", id(&m)), None);
    assert!(loops_of(&img).is_empty() && mounts_under(&agent.data_dir).is_empty());
}

/// The Ceph cluster scripts/test starts, or a clear failure.
fn ceph() -> (String, String) {
    let mon = std::env::var("TANKD_TEST_CEPH_MON")
        .expect("TANKD_TEST_CEPH_MON unset: run scripts/test, which starts a Ceph cluster (scripts/testbed/ceph)");
    let conf = std::env::var("CEPH_CONF").expect("CEPH_CONF unset: run scripts/test");
    (mon, conf)
}

#[test]
fn rbd_image_through_ceph_v01_routes() {
    let (mon, conf) = ceph();
    let agent = host_agent("ia4");
    let img = squashfs(&agent.data_dir, "rbdsrc");
    let name = format!("tankd-test-{}", std::process::id());
    sh("rbd", &["-c", &conf, "import", "-p", "rbd", img.to_str().unwrap(), &name]);
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("rbd").args(["-c", &self.1, "rm", "-p", "rbd", &self.0]).output();
        }
    }
    let _rm = Cleanup(name.clone(), conf.clone());

    // v0.1: attach, mount, overlay.
    let rbd = ok(
        &agent,
        "POST",
        "/imageapi/v1/attach/rbd",
        Some(json!({"monitors": [mon], "pool": "rbd", "image": name, "options": {"ro": true}})),
    );
    let rbd_id = id(&rbd);
    assert!(rbd["device_file"].as_str().unwrap().starts_with("/dev/"), "{rbd}");
    assert_eq!(rbd["path"], "rbd-fuse", "this kernel has no rbd: {rbd}");
    let mr = ok(&agent, "POST", "/imageapi/v1/mount/rbd", Some(json!({"rbd_id": rbd_id, "fs_type": "squashfs"})));
    let lower = PathBuf::from(mr["mountpoint"].as_str().unwrap());
    let ov = ok(&agent, "POST", "/imageapi/v1/mount/overlay", Some(json!({"lower": [id(&mr)]})));
    let merged = PathBuf::from(ov["mountpoint"].as_str().unwrap());
    write_through_overlay(&merged, &lower, Path::new(ov["upperdir"].as_str().unwrap()));
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/attach/rbd/{rbd_id}"), None)["refs"], 1);
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/mount/rbd", None).as_array().unwrap().len(), 1);
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/mount/overlay/{}", id(&ov)), None)["lower"], json!([id(&mr)]));
    refused(&agent, "DELETE", &format!("/imageapi/v1/attach/rbd/{rbd_id}"), None, 409);

    // Torn down in order through the v0.1 routes: nothing left.
    ok(&agent, "DELETE", &format!("/imageapi/v1/mount/overlay/{}", id(&ov)), None);
    ok(&agent, "DELETE", &format!("/imageapi/v1/mount/rbd/{}", id(&mr)), None);
    ok(&agent, "DELETE", &format!("/imageapi/v1/attach/rbd/{rbd_id}"), None);
    assert!(mounts_under(&agent.data_dir).is_empty(), "{:?}", mounts_under(&agent.data_dir));
    assert!(!agent.data_dir.join("rbd").join(rbd_id.to_string()).exists());
    let fuse_left =
        sh("pgrep", &["-a", "-f", "rbd-fuse"]).lines().filter(|l| l.contains(agent.data_dir.to_str().unwrap())).count();
    assert_eq!(fuse_left, 0, "rbd-fuse still running");

    // The secret: taken, never answered, logged or stored, and a failed attach leaves nothing.
    let secret = "QVFCc2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0PT0=";
    let r = call(
        &agent,
        "POST",
        "/imageapi/v1/attach",
        Some(
            json!({"kind": "rbd", "rbd": {"monitors": [mon], "pool": "rbd", "image": "no-such-image", "options": {"name": "admin", "secret": secret}}}),
        ),
    );
    assert!(r.status >= 400, "attaching a missing image failed: {}", r.status);
    assert!(!String::from_utf8_lossy(&r.body).contains(secret));
    assert!(!agent.log_text().contains(secret), "the secret reached the log");
    let state = std::fs::read_to_string(agent.data_dir.join("imageapi/state.json")).unwrap();
    assert!(!state.contains(secret));
    assert!(mounts_under(&agent.data_dir).is_empty());
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/attach", None), json!([]));
}

/// A zvol with ext4, mounted, overlaid with its upper on a tankd dataset.
#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn zvol_ext4_overlay_with_upper_on_a_dataset() {
    let _ = NEEDS_ZFS;
    let mut agent = Agent::new("ia5");
    agent.token = TOKEN.into();
    agent.start();
    let root = format!("{}/tankd", agent.pool);
    sh("zfs", &["create", "-V", "64M", &format!("{root}/vol")]);
    sh("zfs", &["create", &format!("{root}/upper")]);
    let a = ok(&agent, "POST", "/imageapi/v1/attach", Some(json!({"kind": "zvol", "zvol": {"volume": "vol"}})));
    let dev = a["device_file"].as_str().unwrap().to_owned();
    assert_eq!(dev, format!("/dev/zvol/{root}/vol"), "the stable link, not a /dev/zdN node: {a}");
    sh("mkfs.ext4", &["-q", "-F", &dev]);
    let m = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(json!({"kind": "attach", "attach": {"attach_id": id(&a), "fs_type": "ext4"}})),
    );
    let lower = PathBuf::from(m["mountpoint"].as_str().unwrap());
    std::fs::create_dir_all(lower.join("etc")).unwrap();
    std::fs::write(lower.join("hello"), "hello from the image\n").unwrap();
    std::fs::write(lower.join("etc/motd"), "lower motd\n").unwrap();
    let o = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(json!({"kind": "overlay", "overlay": {"lower": [id(&m)], "upper_dataset": "upper"}})),
    );
    let upper = PathBuf::from(o["overlay"]["upperdir"].as_str().unwrap());
    write_through_overlay(Path::new(o["mountpoint"].as_str().unwrap()), &lower, &upper);
    // The writable layer is a dataset: it can be snapshotted.
    sh("zfs", &["snapshot", &format!("{root}/upper@layer")]);
    // tankd's datasets neither honour setuid nor device nodes, and a bind of one is
    // nosuid,nodev whatever its source mount was.
    assert_eq!(sh("zfs", &["get", "-H", "-o", "value", "setuid,devices", &root]), "off\noff\n");
    let b = ok(&agent, "POST", "/imageapi/v1/mount", Some(json!({"kind": "bind", "bind": {"dataset": "upper"}})));
    let target = b["mountpoint"].as_str().unwrap().to_owned();
    let line = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.as_str()))
        .map(str::to_owned)
        .expect("the bind is mounted");
    let opts = line.split(' ').nth(5).unwrap();
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{line}");
    ok(&agent, "DELETE", &format!("/imageapi/v1/mount?id={}", id(&b)), None);
    ok(&agent, "DELETE", &format!("/imageapi/v1/attach?id={}&force=true", id(&a)), None);
    assert!(mounts_under(&agent.data_dir.join("mounts")).is_empty());
    assert!(upper.join("new-file").exists(), "an upper on a dataset is kept");
}

/// Kernel rbd: in the test VM (a Debian kernel with the rbd module) against a Ceph
/// cluster that run-suite starts inside the VM.
#[test]
#[ignore = "needs kernel rbd and kernel ZFS; scripts/test runs it in the test VM"]
fn rbd_image_through_kernel_rbd() {
    let (mon, conf) = ceph();
    assert!(Path::new("/sys/bus/rbd/add_single_major").exists(), "no kernel rbd here (modprobe rbd)");
    let mut agent = Agent::new("ia6");
    agent.token = TOKEN.into();
    agent.start();
    let img = squashfs(&agent.data_dir, "krbdsrc");
    let name = format!("tankd-krbd-{}", std::process::id());
    sh("rbd", &["-c", &conf, "import", "-p", "rbd", img.to_str().unwrap(), &name]);
    sh("rbd", &["-c", &conf, "snap", "create", &format!("rbd/{name}@v1")]);
    let a = ok(
        &agent,
        "POST",
        "/imageapi/v1/attach",
        Some(
            json!({"kind": "rbd", "rbd": {"monitors": [mon], "pool": "rbd", "image": name, "snapshot": "v1", "options": {"ro": true}}}),
        ),
    );
    assert_eq!(a["rbd"]["path"], "krbd", "{a}");
    let dev = a["device_file"].as_str().unwrap().to_owned();
    assert!(dev.starts_with("/dev/rbd"), "{a}");
    let m = ok(
        &agent,
        "POST",
        "/imageapi/v1/mount",
        Some(json!({"kind": "attach", "attach": {"attach_id": id(&a), "fs_type": "squashfs"}})),
    );
    let o = ok(&agent, "POST", "/imageapi/v1/mount", Some(json!({"kind": "overlay", "overlay": {"lower": [id(&m)]}})));
    write_through_overlay(
        Path::new(o["mountpoint"].as_str().unwrap()),
        Path::new(m["mountpoint"].as_str().unwrap()),
        Path::new(o["overlay"]["upperdir"].as_str().unwrap()),
    );
    // A restart re-adopts the mapping from /sys/bus/rbd/devices.
    agent.stop();
    agent.start();
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/attach?id={}", id(&a)), None)[0]["refs"], 1);
    ok(&agent, "DELETE", &format!("/imageapi/v1/attach?id={}&force=true", id(&a)), None);
    let devices: Vec<_> = std::fs::read_dir("/sys/bus/rbd/devices").unwrap().flatten().collect();
    assert!(devices.is_empty(), "the rbd device is unmapped");

    // A crash between the map and the record of its device id: the next start finds
    // the device by image among those made after the record, and unmaps it.
    let spec = json!({"kind": "rbd", "rbd": {"monitors": [mon], "pool": "rbd", "image": name, "snapshot": "v1", "options": {"ro": true}}});
    agent.crash_at("attach-made", common::Listener::Api, "POST", "/imageapi/v1/attach", &spec.to_string());
    let devices: Vec<_> = std::fs::read_dir("/sys/bus/rbd/devices").unwrap().flatten().collect();
    assert!(devices.is_empty(), "attach-made: a kernel rbd device is left mapped");
    assert_eq!(ok(&agent, "GET", "/imageapi/v1/attach", None), json!([]));
    // A device mapped by someone else is reported, never touched.
    std::fs::write("/sys/bus/rbd/add_single_major", format!("{mon} name=admin,ro rbd {name} v1")).unwrap();
    let by_hand = std::fs::read_dir("/sys/bus/rbd/devices").unwrap().flatten().next().unwrap().file_name();
    let by_hand = by_hand.to_string_lossy().into_owned();
    let unknown = ok(&agent, "GET", "/imageapi/v1/unknown", None);
    assert_eq!(unknown["rbd_devices"], json!([format!("/dev/rbd{by_hand} (rbd/{name}@v1)")]), "{unknown}");
    // udev probes a new block device (blkid opens it) for a moment after it appears: the
    // removal is refused with EBUSY until it lets go.
    common::wait_until("the hand-mapped rbd device is removed", Duration::from_secs(30), || {
        match std::fs::write("/sys/bus/rbd/remove_single_major", &by_hand) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => false,
            Err(e) => panic!("removing rbd{by_hand}: {e}"),
        }
    });
    assert!(
        mounts_under(&agent.data_dir.join("mounts")).is_empty(),
        "the pool's own datasets mount under the data dir too"
    );
    let _ = Command::new("rbd").args(["-c", &conf, "snap", "purge", &format!("rbd/{name}")]).output();
    let _ = Command::new("rbd").args(["-c", &conf, "rm", &format!("rbd/{name}")]).output();
}
