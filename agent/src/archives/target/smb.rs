//! An SMB target through Debian's `smbclient` (Samba's own client: every SMB dialect and
//! authentication it negotiates, no young protocol crate). One `smbclient -c` per step,
//! with the password in a 0600 authentication file (`-A`), never on a command line or in
//! the environment. An object goes up under a `.part` name and is renamed into place,
//! so the target holds whole objects only; resume is per object (at most 32 MiB again).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

use super::TargetConfig;
use crate::error::{Error, Result};

/// One smbclient call: a 32 MiB object on a slow link, with room.
const TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Clone)]
pub struct SmbTarget {
    name: String,
    service: String,
    port: u16,
    path: String,
    auth: Arc<AuthFile>,
    /// Where objects read back and small files are staged (the repository's `tmp/`,
    /// which a start empties).
    scratch: PathBuf,
}

/// The credentials file smbclient reads; removed when the target goes.
struct AuthFile {
    path: PathBuf,
}

impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl SmbTarget {
    /// `data_dir` holds the target's authentication file (0600, rewritten at each start)
    /// and, under `archives/tmp`, its scratch files.
    pub fn open(config: &TargetConfig, data_dir: &Path) -> Result<SmbTarget> {
        let TargetConfig::Smb { name, host, port, share, path, user, domain, password_file } = config else {
            unreachable!("an SMB target's config");
        };
        let password = crate::secrets::read_private(password_file)
            .map_err(|e| Error::invalid("archive_targets", format!("target {name}: password_file: {e}")))?;
        let mut text = format!("username = {user}\npassword = {password}\n");
        if let Some(d) = domain {
            text.push_str(&format!("domain = {d}\n"));
        }
        let file = data_dir.join(format!("archive-target-{name}.auth"));
        crate::secrets::write_private(&file, text.trim_end())
            .map_err(|e| Error::os(format!("target {name}: writing its authentication file"), e))?;
        Ok(SmbTarget {
            name: name.clone(),
            service: format!("//{host}/{share}"),
            port: *port,
            path: path.trim_matches('/').to_owned(),
            auth: Arc::new(AuthFile { path: file }),
            scratch: data_dir.join("archives").join("tmp"),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn remote(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}/{key}", self.path) }
    }

    fn fail(&self, doing: &str, key: &str, e: impl std::fmt::Display) -> Error {
        Error::unavailable(format!("target {} ({}): {doing} {key}: {e}", self.name, self.service))
    }

    /// Runs `commands` (`;`-separated smbclient commands); its output, or why it failed.
    async fn run(&self, doing: &str, key: &str, commands: &str) -> Result<std::result::Result<String, String>> {
        let mut cmd = Command::new("smbclient");
        cmd.arg(&self.service)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-A")
            .arg(&self.auth.path)
            .args(["-m", "SMB3", "-c", commands])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(TIMEOUT, cmd.output())
            .await
            .map_err(|_| self.fail(doing, key, "smbclient timed out"))?
            .map_err(|e| self.fail(doing, key, format!("smbclient: {e} (install Debian's smbclient)")))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // smbclient reports a failed command in its output, not always in its status.
        let failed = !out.status.success() || text.contains("NT_STATUS_");
        Ok(if failed { Err(text.trim().to_owned()) } else { Ok(text) })
    }

    fn quote(&self, key: &str, p: &str) -> Result<String> {
        if p.contains(['"', ';', '\n', '\r']) {
            return Err(self.fail("using", key, format!("{p:?} cannot be passed to smbclient")));
        }
        Ok(format!("\"{p}\""))
    }

    pub async fn stat(&self, key: &str) -> Result<Option<u64>> {
        let remote = self.remote(key);
        match self.run("stat", key, &format!("allinfo {}", self.quote(key, &remote)?)).await? {
            Ok(text) => text
                .lines()
                .find_map(|l| l.trim().strip_prefix("stream: [::$DATA], "))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .map(Some)
                .ok_or_else(|| self.fail("stat", key, "allinfo printed no size")),
            Err(text) if is_missing(&text) => Ok(None),
            Err(text) => Err(self.fail("stat", key, text)),
        }
    }

    pub async fn put_file(&self, key: &str, local: &Path) -> Result<()> {
        let remote = self.remote(key);
        let local_s = local.to_str().ok_or_else(|| self.fail("PUT", key, "a local path that is not UTF-8"))?;
        // The directories, one level at a time (an existing one is not an error here).
        let mut mkdirs = Vec::new();
        let parts: Vec<&str> = remote.split('/').collect();
        for i in 1..parts.len() {
            mkdirs.push(format!("mkdir {}", self.quote(key, &parts[..i].join("/"))?));
        }
        if !mkdirs.is_empty() {
            let _ = self.run("mkdir", key, &mkdirs.join("; ")).await?;
        }
        let part = format!("{remote}.part");
        let put = format!("put {} {}", self.quote(key, local_s)?, self.quote(key, &part)?);
        self.run("PUT", key, &put).await?.map_err(|t| self.fail("PUT", key, t))?;
        // `rename -f` replaces an object of the same name (a rewritten manifest).
        let rename = format!("rename {} {} -f", self.quote(key, &part)?, self.quote(key, &remote)?);
        self.run("rename", key, &rename).await?.map_err(|t| self.fail("rename", key, t))?;
        Ok(())
    }

    pub async fn get_file(&self, key: &str, dest: &Path, max: u64) -> Result<Option<u64>> {
        let remote = self.remote(key);
        let dest_s = dest.to_str().ok_or_else(|| self.fail("GET", key, "a local path that is not UTF-8"))?;
        match self.run("GET", key, &format!("get {} {}", self.quote(key, &remote)?, self.quote(key, dest_s)?)).await? {
            Ok(_) => {}
            Err(text) if is_missing(&text) => return Ok(None),
            Err(text) => return Err(self.fail("GET", key, text)),
        }
        let n = std::fs::metadata(dest).map_err(|e| Error::os(format!("reading {}", dest.display()), e))?.len();
        if n > max {
            let _ = std::fs::remove_file(dest);
            return Err(self.fail("GET", key, format!("larger than the {max} bytes expected")));
        }
        Ok(Some(n))
    }

    fn scratch(&self) -> Result<PathBuf> {
        let bytes = crate::crypto::random_bytes::<8>().map_err(|e| Error::os("random bytes", e))?;
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| Error::os(format!("making {}", self.scratch.display()), e))?;
        Ok(self.scratch.join(format!("smb-{}", hex::encode(bytes))))
    }

    pub async fn read_back(&self, key: &str, max: u64) -> Result<Option<(u64, String)>> {
        use sha2::Digest;
        let tmp = self.scratch()?;
        let got = self.get_file(key, &tmp, max).await;
        let out = match got {
            Ok(Some(n)) => std::fs::read(&tmp)
                .map(|b| Some((n, hex::encode(sha2::Sha256::digest(&b)))))
                .map_err(|e| Error::os(format!("reading {}", tmp.display()), e)),
            other => other.map(|_| None),
        };
        let _ = std::fs::remove_file(&tmp);
        out
    }

    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let tmp = self.scratch()?;
        std::fs::write(&tmp, bytes).map_err(|e| Error::os(format!("writing {}", tmp.display()), e))?;
        let r = self.put_file(key, &tmp).await;
        let _ = std::fs::remove_file(&tmp);
        r
    }

    pub async fn get_bytes(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>> {
        let tmp = self.scratch()?;
        let got = self.get_file(key, &tmp, max as u64).await;
        let out = match got {
            Ok(Some(_)) => {
                std::fs::read(&tmp).map(Some).map_err(|e| Error::os(format!("reading {}", tmp.display()), e))
            }
            other => other.map(|_| None),
        };
        let _ = std::fs::remove_file(&tmp);
        out
    }
}

fn is_missing(text: &str) -> bool {
    ["NT_STATUS_OBJECT_NAME_NOT_FOUND", "NT_STATUS_OBJECT_PATH_NOT_FOUND", "NT_STATUS_NO_SUCH_FILE"]
        .iter()
        .any(|s| text.contains(s))
}
