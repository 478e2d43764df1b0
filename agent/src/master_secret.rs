//! The master secret and the tenant credentials derived from it.
//!
//! The secret is 256 bits from the OS RNG, made on first start and kept in
//! `<data_dir>/master.key` (mode 0600), or given by `TANKD_MASTER_SECRET` /
//! `CORESTORE_MASTER_SECRET`. Credentials are HMAC-SHA256(secret, "<label>\0<service id>")
//! with a versioned label, so re-provisioning gives the same values and nothing secret
//! is stored per tenant; a new label version rotates every tenant at once.

use std::path::Path;

use crate::crypto::{hmac_sha256, random_bytes};
use crate::secrets::{self, SecretFileError};

/// The key file's name under the data dir.
pub const FILE: &str = "master.key";
/// Label of the per-service control token (`TANKD_SERVICE_TOKEN`).
pub const SERVICE_TOKEN_LABEL: &str = "tankd/v1/service-token";

#[derive(Clone)]
pub struct MasterSecret(Vec<u8>);

// Never printed, not even in debug logs.
impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("master secret file: {0}")]
    File(#[from] SecretFileError),
    #[error("master secret {origin}: {reason}")]
    Invalid { origin: String, reason: &'static str },
}

impl MasterSecret {
    /// From the environment when given there, else the key file, made on first start
    /// (refused, like the API token's, when group or others can read it).
    pub fn load_or_create(data_dir: &Path, from_env: Option<&str>) -> Result<MasterSecret, SecretError> {
        if let Some(text) = from_env {
            return Self::parse(text.trim(), "from the environment");
        }
        let path = data_dir.join(FILE);
        let (text, made) = secrets::load_or_create(&path, || Ok(hex::encode(random_bytes::<32>()?)))?;
        if made {
            tracing::info!(path = %path.display(), "generated the master secret");
        }
        Self::parse(&text, &path.display().to_string())
    }

    /// 64 hex digits (what tankd writes), or any other text of at least 32 bytes, used
    /// as is (what an operator may put in the environment).
    fn parse(text: &str, origin: &str) -> Result<MasterSecret, SecretError> {
        if text.len() == 64
            && let Ok(bytes) = hex::decode(text)
        {
            return Ok(MasterSecret(bytes));
        }
        if text.len() < 32 {
            return Err(SecretError::Invalid {
                origin: origin.to_owned(),
                reason: "must be 64 hex digits or at least 32 characters",
            });
        }
        Ok(MasterSecret(text.as_bytes().to_vec()))
    }

    /// The credential for `label` and `subject`, as 64 hex digits.
    pub fn derive(&self, label: &str, subject: &str) -> String {
        let mut msg = Vec::with_capacity(label.len() + 1 + subject.len());
        msg.extend_from_slice(label.as_bytes());
        msg.push(0);
        msg.extend_from_slice(subject.as_bytes());
        hex::encode(hmac_sha256(&self.0, &msg))
    }

    /// Test-only constructor.
    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8]) -> MasterSecret {
        MasterSecret(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterSecret::load_or_create(dir.path(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = MasterSecret::load_or_create(dir.path(), None).unwrap();
        assert_eq!(a.derive(SERVICE_TOKEN_LABEL, "svc"), b.derive(SERVICE_TOKEN_LABEL, "svc"));
        assert_ne!(a.derive(SERVICE_TOKEN_LABEL, "svc"), a.derive(SERVICE_TOKEN_LABEL, "svc2"));
        assert_ne!(a.derive(SERVICE_TOKEN_LABEL, "svc"), a.derive("tankd/v2/service-token", "svc"));
        let other = tempfile::tempdir().unwrap();
        let c = MasterSecret::load_or_create(other.path(), None).unwrap();
        assert_ne!(a.derive(SERVICE_TOKEN_LABEL, "svc"), c.derive(SERVICE_TOKEN_LABEL, "svc"), "random per node");
        assert!(!format!("{a:?}").contains(&std::fs::read_to_string(dir.path().join(FILE)).unwrap().trim()[..8]));
    }

    #[test]
    fn environment_wins_and_short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = MasterSecret::load_or_create(dir.path(), Some("an operator chosen secret of 32+ chars")).unwrap();
        assert!(!dir.path().join(FILE).exists(), "a given secret is not written anywhere");
        assert_eq!(
            s.derive("l", "x"),
            MasterSecret::from_bytes(b"an operator chosen secret of 32+ chars").derive("l", "x")
        );
        assert!(MasterSecret::load_or_create(dir.path(), Some("short")).is_err());
    }
}
