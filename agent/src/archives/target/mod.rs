//! Where archives are replicated to: S3 buckets (tankd's own S3 endpoint on another
//! node, moto, any S3 server) and SMB shares (through `smbclient`). A target holds what a repository holds, under its prefix:
//! `objects/<sha256>` and `manifests/<id>.json`, the manifest written last.

mod s3;
mod smb;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use s3::S3Target;
pub use smb::SmbTarget;

use crate::error::{Error, Result};

/// One `[[archive_targets]]` entry of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetConfig {
    S3 {
        name: String,
        /// `https://host[:port]` or `http://host:port` (path-style requests).
        endpoint: String,
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default = "default_region")]
        region: String,
        access_key: String,
        /// A 0600 file whose first line is the secret key.
        secret_key_file: PathBuf,
        /// PEM certificates trusted for an https endpoint besides the system's store
        /// (a private CA, a self-signed server).
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
    Smb {
        name: String,
        host: String,
        #[serde(default = "default_smb_port")]
        port: u16,
        share: String,
        /// A directory in the share (made when missing).
        #[serde(default)]
        path: String,
        user: String,
        #[serde(default)]
        domain: Option<String>,
        /// A 0600 file whose first line is the password.
        password_file: PathBuf,
    },
}

fn default_smb_port() -> u16 {
    445
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl TargetConfig {
    pub fn name(&self) -> &str {
        match self {
            TargetConfig::S3 { name, .. } | TargetConfig::Smb { name, .. } => name,
        }
    }

    /// Checked at start-up: a bad target is a configuration error, not a failed backup
    /// discovered at night.
    pub fn check(&self) -> std::result::Result<(), String> {
        check_target_name(self.name()).map_err(|e| e.message)?;
        match self {
            TargetConfig::S3 { endpoint, bucket, prefix, ca_file, .. } => {
                let url: url::Url = endpoint.parse().map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
                if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                    return Err(format!("endpoint {endpoint:?}: an https:// (or http://) URL with a host"));
                }
                if ca_file.is_some() && url.scheme() == "http" {
                    return Err(format!("ca_file is for https:// endpoints; {endpoint:?} is plain http"));
                }
                if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
                    return Err(format!(
                        "endpoint {endpoint:?}: no credentials or query in the URL (access_key, secret_key_file)"
                    ));
                }
                if bucket.is_empty()
                    || !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                {
                    return Err(format!("bucket {bucket:?} is not an S3 bucket name"));
                }
                check_prefix(prefix)?;
                Ok(())
            }
            TargetConfig::Smb { host, share, path, user, domain, .. } => {
                let plain = |what: &str, v: &str, extra: &[u8]| {
                    if v.is_empty()
                        || v.starts_with('-')
                        || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
                    {
                        Err(format!("{what} {v:?}: letters, digits, '.', '_', '-' only"))
                    } else {
                        Ok(())
                    }
                };
                plain("host", host, b":")?;
                plain("share", share, b"$")?;
                plain("user", user, b"")?;
                if let Some(d) = domain {
                    plain("domain", d, b"")?;
                }
                if !path.is_empty() {
                    plain("path", path, b"/")?;
                }
                check_prefix(path)
            }
        }
    }
}

pub fn check_target_name(name: &str) -> Result<()> {
    crate::docker::store::check_name("target", name)
}

fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    if prefix.split('/').any(|p| p == ".." || p == ".") || prefix.starts_with('/') || prefix.len() > 256 {
        return Err(format!("prefix {prefix:?}: relative, no '.' or '..' parts, at most 256 bytes"));
    }
    Ok(())
}

/// A configured target, ready to use.
#[derive(Clone)]
pub enum Target {
    S3(S3Target),
    Smb(SmbTarget),
}

impl Target {
    /// Opens a configured target; `data_dir` is where a target keeps its private files.
    pub fn open(config: &TargetConfig, data_dir: &Path) -> Result<Target> {
        config.check().map_err(|e| Error::invalid("archive_targets", e))?;
        match config {
            TargetConfig::S3 { .. } => Ok(Target::S3(S3Target::open(config)?)),
            TargetConfig::Smb { .. } => Ok(Target::Smb(SmbTarget::open(config, data_dir)?)),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::S3(t) => t.name(),
            Target::Smb(t) => t.name(),
        }
    }

    /// The stored size of `key`, `None` when the target lacks it.
    pub async fn stat(&self, key: &str) -> Result<Option<u64>> {
        match self {
            Target::S3(t) => t.stat(key).await,
            Target::Smb(t) => t.stat(key).await,
        }
    }

    /// Uploads the file at `path` as `key`.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        match self {
            Target::S3(t) => t.put_file(key, path).await,
            Target::Smb(t) => t.put_file(key, path).await,
        }
    }

    /// Downloads `key` into a new file at `dest`, at most `max` bytes; `None` when the
    /// target lacks it.
    pub async fn get_file(&self, key: &str, dest: &Path, max: u64) -> Result<Option<u64>> {
        match self {
            Target::S3(t) => t.get_file(key, dest, max).await,
            Target::Smb(t) => t.get_file(key, dest, max).await,
        }
    }

    /// Size and SHA-256 of `key` as the target serves it back.
    pub async fn read_back(&self, key: &str, max: u64) -> Result<Option<(u64, String)>> {
        match self {
            Target::S3(t) => t.read_back(key, max).await,
            Target::Smb(t) => t.read_back(key, max).await,
        }
    }

    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            Target::S3(t) => t.put_bytes(key, bytes).await,
            Target::Smb(t) => t.put_bytes(key, bytes).await,
        }
    }

    pub async fn get_bytes(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>> {
        match self {
            Target::S3(t) => t.get_bytes(key, max).await,
            Target::Smb(t) => t.get_bytes(key, max).await,
        }
    }
}

pub fn object_key(sha256: &str) -> String {
    format!("objects/{sha256}")
}

pub fn manifest_key(id: &str) -> String {
    format!("manifests/{id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str, ca_file: bool) -> TargetConfig {
        TargetConfig::S3 {
            name: "offsite".into(),
            endpoint: endpoint.into(),
            bucket: "backups".into(),
            prefix: String::new(),
            region: default_region(),
            access_key: "k".into(),
            secret_key_file: "/etc/tankd/s3.secret".into(),
            ca_file: ca_file.then(|| "/etc/tankd/ca.pem".into()),
        }
    }

    #[test]
    fn an_s3_endpoint_is_an_https_or_http_url_without_credentials() {
        for good in
            [("https://s3.example", false), ("https://s3.example:8443/", true), ("http://127.0.0.1:9000", false)]
        {
            assert_eq!(s3(good.0, good.1).check(), Ok(()), "{good:?}");
        }
        for bad in
            ["ftp://s3.example", "https://user:pw@s3.example", "https://s3.example/?x=1", "s3.example", "http://"]
        {
            assert!(s3(bad, false).check().is_err(), "{bad}");
        }
        let e = s3("http://127.0.0.1:9000", true).check().unwrap_err();
        assert!(e.contains("ca_file"), "{e}");
    }
}
