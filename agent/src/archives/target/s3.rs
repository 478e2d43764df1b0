//! An S3 target: requests signed by `rusty-s3` (SigV4, presigned, path-style), sent with
//! the reqwest client tankd already has (rustls for https: the system's trusted CAs, plus
//! a target's own `ca_file`). Objects go up in one PUT each (a chunk is at
//! most 32 MiB plus age's overhead, far under S3's 5 GiB single-PUT limit).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::io::AsyncWriteExt;

use super::TargetConfig;
use crate::error::{Error, Result};

/// How long a signed request stays valid: long enough for a 32 MiB upload on a slow link.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
const TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Clone)]
pub struct S3Target {
    name: String,
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target").field("name", &self.name).field("bucket", &self.bucket.name()).finish()
    }
}

impl S3Target {
    pub fn open(config: &TargetConfig) -> Result<S3Target> {
        let TargetConfig::S3 { name, endpoint, bucket, prefix, region, access_key, secret_key_file, ca_file } = config
        else {
            unreachable!("an S3 target's config");
        };
        let secret = crate::secrets::read_private(secret_key_file)
            .map_err(|e| Error::invalid("archive_targets", format!("target {name}: secret_key_file: {e}")))?;
        let url: url::Url =
            endpoint.parse().map_err(|e| Error::invalid("archive_targets", format!("target {name}: {e}")))?;
        let https = url.scheme() == "https";
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.clone(), region.clone())
            .map_err(|e| Error::invalid("archive_targets", format!("target {name}: {e}")))?;
        let mut http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .https_only(https)
            // The endpoint is the operator's: a redirect elsewhere is not followed (the
            // signature is for this host).
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca_file {
            for cert in read_certificates(name, ca)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| Error::internal(format!("target {name}: HTTP client: {e}")))?;
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(S3Target {
            name: name.clone(),
            bucket,
            credentials: Credentials::new(access_key.clone(), secret),
            prefix,
            http,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn fail(&self, doing: &str, key: &str, e: impl std::fmt::Display) -> Error {
        // Never the URL: it carries a signature.
        Error::unavailable(format!("target {} (bucket {}): {doing} {key}: {e}", self.name, self.bucket.name()))
    }

    async fn status_error(&self, doing: &str, key: &str, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let code = body.split("<Code>").nth(1).and_then(|s| s.split('<').next()).unwrap_or("");
        self.fail(doing, key, format!("HTTP {status} {code}"))
    }

    pub async fn stat(&self, key: &str) -> Result<Option<u64>> {
        let full = self.full(key);
        let url = self.bucket.head_object(Some(&self.credentials), &full).sign(SIGNED_FOR);
        let resp = self.http.head(url).send().await.map_err(|e| self.fail("HEAD", key, describe(e)))?;
        match resp.status() {
            // The header, not `content_length()`: a HEAD response's body is empty, and
            // reqwest reports that body's length (0).
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| self.fail("HEAD", key, "no Content-Length"))?,
            )),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error("HEAD", key, resp).await),
        }
    }

    pub async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let file =
            tokio::fs::File::open(path).await.map_err(|e| Error::os(format!("opening {}", path.display()), e))?;
        let len = file.metadata().await.map_err(|e| Error::os(format!("reading {}", path.display()), e))?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        self.put(key, body, len).await
    }

    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let len = bytes.len() as u64;
        self.put(key, reqwest::Body::from(bytes), len).await
    }

    async fn put(&self, key: &str, body: reqwest::Body, len: u64) -> Result<()> {
        let full = self.full(key);
        let url = self.bucket.put_object(Some(&self.credentials), &full).sign(SIGNED_FOR);
        let resp = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| self.fail("PUT", key, describe(e)))?;
        if !resp.status().is_success() {
            return Err(self.status_error("PUT", key, resp).await);
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<reqwest::Response>> {
        let full = self.full(key);
        let url = self.bucket.get_object(Some(&self.credentials), &full).sign(SIGNED_FOR);
        let resp = self.http.get(url).send().await.map_err(|e| self.fail("GET", key, describe(e)))?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp)),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error("GET", key, resp).await),
        }
    }

    /// The whole object, at most `max` bytes (objects are at most a chunk, manifests a
    /// few MiB: held in memory, bounded).
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let Some(resp) = self.get(key).await? else { return Ok(None) };
        let mut stream = resp.bytes_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.fail("GET", key, describe(e)))?;
            if (out.len() + chunk.len()) as u64 > max {
                return Err(self.fail("GET", key, format!("larger than the {max} bytes expected")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }

    pub async fn get_file(&self, key: &str, dest: &Path, max: u64) -> Result<Option<u64>> {
        let Some(bytes) = self.get_bounded(key, max).await? else { return Ok(None) };
        let mut out =
            tokio::fs::File::create(dest).await.map_err(|e| Error::os(format!("creating {}", dest.display()), e))?;
        out.write_all(&bytes).await.map_err(|e| Error::os(format!("writing {}", dest.display()), e))?;
        out.sync_data().await.map_err(|e| Error::os(format!("syncing {}", dest.display()), e))?;
        Ok(Some(bytes.len() as u64))
    }

    /// Size and SHA-256 of `key` as the target serves it (read, not trusted from a header).
    pub async fn read_back(&self, key: &str, max: u64) -> Result<Option<(u64, String)>> {
        use sha2::Digest;
        Ok(self.get_bounded(key, max).await?.map(|b| (b.len() as u64, hex::encode(sha2::Sha256::digest(&b)))))
    }

    pub async fn get_bytes(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>> {
        self.get_bounded(key, max as u64).await
    }
}

/// What a request's failure says, without its URL (a presigned URL carries a signature
/// that is good for a quarter of an hour) and with its causes (reqwest's own message is
/// only "error sending request"; the cause says "invalid peer certificate: UnknownIssuer").
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// The PEM certificates in `path` (a bundle may hold several); at least one.
fn read_certificates(target: &str, path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let bad =
        |e: String| Error::invalid("archive_targets", format!("target {target}: ca_file {}: {e}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if pem.len() > 1 << 20 {
        return Err(bad("more than 1 MiB".into()));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}
