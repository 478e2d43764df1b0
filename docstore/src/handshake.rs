//! The commands a driver sends before and around authentication: `hello` (and its legacy
//! spellings), `ping`, `buildInfo` and a few it asks on connect. What `hello` says
//! decides how drivers treat the server: a standalone (no `setName`, so no
//! transactions or retryable-write numbers), with sessions (`logicalSessionTimeoutMinutes`
//! present), polled rather than streamed (no `topologyVersion`).

use bson::{Bson, DateTime, Document, doc};

use crate::wire::{MAX_BSON_SIZE, MAX_MESSAGE_SIZE};

/// Wire versions this server speaks: 21 is MongoDB 7.0's, inside what pymongo 4 (9–29)
/// and the Node driver accept.
pub const MIN_WIRE_VERSION: i32 = 0;
pub const MAX_WIRE_VERSION: i32 = 21;
pub const VERSION: &str = "7.0.0";

/// Whether `name` is one of `hello`'s spellings.
pub fn is_hello(name: &str) -> bool {
    matches!(name, "hello" | "isMaster" | "ismaster")
}

/// The answer to `hello`/`isMaster`, before any `saslSupportedMechs` or
/// `speculativeAuthenticate` part.
pub fn hello(name: &str, connection_id: i32) -> Document {
    let mut r = Document::new();
    if name == "hello" {
        r.insert("isWritablePrimary", true);
    } else {
        r.insert("ismaster", true);
    }
    r.insert("helloOk", true);
    r.insert("maxBsonObjectSize", MAX_BSON_SIZE as i32);
    r.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE as i32);
    r.insert("maxWriteBatchSize", 100_000);
    r.insert("localTime", DateTime::now());
    r.insert("logicalSessionTimeoutMinutes", 30);
    r.insert("connectionId", connection_id);
    r.insert("minWireVersion", MIN_WIRE_VERSION);
    r.insert("maxWireVersion", MAX_WIRE_VERSION);
    r.insert("readOnly", false);
    r.insert("ok", 1.0);
    r
}

pub fn build_info() -> Document {
    doc! {
        "version": VERSION,
        "versionArray": [7, 0, 0, 0],
        "gitVersion": "tankd-docstore",
        "modules": Bson::Array(vec![]),
        "sysInfo": "deprecated",
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": MAX_BSON_SIZE as i32,
        "storageEngines": ["sqlite"],
        "ok": 1.0,
    }
}

/// Commands that answer the same to anyone, authenticated or not, on any database.
pub fn open_command(name: &str) -> Option<Document> {
    match name {
        "ping" => Some(doc! {"ok": 1.0}),
        "buildInfo" | "buildinfo" => Some(build_info()),
        // Sessions are accepted and have nothing to end: every write is durable alone.
        "endSessions" | "killAllSessions" => Some(doc! {"ok": 1.0}),
        _ => None,
    }
}
