//! Replication of an archive to a target: its chain (the full archive and every
//! incremental up to it) goes up oldest first; for each archive, only the objects the
//! target lacks (by name and size), each read back and checked by size and SHA-256,
//! then its manifest, last. An interrupted run leaves whole objects and no manifest;
//! the next run skips those objects and sends the rest.

use serde::Serialize;

use super::Archives;
use super::manifest::Manifest;
use super::target::{self, Target};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replicated {
    pub target: String,
    /// Archives whose manifests this run wrote (the chain's that were missing).
    pub archives: Vec<String>,
    pub objects_uploaded: usize,
    pub objects_present: usize,
    pub bytes_uploaded: u64,
}

impl Archives {
    /// Replicates archive `id` (and the archives it is incremental on) to `target`.
    pub async fn replicate(&self, id: &str, target_name: &str) -> Result<Replicated> {
        self.ready().await?;
        let target = self.target(target_name)?.clone();
        let chain = self.local_chain(id)?;
        let _running = self.begin(format!("replication of archive {id} to {target_name}"))?;
        let mut out = Replicated { target: target_name.to_owned(), ..Default::default() };
        for m in &chain {
            if target.stat(&target::manifest_key(&m.id)).await?.is_some() {
                continue;
            }
            self.replicate_one(m, &target, &mut out).await?;
            out.archives.push(m.id.clone());
        }
        tracing::info!(
            archive = id,
            target = target_name,
            uploaded = out.objects_uploaded,
            present = out.objects_present,
            bytes = out.bytes_uploaded,
            "replicated"
        );
        Ok(out)
    }

    async fn replicate_one(&self, m: &Manifest, target: &Target, out: &mut Replicated) -> Result<()> {
        for o in &m.objects {
            let key = target::object_key(&o.sha256);
            if target.stat(&key).await? == Some(o.stored_size) {
                out.objects_present += 1;
                continue;
            }
            let path = self.repo.object_path(&o.sha256);
            if self.repo.object_size(&o.sha256) != Some(o.stored_size) {
                return Err(Error::internal(format!(
                    "archive {}: object {} is missing here or has the wrong size",
                    m.id, o.sha256
                )));
            }
            target.put_file(&key, &path).await?;
            match target.read_back(&key, o.stored_size).await? {
                Some((size, sha)) if size == o.stored_size && sha == o.sha256 => {}
                got => {
                    return Err(Error::unavailable(format!(
                        "target {}: object {} read back as {got:?}, not {} bytes with its SHA-256",
                        target.name(),
                        o.sha256,
                        o.stored_size
                    )));
                }
            }
            crate::fault::point("archive-object-replicated");
            out.objects_uploaded += 1;
            out.bytes_uploaded += o.stored_size;
        }
        target.put_bytes(&target::manifest_key(&m.id), m.to_json()).await
    }

    /// The archive and those it applies on, from this node's repository, oldest first.
    pub fn local_chain(&self, id: &str) -> Result<Vec<Manifest>> {
        let mut chain = vec![self.repo.manifest(id)?];
        while let Some(parent) = chain.last().and_then(|m| m.parent_id.clone()) {
            if chain.len() > 10_000 {
                return Err(Error::invalid("archiveId", format!("archive {id}'s chain does not end")));
            }
            chain.push(self.repo.manifest(&parent).map_err(|e| {
                Error::new(e.kind, format!("archive {id} applies on {parent}, which is missing: {}", e.message))
            })?);
        }
        chain.reverse();
        Ok(chain)
    }
}
