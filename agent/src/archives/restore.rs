//! Bringing an archive back: its chain is fetched from a target into the local
//! repository (each object checked by size and SHA-256 before it is placed; objects
//! already here are not fetched again, so an interrupted fetch resumes), every object
//! is checked again and the passphrase tried before the first byte is handed on, then
//! each archive's stream is decrypted into its consumer (`zfs receive`, a file).

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use super::Archives;
use super::manifest::{self, Manifest};
use super::target::{self, Target};
use crate::error::{Error, Result};

/// A chain ready to restore: every object present and checked, the key opened.
pub struct RestorePlan {
    /// Oldest (the full archive) first.
    pub chain: Vec<Manifest>,
    identities: Vec<Option<age::x25519::Identity>>,
}

impl Archives {
    /// Fetches (with `target`) and checks the chain of archive `id`.
    pub async fn prepare_restore(&self, id: &str, target: Option<&str>) -> Result<RestorePlan> {
        manifest::check_id("archiveId", id)?;
        self.ready().await?;
        let _running = self.begin(format!("restore of archive {id}"))?;
        let chain = match target {
            Some(name) => {
                let t = self.target(name)?.clone();
                self.fetch_chain(id, &t).await?
            }
            None => self.local_chain(id)?,
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            for m in &chain {
                for o in &m.objects {
                    this.read_checked(m, &o.sha256, o.stored_size)?;
                }
            }
            // The passphrase is tried now (scrypt: blocking), not after a receive began.
            let identities = chain
                .iter()
                .map(|m| m.encryption.as_ref().map(|e| this.keys.identity_for(&m.id, e)).transpose())
                .collect::<Result<Vec<_>>>()?;
            Ok(RestorePlan { chain, identities })
        })
        .await
        .map_err(|e| Error::internal(format!("restore check: {e}")))?
    }

    /// The chain of `id` as the target holds it, fetched into this node's repository.
    async fn fetch_chain(&self, id: &str, t: &Target) -> Result<Vec<Manifest>> {
        let mut chain: Vec<Manifest> = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(id) = next {
            if chain.len() > 10_000 {
                return Err(Error::invalid("archiveId", "the archive chain does not end"));
            }
            let m = match self.repo.manifest(&id) {
                Ok(m) => m,
                Err(e) if e.kind == crate::error::Kind::NotFound => {
                    let bytes = t
                        .get_bytes(&target::manifest_key(&id), manifest::MAX_MANIFEST_BYTES)
                        .await?
                        .ok_or_else(|| Error::not_found(format!("target {} has no archive {id}", t.name())))?;
                    let m = Manifest::from_json(&bytes)?;
                    if m.id != id {
                        return Err(Error::invalid(
                            "manifest.id",
                            format!("target {}'s manifest {id} names archive {}", t.name(), m.id),
                        ));
                    }
                    m
                }
                Err(e) => return Err(e),
            };
            next = m.parent_id.clone();
            chain.push(m);
        }
        chain.reverse();
        for m in &chain {
            if self.repo.has_manifest(&m.id) {
                continue;
            }
            for o in &m.objects {
                if self.repo.object_size(&o.sha256) == Some(o.stored_size) {
                    continue;
                }
                let tmp = self.repo.temp_path();
                let fetched = t.get_file(&target::object_key(&o.sha256), &tmp, o.stored_size).await;
                let checked = match fetched {
                    Ok(Some(_)) => check_file(&tmp, m, &o.sha256, o.stored_size),
                    Ok(None) => Err(Error::not_found(format!(
                        "target {} lacks object {} of archive {}",
                        t.name(),
                        o.sha256,
                        m.id
                    ))),
                    Err(e) => Err(e),
                };
                if let Err(e) = checked {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                self.repo.place(&tmp, &o.sha256)?;
            }
            self.repo.put_manifest(m)?;
        }
        Ok(chain)
    }

    /// An object's bytes from the repository, refused unless they are the size and
    /// SHA-256 the manifest says.
    fn read_checked(&self, m: &Manifest, sha256: &str, size: u64) -> Result<Vec<u8>> {
        let path = self.repo.object_path(sha256);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(size + 1).read_to_end(&mut bytes))
            .map_err(|e| Error::not_found(format!("archive {}: object {sha256}: {e}", m.id)))?;
        check_bytes(&bytes, m, sha256, size)?;
        Ok(bytes)
    }

    /// Every object of `m` here, the size and SHA-256 it names. Blocking.
    pub fn verify_objects(&self, m: &Manifest) -> Result<()> {
        for o in &m.objects {
            self.read_checked(m, &o.sha256, o.stored_size)?;
        }
        Ok(())
    }

    /// Writes the stream of `plan.chain[index]` into `out`, decrypted. Blocking.
    pub fn unpack(&self, plan: &RestorePlan, index: usize, out: &mut dyn Write) -> Result<u64> {
        let m = &plan.chain[index];
        let mut written = 0u64;
        for o in &m.objects {
            let stored = self.read_checked(m, &o.sha256, o.stored_size)?;
            let plain = match &plan.identities[index] {
                Some(identity) => super::pack::decrypt(identity, &stored, &m.id, &o.sha256)?,
                None => stored,
            };
            if plain.len() as u64 != o.plain_size {
                return Err(Error::invalid(
                    "archive",
                    format!(
                        "archive {}: object {} decrypts to {} bytes, not {}",
                        m.id,
                        o.sha256,
                        plain.len(),
                        o.plain_size
                    ),
                ));
            }
            out.write_all(&plain).map_err(|e| Error::os(format!("restoring archive {}", m.id), e))?;
            written += plain.len() as u64;
        }
        out.flush().map_err(|e| Error::os(format!("restoring archive {}", m.id), e))?;
        Ok(written)
    }
}

fn check_file(path: &std::path::Path, m: &Manifest, sha256: &str, size: u64) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::os(format!("reading {}", path.display()), e))?;
    check_bytes(&bytes, m, sha256, size)
}

fn check_bytes(bytes: &[u8], m: &Manifest, sha256: &str, size: u64) -> Result<()> {
    if bytes.len() as u64 != size {
        return Err(Error::invalid(
            "archive",
            format!("archive {}: object {sha256} is {} bytes, not {size}: corrupt", m.id, bytes.len()),
        ));
    }
    if hex::encode(Sha256::digest(bytes)) != sha256 {
        return Err(Error::invalid(
            "archive",
            format!("archive {}: object {sha256} does not match its SHA-256: corrupt", m.id),
        ));
    }
    Ok(())
}
