//! The control API and the Docker volume driver, on kernel ZFS with a real Docker engine
//! (Debian's docker.io): dockerd is started here with a private data root, an image is
//! made with `docker import` of a busybox rootfs, and Docker finds tankd's plugin by
//! its socket in /run/docker/plugins.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, NEEDS_ZFS, Response, sh};
use serde_json::json;

const TOKEN: &str = "control-test-token-0123456789";

fn zfs(args: &[&str]) -> String {
    common::zfs(args).trim().to_owned()
}

fn exists(name: &str) -> bool {
    common::zfs_exists(name)
}

/// Seconds since the epoch as Docker's `CreatedAt` shows them.
fn utc(secs: i64) -> String {
    sh("date", &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"]).trim().to_owned()
}

/// A dockerd of our own: private data root, exec root and API socket; no bridge, no
/// iptables (containers run with `--network none`). Its containerd is started first,
/// by us: dockerd gives the one it would start 60 s, too little under TCG.
struct Dockerd {
    child: Child,
    containerd: Child,
    dir: PathBuf,
}

fn wait_for_socket(path: &Path, what: &str, log: &Path) {
    common::wait_for(&format!("{what} to start"), Duration::from_secs(240), || {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Ok(()),
            Err(_) => Err(std::fs::read_to_string(log).unwrap_or_default()),
        }
    });
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
        std::fs::create_dir_all(dir.join("containerd")).unwrap();
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.aufs\", \
             \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
             \"io.containerd.snapshotter.v1.devmapper\"]\n",
        )
        .unwrap();
        let csock = dir.join("containerd/containerd.sock");
        let clog = dir.join("containerd.log");
        let containerd = Command::new("/usr/bin/containerd")
            .args(["--config", &config.display().to_string()])
            .args(["--root", &dir.join("containerd/root").display().to_string()])
            .args(["--state", &dir.join("containerd/state").display().to_string()])
            .args(["--address", &csock.display().to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&clog).unwrap())
            .spawn()
            .expect("containerd (apt-get install docker.io)");
        wait_for_socket(&csock, "containerd", &clog);
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .args(["--containerd", &csock.display().to_string()])
            .args(["--data-root", &dir.join("data").display().to_string()])
            .args(["--exec-root", &dir.join("exec").display().to_string()])
            .args(["--pidfile", &dir.join("dockerd.pid").display().to_string()])
            .args(["-H", &format!("unix://{}", dir.join("docker.sock").display())])
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none"])
            .args(["--storage-driver=vfs"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (apt-get install docker.io)");
        let d = Dockerd { child, containerd, dir: dir.to_owned() };
        common::wait_for("dockerd to answer", Duration::from_secs(240), || {
            if d.docker(&["version"]).status.success() { Ok(()) } else { Err(d.log()) }
        });
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// Must succeed; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A busybox image from a tarball: `docker import`, no registry.
    fn import_busybox(&self, name: &str) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for tool in ["sh", "cat", "echo", "dd", "ls", "sync", "rm"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(tool));
        }
        let tar = self.dir.join("rootfs.tar");
        sh("tar", &["-C", &root.display().to_string(), "-cf", &tar.display().to_string(), "."]);
        self.ok(&["import", "--change", "ENV PATH=/bin", &tar.display().to_string(), name]);
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend_from_slice(args);
        self.docker(&all)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
        // vfs layers and the exec root hold mounts; take them down before removing.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("grep -o ' {}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l", self.dir.display()))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn control(agent: &Agent, path: &str, body: serde_json::Value) -> Response {
    let auth = bearer();
    agent.control(
        "POST",
        path,
        &[("authorization", &auth), ("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn control_ok(agent: &Agent, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = control(agent, path, body.clone());
    assert_eq!(r.status, 200, "{path} {body}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The driver's name is its socket's file name: one per test agent.
fn agent(tag: &str) -> (Agent, String) {
    let mut a = Agent::new(tag);
    let driver = format!("tankd-{}", a.pool);
    std::fs::create_dir_all("/run/docker/plugins").unwrap();
    a.docker_socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
    a.token = TOKEN.into();
    a.start();
    (a, driver)
}

/// `f` of a volume, read at the path the plugin's Mount answers (what Docker binds into
/// a container), with the mount let go after.
fn on_host(agent: &Agent, vol: &str) -> String {
    let m = agent.plugin("VolumeDriver.Mount", json!({"Name": vol, "ID": "host-read"})).json();
    let path = m["Mountpoint"].as_str().unwrap_or_else(|| panic!("{m}")).to_owned();
    let text = std::fs::read_to_string(Path::new(&path).join("f")).unwrap();
    agent.plugin("VolumeDriver.Unmount", json!({"Name": vol, "ID": "host-read"}));
    text.trim().to_owned()
}

fn read_file(docker: &Dockerd, vol: &str, path: &str) -> String {
    let out = docker.run(&["-v", &format!("{vol}:/data"), "tkbusybox", "cat", path]);
    assert!(out.status.success(), "cat {path}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn write_file(docker: &Dockerd, vol: &str, text: &str) {
    let script = format!("echo {text} > /data/f && sync");
    let out = docker.run(&["-v", &format!("{vol}:/data"), "tkbusybox", "sh", "-c", &script]);
    assert!(out.status.success(), "write: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn docker_volumes_on_zfs_with_quota_snapshot_restore_and_clone() {
    let _ = NEEDS_ZFS;
    let (agent, driver) = agent("dkr");
    let docker = Dockerd::start(&agent.data_dir.join("docker"));
    docker.import_busybox("tkbusybox");
    let root = format!("{}/tankd", agent.pool);

    // Create with a size: a dataset with that refquota.
    docker.ok(&["volume", "create", "-d", &driver, "--opt", "size=16M", "v1"]);
    let ds = format!("{root}/volumes/v1");
    assert_eq!(zfs(&["get", "-H", "-p", "-o", "value", "refquota", &ds]), (16u64 << 20).to_string());
    let inspect: serde_json::Value = serde_json::from_str(&docker.ok(&["volume", "inspect", "v1"])).unwrap();
    let mountpoint = zfs(&["get", "-H", "-o", "value", "mountpoint", &ds]);
    assert_eq!(inspect[0]["Mountpoint"], mountpoint.as_str(), "{inspect}");
    assert_eq!(inspect[0]["Driver"], driver.as_str());

    // One container writes, a second reads.
    write_file(&docker, "v1", "x");
    assert_eq!(read_file(&docker, "v1", "/data/f"), "x");
    assert_eq!(std::fs::read_to_string(Path::new(&mountpoint).join("f")).unwrap().trim(), "x");

    // The quota holds: 24 MiB of incompressible data into a 16 MiB volume fails. Written
    // from the host, at the path Docker binds: the quota is the dataset's, and each
    // `docker run` costs half a minute under the emulator.
    let mut incompressible = vec![0u8; 1 << 20];
    let big = Path::new(&mountpoint).join("big");
    let mut file = std::fs::File::create(&big).unwrap();
    let refused = (0..24).find_map(|_| {
        getrandom::fill(&mut incompressible).unwrap();
        std::io::Write::write_all(&mut file, &incompressible).and_then(|()| file.sync_data()).err()
    });
    drop(file);
    let refused = refused.expect("writing past the quota must fail");
    assert!(matches!(refused.raw_os_error(), Some(nix::libc::EDQUOT | nix::libc::ENOSPC)), "{refused}");
    std::fs::remove_file(&big).unwrap();
    // Docker's mounts are all released once its containers are gone.
    let vols = control_ok(&agent, "/volumes/snapshot", json!({"name": "v1", "snapshotName": "s1"}));
    assert_eq!(vols["snapshotId"], "volumes/v1@s1");
    let listed = agent.control("GET", "/volumes", &[("authorization", &bearer())], b"").json();
    let v1 = listed["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "v1").unwrap().clone();
    assert_eq!(v1["mounts"], json!([]), "{v1}");
    assert_eq!(v1["snapshots"], json!(["volumes/v1@s1"]));

    // Restore: the data goes back; the state before is kept until confirm or undo.
    // (Written and read where Docker binds the volume: the containers above showed that
    // path is the volume's.)
    std::fs::write(Path::new(&mountpoint).join("f"), "y\n").unwrap();
    let r = control_ok(&agent, "/volumes/restore", json!({"name": "v1", "snapshotId": "volumes/v1@s1"}));
    assert_eq!(r["keptAs"], format!("{root}/prerestore/kept/volumes/v1"));
    assert_eq!(on_host(&agent, "v1"), "x");
    assert_eq!(zfs(&["get", "-H", "-p", "-o", "value", "refquota", &ds]), (16u64 << 20).to_string(), "size kept");
    let again = control(&agent, "/volumes/restore", json!({"name": "v1", "snapshotId": "s1"}));
    assert_eq!(again.status, 409, "a second restore before confirm/undo is refused");
    let listed = agent.control("GET", "/volumes", &[("authorization", &bearer())], b"").json();
    let v1 = listed["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "v1").unwrap().clone();
    assert_eq!(v1["pendingRestore"]["snapshotId"], "volumes/v1@s1", "{v1}");
    // Undo: the written state comes back.
    control_ok(&agent, "/volumes/restore/undo", json!({"name": "v1"}));
    assert_eq!(on_host(&agent, "v1"), "y");
    assert!(!exists(&format!("{root}/prerestore/kept/volumes/v1")));
    assert!(exists(&format!("{ds}@s1")), "the snapshot survives an undo");
    // Restore and confirm: the kept state is gone, the snapshot stays.
    control_ok(&agent, "/volumes/restore", json!({"name": "v1", "snapshotId": "volumes/v1@s1"}));
    control_ok(&agent, "/volumes/restore/confirm", json!({"name": "v1"}));
    assert_eq!(on_host(&agent, "v1"), "x");
    assert!(!exists(&format!("{root}/prerestore/kept/volumes/v1")));
    assert!(exists(&format!("{ds}@s1")));

    // A volume from a snapshot is a clone of it.
    docker.ok(&["volume", "create", "-d", &driver, "--opt", "from_snapshot=v1@s1", "v2"]);
    assert_eq!(zfs(&["get", "-H", "-o", "value", "origin", &format!("{root}/volumes/v2")]), format!("{ds}@s1"));
    assert_eq!(read_file(&docker, "v2", "/data/f"), "x");
    // v1 cannot go while v2 depends on it; the error says why.
    let out = docker.docker(&["volume", "rm", "v1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cloned from"), "{}", String::from_utf8_lossy(&out.stderr));
    docker.ok(&["volume", "rm", "v2"]);
    docker.ok(&["volume", "rm", "v1"]);
    assert!(!exists(&ds) && !exists(&format!("{root}/volumes/v2")));

    // Bad options name themselves and make nothing.
    let out = docker.docker(&["volume", "create", "-d", &driver, "--opt", "mountpoint=/etc", "v3"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Opts.mountpoint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exists(&format!("{root}/volumes/v3")));

    // Every call went through the plugin socket and shows in the metrics.
    let metrics = String::from_utf8(agent.control("GET", "/metrics", &[], b"").body).unwrap();
    assert!(
        metrics.contains("tankd_http_requests_total{listener=\"docker\",route=\"/VolumeDriver.Mount\""),
        "{metrics}"
    );
    assert!(metrics.contains("tankd_zfs_commands_total{program=\"zfs\",command=\"clone\",result=\"ok\"}"));
    assert!(metrics.contains("tankd_pool_free_bytes{pool="));
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn mounts_are_counted_per_id_and_survive_a_restart() {
    let (mut agent, _driver) = agent("cnt");
    let r = agent.plugin("Plugin.Activate", json!({}));
    assert_eq!(r.json(), json!({"Implements": ["VolumeDriver"]}));
    assert_eq!(r.header("content-type"), Some("application/vnd.docker.plugins.v1.1+json"));
    assert_eq!(agent.plugin("VolumeDriver.Capabilities", json!({})).json()["Capabilities"]["Scope"], "local");
    assert_eq!(
        agent.plugin("VolumeDriver.Create", json!({"Name": "c1", "Opts": {"service": "svc-a"}})).json()["Err"],
        ""
    );
    let m = agent.plugin("VolumeDriver.Mount", json!({"Name": "c1", "ID": "aaa"})).json();
    let mountpoint = m["Mountpoint"].as_str().unwrap().to_owned();
    assert!(Path::new(&mountpoint).is_dir(), "{m}");
    let c1 = format!("{}/tankd/volumes/c1", agent.pool);
    assert_eq!(zfs(&["get", "-H", "-o", "value", "mountpoint", &c1]), mountpoint);
    let got = agent.plugin("VolumeDriver.Get", json!({"Name": "c1"})).json();
    // CreatedAt is when tankd asked for the volume (tankd:created); ZFS's creation is
    // that second or, the command taking a while under the emulator, a few later.
    let created: i64 = zfs(&["get", "-H", "-p", "-o", "value", "creation", &c1]).parse().unwrap();
    let asked: i64 = zfs(&["get", "-H", "-o", "value", "tankd:created", &c1]).parse().unwrap();
    let said = got["Volume"]["CreatedAt"].as_str().unwrap().to_owned();
    assert_eq!(said, utc(asked), "CreatedAt is tankd:created: {got}");
    assert!((0..=10).contains(&(created - asked)), "tankd:created {asked} against ZFS's creation {created}");
    assert_eq!(got["Volume"]["Status"]["service"], "svc-a", "{got}");
    let again = agent.plugin("VolumeDriver.Create", json!({"Name": "c1", "Opts": {"size": "8M"}}));
    assert_eq!(again.json()["Err"], "", "creating an existing volume is success");
    assert_eq!(zfs(&["get", "-H", "-o", "value", "refquota", &c1]), "none", "and leaves it as it was");
    // The same id twice (docker cp does this), then another id.
    agent.plugin("VolumeDriver.Mount", json!({"Name": "c1", "ID": "aaa"}));
    agent.plugin("VolumeDriver.Mount", json!({"Name": "c1", "ID": "bbb"}));
    agent.plugin("VolumeDriver.Unmount", json!({"Name": "c1", "ID": "aaa"}));
    let refused = agent.plugin("VolumeDriver.Remove", json!({"Name": "c1"}));
    assert_eq!(refused.status, 500);
    assert!(refused.json()["Err"].as_str().unwrap().contains("mounted"), "{}", refused.json());

    // kill -9 and start again: the counts come back from ZFS.
    let mut child = agent.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    agent.start();
    assert_eq!(agent.plugin("VolumeDriver.Remove", json!({"Name": "c1"})).status, 500, "still mounted after a restart");
    let got = agent.plugin("VolumeDriver.Get", json!({"Name": "c1"})).json();
    assert_eq!(got["Volume"]["Status"]["mounts"], 2, "{got}");
    assert_eq!(got["Volume"]["CreatedAt"], said.as_str(), "the same CreatedAt after a restart");
    assert_eq!(got["Volume"]["Mountpoint"], mountpoint.as_str());
    assert_eq!(agent.plugin("VolumeDriver.Path", json!({"Name": "c1"})).json()["Mountpoint"], mountpoint.as_str());
    let listed = agent.plugin("VolumeDriver.List", json!({})).json();
    assert_eq!(listed["Volumes"].as_array().unwrap().len(), 1, "{listed}");

    // Deprovisioning the owner refuses while mounted, unless forced.
    let r = control(&agent, "/resources/deprovision", json!({"serviceId": "svc-a"}));
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    agent.plugin("VolumeDriver.Unmount", json!({"Name": "c1", "ID": "aaa"}));
    agent.plugin("VolumeDriver.Unmount", json!({"Name": "c1", "ID": "bbb"}));
    assert_eq!(
        agent.plugin("VolumeDriver.Unmount", json!({"Name": "c1", "ID": "bbb"})).status,
        500,
        "not mounted by bbb"
    );
    let done = control_ok(&agent, "/resources/deprovision", json!({"serviceId": "svc-a"}));
    assert_eq!(done["removed"], json!([format!("{}/tankd/volumes/c1", agent.pool)]));
    assert_eq!(agent.plugin("VolumeDriver.Get", json!({"Name": "c1"})).status, 500);

    // Get answers from memory; a dataset made behind tankd's back (as `zfs receive`
    // would) is found on the first Get, one destroyed behind its back is dropped when
    // Docker next mounts it.
    let oob = format!("{}/tankd/volumes/oob", agent.pool);
    zfs(&["create", "-o", "refquota=16M", &oob]);
    let got = agent.plugin("VolumeDriver.Get", json!({"Name": "oob"})).json();
    assert_eq!(got["Volume"]["Status"]["dataset"], oob.as_str(), "{got}");
    assert_eq!(got["Volume"]["Status"]["size"], 16 << 20, "{got}");
    let place = zfs(&["get", "-H", "-o", "value", "mountpoint", &oob]);
    assert_eq!(got["Volume"]["Mountpoint"], place.as_str());
    assert_eq!(agent.plugin("VolumeDriver.Mount", json!({"Name": "oob", "ID": "ccc"})).json()["Mountpoint"], place);
    agent.plugin("VolumeDriver.Unmount", json!({"Name": "oob", "ID": "ccc"}));
    zfs(&["destroy", &oob]);
    let gone = agent.plugin("VolumeDriver.Mount", json!({"Name": "oob", "ID": "ddd"}));
    assert_eq!(gone.status, 500);
    assert!(gone.json()["Err"].as_str().unwrap().contains("no volume named"), "{}", gone.json());
    assert_eq!(agent.plugin("VolumeDriver.Get", json!({"Name": "oob"})).status, 500, "forgotten");
    // An unmounted stranger is not asked about on Get; List reads ZFS afresh, and a
    // create of its name adopts it as it is.
    zfs(&["create", "-o", "canmount=noauto", &format!("{}/tankd/volumes/oob2", agent.pool)]);
    zfs(&["create", "-o", "canmount=noauto", "-o", "refquota=16M", &format!("{}/tankd/volumes/oob3", agent.pool)]);
    assert_eq!(agent.plugin("VolumeDriver.Get", json!({"Name": "oob2"})).status, 500);
    let listed = agent.plugin("VolumeDriver.List", json!({})).json();
    assert_eq!(listed["Volumes"][0]["Name"], "oob2", "{listed}");
    assert_eq!(agent.plugin("VolumeDriver.Get", json!({"Name": "oob2"})).status, 200, "known since List");
    assert_eq!(agent.plugin("VolumeDriver.Create", json!({"Name": "oob3", "Opts": {"size": "8M"}})).json()["Err"], "");
    let got = agent.plugin("VolumeDriver.Get", json!({"Name": "oob3"})).json();
    assert_eq!(got["Volume"]["Status"]["size"], 16 << 20, "adopted as it was: {got}");
    let m = agent.plugin("VolumeDriver.Mount", json!({"Name": "oob3", "ID": "eee"})).json();
    assert!(Path::new(m["Mountpoint"].as_str().unwrap()).is_dir(), "mounted on demand: {m}");
    agent.plugin("VolumeDriver.Unmount", json!({"Name": "oob3", "ID": "eee"}));
    assert_eq!(agent.plugin("VolumeDriver.Remove", json!({"Name": "oob3"})).json()["Err"], "");
    assert!(!exists(&format!("{}/tankd/volumes/oob3", agent.pool)));
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn provisioning_is_authenticated_idempotent_and_derives_credentials() {
    let (mut agent, _driver) = agent("prov");
    let body = json!({"serviceId": "svc-123", "serviceName": "api", "quota": "1G"});
    // No token, a wrong token: 401 and nothing made.
    let r = agent.control("POST", "/resources/provision", &[], body.to_string().as_bytes());
    assert_eq!(r.status, 401);
    let r = agent.control(
        "POST",
        "/resources/provision",
        &[("authorization", "Bearer nope-nope-nope-nope")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(agent.control("GET", "/volumes", &[], b"").status, 401, "listing volumes needs the token");
    assert_eq!(agent.control("GET", "/health", &[], b"").status, 200, "health is open");
    let svc = format!("{}/tankd/services/svc-123", agent.pool);
    assert!(!exists(&svc));

    let first = control_ok(&agent, "/resources/provision", body.clone());
    assert_eq!(first["created"], true);
    assert_eq!(zfs(&["get", "-H", "-p", "-o", "value", "quota", &svc]), (1u64 << 30).to_string());
    let token = first["env"]["TANKD_SERVICE_TOKEN"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    // Again, and after a restart: the same values, nothing stored per tenant.
    let second = control_ok(&agent, "/resources/provision", body.clone());
    assert_eq!(second["created"], false);
    assert_eq!(second["env"], first["env"]);
    agent.stop();
    agent.extra_args.extend(["--max-service-snapshots".into(), "2".into()]);
    agent.start();
    assert_eq!(control_ok(&agent, "/resources/provision", body.clone())["env"], first["env"]);
    let other = control_ok(&agent, "/resources/provision", json!({"serviceId": "svc-456"}));
    assert_ne!(other["env"]["TANKD_SERVICE_TOKEN"], first["env"]["TANKD_SERVICE_TOKEN"]);
    let key = agent.data_dir.join("master.key");
    assert_eq!(
        std::fs::metadata(&key).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777).unwrap(),
        0o600
    );
    let log = agent.log_text();
    assert!(
        !log.contains(&token) && !log.contains(std::fs::read_to_string(&key).unwrap().trim()),
        "no secret in the log"
    );

    // Bad bodies name the field and change nothing.
    for (bad, field) in [
        (json!({"serviceId": "../etc"}), "serviceId"),
        (json!({"serviceId": "-x"}), "serviceId"),
        (json!({"serviceId": "svc-9", "quota": "lots"}), "quota"),
        (json!({"serviceId": "svc-9", "bogus": 1}), "bogus"),
        (json!({"serviceName": "no id"}), "serviceId"),
        (json!({"serviceId": "svc-9", "capabilities": ["teleport"]}), "capabilities[0]"),
    ] {
        let r = control(&agent, "/resources/provision", bad.clone());
        assert!(r.status == 400 || r.status == 503, "{bad}: {}", r.status);
        assert_eq!(r.json()["error"]["field"], field, "{bad}");
    }
    assert!(!exists(&format!("{}/tankd/services/svc-9", agent.pool)));

    // The service's own token may snapshot and restore its resources, nothing else.
    let svc_auth = format!("Bearer {token}");
    let snap_body = json!({"serviceId": "svc-123", "snapshotName": "b1"});
    let r =
        agent.control("POST", "/resources/snapshot", &[("authorization", &svc_auth)], snap_body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let snaps = r.json()["snapshots"].clone();
    assert_eq!(snaps[0]["capability"], "filesystem");
    assert_eq!(snaps[0]["snapshotId"], "services/svc-123@b1");
    let mountpoint = first["mountpoint"].as_str().unwrap().to_owned();
    std::fs::write(Path::new(&mountpoint).join("after"), "later").unwrap();
    let r = agent.control(
        "POST",
        "/resources/restore",
        &[("authorization", &svc_auth)],
        json!({"serviceId": "svc-123", "snapshots": snaps}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!Path::new(&mountpoint).join("after").exists(), "restored to before the write");
    let other_svc = json!({"serviceId": "svc-456", "snapshotName": "b1"});
    let r =
        agent.control("POST", "/resources/snapshot", &[("authorization", &svc_auth)], other_svc.to_string().as_bytes());
    assert_eq!(r.status, 401, "a service token is for its own service only");
    let r = agent.control("POST", "/resources/provision", &[("authorization", &svc_auth)], body.to_string().as_bytes());
    assert_eq!(r.status, 401, "a service token cannot provision");

    // At most max_service_snapshots (2 here) per service; destroying makes room again.
    let as_service = |path: &str, body: serde_json::Value| {
        agent.control("POST", path, &[("authorization", &svc_auth)], body.to_string().as_bytes())
    };
    let held = || zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", &svc]).lines().count();
    let mut made = held();
    for n in 0.. {
        let r = as_service("/resources/snapshot", json!({"serviceId": "svc-123", "snapshotName": format!("c{n}")}));
        if r.status == 429 {
            let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
            assert!(message.contains("max_service_snapshots"), "{message}");
            break;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        made += 1;
        assert!(made <= 2, "the bound let a third snapshot through");
    }
    assert_eq!(held(), 2, "the refused snapshot made nothing");
    for (route, body) in [
        ("/resources/snapshot/destroy", json!({"serviceId": "svc-123", "snapshotName": "c0"})),
        ("/volumes/snapshot/destroy", json!({"name": "anything", "snapshotName": "c0"})),
    ] {
        let r = agent.control("POST", route, &[("content-type", "application/json")], body.to_string().as_bytes());
        assert_eq!(r.status, 401, "{route} without a token");
    }
    let r = as_service("/resources/snapshot/destroy", json!({"serviceId": "svc-456", "snapshotName": "c0"}));
    assert_eq!(r.status, 401, "another service's snapshots are out of reach");
    let newest =
        zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", &svc]).lines().last().unwrap().to_owned();
    let short = newest.split_once('@').unwrap().1.to_owned();
    let r = as_service("/resources/snapshot/destroy", json!({"serviceId": "svc-123", "snapshotName": short}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["destroyed"], json!([format!("services/svc-123@{short}")]));
    assert_eq!(held(), 1);
    let r = as_service("/resources/snapshot/destroy", json!({"serviceId": "svc-123", "snapshotName": short}));
    assert_eq!(r.status, 404, "gone already");
    let r = as_service("/resources/snapshot", json!({"serviceId": "svc-123", "snapshotName": "again"}));
    assert_eq!(r.status, 200, "room again: {}", String::from_utf8_lossy(&r.body));

    // Deprovision twice: the second finds nothing and still succeeds.
    let gone = control_ok(&agent, "/resources/deprovision", json!({"serviceId": "svc-123"}));
    assert_eq!(gone["removed"], json!([svc.clone()]));
    assert!(!exists(&svc) && !exists(&format!("{}/tankd/prerestore/kept/services/svc-123", agent.pool)));
    assert_eq!(control_ok(&agent, "/resources/deprovision", json!({"serviceId": "svc-123"}))["removed"], json!([]));
}

/// What a refused request must not change: every dataset (by GUID), the properties
/// tankd sets, and the mounts under the data dir.
fn footprint(agent: &Agent) -> String {
    let props = "name,guid,quota,refquota,mountpoint,mounted,tankd:docker-mounts,tankd:service";
    let datasets = zfs(&["get", "-H", "-p", "-o", "name,property,value", "-r", "-t", "all", props, &agent.pool]);
    format!("{datasets}\n{:?}", common::mounts_under(&agent.data_dir))
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn bad_control_and_docker_requests_get_a_4xx_and_change_nothing() {
    let (agent, _driver) = agent("badc");
    let svc_a = control_ok(&agent, "/resources/provision", json!({"serviceId": "svc-a"}));
    control_ok(&agent, "/resources/provision", json!({"serviceId": "svc-b"}));
    let token_a = svc_a["env"]["TANKD_SERVICE_TOKEN"].as_str().unwrap().to_owned();
    assert_eq!(
        agent.plugin("VolumeDriver.Create", json!({"Name": "vb", "Opts": {"service": "svc-b"}})).json()["Err"],
        ""
    );
    control_ok(&agent, "/volumes/snapshot", json!({"name": "vb", "snapshotName": "s1"}));
    let long = "a".repeat(300);
    let admin = bearer();
    let as_a = format!("Bearer {token_a}");
    // (token, route, body, the field named; "" for a refusal that names none)
    let control_cases: Vec<(&str, &str, String, &str)> = vec![
        (&admin, "/resources/provision", "not json".into(), "body"),
        (&admin, "/resources/provision", "[]".into(), "body"),
        (&admin, "/resources/provision", json!(["svc-c"]).to_string(), "body"),
        (&admin, "/resources/provision", json!({"serviceId": "../etc"}).to_string(), "serviceId"),
        (&admin, "/resources/provision", json!({"serviceId": "-x"}).to_string(), "serviceId"),
        (&admin, "/resources/provision", json!({"serviceId": long}).to_string(), "serviceId"),
        (&admin, "/resources/provision", json!({"serviceId": "svc-c", "quota": "lots"}).to_string(), "quota"),
        (&admin, "/resources/provision", json!({"serviceId": "svc-c", "extra": 1}).to_string(), "extra"),
        (&admin, "/resources/deprovision", json!({"serviceId": "svc/../x"}).to_string(), "serviceId"),
        (&admin, "/volumes/snapshot", json!({"name": "../vb", "snapshotName": "s2"}).to_string(), "name"),
        (&admin, "/volumes/snapshot", json!({"name": "vb", "snapshotName": "-s"}).to_string(), "snapshotName"),
        (&admin, "/volumes/snapshot", json!({"name": "vb", "snapshotName": "a@b"}).to_string(), "snapshotName"),
        (&admin, "/volumes/snapshot", json!({"name": "vb"}).to_string(), "snapshotName"),
        (&admin, "/volumes/snapshot/destroy", json!({"name": "vb", "snapshotName": "../s1"}).to_string(), "snapshotName"),
        (&admin, "/volumes/restore", json!({"name": "vb", "snapshotId": "volumes/other@s1"}).to_string(), "snapshotId"),
        (&admin, "/volumes/restore", json!({"name": "vb", "snapshotId": ""}).to_string(), "snapshotId"),
        (&admin, "/volumes/restore/confirm", json!({"name": "-vb"}).to_string(), "name"),
        (&admin, "/volumes/restore/undo", json!({"name": 7}).to_string(), "name"),
        (&admin, "/resources/snapshot", json!({"serviceId": "svc-a", "snapshotName": "x y"}).to_string(), "snapshotName"),
        (&admin, "/resources/snapshot/destroy", json!({"serviceId": "svc-a", "snapshotName": ""}).to_string(), "snapshotName"),
        (
            &admin,
            "/resources/restore",
            json!({"serviceId": "svc-a", "snapshots": [{"capability": "volume", "resourceName": "vb", "snapshotId": "volumes/vb@s1"}]})
                .to_string(),
            "snapshots[0].snapshotId",
        ),
        // Service A's token on service B's things: refused, whatever the route.
        (&as_a, "/volumes/snapshot", json!({"name": "vb", "snapshotName": "s2"}).to_string(), ""),
        (&as_a, "/volumes/snapshot/destroy", json!({"name": "vb", "snapshotName": "s1"}).to_string(), ""),
        (&as_a, "/volumes/restore", json!({"name": "vb", "snapshotId": "s1"}).to_string(), ""),
        (&as_a, "/resources/snapshot", json!({"serviceId": "svc-b", "snapshotName": "s2"}).to_string(), ""),
        (&as_a, "/resources/snapshot/destroy", json!({"serviceId": "svc-b", "snapshotName": "s1"}).to_string(), ""),
        (&as_a, "/resources/deprovision", json!({"serviceId": "svc-b"}).to_string(), ""),
    ];
    let plugin_cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("VolumeDriver.Create", json!({"Name": "../x"}), "Name"),
        ("VolumeDriver.Create", json!({"Name": "-x"}), "Name"),
        ("VolumeDriver.Create", json!({"Name": ""}), "Name"),
        ("VolumeDriver.Create", json!({"Name": long}), "Name"),
        ("VolumeDriver.Create", json!({"Name": "v2", "Opts": {"size": "lots"}}), "size"),
        ("VolumeDriver.Create", json!({"Name": "v2", "Opts": {"service": "../x"}}), "service"),
        ("VolumeDriver.Create", json!({"Name": "v2", "Opts": {"recordsize": "1M", "mountpoint": "/etc"}}), ""),
        ("VolumeDriver.Create", json!(["Name"]), "body"),
        ("VolumeDriver.Remove", json!({"Name": "../vb"}), "Name"),
        ("VolumeDriver.Mount", json!({"Name": "vb/../x", "ID": "a"}), "Name"),
        ("VolumeDriver.Path", json!({"Name": "-vb"}), "Name"),
    ];
    let before = footprint(&agent);
    for (auth, route, body, field) in &control_cases {
        let r = agent.control(
            "POST",
            route,
            &[("authorization", auth), ("content-type", "application/json")],
            body.as_bytes(),
        );
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!((400..500).contains(&r.status), "{route} {body}: {} {text}", r.status);
        if !field.is_empty() {
            assert_eq!(r.json()["error"]["field"], *field, "{route} {body}: {text}");
        } else {
            assert_eq!(r.status, 401, "{route} {body}: {text}");
        }
    }
    // Checked once per corpus, not per case: a `zfs get -r` costs seconds under the
    // emulator. A failure here names no case; run them one by one to find it.
    assert_eq!(footprint(&agent), before, "a refused control request changed something");
    for (call, body, field) in &plugin_cases {
        let r = agent.plugin(call, body.clone());
        let err = r.json()["Err"].as_str().unwrap_or_default().to_owned();
        assert_eq!(r.status, 400, "{call} {body}: {err}");
        assert!(err.contains(field), "{call} {body}: {err:?} does not name {field}");
    }
    assert_eq!(footprint(&agent), before, "a refused Docker call changed something");
    assert!(control_cases.len() + plugin_cases.len() >= 35, "the control and Docker corpus");
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn restore_steps_leave_no_half_restored_volume() {
    let mut agent = Agent::new("flt3");
    agent.token = TOKEN.into();
    // Armed from the start: the setup below reaches no restore step.
    agent.extra_env.push(("TANKD_FAULT".into(), "restore-cloned".into()));
    agent.start();
    assert_eq!(agent.plugin("VolumeDriver.Create", json!({"Name": "r1"})).json()["Err"], "");
    // Read and written as a container would: mounted through the plugin (Docker's
    // Mount), let go after (a restore of a volume a container holds needs force).
    let mounted = |agent: &Agent| {
        let m = agent.plugin("VolumeDriver.Mount", json!({"Name": "r1", "ID": "t1"})).json();
        let path = m["Mountpoint"].as_str().unwrap_or_else(|| panic!("{m}")).to_owned();
        assert_eq!(agent.plugin("VolumeDriver.Unmount", json!({"Name": "r1", "ID": "t1"})).json()["Err"], "");
        path
    };
    let path = mounted(&agent);
    let live = format!("{}/tankd/volumes/r1", agent.pool);
    let pre = format!("{}/tankd/prerestore", agent.pool);
    let auth = bearer();
    let control = |agent: &Agent, route: &str, body: serde_json::Value| {
        let r = agent.control("POST", route, &[("authorization", &auth)], body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{route}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    std::fs::write(Path::new(&path).join("state"), "before").unwrap();
    control(&agent, "/volumes/snapshot", json!({"name": "r1", "snapshotName": "s1"}));
    std::fs::write(Path::new(&path).join("state"), "after").unwrap();
    // The restored state, read where the volume mounts (the same path as before).
    let state = |agent: &Agent| {
        assert_eq!(mounted(agent), path, "the volume mounts where it did");
        std::fs::read_to_string(Path::new(&path).join("state")).unwrap()
    };
    // Under prerestore/: which of incoming, kept, discard hold r1.
    let parked = || {
        let list = Command::new("zfs").args(["list", "-H", "-o", "name", "-r", &pre]).output().unwrap();
        let mut out: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| l.ends_with("/volumes/r1"))
            .map(|l| l.trim_start_matches(&format!("{pre}/")).trim_end_matches("/volumes/r1").to_owned())
            .collect();
        out.sort();
        out
    };
    let restore = json!({"name": "r1", "snapshotId": "s1"}).to_string();

    // The clone exists, nothing else changed: it goes; the volume is as it was.
    // Each crash restarts tankd armed for the next step: its checks run on that tankd.
    agent.crash_then(
        "restore-cloned",
        Some("restore-set-aside"),
        common::Listener::Control,
        "POST",
        "/volumes/restore",
        &restore,
    );
    assert_eq!((parked(), state(&agent)), (vec![], "after".into()));

    // The live dataset renamed aside, the clone not yet in its place: the start puts
    // the clone there (the restore completes, still undoable).
    agent.crash_then(
        "restore-set-aside",
        Some("restore-swapped"),
        common::Listener::Control,
        "POST",
        "/volumes/restore",
        &restore,
    );
    assert_eq!((parked(), state(&agent)), (vec!["kept".to_owned()], "before".into()), "the restored state is live");
    control(&agent, "/volumes/restore/undo", json!({"name": "r1"}));
    assert_eq!((parked(), state(&agent)), (vec![], "after".into()));

    // Swapped, not promoted: a pending restore that confirm finishes.
    agent.crash_at("restore-swapped", common::Listener::Control, "POST", "/volumes/restore", &restore);
    assert_eq!((parked(), state(&agent)), (vec!["kept".to_owned()], "before".into()));
    control(&agent, "/volumes/restore/confirm", json!({"name": "r1"}));
    assert_eq!((parked(), state(&agent)), (vec![], "before".into()));
    assert_eq!(zfs(&["get", "-H", "-o", "value", "origin", &live]), "-", "promoted: the volume stands alone");
}
