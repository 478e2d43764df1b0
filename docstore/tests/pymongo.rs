//! docstore driven by a real MongoDB driver: pymongo 4.20 (from `scripts/testbed/db-clients`)
//! against a server in this process, with two tenants. Host tier: no ZFS, no tankd.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use docstore::{Config, Resolver, Server, Tenant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The venv with pymongo (made once, then cached). Not having it fails the test.
fn venv() -> PathBuf {
    let out = Command::new(repo().join("scripts/testbed/db-clients"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/testbed/db-clients");
    assert!(out.status.success(), "scripts/testbed/db-clients failed ({})", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("db-clients prints the venv's path").trim())
}

struct Two(PathBuf);

impl Resolver for Two {
    fn tenant(&self, user: &str) -> Option<Tenant> {
        let password = match user {
            "svc-a" => "a-password-0123456789abcdef",
            "svc-b" => "b-password-0123456789abcdef",
            _ => return None,
        };
        Some(Tenant {
            user: user.into(),
            db: user.into(),
            password: password.into(),
            path: self.0.join(format!("{user}.sqlite")),
        })
    }
}

/// Serves on a free port until the returned runtime is dropped.
fn serve(dir: &Path) -> (tokio::runtime::Runtime, u16) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::new(Config::default(), Arc::new(Two(dir.to_owned())));
    rt.spawn(async move { server.serve(listener).await });
    (rt, port)
}

fn python(venv: &Path, port: u16, script: &str) -> String {
    let out = Command::new(venv.join("bin/python"))
        .env("PORT", port.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pymongo script failed:\n{text}");
    text
}

const PRELUDE: &str = r#"
import os, pymongo
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure, WriteError
port = os.environ["PORT"]
def client(user, password, db):
    return pymongo.MongoClient(
        f"mongodb://{user}:{password}@127.0.0.1:{port}/{db}?authSource={db}&authMechanism=SCRAM-SHA-256&directConnection=true",
        serverSelectionTimeoutMS=5000)
A = "a-password-0123456789abcdef"
B = "b-password-0123456789abcdef"
"#;

#[test]
fn pymongo_reads_and_writes_its_own_database_and_no_other() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let (rt, port) = serve(dir.path());
    let out = python(
        &venv,
        port,
        r#"
db = client("svc-a", A, "svc-a")["svc-a"]
r = db.people.insert_many([{"_id": i, "name": f"p{i}", "age": i % 50, "tags": ["a", "b"] if i % 2 else ["c"]} for i in range(250)])
assert len(r.inserted_ids) == 250
assert db.people.find_one({"_id": 7}) == {"_id": 7, "name": "p7", "age": 7, "tags": ["a", "b"]}
assert db.people.count_documents({"age": {"$gte": 40}}) == 50
assert [d["_id"] for d in db.people.find({"tags": "c"}, {"name": 1}).sort("age", -1).limit(3)] == [48, 98, 148]
assert len(list(db.people.find({}, batch_size=30))) == 250, "getMore through the batches"
try:
    db.people.insert_one({"_id": 7})
    raise SystemExit("a duplicate _id was accepted")
except DuplicateKeyError as e:
    assert e.code == 11000
r = db.people.update_one({"_id": 1}, {"$set": {"x.y": 1}, "$inc": {"age": 10}, "$push": {"tags": "t"}})
assert (r.matched_count, r.modified_count) == (1, 1)
assert db.people.find_one({"_id": 1}) == {"_id": 1, "name": "p1", "age": 11, "tags": ["a", "b", "t"], "x": {"y": 1}}
assert db.people.update_many({"age": {"$lt": 5}}, {"$set": {"small": True}}).modified_count == 24
r = db.people.update_one({"_id": 999}, {"$set": {"age": 99}, "$setOnInsert": {"new": True}}, upsert=True)
assert r.upserted_id == 999 and db.people.find_one({"_id": 999}) == {"_id": 999, "age": 99, "new": True}
assert db.people.replace_one({"_id": 2}, {"whole": "new"}).modified_count == 1
assert db.people.find_one({"_id": 2}) == {"_id": 2, "whole": "new"}
d = db.people.find_one_and_update({"_id": 3}, {"$inc": {"age": 1}}, return_document=ReturnDocument.AFTER)
assert d["age"] == 4
assert db.people.find_one_and_delete({"_id": 4})["_id"] == 4
try:
    db.people.update_one({"_id": 1}, {"$set": {"_id": 5}})
    raise SystemExit("_id changed")
except WriteError as e:
    assert e.code == 66
groups = list(db.people.aggregate([{"$match": {"age": {"$lt": 3}}}, {"$group": {"_id": "$age", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]))
assert groups == [{"_id": 0, "n": 5}, {"_id": 1, "n": 4}, {"_id": 2, "n": 4}], groups
assert db.people.delete_many({"age": {"$lt": 10}}).deleted_count > 0
assert "people" in db.list_collection_names()
oid = db.things.insert_one({"x": 1}).inserted_id
assert db.things.find_one({"_id": oid})["x"] == 1
db.drop_collection("things")
assert "things" not in db.list_collection_names()
print("crud ok")

# Another tenant's password does not open this database, nor does this tenant's open another.
try:
    client("svc-b", B, "svc-a")["svc-a"].command("ping")
    client("svc-b", B, "svc-a")["svc-a"].people.find_one()
    raise SystemExit("svc-b authenticated on svc-a's database")
except OperationFailure as e:
    assert e.code == 18, e.details
try:
    client("svc-a", B, "svc-a")["svc-a"].people.find_one()
    raise SystemExit("a wrong password was accepted")
except OperationFailure as e:
    assert e.code == 18, e.details
a = client("svc-a", A, "svc-a")
try:
    a["svc-b"].people.insert_one({"stolen": True})
    raise SystemExit("svc-a wrote into svc-b's database")
except OperationFailure as e:
    assert e.code == 13, e.details
b = client("svc-b", B, "svc-b")["svc-b"]
assert b.people.count_documents({}) == 0, "svc-b's database is its own"
print("tenancy ok")
"#,
    );
    assert!(out.contains("crud ok") && out.contains("tenancy ok"), "{out}");
    // A new server on the same files (as after a restart) has every acknowledged write.
    drop(rt);
    let (_rt, port) = serve(dir.path());
    let out = python(
        &venv,
        port,
        r#"
db = client("svc-a", A, "svc-a")["svc-a"]
assert db.people.find_one({"_id": 999}) == {"_id": 999, "age": 99, "new": True}
assert db.people.count_documents({"age": {"$gte": 10}}) > 0
print("durable ok")
"#,
    );
    assert!(out.contains("durable ok"), "{out}");
}
