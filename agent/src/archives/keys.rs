//! The archive keys: a per-node age X25519 identity (a 0600 file in the data dir, made
//! on first use) that every object is encrypted to, and the passphrase that wraps that
//! identity into each manifest (age's scrypt recipient, pinned work factor). The node
//! encrypts without the passphrase's KDF on every object; a new node with only the
//! passphrase and the manifest unwraps the identity and decrypts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;

use super::manifest::{Encryption, SCHEME_AGE_X25519};
use crate::error::{Error, Result};

/// scrypt's work factor (log2 N) for wrapping the identity: pinned, not measured on the
/// machine that writes (age's default), so an archive written on a fast node opens on a
/// slow one. 2^18 is ~1 s and 256 MiB, once per process and once per restore.
pub const SCRYPT_WORK_FACTOR: u8 = 18;
/// The most a manifest may ask of us when unwrapping (a tampered one could ask for
/// hours and gigabytes).
const MAX_SCRYPT_WORK_FACTOR: u8 = 20;

pub const IDENTITY_FILE: &str = "archive-identity";

#[derive(Clone)]
pub struct Keys {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    identity: age::x25519::Identity,
    passphrase: SecretString,
    /// The identity wrapped with the passphrase, made once per process (scrypt is slow
    /// by design).
    wrapped: OnceLock<String>,
}

impl Keys {
    /// No passphrase configured: archives are stored unencrypted (their objects are still
    /// named and checked by SHA-256).
    pub fn none() -> Keys {
        Keys { inner: None }
    }

    /// The node's identity from `<data_dir>/archive-identity`, made when missing.
    pub fn load_or_create(data_dir: &Path, passphrase: &str) -> Result<Keys> {
        let path = identity_path(data_dir);
        let (text, made) = crate::secrets::load_or_create(&path, || {
            Ok(age::x25519::Identity::generate().to_string().expose_secret().to_owned())
        })
        .map_err(|e| Error::internal(format!("archive identity: {e}")))?;
        let identity = parse_identity(&text)
            .ok_or_else(|| Error::internal(format!("{} does not hold an age identity", path.display())))?;
        if made {
            tracing::info!(path = %path.display(), "made this node's archive identity");
        }
        Ok(Keys {
            inner: Some(Arc::new(Inner {
                identity,
                passphrase: SecretString::from(passphrase.to_owned()),
                wrapped: OnceLock::new(),
            })),
        })
    }

    pub fn encrypts(&self) -> bool {
        self.inner.is_some()
    }

    pub fn recipient(&self) -> Option<age::x25519::Recipient> {
        self.inner.as_ref().map(|i| i.identity.to_public())
    }

    /// What a new manifest says about its encryption (`None`: not encrypted). Blocking
    /// (scrypt) the first time in a process.
    pub fn encryption(&self) -> Result<Option<Encryption>> {
        let Some(inner) = &self.inner else { return Ok(None) };
        let wrapped = match inner.wrapped.get() {
            Some(w) => w.clone(),
            None => {
                let w = wrap(&inner.identity, &inner.passphrase)?;
                inner.wrapped.get_or_init(|| w).clone()
            }
        };
        Ok(Some(Encryption {
            scheme: SCHEME_AGE_X25519.to_owned(),
            recipient: inner.identity.to_public().to_string(),
            wrapped_identity: wrapped,
        }))
    }

    /// The identity that decrypts an archive with `enc`: this node's own when it is the
    /// one, else the manifest's wrapped identity opened with the configured passphrase.
    /// Blocking (scrypt) in the second case.
    pub fn identity_for(&self, archive: &str, enc: &Encryption) -> Result<age::x25519::Identity> {
        let Some(inner) = &self.inner else {
            return Err(Error::forbidden(format!(
                "archive {archive} is encrypted and this node has no archive passphrase (archive_passphrase_file)"
            )));
        };
        if inner.identity.to_public().to_string() == enc.recipient {
            return Ok(inner.identity.clone());
        }
        let identity = unwrap(&enc.wrapped_identity, &inner.passphrase)
            .ok_or_else(|| Error::forbidden(format!("the archive passphrase does not open archive {archive}")))?;
        if identity.to_public().to_string() != enc.recipient {
            return Err(Error::invalid(
                "manifest.encryption",
                format!("archive {archive}'s wrapped identity is not its recipient's"),
            ));
        }
        Ok(identity)
    }
}

pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

fn parse_identity(text: &str) -> Option<age::x25519::Identity> {
    text.lines().map(str::trim).find(|l| l.starts_with("AGE-SECRET-KEY-")).and_then(|l| l.parse().ok())
}

fn wrap(identity: &age::x25519::Identity, passphrase: &SecretString) -> Result<String> {
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    recipient.set_work_factor(SCRYPT_WORK_FACTOR);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| Error::internal(format!("wrapping the archive identity: {e}")))?;
    let mut out = Vec::new();
    let mut w = encryptor.wrap_output(&mut out).map_err(|e| Error::os("wrapping the archive identity", e))?;
    w.write_all(identity.to_string().expose_secret().as_bytes())
        .map_err(|e| Error::os("wrapping the archive identity", e))?;
    w.finish().map_err(|e| Error::os("wrapping the archive identity", e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// The identity in a wrapped blob, `None` when the passphrase does not open it (or the
/// blob is not one).
fn unwrap(wrapped: &str, passphrase: &SecretString) -> Option<age::x25519::Identity> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(wrapped).ok()?;
    let decryptor = age::Decryptor::new_buffered(&bytes[..]).ok()?;
    let mut identity = age::scrypt::Identity::new(passphrase.clone());
    identity.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
    let mut reader = decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).ok()?;
    let mut text = String::new();
    reader.by_ref().take(1024).read_to_string(&mut text).ok()?;
    parse_identity(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_node_with_the_passphrase_opens_the_identity_and_a_wrong_one_does_not() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let node = Keys::load_or_create(a.path(), "correct horse battery").unwrap();
        let enc = node.encryption().unwrap().unwrap();
        assert!(!enc.wrapped_identity.contains("AGE-SECRET-KEY"), "the identity is not in clear");
        let again = Keys::load_or_create(a.path(), "correct horse battery").unwrap();
        assert_eq!(again.recipient().unwrap().to_string(), enc.recipient, "the identity is kept");

        let new_node = Keys::load_or_create(b.path(), "correct horse battery").unwrap();
        assert_eq!(new_node.identity_for("x", &enc).unwrap().to_public().to_string(), enc.recipient);
        let wrong = Keys::load_or_create(b.path(), "wrong horse battery").unwrap();
        let Err(err) = wrong.identity_for("x", &enc) else { panic!("a wrong passphrase opened it") };
        assert_eq!(err.kind, crate::error::Kind::Forbidden, "{err}");
        assert!(Keys::none().identity_for("x", &enc).is_err());
    }
}
