//! The tankd binary end to end: start-up on the embedded pool, health over TCP and the
//! unix socket, request ids, graceful shutdown, re-import after a restart, and the
//! start-up errors an operator meets first.

mod common;

use std::process::Command;

use common::{Agent, run_to_exit};

#[test]
fn bad_configuration_names_the_field_and_exits_2() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tankd"));
    cmd.args(["--config", "/dev/null", "--listen", "not-an-address"]);
    let (code, stderr) = run_to_exit(cmd);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("configuration listen"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tankd.toml");
    std::fs::write(&file, "pool = \"tank\"\nlisten_on = [\"x\"]\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tankd"));
    cmd.arg("--config").arg(&file);
    let (code, stderr) = run_to_exit(cmd);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("listen_on"), "unknown key is named: {stderr}");
}

#[test]
fn start_up_reports_every_missing_piece() {
    // No zfs on PATH; /dev/zfs may or may not exist depending on where this runs.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tankd"));
    cmd.env("PATH", "/nonexistent")
        .env("TANKD_LISTEN", "127.0.0.1:0")
        .env("TANKD_SOCKET", "")
        .args(["--config", "/dev/null"]);
    let (code, stderr) = run_to_exit(cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("tankd cannot start"), "{stderr}");
    assert!(stderr.contains("no `zfs` command on PATH"), "{stderr}");
    let dev_zfs_missing = !std::path::Path::new("/dev/zfs").exists();
    assert_eq!(stderr.contains("/dev/zfs is missing"), dev_zfs_missing, "{stderr}");
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn embedded_pool_health_shutdown_and_reimport() {
    let mut agent = Agent::new("emb");
    agent.start();

    let r = agent.tcp("GET", "/health", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let h = r.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["embedded_pool"], true);
    assert_eq!(h["pool"]["name"], agent.pool.as_str());
    assert_eq!(h["pool"]["health"], "ONLINE");
    assert!(h["pool"]["size"].as_u64().unwrap() > 400 << 20);
    assert_eq!(h["dataset_root"], format!("{}/tankd", agent.pool));
    assert!(h["zfs"]["kernel"].as_str().unwrap().starts_with("zfs-kmod-2."));
    assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()), "every response has a request id");

    // A client's own request id is kept; the unix socket serves the same API.
    let r = agent.tcp("GET", "/health", &[("x-request-id", "trace-me-42")], b"");
    assert_eq!(r.header("x-request-id"), Some("trace-me-42"));
    let r = agent.unix("GET", "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["pool"]["name"], agent.pool.as_str());
    assert!(agent.log_text().contains("trace-me-42"), "request ids reach the log");

    // SIGTERM: exit 0, socket removed.
    assert_eq!(agent.stop(), Some(0), "{}", agent.log_text());
    assert!(!agent.socket.exists());

    // The pool outlives the agent; export it as a reboot would, and the next start
    // re-imports it with the dataset root intact.
    let st = Command::new("zpool").args(["export", &agent.pool]).status().unwrap();
    assert!(st.success());
    agent.start();
    let h = agent.tcp("GET", "/health", &[], b"").json();
    assert_eq!(h["status"], "ok");
    assert!(agent.log_text().contains("importing the embedded pool"), "{}", agent.log_text());
    assert_eq!(agent.stop(), Some(0));
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn missing_or_foreign_pool_is_a_clear_start_up_error() {
    let agent = Agent::new("miss");
    let mut cmd = agent.command();
    cmd.env("TANKD_POOL", "nosuchpool");
    let (code, stderr) = run_to_exit(cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pool nosuchpool is not imported"), "{stderr}");

    // A pool that merely has the embedded pool's name is not taken over.
    let vdev = agent.data_dir.join("foreign.img");
    std::fs::File::create(&vdev).unwrap().set_len(256 << 20).unwrap();
    let st = Command::new("zpool").args(["create", "-m", "none", &agent.pool]).arg(&vdev).status().unwrap();
    assert!(st.success());
    let (code, stderr) = run_to_exit(agent.command());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not tankd's embedded pool"), "{stderr}");
    let out = Command::new("zfs").args(["list", "-H", "-o", "name", "-r", &agent.pool]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), agent.pool, "nothing was created in it");
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn a_configured_token_is_the_one_the_imagestore_asks_for() {
    let mut agent = Agent::new("tok");
    let token = "s3cret-token-0123456789";
    agent.token = token.into();
    agent.start();
    assert_eq!(agent.tcp_anon("GET", "/health", &[], b"").status, 200, "health is open");
    let list = serde_json::json!({"method": "ImageStore.ListImages", "params": [{}], "id": 1}).to_string();
    let r = agent.tcp_anon("POST", "/_mistify_RPC_", &[], list.as_bytes());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["kind"], "unauthorized");
    let r = agent.tcp("POST", "/_mistify_RPC_", &[], list.as_bytes());
    assert_eq!(r.status, 200, "with the token: {}", String::from_utf8_lossy(&r.body));
    assert!(!agent.data_dir.join("api-token").exists(), "a configured token: none is made");
    assert!(!agent.log_text().contains(token), "the token is never logged");
    assert_eq!(agent.stop(), Some(0));
}
