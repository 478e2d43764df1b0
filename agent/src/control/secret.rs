//! The master secret and the tenant credentials derived from it.
//!
//! The secret is 256 bits from the OS RNG, made on first start and kept in
//! `<data_dir>/master.key` (mode 0600), or given by `TANKD_MASTER_SECRET` /
//! `CORESTORE_MASTER_SECRET`. Credentials are HMAC-SHA256(secret, "<label>\0<service id>")
//! with a versioned label, so re-provisioning gives the same values and nothing secret
//! is stored per tenant; a new label version rotates every tenant at once.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::images::checksum::hex;

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
    #[error("master secret file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("master secret {origin}: {reason}")]
    Invalid { origin: String, reason: &'static str },
}

impl MasterSecret {
    /// From the environment when given there, else the key file, made on first start.
    pub fn load_or_create(data_dir: &Path, from_env: Option<&str>) -> Result<MasterSecret, SecretError> {
        if let Some(text) = from_env {
            return Self::parse(text.trim(), "from the environment");
        }
        let path = data_dir.join(FILE);
        let io = |source| SecretError::Io { path: path.display().to_string(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "master secret is readable by others; setting 0600");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                Self::parse(text.trim(), &path.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom(&mut bytes).map_err(io)?;
                std::fs::create_dir_all(data_dir).map_err(io)?;
                // Written to a temporary file and renamed, so a crash never leaves a
                // half key that a restart would then use for every tenant.
                let tmp = data_dir.join(format!("{FILE}.new"));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(hex(&bytes).as_bytes())
                    .and_then(|_| f.write_all(b"\n"))
                    .and_then(|_| f.sync_all())
                    .map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                tracing::info!(path = %path.display(), "generated the master secret");
                Ok(MasterSecret(bytes.to_vec()))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// 64 hex digits (what tankd writes), or any other text of at least 32 bytes, used
    /// as is (what an operator may put in the environment).
    fn parse(text: &str, origin: &str) -> Result<MasterSecret, SecretError> {
        if text.len() == 64
            && let Some(bytes) = unhex(text)
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
        hex(&hmac_sha256(&self.0, &msg))
    }

    /// Test-only constructor.
    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8]) -> MasterSecret {
        MasterSecret(bytes.to_vec())
    }
}

/// HMAC-SHA256 (RFC 2104): ten lines, so no crate for it.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// Fill `buf` from the kernel's RNG (getrandom(2), blocking only before it is seeded).
pub fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 ("Jefe") and test case 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

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
