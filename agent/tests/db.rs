//! The database endpoint through tankd, host tier (`zfs = false`): provisioning hands out
//! a `MONGODB_URI` that pymongo connects with; a service reaches its own database only;
//! kill -9 during a stream of acknowledged inserts loses none of them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, repo, show, wait_until, zfs_prop};
use serde_json::json;

/// The venv with pymongo (made once, then cached). Not having it fails the test.
fn venv() -> PathBuf {
    common::testbed_tool("db-clients")
}

/// mongosh (npm, made once, then cached). Not having it fails the test.
fn mongosh() -> PathBuf {
    common::testbed_tool("mongosh")
}

/// Runs a shell command line with the service's environment and mongosh on the PATH;
/// mongosh gets an empty home (no history, no config, no telemetry state of this machine).
fn shell(mongosh: &Path, env: &BTreeMap<String, String>, line: &str) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", mongosh.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    Command::new("bash")
        .envs(env)
        .env("PATH", path)
        .env("HOME", home.path())
        .env("MONGOSH_NO_TELEMETRY", "1")
        .args(["-c", line])
        .output()
        .unwrap()
}

fn db_host(tag: &str) -> Agent {
    let mut a = Agent::new(tag);
    a.extra_env.push(("TANKD_ZFS".into(), "false".into()));
    a
}

/// Provisions `service` with a database; its environment, the URI pointed at this tankd.
fn provision(agent: &Agent, service: &str) -> BTreeMap<String, String> {
    let mut env = common::provision_env(agent, service, &["database"]);
    let uri = env["MONGODB_URI"].clone();
    // The URI names the public host; the test reaches the same port on loopback.
    let (head, rest) = uri.split_once('@').expect("user:password@host");
    let (_, path) = rest.split_once('/').expect("host/db");
    env.insert("MONGODB_URI".into(), format!("{head}@127.0.0.1:{}/{path}", agent.db_port));
    env.insert("TANKD_RAW_URI".into(), uri);
    env
}

fn python(venv: &Path, env: &BTreeMap<String, String>, script: &str) -> std::process::Output {
    Command::new(venv.join("bin/python"))
        .envs(env)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap()
}

#[test]
fn provisioned_services_reach_their_own_database_only() {
    let venv = venv();
    let mut agent = db_host("dbt");
    agent.start();
    let a = provision(&agent, "svc-a");
    assert_eq!(a, provision(&agent, "svc-a"), "provisioning again hands out the same URI");
    let raw = &a["TANKD_RAW_URI"];
    assert!(
        raw.starts_with("mongodb://svc-a:")
            && raw.contains("authSource=svc-a")
            && raw.contains("authMechanism=SCRAM-SHA-256"),
        "{raw}"
    );
    let b = provision(&agent, "svc-b");
    let out = python(
        &venv,
        &a,
        r#"
import os, pymongo
db = pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000).get_default_database()
assert db.name == "svc-a"
db.items.insert_many([{"_id": i, "v": i} for i in range(100)])
assert db.items.count_documents({"v": {"$gte": 50}}) == 50
print("ok")
"#,
    );
    assert!(out.status.success(), "svc-a's script:\n{}\n{}", show(&out), agent.log_text());
    // svc-b's URI with svc-a's database name: refused at authentication; svc-b's client
    // on svc-a's database: refused per command.
    let out = python(
        &venv,
        &b,
        r#"
import os, pymongo
from pymongo.errors import OperationFailure
uri = os.environ["MONGODB_URI"]
try:
    pymongo.MongoClient(uri.replace("authSource=svc-b", "authSource=svc-a"), serverSelectionTimeoutMS=5000)["svc-a"].items.find_one()
    raise SystemExit("svc-b authenticated on svc-a's database")
except OperationFailure as e:
    assert e.code == 18, e.details
c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
try:
    c["svc-a"].items.find_one()
    raise SystemExit("svc-b read svc-a's database")
except OperationFailure as e:
    assert e.code == 13, e.details
assert c.get_default_database().items.count_documents({}) == 0
print("ok")
"#,
    );
    assert!(out.status.success(), "svc-b's script:\n{}\n{}", show(&out), agent.log_text());
    // Deprovisioning removes the database and the password stops working.
    let auth = format!("Bearer {}", agent.token);
    let r = agent.control(
        "POST",
        "/resources/deprovision",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        json!({"serviceId": "svc-a"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!agent.data_dir.join("db/svc-a").exists(), "the database files are gone");
    let out = python(
        &venv,
        &a,
        r#"
import os, pymongo
from pymongo.errors import OperationFailure
try:
    pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000).get_default_database().items.find_one()
    raise SystemExit("a deprovisioned service still logs in")
except OperationFailure as e:
    assert e.code == 18, e.details
print("ok")
"#,
    );
    assert!(out.status.success(), "after deprovision:\n{}", show(&out));
}

#[test]
fn kill_9_during_inserts_loses_no_acknowledged_document() {
    let venv = venv();
    let mut agent = db_host("dbk");
    agent.start();
    let env = provision(&agent, "svc-crash");
    let work = tempfile::tempdir().unwrap();
    let acked = work.path().join("acked");
    // One insert at a time; each acknowledged _id is appended (and flushed) after the reply.
    let mut writer = Command::new(venv.join("bin/python"))
        .envs(&env)
        .arg("-c")
        .arg(
            r#"
import os, sys, pymongo
db = pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000, retryWrites=False).get_default_database()
with open(sys.argv[1], "a") as acked:
    for i in range(1_000_000):
        db.stream.insert_one({"_id": i, "pad": "x" * 512})
        acked.write(f"{i}\n")
        acked.flush()
"#,
        )
        .arg(&acked)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let acks = || std::fs::read_to_string(&acked).map(|t| t.lines().count()).unwrap_or(0);
    wait_until("200 acknowledged inserts", Duration::from_secs(120), || {
        if let Some(status) = writer.try_wait().unwrap() {
            panic!("the writer ended ({status}) with {} acks:\n{}", acks(), agent.log_text());
        }
        acks() >= 200
    });
    let mut tankd = agent.child.take().unwrap();
    tankd.kill().unwrap(); // SIGKILL, mid-stream
    tankd.wait().unwrap();
    let _ = writer.kill();
    let _ = writer.wait();
    let acked_ids = acks();
    agent.start();
    let out = python(
        &venv,
        &env,
        &format!(
            r#"
import os, pymongo
db = pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000).get_default_database()
have = {{d["_id"] for d in db.stream.find({{}}, {{"_id": 1}})}}
missing = [i for i in range({acked_ids}) if i not in have]
assert not missing, f"acknowledged but lost: {{missing[:10]}}"
print(len(have), "documents,", {acked_ids}, "acknowledged")
"#
        ),
    );
    assert!(out.status.success(), "after the crash:\n{}\n{}", show(&out), agent.log_text());
    println!("{}", show(&out).trim());
}

/// The Python examples of docs/db.md as they are written there, as a provisioned service.
#[test]
fn the_db_docs_examples_work() {
    let venv = venv();
    let mut agent = db_host("dbdoc");
    agent.start();
    let env = provision(&agent, "svc-doc");
    let doc = std::fs::read_to_string(repo().join("docs/db.md")).unwrap();
    let mut examples = Vec::new();
    let mut block: Option<(&str, String)> = None;
    for line in doc.lines() {
        match (&mut block, line) {
            (None, "```python") => block = Some(("python", String::new())),
            (None, "```sh") => block = Some(("sh", String::new())),
            (Some((kind, text)), "```") => {
                examples.push((*kind, std::mem::take(text)));
                block = None;
            }
            (Some((_, text)), l) => {
                text.push_str(l);
                text.push('\n');
            }
            _ => {}
        }
    }
    assert!(examples.iter().any(|(k, _)| *k == "python"), "docs/db.md has Python examples");
    assert!(examples.iter().any(|(k, _)| *k == "sh"), "docs/db.md has mongosh examples");
    let mongosh = mongosh();
    for (kind, example) in examples {
        let out = if kind == "python" { python(&venv, &env, &example) } else { shell(&mongosh, &env, &example) };
        assert!(out.status.success(), "docs/db.md example failed:\n{example}\n{}", show(&out));
    }
}

#[test]
fn mongosh_connects_with_the_uri_and_runs_a_script() {
    let mongosh = mongosh();
    let mut agent = db_host("dbsh");
    agent.start();
    let env = provision(&agent, "svc-sh");
    // mongosh opens with the legacy OP_QUERY hello and speculative SCRAM-SHA-256, then
    // runs its start-up commands (buildInfo, getParameter, ...) before the script.
    let script = r#"
db.items.insertMany([{_id: 1, k: "a", n: 5}, {_id: 2, k: "b", n: 7}, {_id: 3, k: "a", n: 1}]);
db.items.createIndex({k: 1}, {unique: false});
db.items.updateOne({_id: 3}, {$inc: {n: 10}});
const sums = db.items.aggregate([{$group: {_id: "$k", total: {$sum: "$n"}}}, {$sort: {_id: 1}}]).toArray();
print(EJSON.stringify({sums: sums, count: db.items.countDocuments({n: {$gt: 6}}),
  names: db.getCollectionNames(), idx: db.items.getIndexes().map(i => i.name).sort()}));
"#;
    let out = shell(&mongosh, &env, &format!("mongosh \"$MONGODB_URI\" --quiet --norc --eval '{script}'"));
    let text = show(&out);
    assert!(out.status.success(), "mongosh failed:\n{text}");
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line:\n{text}"));
    let got: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(got["sums"], json!([{"_id": "a", "total": 16}, {"_id": "b", "total": 7}]), "{text}");
    assert_eq!(got["count"], json!(2), "{text}");
    assert_eq!(got["names"], json!(["items"]), "{text}");
    assert_eq!(got["idx"], json!(["_id_", "k_1"]), "{text}");
    // A wrong password is refused, and the server keeps serving.
    let bad = env["MONGODB_URI"].replacen("//svc-sh:", "//svc-sh:x", 1);
    let out = shell(&mongosh, &env, &format!("mongosh '{bad}' --quiet --norc --eval 'db.items.countDocuments()'"));
    assert!(!out.status.success() && show(&out).contains("Authentication failed"), "{}", show(&out));
    let out =
        shell(&mongosh, &env, "mongosh \"$MONGODB_URI\" --quiet --norc --eval 'print(db.items.countDocuments())'");
    assert!(out.status.success() && show(&out).trim().ends_with('3'), "{}", show(&out));
}

/// The dataset glue, on kernel ZFS: the database is a dataset under its service with
/// properties for SQLite, `/resources/snapshot` takes it with the service, and a restore
/// brings its documents back (the file closed and reopened around the swap).
/// SecantusDB (a MongoDB-wire server from PyPI, in the same pinned venv) on a free port,
/// stopped when dropped.
struct Reference {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reference(venv: &Path) -> Reference {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(venv.join("bin/secantusd-py"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--standalone", "--log-level", "WARNING"])
        .arg("--storage-path")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting secantusd-py");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 60, "secantusd-py did not listen within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Reference { child, port, _dir: dir }
}

/// The differential test: one scenario (tests/db/scenario.py: every command and operator
/// docs/db.md lists) through the URI provisioning hands out and against SecantusDB,
/// compared result by result; the scenario lists known divergences with MongoDB's answer.
#[test]
fn a_scenario_gives_the_same_results_as_a_reference_server() {
    let venv = venv();
    let mut agent = db_host("dbdiff");
    agent.start();
    let env = provision(&agent, "svc-diff");
    let peer = reference(&venv);
    let reference = format!("mongodb://127.0.0.1:{}/{}?directConnection=true", peer.port, env["MONGODB_DATABASE"]);
    let out = Command::new(venv.join("bin/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(repo().join("tests/db/scenario.py"))
        .args([&env["MONGODB_URI"], &reference])
        .output()
        .unwrap();
    let text = show(&out);
    println!("{text}");
    assert!(out.status.success() && text.contains(" 0 unexpected differences"), "{text}");
}

#[test]
#[ignore = "needs kernel ZFS; scripts/test runs it in the test VM"]
fn a_database_is_a_dataset_restored_with_its_service() {
    let venv = venv();
    let mut agent = Agent::new("dbz");
    agent.start();
    let env = provision(&agent, "svc-d");
    let ds = format!("{}/tankd/services/svc-d/db", agent.pool);
    for (prop, want) in [("recordsize", "16K"), ("logbias", "latency"), ("mounted", "yes")] {
        assert_eq!(zfs_prop(&ds, prop), want, "{prop} of {ds}");
    }
    assert_eq!(zfs_prop(&ds, "mountpoint"), agent.data_dir.join("db/svc-d").display().to_string());
    // One Python for every step, reading them from stdin: under the test VM's emulator
    // each interpreter start with pymongo costs tens of seconds.
    let steps = r#"
import os, sys, pymongo
db = pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=10000).get_default_database()
for step in sys.stdin:
    step = step.strip()
    if step == "fill":
        db.items.insert_many([{"_id": i, "v": i} for i in range(20)])
    elif step == "change":
        db.items.delete_many({"v": {"$lt": 10}})
        db.items.insert_one({"_id": "late"})
    print(sorted(str(d["_id"]) for d in db.items.find()), flush=True)
"#;
    let mut client = Command::new(venv.join("bin/python"))
        .envs(&env)
        .arg("-c")
        .arg(steps)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_client = client.stdin.take().unwrap();
    let mut from_client = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut run = |step: &str| {
        use std::io::{BufRead, Write};
        writeln!(to_client, "{step}").unwrap();
        let mut line = String::new();
        from_client.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "{step}: the client exited\n{}", agent.log_text());
        line
    };
    let at_snapshot = run("fill");
    let auth = format!("Bearer {}", agent.token);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let body = json!({"serviceId": "svc-d", "snapshotName": "s1"});
    let r = agent.control("POST", "/resources/snapshot", &headers, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "snapshot: {}", String::from_utf8_lossy(&r.body));
    let snaps = r.json()["snapshots"].clone();
    assert!(snaps.as_array().unwrap().iter().any(|s| s["capability"] == "database"), "{snaps}");
    let changed = run("change");
    assert_ne!(changed, at_snapshot);
    let body = json!({"serviceId": "svc-d", "snapshots": snaps});
    let r = agent.control("POST", "/resources/restore", &headers, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "restore: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(run("read"), at_snapshot, "the documents as they were at s1");
    let kept = format!("{}/tankd/prerestore/kept/services/svc-d/db", agent.pool);
    assert_eq!((zfs_prop(&kept, "mounted").as_str(), zfs_prop(&kept, "canmount").as_str()), ("no", "noauto"));
    let r = agent.control(
        "POST",
        "/resources/restore/undo",
        &headers,
        json!({"serviceId": "svc-d"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "undo: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(run("read"), changed, "undo brings the changed documents back");
    drop(to_client);
    assert!(client.wait().unwrap().success(), "the client's exit");
}

#[test]
fn bad_input_gets_a_proper_error_and_changes_nothing() {
    let venv = venv();
    let mut agent = db_host("dbbad");
    agent.start();
    let env = provision(&agent, "svc-bad");
    provision(&agent, "svc-other");
    let out = python(
        &venv,
        &env,
        r#"
import os, socket, struct, bson, pymongo
from pymongo.errors import OperationFailure
uri = os.environ["MONGODB_URI"]
db = pymongo.MongoClient(uri).get_default_database()
db.keep.insert_many([{"_id": i} for i in range(3)])
host, port = uri.split("@")[1].split("/")[0].split(":")

def frame(body, op=2013):
    return struct.pack("<iiii", 16 + len(body), 7, 0, op) + body

def reply(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    n = struct.unpack("<i", head)[0]
    rest = b""
    while len(rest) < n - 4:
        rest += s.recv(n - 4 - len(rest))
    return bson.decode(rest[12 + 4 + 1:])

ping = struct.pack("<I", 0) + b"\0" + bson.encode({"ping": 1, "$db": "admin"})
# Malformed BSON in a well-framed message: InvalidBSON, and the connection goes on.
s = socket.create_connection((host, int(port)))
s.sendall(frame(struct.pack("<I", 0) + b"\0" + struct.pack("<i", 16) + b"\x02ab\0\xff\xff\xff\x7f\0\0\0\0"))
r = reply(s)
assert r["ok"] == 0 and r["code"] == 22, r
s.sendall(frame(ping))
assert reply(s)["ok"] == 1
# A message over 48,000,000 bytes: answered (10334), then the connection is closed
# before the server reads or allocates the body.
s.sendall(struct.pack("<iiii", 48_000_001, 8, 0, 2013))
r = reply(s)
assert r["ok"] == 0 and r["code"] == 10334, r
assert reply(s) is None, "the connection closes after an oversized frame"
# An unknown command, a wrong password, another service's database.
try:
    db.command("noSuchCommand")
    raise SystemExit("an unknown command ran")
except OperationFailure as e:
    assert e.code == 59 and e.details["codeName"] == "CommandNotFound", e.details
try:
    pymongo.MongoClient(uri.replace("//svc-bad:", "//svc-bad:x")).get_default_database().keep.find_one()
    raise SystemExit("a wrong password worked")
except OperationFailure as e:
    assert e.code == 18, e.details
try:
    pymongo.MongoClient(uri).get_database("svc-other").keep.insert_one({"x": 1})
    raise SystemExit("another service's database was written")
except OperationFailure as e:
    assert e.code == 13, e.details
# The server is still up and nothing changed.
assert db.command("ping")["ok"] == 1
assert sorted(d["_id"] for d in db.keep.find()) == [0, 1, 2]
print("bad input ok")
"#,
    );
    assert!(out.status.success() && show(&out).contains("bad input ok"), "{}", show(&out));
}
