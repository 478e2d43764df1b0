//! Archives, host tier (no ZFS: the format, crypto, replication, resume and restore run
//! on stream files). Real peers: moto's S3 server and tankd's own S3 endpoint as
//! targets, Debian's `age` CLI as an independent decryptor.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Agent, free_port, provision_env, testbed_tool, wait_until};
use sha2::{Digest, Sha256};
use tankd::archives::{Archives, Keys, NewArchive, Repo, Target, TargetConfig};
use tankd::error::Kind;

const PASSPHRASE: &str = "correct horse battery staple";

/// moto's S3 server on a free port, with `bucket` made; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(bucket: &str) -> Moto {
        let moto = Moto::spawn(&[]);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", moto.port)).unwrap();
        let r = common::http(&mut s, "PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(r.status, 200, "moto: make bucket: {}", String::from_utf8_lossy(&r.body));
        moto
    }

    /// Serving https with `pki`'s server certificate.
    fn start_tls(bucket: &str, pki: &TestPki) -> Moto {
        let (cert, key) = (pki.server_cert.display().to_string(), pki.server_key.display().to_string());
        let moto = Moto::spawn(&["-c", &cert, "-k", &key]);
        let url = format!("https://127.0.0.1:{}/{bucket}", moto.port);
        let ca = pki.ca.display().to_string();
        common::sh("curl", &["-fsS", "--cacert", &ca, "-X", "PUT", &url]);
        moto
    }

    fn spawn(args: &[&str]) -> Moto {
        let venv = testbed_tool("s3-clients");
        let port = free_port();
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server");
        let moto = Moto { child, port };
        wait_until("moto listens", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    }
}

/// A private CA and a server certificate it signed for 127.0.0.1, made by openssl.
struct TestPki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TestPki {
    fn make(dir: &Path) -> TestPki {
        let p = |name: &str| dir.join(name).display().to_string();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca_out = ["-keyout", &p("ca.key"), "-out", &p("ca.pem"), "-days", "2", "-subj", "/CN=tankd test CA"];
        common::sh("openssl", &[&["req", "-x509"][..], &ec, &ca_out].concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        common::sh(
            "openssl",
            &[&["req"][..], &ec, &["-keyout", &p("server.key"), "-out", &p("server.csr"), "-subj", "/CN=127.0.0.1"]]
                .concat(),
        );
        common::sh(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &p("server.csr"),
                "-CA",
                &p("ca.pem"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &p("server.ext"),
                "-out",
                &p("server.pem"),
            ],
        );
        TestPki { ca: dir.join("ca.pem"), server_cert: dir.join("server.pem"), server_key: dir.join("server.key") }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tankd on this host (zfs = false), not started.
fn host_agent(tag: &str) -> Agent {
    let mut a = Agent::new(tag);
    a.extra_env.push(("TANKD_ZFS".into(), "false".into()));
    a
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    tankd::secrets::write_private(&path, secret).unwrap();
    path
}

fn moto_target(dir: &Path, moto: &Moto, name: &str, prefix: &str) -> TargetConfig {
    TargetConfig::S3 {
        name: name.into(),
        endpoint: format!("http://127.0.0.1:{}", moto.port),
        bucket: "backups".into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        access_key: "testing".into(),
        secret_key_file: secret_file(dir, &format!("{name}.secret"), "testing"),
        ca_file: None,
    }
}

/// A node's archives in `dir` (its data dir), with the passphrase and `targets`.
fn node(dir: &Path, passphrase: Option<&str>, targets: &[TargetConfig], chunk: usize) -> Archives {
    let keys = match passphrase {
        Some(p) => Keys::load_or_create(dir, p).unwrap(),
        None => Keys::none(),
    };
    let targets = targets.iter().map(|t| Target::open(t, dir).unwrap()).collect();
    Archives::new(Repo::open(&dir.join("archives")).unwrap(), keys, targets, chunk)
}

/// A stream file's worth of bytes: not compressible, not repeating.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest([seed]).to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

fn new_archive(snapshot: &str, guid: &str, parent: Option<&tankd::archives::Manifest>) -> NewArchive {
    NewArchive {
        service: Some("svc-a".into()),
        dataset: "services/svc-a".into(),
        snapshot: snapshot.into(),
        guid: guid.into(),
        parent: parent.cloned(),
        send_flags: vec!["-c".into()],
        ..Default::default()
    }
}

fn restored(a: &Archives, plan: &tankd::archives::RestorePlan) -> Vec<Vec<u8>> {
    (0..plan.chain.len())
        .map(|i| {
            let mut out = Vec::new();
            a.unpack(plan, i, &mut out).unwrap();
            out
        })
        .collect()
}

/// A full and an incremental archive, replicated to moto and to tankd's own S3 endpoint,
/// brought back on a new node with only the passphrase; an object decrypted by the
/// `age` CLI; a wrong passphrase and a flipped byte refused before anything is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_leave_the_node_and_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start("backups");

    // tankd's own S3 endpoint as the second target: a service's bucket and keys.
    let mut s3 = host_agent("arch");
    s3.start();
    let env = provision_env(&s3, "vault", &["objectstorage"]);
    let tankd_target = TargetConfig::S3 {
        name: "tankd".into(),
        endpoint: env["S3_ENDPOINT"].clone(),
        bucket: env["S3_BUCKET"].clone(),
        prefix: "node-a".into(),
        region: "us-east-1".into(),
        access_key: env["AWS_ACCESS_KEY_ID"].clone(),
        secret_key_file: secret_file(tmp.path(), "tankd.secret", &env["AWS_SECRET_ACCESS_KEY"]),
        ca_file: None,
    };
    let targets = [moto_target(tmp.path(), &moto, "moto", "node-a/"), tankd_target];

    let a_dir = tmp.path().join("node-a");
    let a = node(&a_dir, Some(PASSPHRASE), &targets, 256 << 10);
    let full = noise(1_000_000, 1);
    let incr = noise(300_000, 2);
    let m1 = a.archive(new_archive("s1", "1001", None), std::io::Cursor::new(full.clone())).await.unwrap();
    assert_eq!((m1.objects.len(), m1.original_size), (4, 1_000_000));
    assert!(m1.stored_size > m1.original_size, "encrypted objects carry age's overhead");
    let m2 = a.archive(new_archive("s2", "1002", Some(&m1)), std::io::Cursor::new(incr.clone())).await.unwrap();
    assert_eq!(m2.parent_id.as_deref(), Some(m1.id.as_str()));
    let again = a.archive(new_archive("s2", "1002", Some(&m1)), std::io::Cursor::new(Vec::new())).await.unwrap();
    assert_eq!(again, m2, "the same snapshot archived again is the same archive");
    let json = String::from_utf8(m1.to_json()).unwrap();
    assert!(!json.contains("AGE-SECRET-KEY") && !json.contains(PASSPHRASE), "no key material in the manifest");

    // Replicated: the incremental carries its base along; a second run sends nothing.
    for t in ["moto", "tankd"] {
        let r = a.replicate(&m2.id, t).await.unwrap();
        assert_eq!(r.archives, vec![m1.id.clone(), m2.id.clone()], "{t}");
        assert_eq!(r.objects_uploaded, m1.objects.len() + m2.objects.len(), "{t}");
        let r = a.replicate(&m2.id, t).await.unwrap();
        assert_eq!((r.objects_uploaded, r.archives.len()), (0, 0), "{t}: nothing twice");
    }
    let err = a.replicate(&m2.id, "nowhere").await.unwrap_err();
    assert_eq!((err.kind, err.field.as_deref()), (Kind::NotFound, Some("target")));

    // The age CLI opens an object with the node's identity file: the format is age's.
    let o = &m1.objects[1];
    let moto_t = Target::open(&targets[0], tmp.path()).unwrap();
    let stored = moto_t.get_bytes(&format!("objects/{}", o.sha256), 1 << 30).await.unwrap().unwrap();
    assert_eq!(hex(&Sha256::digest(&stored)), o.sha256);
    let obj = tmp.path().join("object.age");
    std::fs::write(&obj, &stored).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(tankd::archives::keys::identity_path(&a_dir))
        .arg(&obj)
        .output()
        .expect("the age CLI (Debian package age)");
    assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, full[256 << 10..512 << 10], "age decrypts the second chunk of the stream");

    // A new node with only the passphrase: the chain comes back from either target.
    for t in ["moto", "tankd"] {
        let b_dir = tmp.path().join(format!("node-b-{t}"));
        let b = node(&b_dir, Some(PASSPHRASE), &targets, 256 << 10);
        let plan = b.prepare_restore(&m2.id, Some(t)).await.unwrap();
        assert_eq!(restored(&b, &plan), vec![full.clone(), incr.clone()], "{t}");
        assert_eq!(b.repo.manifests().unwrap().len(), 2, "{t}: the chain is in the new node's repository");
    }

    // A wrong passphrase is refused before anything is written.
    let c_dir = tmp.path().join("node-c");
    let c = node(&c_dir, Some("not the passphrase"), &targets, 256 << 10);
    let err = c.prepare_restore(&m2.id, Some("moto")).await.err().expect("a wrong passphrase is refused");
    assert_eq!(err.kind, Kind::Forbidden, "{err}");
    assert!(err.message.contains("passphrase") && !err.message.contains(PASSPHRASE), "{err}");

    // One flipped byte in a target's object is found before the object is used, and
    // the new node is left without the archive.
    let bad = &m2.objects[0];
    let key = format!("objects/{}", bad.sha256);
    let mut rotten = moto_t.get_bytes(&key, 1 << 30).await.unwrap().unwrap();
    let mid = rotten.len() / 2;
    rotten[mid] ^= 0x01;
    moto_t.put_bytes(&key, rotten).await.unwrap();
    let d_dir = tmp.path().join("node-d");
    let d = node(&d_dir, Some(PASSPHRASE), &targets, 256 << 10);
    let err = d.prepare_restore(&m2.id, Some("moto")).await.err().expect("a corrupt object is refused");
    assert_eq!(err.kind, Kind::Invalid, "{err}");
    assert!(err.message.contains(&bad.sha256) && err.message.contains("corrupt"), "{err}");
    assert!(d.repo.object_size(&bad.sha256).is_none(), "the corrupt object is not kept");
    assert!(d.repo.manifest(&m2.id).is_err(), "no manifest for an archive that did not come whole");

    // The same rot in the local repository is found too.
    let local = a.repo.object_path(&m1.objects[0].sha256);
    let mut bytes = std::fs::read(&local).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&local, &bytes).unwrap();
    let err = a.prepare_restore(&m1.id, None).await.err().expect("local rot is refused");
    assert!(err.message.contains("corrupt"), "{err}");
}

/// An https target trusted through its `ca_file` (a private CA): replicated and brought
/// back. The same target without it is refused with an error that says why and carries
/// no presigned URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_replicate_over_https_trusting_the_targets_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::make(tmp.path());
    let moto = Moto::start_tls("backups", &pki);
    let mut trusted = moto_target(tmp.path(), &moto, "tls", "node-a");
    let TargetConfig::S3 { endpoint, ca_file, .. } = &mut trusted else { unreachable!() };
    *endpoint = endpoint.replace("http://", "https://");
    *ca_file = Some(pki.ca.clone());
    let mut untrusted = trusted.clone();
    let TargetConfig::S3 { name, ca_file, .. } = &mut untrusted else { unreachable!() };
    *name = "untrusted".into();
    *ca_file = None;

    let a = node(&tmp.path().join("node-a"), None, &[trusted.clone(), untrusted], 64 << 10);
    let stream = noise(200_000, 7);
    let m = a.archive(new_archive("s1", "3001", None), std::io::Cursor::new(stream.clone())).await.unwrap();
    let err = a.replicate(&m.id, "untrusted").await.unwrap_err();
    assert_eq!(err.kind, Kind::Unavailable, "{err}");
    assert!(err.message.contains("certificate"), "says it is the certificate: {err}");
    assert!(!err.message.contains("Signature") && !err.message.contains("Credential"), "no signed URL: {err}");

    let r = a.replicate(&m.id, "tls").await.unwrap();
    assert_eq!(r.objects_uploaded, m.objects.len());
    let b = node(&tmp.path().join("node-b"), None, &[trusted], 64 << 10);
    let plan = b.prepare_restore(&m.id, Some("tls")).await.unwrap();
    assert_eq!(restored(&b, &plan), vec![stream], "back over https");
}

/// A control API request with `token` (none: no Authorization header).
fn call_as(agent: &Agent, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> common::Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    agent.control(method, path, &headers, body)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The control API: who may see an archive, pushing one in (the cloudly handshake), and
/// a replication killed half-way that resumes sending only what the target lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_routes_refuse_others_and_replication_resumes_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start("backups");
    let mut agent = host_agent("archr");
    agent.extra_env.push(("TANKD_ARCHIVE_PASSPHRASE".into(), PASSPHRASE.into()));
    let target = moto_target(tmp.path(), &moto, "offsite", "resume");
    let TargetConfig::S3 { secret_key_file, endpoint, .. } = &target else { unreachable!() };
    let config = tmp.path().join("tankd.toml");
    std::fs::write(
        &config,
        format!(
            "[[archive_targets]]\nkind = \"s3\"\nname = \"offsite\"\nendpoint = \"{endpoint}\"\nbucket = \"backups\"\n\
             prefix = \"resume\"\naccess_key = \"testing\"\nsecret_key_file = \"{}\"\n",
            secret_key_file.display()
        ),
    )
    .unwrap();
    agent.config = Some(config);
    agent.start();
    let svc_a = provision_env(&agent, "svc-a", &["filesystem"])["TANKD_SERVICE_TOKEN"].clone();
    let svc_b = provision_env(&agent, "svc-b", &["filesystem"])["TANKD_SERVICE_TOKEN"].clone();

    // An archive made elsewhere (another node's keys) is pushed in through the handshake.
    let other = node(&tmp.path().join("elsewhere"), Some(PASSPHRASE), &[], 64 << 10);
    let stream = noise(1_280_000, 3);
    let m = other.archive(new_archive("s1", "2001", None), std::io::Cursor::new(stream.clone())).await.unwrap();
    assert_eq!(m.objects.len(), 20);
    let receive = serde_json::json!({"manifest": m}).to_string();
    for (token, what) in
        [(None, "no token"), (Some(svc_b.as_str()), "another service's token"), (Some("nonsense"), "a wrong token")]
    {
        let r = call_as(&agent, "POST", "/archives/receive", token, receive.as_bytes());
        assert_eq!(r.status, 401, "receive with {what}");
    }
    let r = call_as(&agent, "POST", "/archives/receive", Some(&svc_a), receive.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["missing"].as_array().unwrap().len(), 20);
    let first = &m.objects[0];
    let bytes = std::fs::read(other.repo.object_path(&first.sha256)).unwrap();
    let r =
        call_as(&agent, "PUT", &format!("/archives/{}/objects/{}", m.id, m.objects[1].sha256), Some(&svc_a), &bytes);
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (400, Some("body")), "an object under another's name");
    let r = call_as(&agent, "POST", &format!("/archives/{}/complete", m.id), Some(&svc_a), b"");
    assert_eq!(r.status, 404, "complete before every object is here: {}", String::from_utf8_lossy(&r.body));
    for o in &m.objects {
        let bytes = std::fs::read(other.repo.object_path(&o.sha256)).unwrap();
        let r = call_as(&agent, "PUT", &format!("/archives/{}/objects/{}", m.id, o.sha256), Some(&svc_a), &bytes);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = call_as(&agent, "POST", &format!("/archives/{}/complete", m.id), Some(&svc_a), b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Who sees it: the node and svc-a; svc-b and no token get 401 on every route.
    let id = &m.id;
    let o = &m.objects[3].sha256;
    let routes = [
        ("GET", format!("/archives/{id}/manifest"), String::new()),
        ("GET", format!("/archives/{id}/objects/{o}"), String::new()),
        ("POST", format!("/archives/{id}/replicate"), r#"{"target":"offsite"}"#.to_owned()),
        ("DELETE", format!("/archives/{id}"), String::new()),
        ("GET", "/archives".to_owned(), String::new()),
    ];
    for (method, path, body) in &routes {
        assert_eq!(call_as(&agent, method, path, None, body.as_bytes()).status, 401, "{method} {path} without a token");
        if (*method, path.as_str()) != ("GET", "/archives") {
            assert_eq!(
                call_as(&agent, method, path, Some(&svc_b), body.as_bytes()).status,
                401,
                "{method} {path} as svc-b"
            );
        }
    }
    let listed = call_as(&agent, "GET", "/archives?serviceId=svc-b", Some(&svc_b), b"").json();
    assert_eq!(listed["archives"].as_array().unwrap().len(), 0, "svc-b sees none of svc-a's: {listed}");
    for (path, token, what) in [
        ("/archives", &svc_a, "a service token without its service"),
        ("/archives?serviceId=svc-a", &svc_b, "another service's token"),
        ("/archives?serviceId=svc-a", &"nonsense".to_owned(), "a wrong token"),
    ] {
        assert_eq!(call_as(&agent, "GET", path, Some(token), b"").status, 401, "GET {path} with {what}");
    }
    assert_eq!(call_as(&agent, "GET", "/archives?serviceId=-x", Some(&agent.token), b"").status, 400);
    let listed = call_as(&agent, "GET", "/archives?serviceId=svc-a", Some(&svc_a), b"").json();
    assert_eq!(listed["archives"][0]["id"], id.as_str());
    assert_eq!(listed["targets"], serde_json::json!(["offsite"]));
    let all = call_as(&agent, "GET", "/archives", Some(&agent.token), b"").json();
    assert_eq!(all["archives"].as_array().unwrap().len(), 1);
    let r = call_as(&agent, "GET", &format!("/archives/{id}/objects/{o}"), Some(&svc_a), b"");
    assert_eq!(hex(&Sha256::digest(&r.body)), *o);
    assert_eq!(call_as(&agent, "GET", "/archives/..%2Fx/manifest", Some(&agent.token), b"").status, 400);

    // Replication killed (abort, as kill -9) after half the objects, then resumed.
    agent.extra_env.push(("TANKD_FAULT_AFTER".into(), "9".into()));
    agent.crash_at(
        "archive-object-replicated",
        common::Listener::Control,
        "POST",
        &format!("/archives/{id}/replicate"),
        r#"{"target":"offsite"}"#,
    );
    agent.extra_env.retain(|(k, _)| k != "TANKD_FAULT_AFTER");
    let t = Target::open(&target, tmp.path()).unwrap();
    let mut present = 0;
    for o in &m.objects {
        if t.stat(&format!("objects/{}", o.sha256)).await.unwrap().is_some() {
            present += 1;
        }
    }
    assert_eq!(present, 10, "nine passed the hook, the tenth aborted after its check");
    assert!(t.stat(&format!("manifests/{id}.json")).await.unwrap().is_none(), "no manifest before every object");
    let r = call_as(&agent, "POST", &format!("/archives/{id}/replicate"), Some(&svc_a), br#"{"target":"offsite"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report = r.json();
    assert_eq!(
        (report["objectsUploaded"].as_u64(), report["objectsPresent"].as_u64()),
        (Some(10), Some(10)),
        "{report}"
    );
    assert!(t.stat(&format!("manifests/{id}.json")).await.unwrap().is_some());

    // Deleted by its owner; gone for everyone.
    assert_eq!(call_as(&agent, "DELETE", &format!("/archives/{id}"), Some(&svc_a), b"").status, 200);
    assert_eq!(call_as(&agent, "GET", &format!("/archives/{id}/manifest"), Some(&agent.token), b"").status, 404);
}

/// Samba's smbd on 127.0.0.1 (a free port), one share, user root with `password`;
/// killed when dropped.
struct Smbd {
    child: Child,
    port: u16,
    share: PathBuf,
}

impl Smbd {
    fn start(dir: &Path, password: &str) -> Smbd {
        let port = free_port();
        let share = dir.join("share");
        for d in ["share", "private", "lock", "state", "cache", "pid", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let conf = dir.join("smb.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "[global]\n  smb ports = {port}\n  interfaces = 127.0.0.1\n  bind interfaces only = yes\n\
                 server role = standalone server\n  passdb backend = tdbsam:{d}/private/passdb.tdb\n\
                 private dir = {d}/private\n  lock directory = {d}/lock\n  state directory = {d}/state\n\
                 cache directory = {d}/cache\n  pid directory = {d}/pid\n  log file = {d}/log/smbd.log\n\
                 ncalrpc dir = {d}/state/ncalrpc\n  load printers = no\n  printcap name = /dev/null\n\
                 disable spoolss = yes\n  map to guest = never\n  server min protocol = SMB3\n\n\
                 [backups]\n  path = {}\n  read only = no\n  valid users = root\n",
                share.display()
            ),
        )
        .unwrap();
        let mut pw = Command::new("smbpasswd")
            .args(["-c", conf.to_str().unwrap(), "-a", "-s", "root"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("smbpasswd (Debian package samba)");
        use std::io::Write;
        pw.stdin.take().unwrap().write_all(format!("{password}\n{password}\n").as_bytes()).unwrap();
        assert!(pw.wait().unwrap().success(), "smbpasswd -a");
        let child = Command::new("smbd")
            .args(["-F", "--no-process-group", "--debug-stdout", "-s", conf.to_str().unwrap()])
            .stdout(std::fs::File::create(dir.join("smbd.out")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("smbd (Debian package samba)");
        wait_until("smbd listens", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Smbd { child, port, share }
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An archive chain replicated to a real Samba share, written there as whole objects
/// only, and brought back from it on a new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_replicate_to_samba_and_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let smbd = Smbd::start(&tmp.path().join("samba"), "samba-pass-1");
    let target = TargetConfig::Smb {
        name: "nas".into(),
        host: "127.0.0.1".into(),
        port: smbd.port,
        share: "backups".into(),
        path: "tankd/node-a".into(),
        user: "root".into(),
        domain: None,
        password_file: secret_file(tmp.path(), "nas.secret", "samba-pass-1"),
    };
    let a = node(&tmp.path().join("node-a"), Some(PASSPHRASE), std::slice::from_ref(&target), 128 << 10);
    let full = noise(400_000, 7);
    let incr = noise(150_000, 8);
    let m1 = a.archive(new_archive("s1", "3001", None), std::io::Cursor::new(full.clone())).await.unwrap();
    let m2 = a.archive(new_archive("s2", "3002", Some(&m1)), std::io::Cursor::new(incr.clone())).await.unwrap();
    let r = a.replicate(&m2.id, "nas").await.unwrap();
    assert_eq!((r.archives.len(), r.objects_uploaded), (2, m1.objects.len() + m2.objects.len()));
    let on_share = smbd.share.join("tankd/node-a");
    assert!(on_share.join(format!("manifests/{}.json", m2.id)).is_file());
    let names: Vec<String> = std::fs::read_dir(on_share.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), m1.objects.len() + m2.objects.len(), "{names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".part")), "whole objects only: {names:?}");
    // A lost object is sent again, and only it.
    std::fs::remove_file(on_share.join("objects").join(&m1.objects[0].sha256)).unwrap();
    std::fs::remove_file(on_share.join(format!("manifests/{}.json", m1.id))).unwrap();
    std::fs::remove_file(on_share.join(format!("manifests/{}.json", m2.id))).unwrap();
    let r = a.replicate(&m2.id, "nas").await.unwrap();
    assert_eq!((r.objects_uploaded, r.objects_present), (1, m1.objects.len() + m2.objects.len() - 1));

    let b = node(&tmp.path().join("node-b"), Some(PASSPHRASE), std::slice::from_ref(&target), 128 << 10);
    let plan = b.prepare_restore(&m2.id, Some("nas")).await.unwrap();
    assert_eq!(restored(&b, &plan), vec![full, incr]);

    // A wrong SMB password is a clear error naming the target, not the password.
    let mut wrong = target.clone();
    let TargetConfig::Smb { password_file, .. } = &mut wrong else { unreachable!() };
    *password_file = secret_file(tmp.path(), "wrong.secret", "not-the-password");
    let c = node(&tmp.path().join("node-c"), Some(PASSPHRASE), &[wrong], 128 << 10);
    let err = c.prepare_restore(&m2.id, Some("nas")).await.err().expect("a wrong SMB password is refused");
    assert!(err.message.contains("nas") && !err.message.contains("not-the-password"), "{err}");
}

fn file_hashes(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                hex(&Sha256::digest(std::fs::read(e.path()).unwrap())),
            );
        }
    }
    out
}

fn s3_target_toml(dir: &Path, port: u16, env: &std::collections::BTreeMap<String, String>) -> PathBuf {
    let secret = secret_file(dir, "offsite.secret", &env["AWS_SECRET_ACCESS_KEY"]);
    let config = dir.join(format!("tankd-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "[[archive_targets]]\nkind = \"s3\"\nname = \"offsite\"\nendpoint = \"http://127.0.0.1:{port}\"\n\
             bucket = \"{}\"\nprefix = \"node-a\"\naccess_key = \"{}\"\nsecret_key_file = \"{}\"\n",
            env["S3_BUCKET"],
            env["AWS_ACCESS_KEY_ID"],
            secret.display()
        ),
    )
    .unwrap();
    config
}

/// A full and two incremental archives of a service's dataset with changing files, made
/// from snapshots through the API, replicated to another node's S3 endpoint, and
/// restored from there into that node's pool: the same files, the same snapshot GUIDs.
/// A natively encrypted dataset's archives are raw and come back sealed.
#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn snapshots_archived_replicated_and_restored_on_another_pool() {
    let tmp = tempfile::tempdir().unwrap();
    // Node B: the S3 target (a service's bucket), later the node that restores.
    // No passphrase: the crypto is the host tier's; here the dataset glue is tested, and
    // scrypt's pinned work factor costs tens of seconds under TCG.
    let mut b = Agent::new("arcb");
    b.start();
    let vault = provision_env(&b, "vault", &["objectstorage"]);
    let target = s3_target_toml(tmp.path(), b.s3_port, &vault);

    // Node A: the source.
    let mut a = Agent::new("arca");
    a.config = Some(target.clone());
    a.start();
    let env = provision_env(&a, "svc-a", &["filesystem"]);
    let token = env["TANKD_SERVICE_TOKEN"].clone();
    let other = provision_env(&a, "svc-b", &["filesystem"])["TANKD_SERVICE_TOKEN"].clone();
    let data = PathBuf::from(&env["TANKD_SERVICE_DATA"]);

    let mut ids = Vec::new();
    let mut guids = Vec::new();
    for (n, change) in ["first", "second", "third"].iter().enumerate() {
        std::fs::write(data.join(format!("{change}.bin")), noise(700_000 + n * 1000, n as u8)).unwrap();
        std::fs::write(data.join("changing.txt"), format!("version {n}\n").repeat(1000 * (n + 1))).unwrap();
        if n == 2 {
            std::fs::remove_file(data.join("first.bin")).unwrap();
        }
        let snap = format!("s{n}");
        // The last one in one call: the snapshot route archives it too (`archive: true`).
        let body = serde_json::json!({"serviceId": "svc-a", "snapshotName": snap, "archive": n == 2}).to_string();
        let r = call_as(&a, "POST", "/resources/snapshot", Some(&token), body.as_bytes());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let snapped = r.json();
        guids.push(common::zfs_prop(&format!("{}/tankd/services/svc-a@{snap}", a.pool), "guid"));
        let id = if n == 2 {
            snapped["snapshots"][0]["tags"]["archiveId"].as_str().expect("archiveId in the tags").to_owned()
        } else {
            let body =
                serde_json::json!({"snapshotId": format!("services/svc-a@{snap}"), "incremental": n > 0}).to_string();
            assert_eq!(
                call_as(&a, "POST", "/archives", Some(&other), body.as_bytes()).status,
                401,
                "svc-b archives svc-a's"
            );
            let r = call_as(&a, "POST", "/archives", Some(&token), body.as_bytes());
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()["id"].as_str().unwrap().to_owned()
        };
        let m = call_as(&a, "GET", &format!("/archives/{id}/manifest"), Some(&token), b"").json();
        assert_eq!(m["guid"], guids[n].as_str());
        assert_eq!(m["parentId"].as_str(), ids.last().map(String::as_str), "archive {n}'s base");
        ids.push(id);
    }
    let source_files = file_hashes(&data);
    assert_eq!(source_files.len(), 3, "{source_files:?}");
    let r = call_as(&a, "POST", &format!("/archives/{}/replicate", ids[2]), Some(&token), br#"{"target":"offsite"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["archives"], serde_json::json!(ids));

    // A natively encrypted dataset is archived raw (-w), full and incremental, restored
    // from this node's repository still encrypted, and opens with its own key.
    let key = tmp.path().join("sealed.key");
    std::fs::write(&key, "the dataset's own passphrase\n").unwrap();
    let keylocation = format!("file://{}", key.display());
    let sealed = format!("{}/tankd/sealed", a.pool);
    let locate = format!("keylocation={keylocation}");
    common::zfs(&["create", "-o", "encryption=on", "-o", "keyformat=passphrase", "-o", &locate, &sealed]);
    let sealed_dir = PathBuf::from(common::zfs_prop(&sealed, "mountpoint"));
    let mut sealed_ids = Vec::new();
    for n in 0..2u8 {
        std::fs::write(sealed_dir.join(format!("f{n}.bin")), noise(300_000, 10 + n)).unwrap();
        common::zfs(&["snapshot", &format!("{sealed}@e{n}")]);
        let body = serde_json::json!({"snapshotId": format!("sealed@e{n}"), "incremental": n > 0}).to_string();
        let r = call_as(&a, "POST", "/archives", Some(&a.token), body.as_bytes());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let m = r.json();
        assert_eq!(m["sendFlags"], serde_json::json!(["-w"]), "raw: {m}");
        sealed_ids.push(m["id"].as_str().unwrap().to_owned());
    }
    let sealed_files = file_hashes(&sealed_dir);
    let body = serde_json::json!({"archiveId": sealed_ids[1], "into": "restored/sealed"}).to_string();
    let r = call_as(&a, "POST", "/archives/restore", Some(&a.token), body.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let back = format!("{}/tankd/restored/sealed", a.pool);
    assert_eq!(common::zfs_prop(&back, "encryption"), "aes-256-gcm");
    assert_eq!(common::zfs_prop(&back, "keystatus"), "unavailable", "still sealed: tankd never had the key");
    common::zfs(&["load-key", "-L", &keylocation, &back]);
    common::zfs(&["mount", &back]);
    assert_eq!(file_hashes(Path::new(&common::zfs_prop(&back, "mountpoint"))), sealed_files, "the sealed files");

    // Node B, with the target configured, restores.
    b.stop();
    b.config = Some(target);
    b.start();
    let body = serde_json::json!({"archiveId": ids[2], "target": "offsite", "into": "restored/svc-a"}).to_string();
    let r = call_as(&b, "POST", "/archives/restore", Some(&b.token), body.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let restored = format!("{}/tankd/restored/svc-a", b.pool);
    for (n, guid) in guids.iter().enumerate() {
        assert_eq!(&common::zfs_prop(&format!("{restored}@s{n}"), "guid"), guid, "snapshot s{n}'s GUID");
    }
    let mountpoint = common::zfs_prop(&restored, "mountpoint");
    assert_eq!(file_hashes(Path::new(&mountpoint)), source_files, "the restored files");

    // Restoring over an existing dataset is refused and changes nothing.
    let r = call_as(&b, "POST", "/archives/restore", Some(&b.token), body.as_bytes());
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (409, Some("into")));
}
