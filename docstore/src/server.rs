//! The listener: one task per connection, at most `max_connections` at once, and what
//! every connection shares (the tenants' SCRAM keys, computed once per process).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::crud::Cursors;
use crate::error::CommandError;
use crate::scram::Credentials;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Config {
    /// Connections served at once; past it a new one is closed at once.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// PBKDF2 iterations of the SCRAM keys (MongoDB's SCRAM-SHA-256 default is 15000).
    pub scram_iterations: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_connections: 1024, idle_timeout: Duration::from_secs(30 * 60), scram_iterations: 15_000 }
    }
}

/// A database user: the service it is, the one database it reaches, its password, and
/// the SQLite file that database lives in (on the service's own storage).
#[derive(Clone)]
pub struct Tenant {
    pub user: String,
    pub db: String,
    pub password: String,
    pub path: std::path::PathBuf,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("user", &self.user)
            .field("db", &self.db)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Who the users are: the embedding program's answer, asked at each authentication.
pub trait Resolver: Send + Sync + 'static {
    fn tenant(&self, user: &str) -> Option<Tenant>;
}

#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub resolver: Arc<dyn Resolver>,
    next_connection: AtomicI32,
    connections: Arc<tokio::sync::Semaphore>,
    /// Per-process random key the users' salts are derived from: a user's salt is stable
    /// while the process runs (drivers cache keys by salt) and an unknown user gets one
    /// as well, so a probe cannot tell users apart by it.
    salt_key: [u8; 32],
    /// user → (the password the keys were made from, the keys). Bounded: cleared when full.
    keys: Mutex<HashMap<String, (String, Credentials)>>,
    /// Open databases by user, opened on first use.
    stores: Mutex<HashMap<String, Arc<Store>>>,
    /// Users whose database is out of service (being restored or removed).
    suspended: Mutex<std::collections::HashSet<String>>,
    pub cursors: Arc<Cursors>,
}

/// How many users' keys are kept; a node has far fewer services than this.
const KEY_CACHE: usize = 4096;

impl Server {
    /// Takes the user's database out of service, as before its storage is restored or
    /// removed: commands on it answer `ShutdownInProgress` (drivers retry), its cursors
    /// go, and this waits up to `wait` for the commands running on it to end so its file
    /// is closed. False when they did not end in time (it stays suspended: resume it).
    pub async fn suspend_tenant(&self, user: &str, wait: Duration) -> bool {
        self.inner.suspended.lock().expect("suspended lock").insert(user.to_owned());
        self.inner.cursors.forget_user(user);
        let Some(store) = self.inner.stores.lock().expect("stores lock").remove(user) else { return true };
        let deadline = tokio::time::Instant::now() + wait;
        // Each running command holds a clone of the store until it ends.
        while Arc::strong_count(&store) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Ends a suspension: the next command opens the database file again.
    pub fn resume_tenant(&self, user: &str) {
        self.inner.suspended.lock().expect("suspended lock").remove(user);
    }

    pub fn new(config: Config, resolver: Arc<dyn Resolver>) -> Server {
        let mut salt_key = [0u8; 32];
        getrandom::fill(&mut salt_key).expect("the OS has randomness");
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
        Server {
            inner: Arc::new(Inner {
                config,
                resolver,
                next_connection: AtomicI32::new(1),
                connections,
                salt_key,
                keys: Mutex::default(),
                stores: Mutex::default(),
                suspended: Mutex::default(),
                cursors: Arc::default(),
            }),
        }
    }

    /// Serves `listener` until the task is dropped.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let Ok(permit) = self.inner.connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max = self.inner.config.max_connections, "database connection refused: too many");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            tokio::spawn(async move {
                server.serve_stream(stream).await;
                drop(permit);
            });
        }
    }

    /// Serves one connection to its end.
    pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) {
        let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = crate::conn::Connection::new(self.clone(), id).run(stream).await {
            tracing::debug!(connection = id, error = %e, "database connection ended");
        }
    }
}

impl Inner {
    /// The tenant's database, opened (and made) on first use.
    pub fn store(&self, tenant: &Tenant) -> Result<Arc<Store>, CommandError> {
        if self.suspended.lock().expect("suspended lock").contains(&tenant.user) {
            return Err(CommandError::new(
                crate::error::Code::ShutdownInProgress,
                format!("database {} is being restored; retry", tenant.db),
            ));
        }
        let mut stores = self.stores.lock().expect("stores lock");
        if let Some(s) = stores.get(&tenant.user) {
            return Ok(s.clone());
        }
        let store = Arc::new(Store::open(&tenant.path)?);
        stores.insert(tenant.user.clone(), store.clone());
        Ok(store)
    }

    pub fn salt(&self, user: &str) -> Vec<u8> {
        use hmac::{Hmac, KeyInit, Mac};
        let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.salt_key).expect("any key length");
        m.update(user.as_bytes());
        m.finalize().into_bytes()[..16].to_vec()
    }

    /// The SCRAM keys of a tenant, from the cache or derived now (PBKDF2 is the costly part).
    pub fn credentials(&self, tenant: &Tenant) -> Credentials {
        if let Some((pw, c)) = self.keys.lock().expect("keys lock").get(&tenant.user)
            && *pw == tenant.password
        {
            return c.clone();
        }
        let c = Credentials::derive(&tenant.password, self.salt(&tenant.user), self.config.scram_iterations);
        let mut keys = self.keys.lock().expect("keys lock");
        if keys.len() >= KEY_CACHE {
            keys.clear();
        }
        keys.insert(tenant.user.clone(), (tenant.password.clone(), c.clone()));
        c
    }
}
