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
assert a.list_database_names() == ["svc-a"], "listDatabases shows a tenant its own database only"
assert a.admin.command("hostInfo")["ok"] == 1 and a["svc-a"].command("getLastError")["ok"] == 1
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

#[test]
fn pymongo_indexes_regexes_distinct_projections_and_lookup() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let (_rt, port) = serve(dir.path());
    let out = python(
        &venv,
        port,
        r#"
import re
from pymongo import ASCENDING, DESCENDING
db = client("svc-a", A, "svc-a")["svc-a"]
db.users.insert_many([{"_id": i, "email": f"u{i}@example.org", "name": f"User {i}", "team": i % 4,
                       "tags": ["x"] if i % 2 else ["y", "z"], "addr": {"city": f"c{i % 3}", "zip": i}} for i in range(2000)])
assert db.users.create_index("email", unique=True) == "email_1"
assert db.users.create_index([("team", ASCENDING), ("addr.city", DESCENDING)], name="team_city") == "team_city"
db.users.create_index("tags")
names = sorted(ix["name"] for ix in db.users.list_indexes())
assert names == ["_id_", "email_1", "tags_1", "team_city"], names
info = db.users.index_information()
assert info["email_1"]["unique"] is True and info["team_city"]["key"] == [("team", 1), ("addr.city", -1)], info
# The same index again is a no-op; the same name with another key is refused.
assert db.users.create_index("email", unique=True) == "email_1"
try:
    db.users.create_index("name", name="email_1")
    raise SystemExit("a conflicting index was made")
except OperationFailure as e:
    assert e.code in (85, 86), e.details
try:
    db.users.insert_one({"email": "u5@example.org"})
    raise SystemExit("a duplicate unique key was accepted")
except DuplicateKeyError as e:
    assert e.code == 11000 and "email_1" in str(e), e.details
try:
    db.users.update_one({"_id": 6}, {"$set": {"email": "u7@example.org"}})
    raise SystemExit("an update broke a unique index")
except DuplicateKeyError as e:
    assert e.code == 11000
assert db.users.find_one({"_id": 6})["email"] == "u6@example.org", "the refused update changed nothing"
assert db.users.find_one({"email": "u1234@example.org"})["_id"] == 1234
assert db.users.count_documents({"team": 3, "addr.city": "c0"}) == len([i for i in range(2000) if i % 4 == 3 and i % 3 == 0])
assert db.users.count_documents({"tags": "z"}) == 1000
assert db.users.count_documents({"email": {"$in": ["u1@example.org", "u2@example.org", "nobody"]}}) == 2
try:
    db.users.create_index("team", unique=True)
    raise SystemExit("a unique index over duplicate data was made")
except DuplicateKeyError as e:
    assert e.code == 11000
assert "team_1" not in db.users.index_information()
db.users.drop_index("tags_1")
assert "tags_1" not in db.users.index_information()
try:
    db.users.drop_index("_id_")
    raise SystemExit("the _id index was dropped")
except OperationFailure as e:
    assert e.code == 72, e.details
# Regexes, by operator and by a compiled pattern.
assert db.users.count_documents({"name": {"$regex": "^user 1\\d$", "$options": "i"}}) == 10
assert db.users.count_documents({"email": re.compile(r"^u19\d\d@")}) == 100
assert db.users.count_documents({"name": {"$not": re.compile("0$")}}) == 1800
# distinct over a field and over array elements.
assert db.users.distinct("team") == [0, 1, 2, 3]
assert db.users.distinct("tags", {"_id": {"$lt": 10}}) == ["x", "y", "z"]
assert db.users.distinct("addr.city") == ["c0", "c1", "c2"]
# Dotted projections.
assert db.users.find_one({"_id": 4}, {"addr.city": 1, "_id": 0}) == {"addr": {"city": "c1"}}
assert db.users.find_one({"_id": 4}, {"addr.zip": 0, "tags": 0, "email": 0, "name": 0}) == {"_id": 4, "team": 0, "addr": {"city": "c1"}}
# Aggregation: computed fields, $unset, $lookup.
db.teams.insert_many([{"_id": t, "title": f"team-{t}"} for t in range(3)])
out = list(db.users.aggregate([
    {"$match": {"_id": {"$in": [1, 3]}}},
    {"$lookup": {"from": "teams", "localField": "team", "foreignField": "_id", "as": "t"}},
    {"$set": {"nteams": {"$size": "$t"}, "label": {"$concat": ["$name", "/", "$addr.city"]}}},
    {"$unset": ["t", "tags", "addr", "email"]},
    {"$sort": {"_id": 1}},
]))
assert out == [{"_id": 1, "name": "User 1", "team": 1, "nteams": 1, "label": "User 1/c1"},
               {"_id": 3, "name": "User 3", "team": 3, "nteams": 0, "label": "User 3/c0"}], out
db.drop_collection("users")
assert "users" not in db.list_collection_names()
db.users.insert_one({"email": "u5@example.org"})
db.users.insert_one({"email": "u5@example.org"})
print("indexes ok")
"#,
    );
    assert!(out.contains("indexes ok"), "{out}");
}
