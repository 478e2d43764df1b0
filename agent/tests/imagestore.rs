//! ImageStore against kernel ZFS, through both endpoints, with a local image server
//! serving a real `zfs send` stream, a gzip'd one, a raw image and one with a wrong
//! checksum.

mod common;

use std::process::Command;
use std::time::Duration;

use common::image_server::{Entry, ImageServer, sha256_hex};
use common::{Agent, Response};
use serde_json::{Value, json};

/// A call through `/_mistify_RPC_`, as a gorilla/rpc v1 client makes it.
fn legacy(agent: &Agent, method: &str, params: Value) -> Value {
    let body = json!({"method": format!("ImageStore.{method}"), "params": [params], "id": 7}).to_string();
    let r = agent.tcp("POST", "/_mistify_RPC_", &[], body.as_bytes());
    assert_eq!(r.status, 200, "{method}: {}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["id"], 7);
    v
}

/// A call through `/rpc` (JSON-RPC 2.0, named params).
fn rpc2(agent: &Agent, method: &str, params: Value) -> Value {
    let body =
        json!({"jsonrpc": "2.0", "method": format!("ImageStore.{method}"), "params": params, "id": 1}).to_string();
    let r = agent.tcp("POST", "/rpc", &[("content-type", "application/json")], body.as_bytes());
    assert_eq!(r.status, 200, "{method}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn ok(v: Value) -> Value {
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        panic!("unexpected error: {e}");
    }
    v["result"].clone()
}

fn zfs(args: &[&str]) -> String {
    common::zfs(args)
}

fn pool_fingerprint(pool: &str) -> String {
    zfs(&["list", "-H", "-p", "-o", "name,guid", "-t", "all", "-r", pool])
}

/// A `zfs send` of a 4 MiB zvol with recognisable content, made in a scratch dataset
/// outside tankd's root.
fn make_stream(pool: &str) -> Vec<u8> {
    let vol = format!("{pool}/scratch/srcvol");
    zfs(&["create", "-p", "-V", "4M", &vol]);
    let dev = wait_for_zd(&vol);
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate().take(1 << 20) {
        *b = (i % 251) as u8;
    }
    std::fs::write(&dev, &data).unwrap();
    zfs(&["snapshot", &format!("{vol}@v1")]);
    let out = Command::new("zfs").args(["send", &format!("{vol}@v1")]).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The device node of a zvol, found the way tankd finds it (the shim's lookup).
fn wait_for_zd(vol: &str) -> std::path::PathBuf {
    let name: zfs_sys_shim::DatasetName = vol.parse().unwrap();
    let zfs = zfs_sys_shim::Zfs::new(zfs_sys_shim::Roots::new(vec![name.clone()]));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(zfs.zvol_device(&name, Duration::from_secs(10))).unwrap()
}

/// A volume's device as tankd answers it: the stable `/dev/zvol/<name>` link, never a
/// `/dev/zdN` node (whose number changes across reboots), leading to the volume's zd node.
/// In the test VM udev runs (vm-init) and the link is one its zvol rule names.
fn assert_zvol_link(device: &str, name: &str) {
    assert_eq!(device, format!("/dev/zvol/{name}"));
    let real = std::fs::canonicalize(device).unwrap();
    let zd = real.strip_prefix("/dev").ok().and_then(|f| f.to_str()).unwrap_or("");
    assert!(zd.starts_with("zd") && zd[2..].bytes().all(|b| b.is_ascii_digit()), "{device} -> {}", real.display());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&real).unwrap().file_type().is_block_device(), "{}", real.display());
    if std::env::var_os("TANKD_IN_VM").is_some() {
        common::sh("udevadm", &["settle", "--timeout=30"]);
        let links = common::sh("udevadm", &["info", "--query=symlink", &format!("--name={}", real.display())]);
        assert!(links.split_whitespace().any(|l| l == format!("zvol/{name}")), "udev's links of {zd}: {links}");
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out.stdout
}

fn start_agent(tag: &str, server: &ImageServer, extra: &[(&str, &str)]) -> Agent {
    let mut agent = Agent::new(tag);
    agent.extra_env.push(("TANKD_IMAGE_SERVER".into(), server.addr.clone()));
    for (k, v) in extra {
        agent.extra_env.push((k.to_string(), v.to_string()));
    }
    agent.start();
    agent
}

fn wait_status(agent: &Agent, id: &str, want: &str) -> Value {
    common::wait_for(&format!("image {id} to be {want}"), Duration::from_secs(120), || {
        let v = rpc2(agent, "GetImage", json!({"id": id}));
        let img = v["result"]["images"][0].clone();
        if img["status"] == want { Ok(img) } else { Err(v.to_string()) }
    })
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn every_method_through_both_endpoints() {
    let server = ImageServer::start();
    let mut agent = start_agent("ims", &server, &[]);
    let root = format!("{}/tankd", agent.pool);

    let stream = make_stream(&agent.pool);
    server.put(
        "/images/img-stream/download",
        Entry {
            headers: vec![("X-Checksum-Sha256".into(), sha256_hex(&stream))],
            body: stream.clone().into(),
            ..Default::default()
        },
    );
    let gz = gzip(&stream);
    server.put("/images/img-gz/download", Entry { body: gz.into(), ..Default::default() });
    let mut raw = vec![0u8; 3 << 20];
    raw[..4096].fill(0x5a);
    raw[(2 << 20)..(2 << 20) + 100].fill(0x33);
    server.put("/images/img-raw/download", Entry { body: raw.clone().into(), ..Default::default() });
    server.put(
        "/images/img-raw/download.sha256",
        Entry { body: format!("{}  img-raw\n", sha256_hex(&raw)).into_bytes().into(), ..Default::default() },
    );
    server.put(
        "/images/img-bad/download",
        Entry {
            headers: vec![("X-Checksum-Sha256".into(), "0".repeat(64))],
            body: stream.clone().into(),
            ..Default::default()
        },
    );

    // RequestImage: blocking through the legacy endpoint, async through 2.0.
    let img = ok(legacy(&agent, "RequestImage", json!({"id": "img-stream", "type": "kvm", "dest": "", "source": ""})))
        ["images"][0]
        .clone();
    assert_eq!(img["status"], "complete");
    assert_eq!(img["volume"], format!("{root}/images/img-stream"));
    assert_eq!(img["snapshot"], format!("{root}/images/img-stream@v1"));
    assert_eq!(img["size"], 4);
    assert_eq!(img["type"], "kvm");
    assert_eq!(img["sha256"], sha256_hex(&stream));
    let r = rpc2(&agent, "RequestImage", json!({"id": "img-gz", "async": true}));
    assert!(
        ["pending", "downloading", "complete"].contains(&r["result"]["images"][0]["status"].as_str().unwrap()),
        "{r}"
    );
    let gz_img = wait_status(&agent, "img-gz", "complete");
    assert_eq!(gz_img["snapshot"], format!("{root}/images/img-gz@v1"));
    let raw_img = ok(rpc2(&agent, "RequestImage", json!({"id": "img-raw"})))["images"][0].clone();
    assert_eq!(raw_img["status"], "complete");
    assert_eq!(raw_img["sha256"], sha256_hex(&raw), "the sidecar checksum was used");
    assert_eq!(raw_img["size"], 3);
    assert_eq!(
        zfs(&["get", "-H", "-p", "-o", "value", "volsize", &format!("{root}/images/img-raw")]).trim(),
        (3 << 20).to_string()
    );

    // A wrong checksum: error reported, nothing half-made listed as complete.
    let bad = legacy(&agent, "RequestImage", json!({"id": "img-bad"}));
    assert!(bad["error"].as_str().unwrap().contains("checksum mismatch"), "{bad}");
    let listed = ok(legacy(&agent, "ListImages", json!({})))["images"].clone();
    let bad_entry = listed.as_array().unwrap().iter().find(|i| i["id"] == "img-bad").expect("failed fetch is listed");
    assert_eq!(bad_entry["status"], "error");
    assert!(bad_entry["error"].as_str().unwrap().contains("checksum"));
    // What is left is an empty placeholder saying why: no data, no snapshot.
    let bad_ds = format!("{root}/images/img-bad");
    assert_eq!(zfs(&["get", "-H", "-o", "value", "tankd:status,type", &bad_ds]), "error\nfilesystem\n");
    assert_eq!(zfs(&["list", "-H", "-t", "snapshot", "-r", &bad_ds]), "");
    assert_eq!(listed.as_array().unwrap().iter().filter(|i| i["status"] == "complete").count(), 3);
    let listed2 = ok(rpc2(&agent, "ListImages", json!({})));
    assert_eq!(listed2["images"].as_array().unwrap().len(), 4);
    // A second request for a complete image does not fetch again.
    let hits = server.hits("/images/img-stream/download");
    ok(rpc2(&agent, "RequestImage", json!({"id": "img-stream"})));
    assert_eq!(server.hits("/images/img-stream/download"), hits);
    assert_eq!(ok(legacy(&agent, "GetImage", json!({"id": "img-raw"})))["images"][0]["status"], "complete");

    // CloneImage.
    let c = ok(rpc2(&agent, "CloneImage", json!({"id": "img-stream", "dest": "clones/c1"})));
    assert_eq!(c["images"][0]["volume"], format!("{root}/clones/c1"));
    assert_eq!(
        zfs(&["get", "-H", "-o", "value", "origin", &format!("{root}/clones/c1")]).trim(),
        format!("{root}/images/img-stream@v1")
    );

    // Volumes.
    let v = ok(legacy(&agent, "CreateVolume", json!({"id": "vols/v1", "size": 16})))["volumes"][0].clone();
    assert_eq!(v["id"], format!("{root}/vols/v1"));
    assert_eq!(v["size"], 16);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(v["device"].as_str().unwrap()).unwrap().file_type().is_block_device(), "{v}");
    assert_zvol_link(v["device"].as_str().unwrap(), &format!("{root}/vols/v1"));
    let got = ok(rpc2(&agent, "GetVolume", json!({"id": "vols/v1"})))["volumes"][0].clone();
    assert_eq!(got["size"], 16);
    assert_eq!(got["device"], v["device"], "the same stable path");
    let vols = ok(legacy(&agent, "ListVolumes", json!({})))["volumes"].clone();
    assert!(vols.as_array().unwrap().iter().any(|x| x["id"] == format!("{root}/vols/v1")), "{vols}");

    // Snapshots.
    let s = ok(legacy(
        &agent,
        "CreateSnapshot",
        json!({"id": "vols/v1", "dest": "s1", "recursive": false, "destroyMoreRecent": false}),
    ));
    assert_eq!(s["snapshots"][0]["id"], format!("{root}/vols/v1@s1"));
    ok(rpc2(&agent, "CreateSnapshot", json!({"id": "vols/v1", "dest": "s2"})));
    let all = ok(legacy(&agent, "ListSnapshots", json!({"id": "vols"})))["snapshots"].clone();
    let names: Vec<_> = all.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, [format!("{root}/vols/v1@s1"), format!("{root}/vols/v1@s2")]);
    assert_eq!(ok(legacy(&agent, "ListSnapshot", json!({"id": "vols"})))["snapshots"], all, "alias");
    assert_eq!(
        ok(rpc2(&agent, "GetSnapshot", json!({"id": "vols/v1@s2"})))["snapshots"][0]["id"],
        format!("{root}/vols/v1@s2")
    );
    let refused = legacy(&agent, "RollbackSnapshot", json!({"id": "vols/v1@s1"}));
    assert!(
        refused["error"].as_str().unwrap().contains(&format!("{root}/vols/v1@s2")),
        "names the newer snapshot: {refused}"
    );
    ok(rpc2(&agent, "RollbackSnapshot", json!({"id": "vols/v1@s1", "destroyMoreRecent": true})));
    assert_eq!(ok(rpc2(&agent, "ListSnapshots", json!({"id": "vols/v1"})))["snapshots"].as_array().unwrap().len(), 1);
    ok(legacy(&agent, "DeleteSnapshot", json!({"id": "vols/v1@s1"})));
    assert_eq!(ok(rpc2(&agent, "ListSnapshots", json!({"id": "vols/v1"})))["snapshots"], json!([]));
    assert_eq!(
        ok(legacy(&agent, "ListSnapshots", json!({"id": "vols/v1"})))["snapshots"],
        Value::Null,
        "legacy: nil slice"
    );

    // Guests.
    let guest = json!({"id": "g1", "disks": [{"image": "img-raw"}, {"size": 8}, {"size": 8}]});
    ok(legacy(&agent, "VerifyDisks", json!({"guest": guest, "action": ""})));
    let huge = json!({"id": "g1", "disks": [{"size": 1 << 29}]});
    let r = rpc2(&agent, "VerifyDisks", json!({"guest": huge}));
    assert_eq!(r["error"]["data"]["kind"], "no_space", "{r}");
    let made = ok(legacy(&agent, "CreateGuestDisks", json!({"guest": guest, "action": ""})))["guest"].clone();
    let disks = made["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 3);
    for (n, d) in disks.iter().enumerate() {
        assert_eq!(d["volume"], format!("{root}/guests/g1/disk-{n}"));
        assert!(std::fs::metadata(d["source"].as_str().unwrap()).unwrap().file_type().is_block_device(), "{d}");
        assert_zvol_link(d["source"].as_str().unwrap(), &format!("{root}/guests/g1/disk-{n}"));
        assert_eq!(d.as_object().unwrap().len(), 6, "every Disk member is emitted: {d}");
    }
    assert_eq!(disks[0]["size"], 3);
    assert_eq!(disks[0]["image"], "img-raw");
    assert_eq!(disks[1]["size"], 8);
    // The clone carries the image's bytes.
    let mut head = vec![0u8; 4096];
    use std::io::Read;
    std::fs::File::open(disks[0]["source"].as_str().unwrap()).unwrap().read_exact(&mut head).unwrap();
    assert!(head.iter().all(|&b| b == 0x5a));
    // DeleteImage refuses while guest disks depend on it.
    let r = rpc2(&agent, "DeleteImage", json!({"id": "img-raw"}));
    assert_eq!(r["error"]["data"]["kind"], "conflict", "{r}");

    // A guest whose last disk names a missing image: nothing is created.
    let before = pool_fingerprint(&agent.pool);
    let g2 = json!({"id": "g2", "disks": [{"size": 8}, {"image": "no-such-image"}]});
    let r = legacy(&agent, "CreateGuestDisks", json!({"guest": g2}));
    assert!(r["error"].as_str().unwrap().contains("no-such-image"), "{r}");
    assert_eq!(before, pool_fingerprint(&agent.pool));

    // A crash after the first disk of a guest: the same call again succeeds (it takes
    // the disk it finds, being exactly what it asks for); a different one still refuses.
    let g3 = json!({"id": "g3", "disks": [{"image": "img-raw"}, {"size": 8}]});
    let body = json!({"method": "ImageStore.CreateGuestDisks", "params": [{"guest": g3}], "id": 7}).to_string();
    agent.crash_at("guest-disk-made", common::Listener::Api, "POST", "/_mistify_RPC_", &body);
    assert_eq!(
        zfs(&["list", "-H", "-o", "name", "-r", &format!("{root}/guests/g3")]).lines().count(),
        2,
        "g3 and disk-0"
    );
    let made = ok(legacy(&agent, "CreateGuestDisks", json!({"guest": g3})))["guest"].clone();
    assert_eq!(made["disks"].as_array().unwrap().len(), 2, "{made}");
    for d in made["disks"].as_array().unwrap() {
        assert!(std::fs::metadata(d["source"].as_str().unwrap()).unwrap().file_type().is_block_device(), "{d}");
    }
    let before = pool_fingerprint(&agent.pool);
    let other = json!({"id": "g3", "disks": [{"image": "img-raw"}, {"size": 16}]});
    let r = legacy(&agent, "CreateGuestDisks", json!({"guest": other}));
    assert!(r["error"].as_str().is_some_and(|e| e.contains("exists")), "disk-1 is 8 MiB, not 16: {r}");
    assert_eq!(before, pool_fingerprint(&agent.pool), "the refused call changed nothing");
    ok(legacy(&agent, "DeleteGuestsDisks", json!({"guest": {"id": "g3"}})));

    ok(legacy(&agent, "DeleteGuestsDisks", json!({"guest": {"id": "g1"}})));
    ok(rpc2(&agent, "DeleteGuestDisks", json!({"guest": {"id": "g1"}})));
    ok(legacy(&agent, "DeleteGuestsDisks", json!({"guest": {"id": "never-existed"}})));
    assert!(
        Command::new("zfs").args(["list", &format!("{root}/guests/g1")]).output().unwrap().status.code() != Some(0)
    );

    // DeleteDataset and DeleteImage.
    ok(rpc2(&agent, "DeleteDataset", json!({"id": "clones/c1"})));
    ok(legacy(&agent, "DeleteDataset", json!({"id": "vols/v1"})));
    let r = rpc2(&agent, "DeleteDataset", json!({"id": "vols/v1"}));
    assert_eq!(r["error"]["data"]["kind"], "not_found", "{r}");
    ok(legacy(&agent, "DeleteImage", json!({"id": "img-raw"})));
    ok(legacy(&agent, "DeleteImage", json!({"id": "img-bad"})));
    let left: Vec<_> = ok(rpc2(&agent, "ListImages", json!({})))["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(left, [json!("img-gz"), json!("img-stream")]);
}

/// Requests as a gorilla/rpc v1 client writes them (no Content-Type, no "jsonrpc"), and
/// the response checked member by member.
#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn legacy_codec_wire_format() {
    let server = ImageServer::start();
    let agent = start_agent("wire", &server, &[]);
    let send = |bytes: &str| agent.tcp("POST", "/_mistify_RPC_", &[], bytes.as_bytes());

    let r = send(r#"{"method":"ImageStore.ListVolumes","params":[{"id":"","size":0}],"id":1}"#);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let v = r.json();
    let members: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(members, ["error", "id", "result"], "exactly result, error, id; no jsonrpc member");
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"], json!({"volumes": null}), "empty list is null, as a nil Go slice");

    let r = send(r#"{"method":"ImageStore.CreateVolume","params":[{"id":"vols/w1","size":8}],"id":2}"#);
    let v = r.json();
    assert_eq!(v["result"]["volumes"][0].as_object().unwrap().len(), 3, "Volume{{id,size,device}}: {v}");
    let r = send(r#"{"method":"ImageStore.GetVolume","params":[{"id":"vols/nope","size":0}],"id":3}"#);
    assert_eq!(r.status, 200, "a failed method is still HTTP 200");
    let v = r.json();
    assert_eq!(v["result"], Value::Null);
    assert!(v["error"].as_str().unwrap().contains("does not exist"), "{v}");

    let r = send(r#"{"method":"ImageStore.NoSuchMethod","params":[{}],"id":4}"#);
    assert_eq!(r.status, 400);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = send(r#"{"method":"ImageStore.CreateVolume","params":[{"id":"v","size":"big"}],"id":5}"#);
    assert_eq!(r.status, 400, "params that do not decode");
    assert!(String::from_utf8_lossy(&r.body).contains("size"));
    let r = send(r#"{"method":"ImageStore.ListVolumes","params":{"id":""},"id":6}"#);
    assert_eq!(r.status, 400);
    let r = agent.tcp("GET", "/_mistify_RPC_", &[], b"");
    assert_eq!(r.status, 405);
    let r = send(r#"{"method":"ImageStore.CreateVolume","params":[{"id":"vols/w2","size":8}]}"#);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "no id: no body");
    assert!(
        Command::new("zfs").args(["list", &format!("{}/tankd/vols/w2", agent.pool)]).status().unwrap().success(),
        "but it ran"
    );
    let r = agent.tcp(
        "POST",
        "/_mistify_RPC_",
        &[("content-type", "application/json")],
        br#"{"method":"ImageStore.ListImages","params":[{}],"id":8}"#,
    );
    assert_eq!(r.json()["result"], json!({"images": null}), "with a JSON content type too");
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn bad_input_names_the_field_and_changes_nothing() {
    let server = ImageServer::start();
    let agent = start_agent("bad", &server, &[]);
    ok(legacy(&agent, "CreateVolume", json!({"id": "vols/keep", "size": 8})));
    ok(legacy(&agent, "CreateSnapshot", json!({"id": "vols/keep", "dest": "s"})));
    let before = pool_fingerprint(&agent.pool);
    let long = "a".repeat(300);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("CreateVolume", json!({"id": "../escape", "size": 8}), "id"),
        ("CreateVolume", json!({"id": "vols/../../x", "size": 8}), "id"),
        ("CreateVolume", json!({"id": "-R", "size": 8}), "id"),
        ("CreateVolume", json!({"id": "vols/a b", "size": 8}), "id"),
        ("CreateVolume", json!({"id": "", "size": 8}), "id"),
        ("CreateVolume", json!({"id": long, "size": 8}), "id"),
        ("CreateVolume", json!({"id": "vols/a@b", "size": 8}), "id"),
        ("CreateVolume", json!({"id": "vols/neg", "size": -1}), "size"),
        ("CreateVolume", json!({"id": "vols/huge", "size": 1i64 << 40}), "size"),
        ("CreateVolume", json!({"id": "vols/typo", "size": 8, "sise": 1}), "sise"),
        ("CreateSnapshot", json!({"id": "vols/keep", "dest": "-x"}), "dest"),
        ("CreateSnapshot", json!({"id": "vols/keep", "dest": "a@b"}), "dest"),
        ("RollbackSnapshot", json!({"id": "vols/keep"}), "id"),
        ("DeleteSnapshot", json!({"id": "vols/keep@s@t"}), "id"),
        ("DeleteDataset", json!({"id": ""}), "id"),
        ("DeleteDataset", json!({"id": "../../"}), "id"),
        ("RequestImage", json!({"id": "a/b"}), "id"),
        ("RequestImage", json!({"id": "x", "source": "file:///etc/passwd"}), "source"),
        // Only the image server and image_sources: not tankd's own listeners, not metadata.
        ("RequestImage", json!({"id": "x", "source": "http://127.0.0.1:3000/metrics"}), "source"),
        ("RequestImage", json!({"id": "x", "source": "http://169.254.169.254/latest/meta-data/"}), "source"),
        ("CreateGuestDisks", json!({"guest": {"id": "../g", "disks": [{"size": 8}]}}), "guest.id"),
        ("CreateGuestDisks", json!({"guest": {"id": "g", "disks": [{"size": 8}, {"size": 0}]}}), "guest.disks[1].size"),
        ("CreateGuestDisks", json!({"guest": {"id": "g", "disks": [{"size": "x"}]}}), "guest.disks[0].size"),
    ];
    for (method, params, field) in cases {
        let r = rpc2(&agent, method, params.clone());
        assert_eq!(r["error"]["data"]["kind"], "invalid", "{method} {params}: {r}");
        assert_eq!(r["error"]["data"]["field"], field, "{method} {params}: {r}");
        assert_eq!(r["error"]["code"], -32602);
        let l = agent.tcp(
            "POST",
            "/_mistify_RPC_",
            &[],
            json!({"method": format!("ImageStore.{method}"), "params": [params], "id": 1}).to_string().as_bytes(),
        );
        let text = String::from_utf8_lossy(&l.body);
        assert!(text.contains(field), "legacy names {field}: {text}");
    }
    assert_eq!(before, pool_fingerprint(&agent.pool), "the pool is unchanged");
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn jsonrpc2_batches_positional_params_and_error_codes() {
    let server = ImageServer::start();
    let agent = start_agent("rpc2", &server, &[]);
    let batch = json!([
        {"jsonrpc": "2.0", "method": "ImageStore.CreateVolume", "params": [{"id": "vols/b1", "size": 8}], "id": 1},
        {"jsonrpc": "2.0", "method": "ImageStore.GetVolume", "params": {"id": "vols/missing"}, "id": 2},
        {"jsonrpc": "2.0", "method": "ImageStore.Nope", "params": {}, "id": 3}
    ]);
    let r = agent.tcp("POST", "/rpc", &[("content-type", "application/json")], batch.to_string().as_bytes());
    let mut replies = r.json().as_array().unwrap().clone();
    replies.sort_by_key(|v| v["id"].as_i64());
    assert_eq!(replies[0]["result"]["volumes"][0]["size"], 8);
    assert_eq!(replies[1]["error"]["code"], -32001);
    assert_eq!(replies[1]["error"]["data"]["kind"], "not_found");
    assert_eq!(replies[2]["error"]["code"], -32601);
    let empty = rpc2(&agent, "ListImages", json!({}));
    assert_eq!(empty["result"]["images"], json!([]), "2.0 sends [] for an empty list");
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn fetches_are_shared_bounded_and_survive_a_restart() {
    let server = ImageServer::start();
    let mut agent = start_agent("fetch", &server, &[("TANKD_MAX_PENDING", "1")]);
    let stream = make_stream(&agent.pool);
    let slow = |secs| Entry { body: stream.clone().into(), delay: Duration::from_secs(secs), ..Default::default() };
    server.put("/images/slow/download", slow(4));
    server.put("/images/other/download", slow(0));

    // Two requests for one id share one fetch; a second id beyond max_pending is busy.
    let a = rpc2(&agent, "RequestImage", json!({"id": "slow", "async": true}));
    assert!(a.get("result").is_some(), "{a}");
    let b = rpc2(&agent, "RequestImage", json!({"id": "slow", "async": true}));
    assert!(b.get("result").is_some(), "{b}");
    let busy = rpc2(&agent, "RequestImage", json!({"id": "other", "async": true}));
    assert_eq!(busy["error"]["data"]["kind"], "busy", "{busy}");
    wait_status(&agent, "slow", "complete");
    assert_eq!(server.hits("/images/slow/download"), 1, "one fetch for both requests");

    // Kill the agent mid-fetch; the next start restarts the fetch from its recorded
    // source, and the half-received data is never listed as complete.
    let stalled = Entry {
        body: stream.clone().into(),
        pause_at: Some((256 << 10, Duration::from_secs(15))),
        ..Default::default()
    };
    server.put("/images/crash/download", stalled);
    rpc2(&agent, "RequestImage", json!({"id": "crash", "async": true}));
    // Kill only once the receive is under way (its dataset exists, still downloading).
    let crash_ds = format!("{}/tankd/images/crash", agent.pool);
    common::wait_until("the receive to start", Duration::from_secs(120), || {
        Command::new("zfs").args(["list", &crash_ds]).output().unwrap().status.success()
    });
    assert_eq!(zfs(&["get", "-H", "-o", "value", "tankd:status", &crash_ds]).trim(), "downloading");
    let mut child = agent.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let before_restart: Response = {
        agent.start();
        agent.tcp(
            "POST",
            "/rpc",
            &[("content-type", "application/json")],
            json!({"jsonrpc":"2.0","method":"ImageStore.GetImage","params":{"id":"crash"},"id":1})
                .to_string()
                .as_bytes(),
        )
    };
    let status = before_restart.json()["result"]["images"][0]["status"].clone();
    assert_ne!(status, "complete", "not complete right after the restart: {status}");
    wait_status(&agent, "crash", "complete");
    assert!(server.hits("/images/crash/download") >= 2, "fetched again after the restart");
    assert!(agent.log_text().contains("restarting a fetch interrupted"), "{}", agent.log_text());
}
