//! Talking to tankd's imageapi and container routes in tests: an agent on a host
//! without ZFS (`zfs = false`) with an API token, and calls that check upstream's
//! `{code, message}` error shape.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Agent, Response, sh};

pub const TOKEN: &str = "imageapi-test-token-0123456789";

/// A tankd with `zfs = false` and [`TOKEN`], started.
pub fn host_agent(tag: &str) -> Agent {
    let mut a = Agent::new(tag);
    a.extra_env.push(("TANKD_ZFS".into(), "false".into()));
    // The ranges and bridges the container tests' veth host ends use.
    a.extra_env.push(("TANKD_CONTAINER_NETWORKS".into(), "10.231.0.0/16".into()));
    a.extra_env.push(("TANKD_CONTAINER_BRIDGES".into(), "tkbr*".into()));
    a.token = TOKEN.into();
    a.start();
    a
}

/// A call with the agent's token.
pub fn call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    agent.tcp(method, path, &[("Content-Type", "application/json")], body.as_bytes())
}

/// A call that must answer 200 or 201; its JSON.
pub fn ok(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = call(agent, method, path, body);
    assert!(r.status == 200 || r.status == 201, "{method} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    r.json()
}

/// A call that must be refused with `status` in upstream's `{code, message}`.
pub fn refused(agent: &Agent, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
    let r = call(agent, method, path, body);
    assert_eq!(r.status, status, "{method} {path}: {}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["code"], status, "upstream's {{code, message}}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    v
}

/// A busybox rootfs as squashfs, mounted and overlaid; returns the overlay's mount id.
pub fn rootfs(agent: &Agent) -> u64 {
    let images = agent.data_dir.join("images");
    let src = agent.data_dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    let busybox =
        ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).expect("busybox-static");
    // Copied by `cp`, not std::fs::copy: a write fd open in this (multi-threaded) test
    // process is inherited by any child another test forks meanwhile, and exec'ing the
    // file while such a child still holds it fails with ETXTBSY ("Text file busy").
    sh("cp", &[busybox, src.join("bin/busybox").to_str().unwrap()]);
    sh("chroot", &[src.to_str().unwrap(), "/bin/busybox", "--install", "-s", "/bin"]);
    std::fs::write(src.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::create_dir_all(&images).unwrap();
    let img = images.join("busybox.sqfs");
    sh("mksquashfs", &[src.to_str().unwrap(), img.to_str().unwrap(), "-noappend", "-quiet", "-all-root"]);
    let m = ok(
        agent,
        "POST",
        "/imageapi/v1/mount",
        Some(
            json!({"kind": "attach", "attach": {"attach": {"kind": "loop", "read_only": true, "loop": {"path": img}}, "fs_type": "squashfs"}}),
        ),
    );
    let o = ok(agent, "POST", "/imageapi/v1/mount", Some(json!({"kind": "overlay", "overlay": {"lower": [m["id"]]}})));
    o["id"].as_u64().unwrap()
}

/// A squashfs image with `hello` and `etc/motd`.
pub fn squashfs(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("hello"), "hello from the image\n").unwrap();
    std::fs::write(src.join("etc/motd"), "lower motd\n").unwrap();
    let img = dir.join(format!("{name}.sqfs"));
    sh("mksquashfs", &[src.to_str().unwrap(), img.to_str().unwrap(), "-noappend", "-quiet", "-all-root"]);
    std::fs::remove_dir_all(&src).unwrap();
    img
}

/// The loop devices (`loopN`) whose backing file is `file`.
pub fn loops_of(file: &Path) -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .map(|f| Path::new(f.trim()) == file)
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
