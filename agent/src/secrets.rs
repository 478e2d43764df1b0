//! The private files tankd keeps secrets in (the API token, the master key). The
//! primitives (random bytes, HMAC, constant-time compares) are in `crate::crypto`.
//!
//! A secret file is written once (a temporary file, 0600, synced, renamed into place, so
//! a crash never leaves half a secret that a restart would then use) and refused when
//! group or others can read it: a secret others could read is no longer one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is readable by group or others (mode {mode:o}): chmod 600 it")]
    Exposed { path: String, mode: u32 },
}

/// The first line of a secret file, refused when group or others may read the file.
pub fn read_private(path: &Path) -> Result<String, SecretFileError> {
    let io = |source| SecretFileError::Io { path: path.display().to_string(), source };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed { path: path.display().to_string(), mode });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Write `line` as a new secret file at `path` (0600), whole or not at all.
pub fn write_private(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    // `mode` only applies to a file this call creates; a leftover .new keeps its own.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The secret in `path`, made with `make` on first use. True when it was made now.
pub fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> std::io::Result<String>,
) -> Result<(String, bool), SecretFileError> {
    match read_private(path) {
        Ok(text) => Ok((text, false)),
        Err(SecretFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let io = |source| SecretFileError::Io { path: path.display().to_string(), source };
            let secret = make().map_err(io)?;
            write_private(path, &secret).map_err(io)?;
            Ok((secret, true))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::random_token;

    #[test]
    fn made_once_0600_then_read_back_and_exposed_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-token");
        let (made, fresh) = load_or_create(&path, random_token).unwrap();
        assert!(fresh);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, fresh) = load_or_create(&path, || panic!("must not make a second one")).unwrap();
        assert_eq!((again.as_str(), fresh), (made.as_str(), false));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_or_create(&path, random_token).unwrap_err();
        assert!(matches!(err, SecretFileError::Exposed { mode: 0o640, .. }), "{err}");
        assert!(!err.to_string().contains(&made), "the secret is not in the error");
    }
}
