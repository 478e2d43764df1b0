//! The S3 endpoint (corestore's `objectstorage`): one bucket per provisioned service, an
//! object a plain file on the bucket's dataset (the `objstore` crate), SigV4 and the S3
//! wire format by `s3s`.
//!
//! A request reads top to bottom: `s3s` parses and authenticates it (`auth.rs` hands it
//! the derived secret of the access key), `auth.rs` decides whether the caller may reach
//! the bucket, `service.rs` turns the DTO into a call on [`S3`] and `objstore`, and
//! `wire/s3.rs` maps a domain error to the S3 error code once.
//!
//! Tenancy: a service's keys reach its own bucket only; every other bucket, existing or
//! not, is `AccessDenied`, so a tenant cannot even learn which buckets exist. The node's
//! admin key (off unless `s3_admin_key`) reaches every bucket.

mod auth;
mod body;
mod conditions;
mod keys;
mod limits;
mod service;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use keys::{KeyPair, admin_keys, service_bucket, service_keys};

use crate::backing::Backing;
use crate::error::{Error, Result};
use crate::master_secret::MasterSecret;

/// Who signed a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    Service(String),
    Admin,
}

/// A bucket and the service that owns it.
pub struct BucketEntry {
    pub service: String,
    pub name: String,
    pub store: objstore::Bucket,
}

#[derive(Default)]
struct Index {
    /// Bucket name → bucket.
    buckets: HashMap<String, Arc<BucketEntry>>,
    /// Access key id → service.
    keys: HashMap<String, String>,
    /// Buckets taken out while their service's datasets are restored: bucket → service.
    /// Their owner (and the admin) are told to retry, not that they are gone.
    suspended: HashMap<String, String>,
}

/// Limits the S3 wire format sets or tankd adds.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_object_size: u64,
    pub min_part_size: u64,
    pub multipart_expiry: Duration,
    pub max_requests: usize,
    /// Requests one tenant may have in flight: half the node's, so one busy service
    /// cannot take every slot from the others.
    pub max_requests_per_tenant: usize,
}

#[derive(Clone)]
pub struct S3 {
    inner: Arc<Inner>,
}

struct Inner {
    backing: Backing,
    secret: MasterSecret,
    region: String,
    admin: Option<KeyPair>,
    /// What services are told to use (`S3_ENDPOINT`, `AWS_ENDPOINT_URL`).
    endpoint_url: String,
    limits: Limits,
    index: RwLock<Index>,
    /// In-flight request slots per tenant (one entry per service that has sent a signed
    /// request, plus the admin: bounded by what provisioning made).
    slots: std::sync::Mutex<HashMap<Tenant, Arc<tokio::sync::Semaphore>>>,
}

impl S3 {
    /// Opens every bucket the backing has (each sweeps the temp files a crash left) and
    /// indexes them with their services' keys.
    pub async fn start(config: &crate::config::Config, backing: Backing, secret: MasterSecret) -> Result<S3> {
        let port = config.s3_listen.first().map_or(9000, |a| a.port());
        let s3 = S3 {
            inner: Arc::new(Inner {
                backing,
                admin: config.s3_admin_key.then(|| admin_keys(&secret)),
                secret,
                region: config.s3_region.clone(),
                endpoint_url: format!("http://{}:{port}", config.public_host),
                limits: Limits {
                    max_object_size: config.s3_max_object_size,
                    min_part_size: 5 << 20,
                    multipart_expiry: config.s3_multipart_expiry,
                    max_requests: config.s3_max_requests,
                    max_requests_per_tenant: (config.s3_max_requests / 2).max(1),
                },
                index: RwLock::default(),
                slots: std::sync::Mutex::default(),
            }),
        };
        for found in s3.inner.backing.buckets().await? {
            let store = open_bucket(&found.path)?;
            s3.register(&found.service, &found.bucket, store);
        }
        let n = s3.inner.index.read().expect("index lock").buckets.len();
        tracing::info!(buckets = n, region = %s3.inner.region, "S3 endpoint ready");
        s3.spawn_expiry();
        Ok(s3)
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn register(&self, service: &str, bucket: &str, store: objstore::Bucket) {
        let mut index = self.inner.index.write().expect("index lock");
        let keys = service_keys(&self.inner.secret, service);
        index.keys.insert(keys.access_key, service.to_owned());
        let entry = BucketEntry { service: service.to_owned(), name: bucket.to_owned(), store };
        index.buckets.insert(bucket.to_owned(), Arc::new(entry));
    }

    /// Makes the service's bucket (idempotent) and returns the environment its
    /// containers get, under corestore's names.
    pub async fn provision(&self, service: &str) -> Result<BTreeMap<String, String>> {
        let bucket = service_bucket(service);
        let existing = self.inner.index.read().expect("index lock").buckets.get(&bucket).map(|b| b.service.clone());
        match existing {
            Some(owner) if owner != service => {
                return Err(Error::conflict(format!(
                    "bucket {bucket} belongs to service {owner}; service {service} cannot get it"
                ))
                .with_field("serviceId"));
            }
            Some(_) => {}
            None => {
                let path = self.inner.backing.ensure_bucket(service, &bucket).await?;
                let store = open_bucket(&path)?;
                self.register(service, &bucket, store);
                tracing::info!(service, bucket, "bucket provisioned");
            }
        }
        let keys = service_keys(&self.inner.secret, service);
        let mut env = BTreeMap::new();
        env.insert("S3_BUCKET".to_owned(), bucket);
        env.insert("S3_ENDPOINT".to_owned(), self.inner.endpoint_url.clone());
        env.insert("AWS_ENDPOINT_URL".to_owned(), self.inner.endpoint_url.clone());
        env.insert("AWS_ACCESS_KEY_ID".to_owned(), keys.access_key);
        env.insert("AWS_SECRET_ACCESS_KEY".to_owned(), keys.secret_key);
        env.insert("AWS_REGION".to_owned(), self.inner.region.clone());
        // Older SDKs and the v1 CLI read this one instead.
        env.insert("AWS_DEFAULT_REGION".to_owned(), self.inner.region.clone());
        Ok(env)
    }

    /// Forgets the service's buckets and keys: from here on its keys are unknown and
    /// its buckets unreachable. The caller then removes the storage.
    pub fn forget_service(&self, service: &str) -> Vec<String> {
        let mut index = self.inner.index.write().expect("index lock");
        index.keys.retain(|_, s| s != service);
        index.suspended.retain(|_, s| s != service);
        let gone: Vec<String> =
            index.buckets.values().filter(|b| b.service == service).map(|b| b.name.clone()).collect();
        for b in &gone {
            index.buckets.remove(b);
        }
        self.inner.slots.lock().expect("slots lock").remove(&Tenant::Service(service.to_owned()));
        gone
    }

    /// Takes the service's buckets out of service while its datasets are swapped under
    /// them: new requests are told to slow down, and this waits up to `wait` for the
    /// ones in flight to end (each holds its bucket's descriptors, which would keep the
    /// mount busy). When they do not, the buckets are back in service and the restore is
    /// refused as busy. [`S3::reopen`] ends the suspension.
    pub async fn suspend(&self, service: &str, wait: Duration) -> Result<()> {
        let taken: Vec<Arc<BucketEntry>> = {
            let mut index = self.inner.index.write().expect("index lock");
            let names: Vec<String> =
                index.buckets.values().filter(|b| b.service == service).map(|b| b.name.clone()).collect();
            let mut taken = Vec::new();
            for name in names {
                if let Some(b) = index.buckets.remove(&name) {
                    index.suspended.insert(name, service.to_owned());
                    taken.push(b);
                }
            }
            taken
        };
        let deadline = tokio::time::Instant::now() + wait;
        // Every request that found a bucket holds a clone of its entry until it ends.
        while taken.iter().any(|b| Arc::strong_count(b) > 1) {
            if tokio::time::Instant::now() >= deadline {
                let busy: Vec<String> =
                    taken.iter().filter(|b| Arc::strong_count(b) > 1).map(|b| b.name.clone()).collect();
                let mut index = self.inner.index.write().expect("index lock");
                for b in taken {
                    index.suspended.remove(&b.name);
                    index.buckets.insert(b.name.clone(), b);
                }
                return Err(Error::busy(format!(
                    "S3 requests on bucket(s) {} did not end within {} s; retry the restore when they have",
                    busy.join(", "),
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(service, buckets = taken.len(), "buckets suspended");
        Ok(())
    }

    /// Opens the service's buckets as the backing now has them (a restore may have
    /// brought back fewer or other ones) and ends their suspension.
    pub async fn reopen(&self, service: &str) -> Result<()> {
        let mut opened = Vec::new();
        let mut first_error = None;
        let found = self.inner.backing.service_buckets(service).await.unwrap_or_else(|e| {
            tracing::error!(service, error = %e, "could not list the buckets to reopen");
            first_error = Some(e);
            Vec::new()
        });
        for b in found {
            match open_bucket(&b.path) {
                Ok(store) => opened.push((b.bucket, store)),
                Err(e) => {
                    tracing::error!(service, bucket = %b.bucket, error = %e, "could not reopen a bucket");
                    first_error.get_or_insert(e);
                }
            }
        }
        {
            let mut index = self.inner.index.write().expect("index lock");
            index.suspended.retain(|_, s| s != service);
        }
        for (bucket, store) in opened {
            self.register(service, &bucket, store);
        }
        tracing::info!(service, "buckets reopened");
        first_error.map_or(Ok(()), Err)
    }

    /// The secret of an access key, if it is one tankd hands out.
    fn secret_key(&self, access_key: &str) -> Option<(Tenant, String)> {
        if let Some(admin) = &self.inner.admin
            && crate::crypto::constant_time_eq(admin.access_key.as_bytes(), access_key.as_bytes())
        {
            return Some((Tenant::Admin, admin.secret_key.clone()));
        }
        let service = self.inner.index.read().expect("index lock").keys.get(access_key).cloned()?;
        let secret = service_keys(&self.inner.secret, &service).secret_key;
        Some((Tenant::Service(service), secret))
    }

    fn tenant(&self, access_key: &str) -> Option<Tenant> {
        self.secret_key(access_key).map(|(t, _)| t)
    }

    /// A slot for one request of `tenant`, held until the request ends; `None` when the
    /// tenant has all of its slots in use.
    pub fn tenant_slot(&self, tenant: &Tenant) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let per = self.inner.limits.max_requests_per_tenant;
        let sem = self
            .inner
            .slots
            .lock()
            .expect("slots lock")
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per)))
            .clone();
        sem.try_acquire_owned().ok()
    }

    /// The bucket named, when `tenant` may reach it. Another tenant's bucket and a bucket
    /// that does not exist answer alike (`forbidden`), so nothing leaks; the admin is
    /// told `not_found`.
    pub fn bucket(&self, tenant: &Tenant, name: &str) -> Result<Arc<BucketEntry>> {
        let (found, suspended) = {
            let index = self.inner.index.read().expect("index lock");
            (index.buckets.get(name).cloned(), index.suspended.get(name).cloned())
        };
        if let Some(owner) = suspended
            && (matches!(tenant, Tenant::Admin) || matches!(tenant, Tenant::Service(s) if *s == owner))
        {
            return Err(Error::unavailable(format!("bucket {name} is being restored; retry shortly")));
        }
        match (tenant, found) {
            (Tenant::Admin, Some(b)) => Ok(b),
            (Tenant::Service(s), Some(b)) if &b.service == s => Ok(b),
            (Tenant::Admin, None) => {
                Err(Error::not_found(format!("bucket {name} does not exist")).with_field("bucket"))
            }
            (Tenant::Service(_), _) => {
                Err(Error::forbidden(format!("access to bucket {name} is denied")).with_field("bucket"))
            }
        }
    }

    /// The buckets `tenant` may see, by name.
    pub fn buckets_of(&self, tenant: &Tenant) -> Vec<Arc<BucketEntry>> {
        let index = self.inner.index.read().expect("index lock");
        let mut out: Vec<_> = index
            .buckets
            .values()
            .filter(|b| matches!(tenant, Tenant::Admin) || matches!(tenant, Tenant::Service(s) if *s == b.service))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes multipart uploads older than the expiry, every hour (and once at start).
    fn spawn_expiry(&self) {
        let s3 = self.clone();
        let every = s3.inner.limits.multipart_expiry.min(Duration::from_secs(3600)).max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                let buckets = s3.buckets_of(&Tenant::Admin);
                let expiry = s3.inner.limits.multipart_expiry;
                let removed = tokio::task::spawn_blocking(move || {
                    buckets.iter().map(|b| b.store.expire_uploads(expiry).unwrap_or(0)).sum::<usize>()
                })
                .await
                .unwrap_or(0);
                if removed > 0 {
                    tracing::info!(removed, "expired multipart uploads removed");
                }
                tokio::time::sleep(every).await;
            }
        });
    }
}

fn open_bucket(path: &std::path::Path) -> Result<objstore::Bucket> {
    objstore::Bucket::open(path)
        .map_err(|e| Error::internal(format!("opening bucket storage {}: {}", path.display(), e.message)))
}

/// The S3 listener's router: limits, then `s3s`.
pub fn routes(s3: S3) -> axum::Router {
    service::router(s3)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn on_dirs(max_requests: usize) -> (tempfile::TempDir, S3) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::testing::config(dir.path().to_owned(), "unused-token-0123456789abcdef");
        config.zfs = false;
        config.s3_max_requests = max_requests;
        // No ZFS: the directory backing never calls it.
        let zfs = zfs_sys_shim::Zfs::new(zfs_sys_shim::Roots::new(vec![config.dataset_root.clone()]));
        let backing = Backing::new(&config, &zfs);
        let s3 = S3::start(&config, backing, MasterSecret::from_bytes(&[3; 32])).await.unwrap();
        (dir, s3)
    }

    #[tokio::test]
    async fn one_tenant_cannot_take_every_slot() {
        let (_dir, s3) = on_dirs(4).await;
        s3.provision("svc-a").await.unwrap();
        s3.provision("svc-b").await.unwrap();
        let (a, b) = (Tenant::Service("svc-a".into()), Tenant::Service("svc-b".into()));
        let held: Vec<_> = (0..2).map(|_| s3.tenant_slot(&a).expect("a slot")).collect();
        assert!(s3.tenant_slot(&a).is_none(), "half of the node's 4 slots, then SlowDown");
        assert!(s3.tenant_slot(&b).is_some(), "the other tenant still gets its own");
        drop(held);
        assert!(s3.tenant_slot(&a).is_some(), "slots come back when requests end");
    }

    #[tokio::test]
    async fn provisioning_is_stable_and_deprovisioning_forgets_keys_and_buckets() {
        let (dir, s3) = on_dirs(8).await;
        let env = s3.provision("svc-a").await.unwrap();
        assert_eq!(env, s3.provision("svc-a").await.unwrap(), "the same values again");
        let key = &env["AWS_ACCESS_KEY_ID"];
        assert_eq!(s3.tenant(key), Some(Tenant::Service("svc-a".into())));
        assert!(dir.path().join("s3/svc-a/svc-a/objects").is_dir());
        let a = Tenant::Service("svc-a".into());
        assert!(s3.bucket(&a, "svc-a").is_ok());
        let other = s3.bucket(&Tenant::Service("svc-b".into()), "svc-a").err().expect("refused");
        assert_eq!(other.kind, crate::error::Kind::Forbidden, "another tenant's bucket");
        let missing = s3.bucket(&a, "nope").err().expect("refused");
        assert_eq!(missing.kind, crate::error::Kind::Forbidden, "a missing bucket answers alike");
        assert_eq!(s3.forget_service("svc-a"), vec!["svc-a".to_owned()]);
        assert_eq!(s3.tenant(key), None, "the keys are refused from then on");
        assert!(s3.bucket(&a, "svc-a").is_err());
    }

    #[tokio::test]
    async fn a_suspended_bucket_waits_for_requests_and_tells_its_owner_to_retry() {
        let (_dir, s3) = on_dirs(8).await;
        s3.provision("svc-a").await.unwrap();
        let (a, b) = (Tenant::Service("svc-a".into()), Tenant::Service("svc-b".into()));
        let in_flight = s3.bucket(&a, "svc-a").unwrap();
        let refused = s3.suspend("svc-a", Duration::from_millis(100)).await.expect_err("a request holds it");
        assert_eq!(refused.kind, crate::error::Kind::Busy, "{refused:?}");
        assert!(refused.message.contains("svc-a"), "names the bucket: {}", refused.message);
        assert!(s3.bucket(&a, "svc-a").is_ok(), "back in service after the refusal");
        drop(in_flight);
        s3.suspend("svc-a", Duration::from_secs(5)).await.unwrap();
        assert_eq!(s3.bucket(&a, "svc-a").err().unwrap().kind, crate::error::Kind::Unavailable, "the owner retries");
        assert_eq!(s3.bucket(&Tenant::Admin, "svc-a").err().unwrap().kind, crate::error::Kind::Unavailable);
        assert_eq!(s3.bucket(&b, "svc-a").err().unwrap().kind, crate::error::Kind::Forbidden, "others learn nothing");
        s3.reopen("svc-a").await.unwrap();
        assert!(s3.bucket(&a, "svc-a").is_ok(), "reopened");
    }
}
