//! Helpers for tests that run the real `tankd` binary: start it on a private data dir
//! and embedded pool, talk HTTP/1.1 to it over TCP or its unix socket, stop it.
#![allow(dead_code)]

pub mod image_server;
pub mod imageapi_client;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const NEEDS_ZFS: &str = "needs kernel ZFS; scripts/test runs it in the test VM";

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request with `Connection: close`; enough HTTP for tests, no client dependency.
pub fn http(
    stream: &mut (impl Read + Write),
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: tankd\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn vdev_dir() -> PathBuf {
    std::env::var_os("TANKD_TEST_VDEV_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// A unique pool name per test.
pub fn pool_name(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!("ta{}x{}{tag}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::SeqCst))
}

/// A tankd process on its own embedded pool, data dir and port. Killed, and its pool
/// destroyed, when dropped.
pub struct Agent {
    pub child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// The control API's port.
    pub control_port: u16,
    /// The Docker VolumeDriver socket.
    pub docker_socket: PathBuf,
    pub pool: String,
    /// The S3 listener's port.
    pub s3_port: u16,
    /// The database (MongoDB-wire) listener's port.
    pub db_port: u16,
    /// The API token tankd is started with (empty: none configured, tankd makes its
    /// own); [`Agent::tcp`] sends it unless told otherwise.
    pub token: String,
    pub extra_env: Vec<(String, String)>,
    pub extra_args: Vec<String>,
    pub log: PathBuf,
    /// A configuration file to start with (default none: `/dev/null`).
    pub config: Option<PathBuf>,
}

impl Agent {
    pub fn new(tag: &str) -> Agent {
        let pool = pool_name(tag);
        let data_dir = vdev_dir().join(format!("{pool}.data"));
        std::fs::create_dir_all(&data_dir).unwrap();
        Agent {
            child: None,
            port: free_port(),
            socket: data_dir.join("tankd.sock"),
            control_port: free_port(),
            docker_socket: data_dir.join("docker-plugin.sock"),
            log: data_dir.join("tankd.log"),
            data_dir,
            token: format!("test-token-{pool}-0123456789"),
            pool,
            s3_port: free_port(),
            db_port: free_port(),
            extra_env: Vec::new(),
            extra_args: Vec::new(),
            config: None,
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tankd"));
        cmd.env_remove("TANKD_CONFIG")
            .env("TANKD_DATA_DIR", &self.data_dir)
            .env("TANKD_EMBEDDED_POOL_NAME", &self.pool)
            .env("TANKD_EMBEDDED_POOL_SIZE", "512M")
            .env("TANKD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("TANKD_SOCKET", &self.socket)
            .env("TANKD_CONTROL_LISTEN", format!("127.0.0.1:{}", self.control_port))
            .env("TANKD_DOCKER_SOCKET", &self.docker_socket)
            .env("TANKD_S3_LISTEN", format!("127.0.0.1:{}", self.s3_port))
            .env("TANKD_DB_LISTEN", format!("127.0.0.1:{}", self.db_port))
            .env_remove("TANKD_API_TOKEN")
            .env_remove("CORESTORE_API_TOKEN")
            .env_remove("TANKD_AUTH")
            .env("TANKD_LOG", "info,tankd=debug,zfs_sys_shim=debug,s3s=off")
            .arg("--config")
            .arg(self.config.as_deref().unwrap_or(std::path::Path::new("/dev/null")));
        if !self.token.is_empty() {
            cmd.env("TANKD_API_TOKEN", &self.token);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.args(&self.extra_args);
        cmd
    }

    /// Start and wait until `/health` answers.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = self.command().stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        // Under TCG a start runs a dozen zfs commands of 1-2 s each, and 5 s each when the
        // host is loaded (seen in a cold run): three minutes, not one.
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tankd exited early ({status}):\n{}", self.log_text());
            }
            // A connect to a free port in the ephemeral range can connect to itself
            // (source port == destination port) while tankd is still starting: only a
            // connection to another socket counts. tankd binds its listeners before its
            // start-up recovery and serves after it: the answer to /health, not the
            // connect, says it is ready.
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port))
                && s.local_addr().ok() != s.peer_addr().ok()
                && health_answers(&mut s)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tankd did not listen within 180 s:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request on the TCP API with the agent's token, unless `headers` has an
    /// Authorization of its own.
    pub fn tcp(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let auth = format!("Bearer {}", self.token);
        let mut with_token = headers.to_vec();
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            with_token.push(("Authorization", &auth));
        }
        self.tcp_anon(method, path, &with_token, body)
    }

    /// A request on the TCP API with only the given headers (no token added).
    pub fn tcp_anon(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        http(&mut s, method, path, headers, body)
    }

    pub fn control(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.control_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        http(&mut s, method, path, headers, body)
    }

    /// A Docker VolumeDriver call, as Docker sends it (POST, JSON, no Content-Type).
    pub fn plugin(&self, call: &str, body: serde_json::Value) -> Response {
        let mut s = std::os::unix::net::UnixStream::connect(&self.docker_socket).unwrap_or_else(|e| {
            panic!("{}: {e}\ntankd log:\n{}", self.docker_socket.display(), self.log_text());
        });
        http(&mut s, "POST", &format!("/{call}"), &[], body.to_string().as_bytes())
    }

    pub fn unix(&self, method: &str, path: &str) -> Response {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        http(&mut s, method, path, &[], b"")
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "tankd did not exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("zpool").args(["destroy", "-f", &self.pool]).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `GET /health` on a connected socket answers 200 (within a minute).
fn health_answers(s: &mut std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

pub fn run_to_exit(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Whether a dataset or snapshot exists.
pub fn zfs_exists(name: &str) -> bool {
    Command::new("zfs")
        .args(["list", "-H", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Run `zfs` with `args`, which must succeed; its standard output. A transient "is
/// busy" (a mount still held for a moment by a process another test forked, which
/// copied the mount table) is retried with backoff, as the shim does for tankd.
pub fn zfs(args: &[&str]) -> String {
    let mut delay = std::time::Duration::from_millis(100);
    for _ in 0..6 {
        let out = Command::new("zfs").args(args).output().unwrap_or_else(|e| panic!("zfs: {e}"));
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is busy"), "zfs {args:?}: {err}");
        std::thread::sleep(delay);
        delay *= 2;
    }
    sh("zfs", args)
}

/// Run a command that must succeed; its standard output.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mountpoints below `root`, from this process's mount table.
pub fn mounts_under(root: &std::path::Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&root))
        .collect()
}

/// Which listener a crash request goes to.
#[derive(Clone, Copy)]
pub enum Listener {
    Api,
    Control,
}

impl Agent {
    /// Restart tankd armed with `TANKD_FAULT=<step>`, send one request (with the token;
    /// tankd dies before answering it), wait for the abort, and start tankd again
    /// unarmed. Panics unless tankd died of that very hook.
    pub fn crash_at(&mut self, step: &str, to: Listener, method: &str, path: &str, body: &str) {
        self.crash_then(step, None, to, method, path, body)
    }

    /// [`Agent::crash_at`], starting again armed for `next` (saves a restart under the
    /// emulator: the checks after one crash run on the tankd armed for the next). If
    /// tankd already runs armed for `step`, it is not restarted first.
    pub fn crash_then(&mut self, step: &str, next: Option<&str>, to: Listener, method: &str, path: &str, body: &str) {
        use std::io::{Read, Write};
        let armed = self.extra_env.iter().any(|(k, v)| k == "TANKD_FAULT" && v == step);
        if !(armed && self.child.is_some()) {
            self.stop();
            self.extra_env.retain(|(k, _)| k != "TANKD_FAULT");
            self.extra_env.push(("TANKD_FAULT".into(), step.into()));
            self.start();
        }
        let port = match to {
            Listener::Api => self.port,
            Listener::Control => self.control_port,
        };
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: tankd answered {:?} and did not abort",
                String::from_utf8_lossy(&answer)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.child = None;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{step}: tankd ended with {status}");
        let log = self.log_text();
        let fired = log.lines().any(|l| l.contains("TANKD_FAULT: aborting") && l.contains(&format!("\"{step}\"")));
        assert!(fired, "{step}: the hook did not fire:\n{log}");
        self.extra_env.retain(|(k, _)| k != "TANKD_FAULT");
        if let Some(next) = next {
            self.extra_env.push(("TANKD_FAULT".into(), next.into()));
        }
        self.start();
    }
}

/// Poll `done` until it holds; fail naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    wait_for(what, within, || if done() { Ok(()) } else { Err(String::new()) })
}

/// Poll `poll` every 100 ms until it gives a value; past `within`, fail with `what` and
/// the last thing it saw (its `Err`).
pub fn wait_for<T>(what: &str, within: Duration, mut poll: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match poll() {
            Ok(v) => return v,
            Err(seen) => assert!(Instant::now() < deadline, "timed out ({within:?}) waiting for {what}\n{seen}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cgroup parent tankd gives this agent's containers: `tankd-` and the first 12
/// hex digits of the SHA-256 of its data dir (agent/src/containers/cgroup.rs).
pub fn cgroup_parent(agent: &Agent) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(agent.data_dir.as_os_str().as_encoded_bytes());
    format!("tankd-{}", &digest.iter().map(|b| format!("{b:02x}")).collect::<String>()[..12])
}

/// The repository's root.
pub fn repo() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Runs a `scripts/testbed/` installer (a client venv, mongosh: made once, then cached)
/// and returns the path it prints as its last line. Not having it fails the test.
pub fn testbed_tool(script: &str) -> PathBuf {
    let out = Command::new(repo().join("scripts/testbed").join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/testbed/{script}: {e}"));
    assert!(out.status.success(), "scripts/testbed/{script} failed ({})", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("{script} prints a path")).trim())
}

/// A finished command's stdout and stderr, for failure messages.
pub fn show(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `zfs get -H -o value <prop> <dataset>`.
pub fn zfs_prop(dataset: &str, prop: &str) -> String {
    sh("zfs", &["get", "-H", "-o", "value", prop, dataset]).trim().to_owned()
}

/// Provisions `service` with `capabilities` through the control API (admin token); the
/// environment the service gets.
pub fn provision_env(
    agent: &Agent,
    service: &str,
    capabilities: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let body = serde_json::json!({"serviceId": service, "serviceName": service, "capabilities": capabilities});
    let auth = format!("Bearer {}", agent.token);
    let r = agent.control(
        "POST",
        "/resources/provision",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "provision: {}", String::from_utf8_lossy(&r.body));
    serde_json::from_value(r.json()["env"].clone()).unwrap()
}
