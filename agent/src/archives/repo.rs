//! The local archive repository: a directory (the `<root>/archives` dataset's mountpoint,
//! or `<data_dir>/archives` on a node with `zfs = false`) of objects named by their
//! SHA-256 and manifests named by archive id.
//!
//! ```text
//! objects/<sha256[..2]>/<sha256>   written once: a temporary file, synced, renamed
//! manifests/<id>.json               written last, synced: the commit point
//! pending/<id>.json                 an archive being pushed here (`POST /archives/receive`)
//! tmp/                              what a crash left half-written; emptied at start
//! ```
//!
//! An object is only ever complete or absent, and a manifest only names objects that
//! were synced before it: kill -9 at any point leaves either no archive or a whole one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct Repo {
    root: PathBuf,
}

/// An object written to the repository's `tmp/`, not yet synced or in place. Dropped
/// uncommitted (a failure further down the pipeline), its temporary file goes.
#[derive(Debug)]
pub struct StagedObject {
    file: std::fs::File,
    tmp: PathBuf,
    sha256: String,
}

/// An object being written piece by piece to a temporary file, hashed as it goes; named
/// by its SHA-256 when it is whole ([`ObjectWriter::finish`]).
pub struct ObjectWriter {
    staged: StagedObject,
    hasher: sha2::Sha256,
    size: u64,
}

impl ObjectWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        use sha2::Digest;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.staged.file.write_all(bytes).map_err(|e| Error::os("writing an archive object", e))
    }

    /// The object's SHA-256 and size, and the object staged for its commit; `None`
    /// (its temporary file removed) when the repository has that object already.
    pub fn finish(mut self, repo: &Repo) -> (String, u64, Option<StagedObject>) {
        use sha2::Digest;
        let sha256 = hex::encode(self.hasher.finalize());
        if repo.object_size(&sha256) == Some(self.size) {
            return (sha256, self.size, None);
        }
        self.staged.sha256 = sha256.clone();
        (sha256, self.size, Some(self.staged))
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        // After a commit the file was renamed away and this finds nothing.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Repo {
    /// The repository at `root`, not touched yet ([`Repo::prepare`] makes it).
    pub fn at(root: &Path) -> Repo {
        Repo { root: root.to_owned() }
    }

    /// Opens (making) the repository at `root` and drops what a crash left in `tmp/`.
    pub fn open(root: &Path) -> Result<Repo> {
        let repo = Repo::at(root);
        repo.prepare()?;
        Ok(repo)
    }

    /// Makes the repository's directories and drops what a crash left in `tmp/`.
    pub fn prepare(&self) -> Result<()> {
        let root = &self.root;
        for sub in ["objects", "manifests", "tmp", "pending"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| Error::os(format!("archive repository {}", dir.display()), e))?;
        }
        let tmp = root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.root.join("objects").join(&sha256[..2]).join(sha256)
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.root.join("manifests").join(format!("{id}.json"))
    }

    /// A fresh temporary file's path in the repository (same file system as its objects,
    /// so the rename into place is atomic).
    pub fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(hex::encode(crate::crypto::random_bytes::<8>().expect("the kernel gives random bytes")))
    }

    /// The stored size of an object, `None` when the repository lacks it.
    pub fn object_size(&self, sha256: &str) -> Option<u64> {
        std::fs::metadata(self.object_path(sha256)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// Stores `bytes` as the object `sha256` (the caller hashed them), synced. An object
    /// already there is kept: same name, same bytes.
    pub fn put_object(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        if self.object_size(sha256) == Some(bytes.len() as u64) {
            return Ok(());
        }
        // Dropped on a failed write, the staged file goes with it.
        let mut staged = self.stage(sha256)?;
        staged.file.write_all(bytes).map_err(|e| Error::os(format!("writing object {sha256}"), e))?;
        self.commit_object(staged)
    }

    /// A new object, written piece by piece (see [`ObjectWriter`]).
    pub fn object_writer(&self) -> Result<ObjectWriter> {
        Ok(ObjectWriter { staged: self.stage("")?, hasher: sha2::Digest::new(), size: 0 })
    }

    /// A new, empty temporary file for the object `sha256` (empty: named when whole).
    fn stage(&self, sha256: &str) -> Result<StagedObject> {
        let tmp = self.temp_path();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::os(format!("creating {}", tmp.display()), e))?;
        Ok(StagedObject { file, tmp, sha256: sha256.to_owned() })
    }

    /// Syncs a staged object's data and moves it into place (the rename synced too): a
    /// step of its own, so that one thread can write the next object while another waits
    /// for the disk to take this one.
    pub fn commit_object(&self, staged: StagedObject) -> Result<()> {
        staged.file.sync_data().map_err(|e| Error::os(format!("syncing object {}", staged.sha256), e))?;
        self.place(&staged.tmp, &staged.sha256)
    }

    /// Moves a complete, verified temporary file into place as object `sha256`.
    pub fn place(&self, tmp: &Path, sha256: &str) -> Result<()> {
        let dest = self.object_path(sha256);
        let dir = dest.parent().expect("objects/xx");
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| Error::os(format!("object directory {}", dir.display()), e))?;
            // The new directory's own entry, or a crash could take it and the object.
            sync_dir(dir.parent().expect("objects/"))?;
        }
        std::fs::rename(tmp, &dest).map_err(|e| Error::os(format!("placing object {sha256}"), e))?;
        sync_dir(dir)
    }

    /// Writes the manifest, the archive's commit point: after every object it names is
    /// synced, before anyone is told the archive exists.
    pub fn put_manifest(&self, m: &Manifest) -> Result<()> {
        let tmp = self.temp_path();
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&m.to_json())?;
            f.sync_all()
        };
        write().map_err(|e| Error::os(format!("writing the manifest of archive {}", m.id), e))?;
        std::fs::rename(&tmp, self.manifest_path(&m.id))
            .map_err(|e| Error::os(format!("placing the manifest of archive {}", m.id), e))?;
        sync_dir(&self.root.join("manifests"))
    }

    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        manifest::check_id("id", id)?;
        let bytes = match std::fs::read(self.manifest_path(id)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("no archive {id} on this node")));
            }
            Err(e) => return Err(Error::os(format!("reading the manifest of archive {id}"), e)),
        };
        Manifest::from_json(&bytes)
    }

    /// Records the manifest of an archive a client is pushing here: its uploads are
    /// checked against it; it becomes the archive's manifest when every object is here.
    pub fn put_pending(&self, m: &Manifest) -> Result<()> {
        let tmp = self.temp_path();
        std::fs::write(&tmp, m.to_json())
            .and_then(|()| std::fs::rename(&tmp, self.pending_path(&m.id)))
            .map_err(|e| Error::os(format!("recording pending archive {}", m.id), e))
    }

    pub fn pending(&self, id: &str) -> Result<Manifest> {
        manifest::check_id("id", id)?;
        let bytes = std::fs::read(self.pending_path(id)).map_err(|_| {
            Error::not_found(format!("no archive {id} is being received (POST /archives/receive first)"))
        })?;
        Manifest::from_json(&bytes)
    }

    pub fn drop_pending(&self, id: &str) {
        let _ = std::fs::remove_file(self.pending_path(id));
    }

    fn pending_path(&self, id: &str) -> PathBuf {
        self.root.join("pending").join(format!("{id}.json"))
    }

    pub fn has_manifest(&self, id: &str) -> bool {
        self.manifest_path(id).is_file()
    }

    /// Every archive here, oldest first (by `createdAt`, `createdAtNanos`, then by when it
    /// was written here).
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        let dir = self.root.join("manifests");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::os(format!("listing {}", dir.display()), e)),
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            match self.manifest(id) {
                // Written here at: orders archives made within one second.
                Ok(m) => out.push((e.metadata().and_then(|md| md.modified()).ok(), m)),
                Err(err) => tracing::warn!(archive = id, error = %err, "unreadable manifest left alone"),
            }
        }
        out.sort_by(|(ta, a), (tb, b)| {
            (a.created_at, a.created_at_nanos, ta, &a.id).cmp(&(b.created_at, b.created_at_nanos, tb, &b.id))
        });
        Ok(out.into_iter().map(|(_, m)| m).collect())
    }

    /// Removes an archive: its manifest first (it stops existing), then the objects no
    /// other manifest names.
    pub fn delete(&self, id: &str) -> Result<()> {
        let m = self.manifest(id)?;
        std::fs::remove_file(self.manifest_path(id))
            .map_err(|e| Error::os(format!("removing the manifest of archive {id}"), e))?;
        let _ = sync_dir(&self.root.join("manifests"));
        self.remove_unreferenced(m.objects.iter().map(|o| o.sha256.as_str()));
        Ok(())
    }

    /// Removes those of `candidates` that no manifest (kept or pending) names.
    pub fn remove_unreferenced<'a>(&self, candidates: impl Iterator<Item = &'a str>) {
        let mut kept: std::collections::HashSet<String> = match self.manifests() {
            Ok(all) => all.into_iter().flat_map(|m| m.objects.into_iter().map(|o| o.sha256)).collect(),
            Err(_) => return,
        };
        if let Ok(entries) = std::fs::read_dir(self.root.join("pending")) {
            for e in entries.flatten() {
                if let Ok(m) = std::fs::read(e.path()).map_err(drop).and_then(|b| Manifest::from_json(&b).map_err(drop))
                {
                    kept.extend(m.objects.into_iter().map(|o| o.sha256));
                }
            }
        }
        for sha in candidates.filter(|s| !kept.contains(*s)) {
            let _ = std::fs::remove_file(self.object_path(sha));
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::os(format!("syncing {}", dir.display()), e))
}
