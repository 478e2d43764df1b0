//! No orphans: tankd is killed (`TANKD_FAULT=<step>` aborts it) between each change to
//! the kernel or ZFS and its record, started again, and must leave nothing it does not
//! manage: no loop device, mount, kernel rbd device, pin, cgroup, shim, container
//! directory or dataset that no record names, and the request must work when retried.
//! The steps are `agent/src/fault.rs`'s list.
//!
//! Host tier: attachments, mounts and containers (tankd with `zfs = false`; needs root,
//! loop devices, mksquashfs and busybox-static). The steps that need kernel ZFS or
//! kernel rbd are crashed at in the tests of their capability, in the test VM:
//! `restore-*` in `control.rs` (beside the long Docker test, so the VM runs them at
//! once), `attach-made` for krbd in `imageapi.rs`, `guest-disk-made` in
//! `imagestore.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::imageapi_client::{call, host_agent, loops_of, ok, rootfs, squashfs};
use common::{Agent, Listener, mounts_under};
use serde_json::{Value, json};

/// Nothing under tankd's roots that no record names.
fn assert_nothing_unknown(agent: &Agent, step: &str) {
    let unknown = ok(agent, "GET", "/imageapi/v1/unknown", None);
    for list in ["loop_devices", "mounts", "rbd_fuse", "rbd_devices"] {
        assert_eq!(unknown[list], json!([]), "{step}: {list} left unmanaged: {unknown}");
    }
}

fn count(agent: &Agent, path: &str) -> usize {
    ok(agent, "GET", path, None).as_array().unwrap().len()
}

#[test]
fn attachment_and_mount_steps_leave_no_orphans() {
    let mut agent = host_agent("flt1");
    let images = agent.data_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let img = squashfs(&images, "base");
    let standalone = json!({"kind": "loop", "read_only": true, "loop": {"path": img}}).to_string();
    let chain =
        json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "read_only": true, "loop": {"path": img}}, "fs_type": "squashfs"}})
            .to_string();
    let mount_root = agent.data_dir.join("mounts");

    // Making: a device without a finished record, a chain cut between its two steps,
    // a mount in the kernel without a finished record.
    for (step, path, body) in [
        ("attach-made", "/imageapi/v1/attach", &standalone),
        ("after-attach", "/imageapi/v1/mount", &chain),
        ("mount-made", "/imageapi/v1/mount", &chain),
    ] {
        agent.crash_at(step, Listener::Api, "POST", path, body);
        assert!(loops_of(&img).is_empty(), "{step}: a loop device is left on {}", img.display());
        assert!(mounts_under(&mount_root).is_empty(), "{step}: mounts left: {:?}", mounts_under(&mount_root));
        assert_eq!((count(&agent, "/imageapi/v1/attach"), count(&agent, "/imageapi/v1/mount")), (0, 0), "{step}");
        assert_nothing_unknown(&agent, step);
        // The same request works now.
        let made = ok(&agent, "POST", path, Some(serde_json::from_str(body).unwrap()));
        let id = made["id"].as_u64().unwrap();
        let kind = if path.ends_with("attach") { "attach" } else { "mount" };
        ok(&agent, "DELETE", &format!("/imageapi/v1/{kind}?id={id}&force=true"), None);
    }

    // Tearing down: the kernel has let go, the record still says ready.
    for step in ["mount-unmounted", "attach-detached"] {
        let m = ok(&agent, "POST", "/imageapi/v1/mount", Some(serde_json::from_str(&chain).unwrap()));
        let id = m["id"].as_u64().unwrap();
        assert_eq!(loops_of(&img).len(), 1);
        agent.crash_at(step, Listener::Api, "DELETE", &format!("/imageapi/v1/mount?id={id}"), "");
        assert!(loops_of(&img).is_empty(), "{step}: a loop device is left");
        assert!(mounts_under(&mount_root).is_empty(), "{step}: mounts left");
        assert_eq!((count(&agent, "/imageapi/v1/attach"), count(&agent, "/imageapi/v1/mount")), (0, 0), "{step}");
        assert_nothing_unknown(&agent, step);
    }
}

/// Host pids of the shims of container directory `dir`.
fn shims_of(dir: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&b"__container-shim".as_slice()) && args.contains(&dir.as_os_str().as_encoded_bytes())
        })
        .collect()
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    common::wait_until(what, Duration::from_secs(30), done)
}

/// The cgroup directories of container `id` of this agent (v2, or any v1 controller).
fn groups_of(agent: &Agent, id: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/devices", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"] {
        let Ok(entries) = std::fs::read_dir(base) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tankd") && e.path().join(id.to_string()).is_dir() && is_ours(agent, &e.path()) {
                out.push(e.path().join(id.to_string()));
            }
        }
    }
    out
}

/// Whether a `tankd*` parent group belongs to this agent: tankd names it by its data
/// dir, so only this agent's containers' pids were ever in it. Checked by name.
fn is_ours(agent: &Agent, parent: &Path) -> bool {
    parent.file_name().is_some_and(|n| n.to_string_lossy() == common::cgroup_parent(agent))
}

fn pinned(agent: &Agent) -> Value {
    let state: Value =
        serde_json::from_slice(&std::fs::read(agent.data_dir.join("imageapi/state.json")).unwrap()).unwrap();
    state["pinned"].clone()
}

#[test]
fn container_steps_leave_no_orphans() {
    let mut agent = host_agent("flt2");
    let root = rootfs(&agent);
    let dir_of = |agent: &Agent, id: u64| agent.data_dir.join("containers").join(id.to_string());
    let sleeper = |state: &str| {
        json!({"mount": {"id": root}, "command": "/bin/sleep", "args": ["600"], "state": state, "stop_timeout": 1})
            .to_string()
    };

    // Pinned, not recorded: the pin goes, the mount is free, no directory stays.
    agent.crash_at("container-pinned", Listener::Api, "POST", "/imageapi/v1/container", &sleeper("created"));
    assert_eq!(count(&agent, "/imageapi/v1/container"), 0);
    assert_eq!(pinned(&agent), json!({}), "the pin of a container that was never recorded");
    assert!(!dir_of(&agent, 1).exists(), "container-pinned: its directory is left");

    // Started, not recorded as running: the shim never gets its go and ends; the group goes.
    let c = ok(&agent, "POST", "/imageapi/v1/container", Some(serde_json::from_str(&sleeper("created")).unwrap()));
    let id = c["id"].as_u64().unwrap();
    let dir = dir_of(&agent, id);
    let path = format!("/imageapi/v1/container/{id}");
    let crash_starting =
        |agent: &mut Agent, step| agent.crash_at(step, Listener::Api, "PATCH", &path, r#"{"state":"running"}"#);
    crash_starting(&mut agent, "container-start");
    wait_until("container-start: the shim is still there", || shims_of(&dir).is_empty());
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/container/{id}"), None)["state"], "created");
    assert!(groups_of(&agent, id).is_empty(), "container-start: cgroups left: {:?}", groups_of(&agent, id));

    // Recorded as running, PID 1 never let go: it ends, and the next start says so.
    crash_starting(&mut agent, "container-started");
    wait_until("container-started: the shim is still there", || shims_of(&dir).is_empty());
    wait_until("container-started: never recorded as ended", || {
        let c = ok(&agent, "GET", &format!("/imageapi/v1/container/{id}"), None);
        c["state"] == "exited" || c["state"] == "dead"
    });
    assert!(groups_of(&agent, id).is_empty(), "container-started: cgroups left");

    // Stop signalled, tankd gone: sleep as PID 1 ignores SIGTERM, so it still runs and is
    // re-adopted as stopping; asking again ends it with SIGKILL.
    let c = ok(&agent, "PATCH", &format!("/imageapi/v1/container/{id}"), Some(json!({"state": "running"})));
    assert_eq!(c["state"], "running");
    agent.crash_at(
        "container-stop",
        Listener::Api,
        "PATCH",
        &format!("/imageapi/v1/container/{id}"),
        r#"{"state":"exited"}"#,
    );
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/container/{id}"), None)["state"], "stopping");
    assert_eq!(shims_of(&dir).len(), 1, "the container survived tankd");
    let c = ok(&agent, "PATCH", &format!("/imageapi/v1/container/{id}"), Some(json!({"state": "exited"})));
    assert_eq!((c["state"].as_str(), c["exit_signal"].as_i64()), (Some("exited"), Some(9)), "{c}");
    wait_until("container-stop: the shim is still there", || shims_of(&dir).is_empty());
    assert!(groups_of(&agent, id).is_empty(), "container-stop: cgroups left");

    // Record removed, root still pinned and directory there: both go.
    agent.crash_at("container-removed", Listener::Api, "DELETE", &format!("/imageapi/v1/container/{id}"), "");
    assert_eq!(call(&agent, "GET", &format!("/imageapi/v1/container/{id}"), None).status, 404);
    assert_eq!(pinned(&agent), json!({}), "container-removed: the pin stays");
    assert!(!dir.exists(), "container-removed: {} stays", dir.display());
    assert_eq!(ok(&agent, "GET", &format!("/imageapi/v1/mount?id={root}"), None)[0]["refs"], 0);
    assert_nothing_unknown(&agent, "containers");
}
