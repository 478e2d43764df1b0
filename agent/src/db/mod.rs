//! The database endpoint (corestore's `database`): a MongoDB-wire listener served by the
//! `docstore` crate, one SQLite database per provisioned service on the service's own
//! storage (`<root>/services/<svc>/db`, or a directory when `zfs = false`).
//!
//! A request reads: `docstore` parses the wire format and runs SCRAM-SHA-256 against the
//! tenant this module resolves (the service id is the user, its password derived from
//! the master secret), then runs the command on that tenant's file. A service reaches
//! its own database only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::backing::Backing;
use crate::error::{Error, Result};
use crate::master_secret::MasterSecret;

const PASSWORD_LABEL: &str = "tankd/v1/db-password";

/// The file a service's database lives in, under its database directory.
const FILE: &str = "db.sqlite";

/// A service's database password: 64 hex digits, derived, never stored.
pub fn password(secret: &MasterSecret, service: &str) -> String {
    secret.derive(PASSWORD_LABEL, service)
}

/// The database name a service is given: its id when MongoDB accepts it as one (no `.`,
/// under 64 bytes), else the id with `.` made `_`, cut, plus 8 hex digits of its SHA-256
/// so two ids that clean up alike still differ.
pub fn db_name(service: &str) -> String {
    if !service.contains('.') && service.len() < 64 {
        return service.to_owned();
    }
    let mut clean: String = service.chars().map(|c| if c == '.' { '_' } else { c }).collect();
    clean.truncate(54);
    format!("{clean}-{}", hex::encode(&Sha256::digest(service.as_bytes())[..4]))
}

/// Who may log in: the services provisioned with a database.
#[derive(Clone, Default)]
struct Tenants(Arc<RwLock<HashMap<String, docstore::Tenant>>>);

impl docstore::Resolver for Tenants {
    fn tenant(&self, user: &str) -> Option<docstore::Tenant> {
        self.0.read().expect("tenants lock").get(user).cloned()
    }
}

#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    backing: Backing,
    secret: MasterSecret,
    /// `host:port` services are told to connect to.
    endpoint: String,
    tenants: Tenants,
    server: docstore::Server,
}

impl Db {
    /// Registers every service database the backing has.
    pub async fn start(config: &crate::config::Config, backing: Backing, secret: MasterSecret) -> Result<Db> {
        let port = config.db_listen.first().map_or(27017, |a| a.port());
        let tenants = Tenants::default();
        let server = docstore::Server::new(docstore::Config::default(), Arc::new(tenants.clone()));
        let db = Db {
            inner: Arc::new(Inner {
                backing,
                secret,
                endpoint: format!("{}:{port}", config.public_host),
                tenants,
                server,
            }),
        };
        for (service, dir) in db.inner.backing.databases().await? {
            db.register(&service, &dir);
        }
        let n = db.inner.tenants.0.read().expect("tenants lock").len();
        tracing::info!(databases = n, "database endpoint ready");
        Ok(db)
    }

    fn register(&self, service: &str, dir: &std::path::Path) {
        let tenant = docstore::Tenant {
            user: service.to_owned(),
            db: db_name(service),
            password: password(&self.inner.secret, service),
            path: dir.join(FILE),
        };
        self.inner.tenants.0.write().expect("tenants lock").insert(service.to_owned(), tenant);
    }

    /// Makes the service's database storage (idempotent) and returns `MONGODB_URI`.
    pub async fn provision(&self, service: &str) -> Result<BTreeMap<String, String>> {
        let dir = self.inner.backing.ensure_database(service).await?;
        self.register(service, &dir);
        let db = db_name(service);
        let uri = format!(
            "mongodb://{service}:{}@{}/{db}?authSource={db}&authMechanism=SCRAM-SHA-256&directConnection=true",
            password(&self.inner.secret, service),
            self.inner.endpoint,
        );
        Ok(BTreeMap::from([("MONGODB_URI".to_owned(), uri), ("MONGODB_DATABASE".to_owned(), db)]))
    }

    /// Takes the service's database out of service while its storage is swapped by a
    /// restore: commands on it are told to retry, and this waits up to `wait` for the
    /// running ones so its file is closed; otherwise the restore is refused as busy.
    /// [`Db::resume`] ends it.
    pub async fn suspend(&self, service: &str, wait: std::time::Duration) -> Result<()> {
        if self.inner.server.suspend_tenant(service, wait).await {
            return Ok(());
        }
        self.resume(service);
        Err(Error::busy(format!(
            "database commands of service {service} did not end within {} s; retry the restore when they have",
            wait.as_secs()
        )))
    }

    pub fn resume(&self, service: &str) {
        self.inner.server.resume_tenant(service);
    }

    /// Forgets the service: its password stops working, its file is closed (waiting up
    /// to 30 s for running commands). The caller then removes the storage.
    pub async fn forget_service(&self, service: &str) {
        self.inner.tenants.0.write().expect("tenants lock").remove(service);
        self.inner.server.suspend_tenant(service, std::time::Duration::from_secs(30)).await;
        self.resume(service);
    }

    pub fn server(&self) -> docstore::Server {
        self.inner.server.clone()
    }
}

/// Serves the MongoDB wire on `listener` until `stop` is cancelled.
pub async fn serve(db: Db, listener: tokio::net::TcpListener, stop: tokio_util::sync::CancellationToken) {
    let server = db.server();
    tokio::select! {
        r = server.serve(listener) => {
            if let Err(e) = r {
                tracing::error!(error = %e, "the database listener stopped");
            }
        }
        () = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_mongodb_and_passwords_are_derived() {
        assert_eq!(db_name("svc-123"), "svc-123");
        let dotted = db_name("team.api.v2");
        assert!(dotted.starts_with("team_api_v2-") && !dotted.contains('.'), "{dotted}");
        assert_ne!(db_name("a.b"), db_name("a_b"), "ids that clean up alike differ");
        assert!(db_name(&"x".repeat(128)).len() < 64);
        let s = MasterSecret::from_bytes(&[5; 32]);
        assert_eq!(password(&s, "svc-a"), password(&s, "svc-a"));
        assert_ne!(password(&s, "svc-a"), password(&s, "svc-b"));
        assert_eq!(password(&s, "svc-a").len(), 64);
    }
}
