//! Archives: snapshots that leave the node. A `zfs send` stream is cut into objects
//! (`pack`), encrypted to the node's age identity when a passphrase is configured
//! (`keys`), stored in the local repository (`repo`) under a manifest written last
//! (`manifest`), replicated to S3 targets (`target`, `replicate`) and brought back,
//! every object checked by size and SHA-256 before it is used (`restore`).
//!
//! This module knows streams, not datasets: the ZFS glue (which snapshot, `zfs send`,
//! `zfs receive -s`) is in `zfs_glue`, so the host tier tests everything else on
//! stream files.

pub mod keys;
pub mod manifest;
pub mod pack;
mod replicate;
pub mod repo;
mod restore;
pub mod routes;
pub mod target;
mod zfs_glue;

pub use zfs_glue::Base;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use keys::Keys;
pub use manifest::Manifest;
pub use replicate::Replicated;
pub use repo::Repo;
pub use restore::RestorePlan;
pub use target::{Target, TargetConfig};

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Archives {
    pub repo: Repo,
    /// How the repository's dataset (or directory) is made: on first use, not at start,
    /// so a node that never archives has no archive dataset.
    backing: Option<crate::backing::Backing>,
    ready: Arc<tokio::sync::OnceCell<()>>,
    pub keys: Keys,
    targets: Arc<BTreeMap<String, Target>>,
    chunk_size: usize,
    /// Archives kept per dataset (`archive_keep_last`); `None`: all.
    pub keep_last: Option<usize>,
    /// One archive written at a time: each holds up to three chunks in memory and keeps
    /// both cores busy.
    writing: Arc<tokio::sync::Semaphore>,
    /// Replications and restores under way, one per (archive, target): a second request
    /// for the same is refused, not run twice over the same objects.
    running: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// What the caller knows about a stream it archives.
#[derive(Debug, Clone, Default)]
pub struct NewArchive {
    pub service: Option<String>,
    /// Relative to the dataset root.
    pub dataset: String,
    pub snapshot: String,
    pub guid: String,
    /// For an incremental: the archive it applies on.
    pub parent: Option<Manifest>,
    pub send_flags: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

impl Archives {
    /// The repository made or mounted, the node's keys loaded (made on first use), the
    /// configured targets opened (their secret files read and checked).
    pub async fn start(config: &crate::config::Config, backing: &crate::backing::Backing) -> Result<Archives> {
        let repo = Repo::at(&backing.archives_path());
        let keys = match &config.archive_passphrase {
            Some(p) => Keys::load_or_create(&config.data_dir, p)?,
            None => {
                tracing::warn!(
                    "no archive passphrase (archive_passphrase_file): archives are stored and replicated unencrypted"
                );
                Keys::none()
            }
        };
        let targets =
            config.archive_targets.iter().map(|t| Target::open(t, &config.data_dir)).collect::<Result<Vec<_>>>()?;
        let mut a = Archives::new(repo, keys, targets, pack::CHUNK_SIZE);
        a.backing = Some(backing.clone());
        a.keep_last = config.archive_keep_last;
        Ok(a)
    }

    /// The repository made (its dataset created or mounted, its directories made, what a
    /// crash left in `tmp/` dropped), once per process. Every entry point calls it.
    pub async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                if let Some(b) = &self.backing {
                    b.ensure_archives().await?;
                }
                self.repo.prepare()
            })
            .await
            .map(drop)
    }

    pub fn new(repo: Repo, keys: Keys, targets: Vec<Target>, chunk_size: usize) -> Archives {
        Archives {
            repo,
            backing: None,
            ready: Default::default(),
            keys,
            targets: Arc::new(targets.into_iter().map(|t| (t.name().to_owned(), t)).collect()),
            chunk_size,
            keep_last: None,
            writing: Arc::new(tokio::sync::Semaphore::new(1)),
            running: Default::default(),
        }
    }

    pub fn target(&self, name: &str) -> Result<&Target> {
        target::check_target_name(name)?;
        self.targets.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "no archive target named {name} (configured: {:?})",
                self.targets.keys().collect::<Vec<_>>()
            ))
            .with_field("target")
        })
    }

    pub fn target_names(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    /// Archives the stream `input` (read to its end on a blocking thread). The same
    /// snapshot archived twice gives the first archive back.
    pub async fn archive<R: std::io::Read + Send + 'static>(&self, new: NewArchive, input: R) -> Result<Manifest> {
        self.ready().await?;
        let id = manifest::archive_id(&new.dataset, &new.guid);
        if self.repo.has_manifest(&id) {
            return self.repo.manifest(&id);
        }
        let _permit = self.writing.acquire().await.map_err(|_| Error::unavailable("shutting down"))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.archive_blocking(id, new, input))
            .await
            .map_err(|e| Error::internal(format!("archive task: {e}")))?
    }

    fn archive_blocking<R: std::io::Read>(&self, id: String, new: NewArchive, mut input: R) -> Result<Manifest> {
        let recipient = self.keys.recipient();
        let started = std::time::Instant::now();
        let mut written = Vec::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // The manifest's wrapped identity (scrypt, ~0.7 s the first time in a process) is
        // made while the stream is packed, not before.
        let (packed, encryption) = std::thread::scope(|scope| {
            let encryption = scope.spawn(|| self.keys.encryption());
            let packed = pack::pack(&mut input, self.chunk_size, recipient.as_ref(), &self.repo, &mut written);
            (
                packed,
                encryption.join().unwrap_or_else(|_| Err(Error::internal("wrapping the archive identity panicked"))),
            )
        });
        let (packed, encryption) = match (packed, encryption) {
            (Ok(p), Ok(e)) => (p, e),
            (Err(e), _) | (_, Err(e)) => {
                // No manifest names them: they go, unless another archive has the same bytes.
                self.repo.remove_unreferenced(written.iter().map(|o| o.sha256.as_str()));
                return Err(e);
            }
        };
        let m = Manifest {
            version: manifest::VERSION,
            id,
            service: new.service,
            dataset: new.dataset,
            snapshot: new.snapshot,
            guid: new.guid,
            parent_id: new.parent.as_ref().map(|p| p.id.clone()),
            parent_guid: new.parent.as_ref().map(|p| p.guid.clone()),
            send_flags: new.send_flags,
            encryption,
            objects: packed.objects,
            original_size: packed.original_size,
            stored_size: packed.stored_size,
            created_at: now.as_secs(),
            created_at_nanos: now.as_nanos(),
            tags: new.tags,
        };
        self.repo.put_manifest(&m)?;
        match self.apply_retention(&m.dataset) {
            Ok(gone) if !gone.is_empty() => tracing::info!(dataset = %m.dataset, deleted = ?gone, "archive retention"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dataset = %m.dataset, error = %e, "archive retention failed; next archive retries")
            }
        }
        tracing::info!(
            archive = %m.id, dataset = %m.dataset, snapshot = %m.snapshot, objects = m.objects.len(),
            bytes = m.original_size, secs = started.elapsed().as_secs_f64(), "archive written"
        );
        Ok(m)
    }

    /// With `keep_last = n`: deletes the archives of `dataset` that are neither among its
    /// newest n nor an archive one of those applies on. Returns the ids deleted.
    pub fn apply_retention(&self, dataset: &str) -> Result<Vec<String>> {
        let Some(n) = self.keep_last else { return Ok(Vec::new()) };
        let all = self.repo.manifests()?;
        let same: Vec<&Manifest> = all.iter().filter(|m| m.dataset == dataset).collect();
        if same.len() <= n {
            return Ok(Vec::new());
        }
        let by_id: std::collections::HashMap<&str, &Manifest> = all.iter().map(|m| (m.id.as_str(), m)).collect();
        let mut keep = std::collections::HashSet::new();
        for m in &same[same.len() - n..] {
            let mut at = Some(*m);
            while let Some(m) = at {
                if !keep.insert(m.id.as_str()) {
                    break;
                }
                at = m.parent_id.as_deref().and_then(|p| by_id.get(p).copied());
            }
        }
        let mut deleted = Vec::new();
        for m in same.iter().rev().filter(|m| !keep.contains(m.id.as_str())) {
            self.repo.delete(&m.id)?;
            deleted.push(m.id.clone());
        }
        Ok(deleted)
    }

    /// How many archives, from the full one, make up `m`'s chain here.
    pub fn chain_len(&self, m: &Manifest) -> usize {
        let mut n = 1;
        let mut at = m.parent_id.clone();
        while let Some(id) = at {
            match self.repo.manifest(&id) {
                Ok(p) if n < 100_000 => {
                    n += 1;
                    at = p.parent_id;
                }
                _ => break,
            }
        }
        n
    }

    /// Archives that apply on `id` (incrementals made from it).
    pub fn dependents(&self, id: &str) -> Result<Vec<String>> {
        Ok(self.repo.manifests()?.into_iter().filter(|m| m.parent_id.as_deref() == Some(id)).map(|m| m.id).collect())
    }

    /// Removes an archive from this node's repository. Refused while an incremental
    /// depends on it, unless `force`, which removes those too (they cannot be restored
    /// without it). Returns the ids removed.
    pub fn delete(&self, id: &str, force: bool) -> Result<Vec<String>> {
        self.repo.manifest(id)?;
        let dependents = self.dependents(id)?;
        if !dependents.is_empty() && !force {
            return Err(Error::conflict(format!(
                "archive {id} is the base of {dependents:?}: delete those first, or pass force to delete them too"
            )));
        }
        let mut removed = Vec::new();
        for d in dependents {
            removed.extend(self.delete(&d, true)?);
        }
        self.repo.delete(id)?;
        removed.push(id.to_owned());
        Ok(removed)
    }

    /// Marks `key` as running until the guard drops; `Busy` when it already is.
    fn begin(&self, key: String) -> Result<RunningGuard> {
        let mut running = self.running.lock().expect("not poisoned");
        if !running.insert(key.clone()) {
            return Err(Error::busy(format!("{key} is already under way")));
        }
        Ok(RunningGuard { set: self.running.clone(), key })
    }
}

struct RunningGuard {
    set: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    key: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.set.lock().expect("not poisoned").remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn add(a: &Archives, guid: &str, parent: Option<&Manifest>) -> Manifest {
        let new = NewArchive {
            dataset: "services/s".into(),
            snapshot: format!("snap{guid}"),
            guid: guid.into(),
            parent: parent.cloned(),
            ..Default::default()
        };
        a.archive(new, std::io::Cursor::new(guid.as_bytes().to_vec())).await.unwrap()
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_and_what_they_apply_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Archives::new(Repo::open(dir.path()).unwrap(), Keys::none(), Vec::new(), 1 << 20);
        a.keep_last = Some(2);
        let a1 = add(&a, "1", None).await;
        let a2 = add(&a, "2", Some(&a1)).await;
        assert_eq!(a.chain_len(&a2), 2);
        let a3 = add(&a, "3", Some(&a2)).await;
        let ids = |a: &Archives| a.repo.manifests().unwrap().into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(&a).len(), 3, "a chain: the newest two need the first");
        let a4 = add(&a, "4", None).await;
        let a5 = add(&a, "5", Some(&a4)).await;
        let mut left = ids(&a);
        left.sort();
        let mut want = vec![a4.id.clone(), a5.id.clone()];
        want.sort();
        assert_eq!(left, want, "a new full chain lets the old one go");
        assert!(a.repo.object_size(&a3.objects[0].sha256).is_none(), "with its objects");
        assert!(a.repo.object_size(&a5.objects[0].sha256).is_some());
    }
}
