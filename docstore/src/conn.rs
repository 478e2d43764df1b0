//! One connection: read a frame, answer it, repeat. The gate is here: before
//! authentication only the handshake, `ping`, `buildInfo` and SASL run; after it, a
//! command reaches the tenant's own database only.

use bson::{Bson, Document, doc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::{self, AuthState};
use crate::error::{Code, CommandError, CommandResult};
use crate::handshake;
use crate::server::Server;
use crate::wire::{self, HEADER_LEN, Header, MORE_TO_COME, OP_MSG, OP_QUERY, WireError};

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("idle for longer than the timeout")]
    Idle,
}

pub struct Connection {
    server: Server,
    id: i32,
    auth: AuthState,
    next_request: i32,
}

/// Commands a client may send on `admin` once authenticated as a tenant of another
/// database: the ones drivers and shells send there on connect.
const ADMIN_OK: &[&str] = &["listDatabases", "getParameter", "getCmdLineOpts", "hostInfo", "connectionStatus"];

impl Connection {
    pub fn new(server: Server, id: i32) -> Connection {
        Connection { server, id, auth: AuthState::None, next_request: 1 }
    }

    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, mut stream: S) -> Result<(), ConnError> {
        let idle = self.server.inner.config.idle_timeout;
        loop {
            let mut head = [0u8; HEADER_LEN];
            match tokio::time::timeout(idle, stream.read_exact(&mut head)).await {
                Err(_) => return Err(ConnError::Idle),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            };
            let header = Header::parse(&head);
            let body_len = match header.body_len() {
                Ok(n) => n,
                Err(e) => {
                    // The stream cannot be followed past a bad length: say why, then close.
                    let reply = CommandError::new(Code::BsonObjectTooLarge, e.to_string()).reply();
                    let _ = stream.write_all(&wire::encode_msg(self.request_id(), header.request_id, &reply)).await;
                    return Err(e.into());
                }
            };
            let mut message = vec![0u8; HEADER_LEN + body_len];
            message[..HEADER_LEN].copy_from_slice(&head);
            tokio::time::timeout(idle, stream.read_exact(&mut message[HEADER_LEN..]))
                .await
                .map_err(|_| ConnError::Idle)??;
            let reply = match header.op_code {
                OP_MSG => {
                    let msg = match wire::parse_msg(&message) {
                        Ok(m) => m,
                        Err(e @ WireError::Malformed(_)) => {
                            let reply = CommandError::new(Code::InvalidBson, e.to_string()).reply();
                            stream.write_all(&wire::encode_msg(self.request_id(), header.request_id, &reply)).await?;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let answer = self.command(msg.command).await.unwrap_or_else(|e| e.reply());
                    if msg.flags & MORE_TO_COME != 0 {
                        continue;
                    }
                    wire::encode_msg(self.request_id(), header.request_id, &answer)
                }
                OP_QUERY => {
                    let answer = match wire::parse_query(&message) {
                        Ok(q) => self.legacy(q).unwrap_or_else(|e| e.reply()),
                        Err(e) => CommandError::new(Code::InvalidBson, e.to_string()).reply(),
                    };
                    wire::encode_reply(self.request_id(), header.request_id, &answer)
                }
                other => return Err(WireError::OpCode(other).into()),
            };
            stream.write_all(&reply).await?;
        }
    }

    fn request_id(&mut self) -> i32 {
        self.next_request = self.next_request.wrapping_add(1);
        self.next_request
    }

    /// An OP_QUERY: only the handshake, on `<db>.$cmd` (what mongosh sends first).
    fn legacy(&mut self, q: wire::Query) -> CommandResult {
        let name = q.query.keys().next().cloned().unwrap_or_default();
        match q.namespace.strip_suffix(".$cmd") {
            Some(_) if handshake::is_hello(&name) => Ok(self.hello(&name, &q.query)),
            _ => Err(CommandError::new(
                Code::UnsupportedOpQueryCommand,
                format!("Unsupported OP_QUERY command: {name}. The client driver may require an upgrade."),
            )),
        }
    }

    fn hello(&mut self, name: &str, cmd: &Document) -> Document {
        let mut reply = handshake::hello(name, self.id);
        if let Ok(user) = cmd.get_str("saslSupportedMechs")
            && let Some((db, user)) = user.split_once('.')
            && self.server.inner.resolver.tenant(user).is_some_and(|t| t.db == db)
        {
            reply.insert("saslSupportedMechs", vec![crate::scram::MECHANISM]);
        }
        if let Some(spec) = auth::speculative(&self.server.inner, &mut self.auth, cmd) {
            reply.insert("speculativeAuthenticate", spec);
        }
        reply
    }

    async fn command(&mut self, cmd: Document) -> CommandResult {
        let name = cmd.keys().next().cloned().ok_or_else(|| CommandError::new(Code::FailedToParse, "empty command"))?;
        let db = cmd
            .get_str("$db")
            .map_err(|_| CommandError::new(Code::FailedToParse, format!("{name}: the $db field is missing")))?
            .to_owned();
        if cmd.contains_key("txnNumber") || cmd.contains_key("startTransaction") {
            return Err(CommandError::new(
                Code::IllegalOperation,
                "Transaction numbers are only allowed on a replica set member or mongos",
            ));
        }
        if handshake::is_hello(&name) {
            return Ok(self.hello(&name, &cmd));
        }
        if let Some(reply) = handshake::open_command(&name) {
            return Ok(reply);
        }
        match name.as_str() {
            "saslStart" => return auth::sasl_start(&self.server.inner, &mut self.auth, &cmd, &db),
            "saslContinue" => return auth::sasl_continue(&mut self.auth, &cmd),
            _ => {}
        }
        let Some(tenant) = self.auth.tenant() else {
            return Err(CommandError::new(Code::Unauthorized, format!("Command {name} requires authentication")));
        };
        if db != tenant.db && !(db == "admin" && ADMIN_OK.contains(&name.as_str())) {
            return Err(CommandError::new(
                Code::Unauthorized,
                format!("not authorized on {db} to execute command {{ {name}: ... }}"),
            ));
        }
        let tenant = tenant.clone();
        let store = self.server.inner.store(&tenant)?;
        let ctx = crate::crud::Ctx {
            store,
            db: tenant.db.clone(),
            user: tenant.user.clone(),
            cursors: self.server.inner.cursors.clone(),
        };
        // SQLite blocks: off the async threads.
        let (name2, cmd2) = (name.clone(), cmd.clone());
        let ran = tokio::task::spawn_blocking(move || crate::crud::run(&ctx, &name2, &cmd2))
            .await
            .map_err(|e| CommandError::new(Code::InternalError, format!("{name}: {e}")))?;
        if let Some(result) = ran {
            return result;
        }
        match name.as_str() {
            "connectionStatus" => Ok(doc! {
                "authInfo": {"authenticatedUsers": [{"user": &tenant.user, "db": &tenant.db}], "authenticatedUserRoles": []},
                "ok": 1.0,
            }),
            "getLastError" | "getlasterror" => Ok(doc! {"n": 0, "err": Bson::Null, "ok": 1.0}),
            "hostInfo" => Ok(doc! {
                "system": {
                    "currentTime": bson::DateTime::now(),
                    "numCores": std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
                    "cpuArch": std::env::consts::ARCH,
                },
                "os": {"type": std::env::consts::OS},
                "extra": {},
                "ok": 1.0,
            }),
            // A tenant sees its own database only.
            "listDatabases" => {
                let store = self.server.inner.store(&tenant)?;
                let empty = tokio::task::spawn_blocking(move || store.collections())
                    .await
                    .map_err(|e| CommandError::new(Code::InternalError, format!("{name}: {e}")))??
                    .is_empty();
                let size = std::fs::metadata(&tenant.path).map_or(0, |m| m.len()) as i64;
                let mut db = doc! {"name": &tenant.db};
                if !cmd.get_bool("nameOnly").unwrap_or(false) {
                    db.insert("sizeOnDisk", size);
                    db.insert("empty", empty);
                }
                Ok(doc! {"databases": [db], "totalSize": size, "ok": 1.0})
            }
            // What mongosh asks at start-up; a driver's defaults.
            "getParameter" if cmd.contains_key("featureCompatibilityVersion") => {
                Ok(doc! {"featureCompatibilityVersion": {"version": "7.0"}, "ok": 1.0})
            }
            "getCmdLineOpts" => Ok(doc! {"argv": [], "parsed": {}, "ok": 1.0}),
            _ => Err(CommandError::new(Code::CommandNotFound, format!("no such command: '{name}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bson::spec::BinarySubtype;
    use bson::{Binary, Bson};
    use tokio::io::DuplexStream;

    use super::*;
    use crate::server::{Config, Resolver, Tenant};
    use crate::wire::testing::client_msg;

    struct One(std::path::PathBuf);
    impl Resolver for One {
        fn tenant(&self, user: &str) -> Option<Tenant> {
            (user == "svc-a").then(|| Tenant {
                user: "svc-a".into(),
                db: "svc-a".into(),
                password: "pw-a".into(),
                path: self.0.join("svc-a.sqlite"),
            })
        }
    }

    /// A client connection to a fresh server whose one tenant's database is in `dir`.
    fn connect_in(dir: &std::path::Path) -> DuplexStream {
        let config = Config { scram_iterations: 4096, ..Config::default() };
        let server = Server::new(config, Arc::new(One(dir.to_owned())));
        let (client, end) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move { server.serve_stream(end).await });
        client
    }

    async fn connect() -> (DuplexStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (connect_in(dir.path()), dir)
    }

    async fn read_reply(c: &mut DuplexStream) -> (Header, Vec<u8>) {
        let mut head = [0u8; HEADER_LEN];
        c.read_exact(&mut head).await.unwrap();
        let h = Header::parse(&head);
        let mut m = head.to_vec();
        m.resize(h.length as usize, 0);
        c.read_exact(&mut m[HEADER_LEN..]).await.unwrap();
        (h, m)
    }

    async fn run(c: &mut DuplexStream, cmd: Document) -> Document {
        c.write_all(&client_msg(0, &cmd, &[])).await.unwrap();
        let (h, m) = read_reply(c).await;
        assert_eq!((h.op_code, h.response_to), (OP_MSG, 7));
        wire::parse_msg(&m).unwrap().command
    }

    fn bin(b: &[u8]) -> Bson {
        Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: b.to_vec() })
    }

    fn payload(r: &Document) -> String {
        String::from_utf8(r.get_binary_generic("payload").unwrap().clone()).unwrap()
    }

    /// saslStart and saslContinue as pymongo runs them; the final reply.
    async fn login(c: &mut DuplexStream, user: &str, password: &str, db: &str) -> Document {
        let first_bare = format!("n={user},r=clientnonce");
        let start = doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": bin(format!("n,,{first_bare}").as_bytes()),
        "autoAuthorize": 1, "options": {"skipEmptyExchange": true}, "$db": db};
        let r = run(c, start).await;
        assert_eq!(r.get_f64("ok").unwrap(), 1.0, "{r}");
        let (last, server_sig) = crate::scram::client_final(password, &first_bare, &payload(&r));
        let r2 =
            run(c, doc! {"saslContinue": 1, "conversationId": 1, "payload": bin(last.as_bytes()), "$db": db}).await;
        if r2.get_f64("ok").unwrap() == 1.0 {
            assert_eq!(payload(&r2), server_sig, "the server proves it knows the key");
            assert!(r2.get_bool("done").unwrap());
        }
        r2
    }

    #[tokio::test]
    async fn mongosh_hello_over_op_query_then_op_msg() {
        let (mut c, _dir) = connect().await;
        let mut b = 0i32.to_le_bytes().to_vec();
        b.extend(b"admin.$cmd\0");
        b.extend(0i32.to_le_bytes());
        b.extend((-1i32).to_le_bytes());
        b.extend(doc! {"isMaster": 1, "helloOk": true, "saslSupportedMechs": "svc-a.svc-a"}.to_vec().unwrap());
        let mut m = Vec::new();
        for v in [(16 + b.len()) as i32, 3, 0, OP_QUERY] {
            m.extend(v.to_le_bytes());
        }
        m.extend(b);
        c.write_all(&m).await.unwrap();
        let (h, r) = read_reply(&mut c).await;
        assert_eq!((h.op_code, h.response_to), (wire::OP_REPLY, 3));
        let hello = Document::from_reader(&r[36..]).unwrap();
        assert_eq!(hello.get_bool("ismaster").ok(), Some(true));
        assert_eq!(hello.get_i32("maxWireVersion").ok(), Some(21));
        assert!(hello.get_i32("logicalSessionTimeoutMinutes").is_ok(), "sessions on");
        assert!(!hello.contains_key("setName") && !hello.contains_key("topologyVersion"), "a polled standalone");
        assert_eq!(hello.get_array("saslSupportedMechs").unwrap(), &vec![Bson::from("SCRAM-SHA-256")]);
        let r = run(&mut c, doc! {"hello": 1, "$db": "admin"}).await;
        assert_eq!(r.get_bool("isWritablePrimary").ok(), Some(true));
    }

    #[tokio::test]
    async fn only_the_handshake_runs_before_authentication() {
        let (mut c, _dir) = connect().await;
        assert_eq!(run(&mut c, doc! {"ping": 1, "$db": "admin"}).await.get_f64("ok").ok(), Some(1.0));
        assert_eq!(run(&mut c, doc! {"buildInfo": 1, "$db": "admin"}).await.get_str("version").ok(), Some("7.0.0"));
        let r = run(&mut c, doc! {"find": "c", "$db": "svc-a"}).await;
        assert_eq!((r.get_i32("code").ok(), r.get_str("codeName").ok()), (Some(13), Some("Unauthorized")), "{r}");
        let r = run(&mut c, doc! {"ping": 1}).await;
        assert_eq!(r.get_i32("code").ok(), Some(9), "no $db: {r}");
        let r = run(&mut c, doc! {"insert": "c", "txnNumber": 1_i64, "$db": "svc-a"}).await;
        assert_eq!(r.get_i32("code").ok(), Some(20), "no transactions on a standalone: {r}");
    }

    #[tokio::test]
    async fn scram_sha_256_reaches_the_tenants_own_database_only() {
        let (mut c, _dir) = connect().await;
        let r = login(&mut c, "svc-a", "wrong", "svc-a").await;
        assert_eq!(
            (r.get_i32("code").ok(), r.get_str("codeName").ok()),
            (Some(18), Some("AuthenticationFailed")),
            "{r}"
        );
        let r = login(&mut c, "svc-b", "pw-a", "svc-b").await;
        assert_eq!(r.get_i32("code").ok(), Some(18), "an unknown user fails alike: {r}");
        let r = login(&mut c, "svc-a", "pw-a", "other").await;
        assert_eq!(r.get_i32("code").ok(), Some(18), "only on its own database (authSource): {r}");
        let r = login(&mut c, "svc-a", "pw-a", "svc-a").await;
        assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
        let r = run(&mut c, doc! {"find": "c", "$db": "svc-b"}).await;
        assert_eq!(r.get_i32("code").ok(), Some(13), "another tenant's database: {r}");
        let r = run(&mut c, doc! {"connectionStatus": 1, "$db": "admin"}).await;
        assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r}");
        let r = run(&mut c, doc! {"noSuchThing": 1, "$db": "svc-a"}).await;
        assert_eq!((r.get_i32("code").ok(), r.get_str("codeName").ok()), (Some(59), Some("CommandNotFound")), "{r}");
        let r = run(&mut c, doc! {"saslStart": 1, "mechanism": "PLAIN", "payload": bin(b"x"), "$db": "svc-a"}).await;
        assert_eq!(r.get_i32("code").ok(), Some(334), "{r}");
    }

    #[tokio::test]
    async fn speculative_authentication_in_hello_saves_the_round_trip() {
        let (mut c, _dir) = connect().await;
        let first_bare = "n=svc-a,r=spec";
        let hello = doc! {"hello": 1, "$db": "admin", "speculativeAuthenticate":
        {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": bin(format!("n,,{first_bare}").as_bytes()), "db": "svc-a",
         "options": {"skipEmptyExchange": true}}};
        let r = run(&mut c, hello).await;
        let spec = r.get_document("speculativeAuthenticate").unwrap();
        let (last, _) = crate::scram::client_final("pw-a", first_bare, &payload(spec));
        let r =
            run(&mut c, doc! {"saslContinue": 1, "conversationId": 1, "payload": bin(last.as_bytes()), "$db": "svc-a"})
                .await;
        assert_eq!(r.get_bool("done").ok(), Some(true), "{r}");
        let r = run(&mut c, doc! {"count": "c", "$db": "svc-a"}).await;
        assert_eq!(r.get_i32("n").ok(), Some(0), "authenticated: {r}");
    }

    #[tokio::test]
    async fn a_frame_past_the_limit_is_answered_then_closed() {
        let (mut c, _dir) = connect().await;
        let mut m = Vec::new();
        for v in [48_000_001_i32, 9, 0, OP_MSG] {
            m.extend(v.to_le_bytes());
        }
        c.write_all(&m).await.unwrap();
        let (_, r) = read_reply(&mut c).await;
        let r = wire::parse_msg(&r).unwrap().command;
        assert_eq!(r.get_i32("code").ok(), Some(10334), "{r}");
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0, "closed");
    }
}
