//! Fetching an image: at most `num_fetchers` at a time, at most `max_pending` queued or
//! running (more fails at once with `busy`), one shared fetch per id. The body streams
//! through a decompressor (and a SHA-256 hasher when the server names a digest) straight
//! into `zfs receive` (a send stream) or a new zvol (a raw disk image); nothing is held
//! whole in memory, and a raw image of unknown size is spooled to one temporary file to
//! learn its size.
//!
//! A fetch costs the receive plus one `zfs set` that marks the image complete: the
//! dataset is born with its metadata (`receive -o`, `create -o`) and status
//! `downloading`, so there is no placeholder to make, rename or clean up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, XzDecoder, ZstdDecoder};
use futures_util::TryStreamExt;
use rpc_schema::ErrorKind;
use rpc_schema::imagestore::{Image, ImageStatus};
use sha2::{Digest, Sha256};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::sync::{Semaphore, watch};
use zfs_sys_shim::{Dataset, DatasetName, DatasetType, Depth, DestroyOptions, ListQuery, ReceiveArgs};

use super::catalog::{Catalog, Entry};
use super::checksum;
use super::decode::{self, Compression};
use super::sources::Sources;
use super::{image_dataset, prop};
use crate::error::{Error, Result};
use crate::ids::MIB;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// `host:port` or a base URL; `http://<server>/images/<id>/download` is fetched
    /// when a request names no source.
    pub image_server: Option<String>,
    /// URL prefixes besides the image server that fetches may come from.
    pub image_sources: Vec<String>,
    /// How long one fetch may take, from connecting to the body's end.
    pub timeout: std::time::Duration,
    /// The most bytes one fetch may receive (before decompression).
    pub max_size: u64,
    pub num_fetchers: usize,
    pub max_pending: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub status: ImageStatus,
    pub received: u64,
    pub expected: Option<u64>,
    pub error: Option<Error>,
    /// The image a successful fetch made.
    pub image: Option<Box<Image>>,
}

pub struct Fetcher {
    config: FetchConfig,
    permits: Arc<Semaphore>,
    inflight: Mutex<HashMap<String, watch::Receiver<Progress>>>,
    client: reqwest::Client,
    spool_dir: PathBuf,
    sources: Sources,
    /// The complete images, kept current by fetches and deletes.
    pub catalog: Catalog,
}

impl Fetcher {
    pub fn new(config: FetchConfig, spool_dir: PathBuf) -> Self {
        let sources = Sources::new(config.image_server.as_deref(), &config.image_sources);
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(15))
            .timeout(config.timeout)
            .redirect(sources.redirect_policy())
            .build()
            .expect("HTTP client");
        Fetcher {
            sources,
            permits: Arc::new(Semaphore::new(config.num_fetchers.max(1))),
            config,
            inflight: Mutex::new(HashMap::new()),
            client,
            spool_dir,
            catalog: Catalog::default(),
        }
    }

    /// The URL to fetch: the request's `source` when given (a relative one is joined to
    /// the image server), else the server's `/images/<id>/download`.
    pub fn resolve_url(&self, id: &str, source: &str) -> Result<String> {
        let base = self.config.image_server.as_deref().map(|s| {
            let s = s.trim_end_matches('/');
            if s.contains("://") { s.to_owned() } else { format!("http://{s}") }
        });
        let url = if source.contains("://") {
            source.to_owned()
        } else {
            let base = base.ok_or_else(|| Error::invalid("source", "no source URL and no image_server configured"))?;
            if source.is_empty() {
                format!("{base}/images/{id}/download")
            } else {
                format!("{base}/{}", source.trim_start_matches('/'))
            }
        };
        let shown = redacted(&url);
        let parsed = reqwest::Url::parse(&url).map_err(|e| Error::invalid("source", format!("{shown:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid("source", format!("{shown:?}: only http and https")));
        }
        // The source is recorded on the image's dataset and in logs: no secret may ride in it.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::invalid(
                "source",
                format!("{shown:?}: a URL with credentials is refused (tankd records the source on the image)"),
            ));
        }
        if !self.sources.admits(&parsed) {
            return Err(Error::invalid(
                "source",
                format!(
                    "{shown:?} is not under the image server or an image_sources prefix ({})",
                    self.sources.describe()
                ),
            ));
        }
        Ok(url)
    }

    pub fn in_flight(&self, id: &str) -> bool {
        self.inflight.lock().expect("lock").contains_key(id)
    }

    pub fn in_flight_ids(&self) -> Vec<String> {
        self.inflight.lock().expect("lock").keys().cloned().collect()
    }

    /// Fill in live progress for a fetch that is running; whether there is one.
    pub fn overlay_progress(&self, id: &str, img: &mut Image) -> bool {
        let inflight = self.inflight.lock().expect("lock");
        let Some(rx) = inflight.get(id) else {
            return false;
        };
        let p = rx.borrow();
        img.status = Some(p.status);
        img.error = None;
        img.bytes_received = Some(p.received);
        img.bytes_expected = p.expected;
        true
    }

    /// Join the running fetch of `id`, or start one; `stale`: a dataset of a failed or
    /// interrupted fetch is in the way. Refuses with `busy` beyond `max_pending`.
    pub fn start(
        &self,
        store: &Store,
        id: &str,
        url: &str,
        kind: &str,
        stale: bool,
    ) -> Result<watch::Receiver<Progress>> {
        let mut inflight = self.inflight.lock().expect("lock");
        if let Some(rx) = inflight.get(id) {
            return Ok(rx.clone());
        }
        if inflight.len() >= self.config.max_pending {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{} image fetches are pending (max_pending); try again later", inflight.len()),
            ));
        }
        let (tx, rx) = watch::channel(Progress {
            status: ImageStatus::Pending,
            received: 0,
            expected: None,
            error: None,
            image: None,
        });
        inflight.insert(id.to_owned(), rx.clone());
        let (store, id, url, kind) = (store.clone(), id.to_owned(), url.to_owned(), kind.to_owned());
        tokio::spawn(async move {
            let meta = Meta { url: url.clone(), kind, created: now() };
            let result = run(&store, &id, &meta, stale, &tx).await;
            match &result {
                Ok(ds) => {
                    tracing::info!(image = %id, %url, "image fetch complete");
                    store.images.catalog.insert(&id, super::entry_of(ds));
                }
                Err(e) => {
                    tracing::warn!(image = %id, %url, error = %e, "image fetch failed");
                    record_failure(&store, &id, &meta, e).await;
                    store.images.catalog.insert(&id, Entry::Unfinished);
                }
            }
            store.images.inflight.lock().expect("lock").remove(&id);
            let image = result.as_ref().ok().map(|ds| Box::new(super::wire(&store, ds)));
            tx.send_modify(|p| match result {
                Ok(_) => {
                    p.status = ImageStatus::Complete;
                    p.image = image;
                }
                Err(e) => {
                    p.status = ImageStatus::Error;
                    p.error = Some(e);
                }
            });
        });
        Ok(rx)
    }
}

/// Wait for a fetch to end: the image it made, or why it failed.
pub async fn wait(mut rx: watch::Receiver<Progress>) -> Result<Image> {
    let p = rx
        .wait_for(|p| matches!(p.status, ImageStatus::Complete | ImageStatus::Error))
        .await
        .map_err(|_| Error::new(ErrorKind::Internal, "the fetch task ended without a result"))?
        .clone();
    match (p.error, p.image) {
        (Some(e), _) => Err(e),
        (None, Some(image)) => Ok(*image),
        (None, None) => Err(Error::new(ErrorKind::Internal, "the fetch ended without an image")),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_owned(), v.to_string())
}

/// What is recorded of every fetch, from its first byte on.
struct Meta {
    url: String,
    kind: String,
    created: u64,
}

impl Meta {
    fn props(&self, status: &str) -> Vec<(String, String)> {
        let mut props = vec![kv(prop::STATUS, status), kv(prop::SOURCE, &self.url), kv(prop::CREATED, self.created)];
        if !self.kind.is_empty() {
            props.push(kv(prop::TYPE, &self.kind));
        }
        props
    }
}

/// Replace whatever the fetch left with an empty placeholder that says why it failed.
async fn record_failure(store: &Store, id: &str, meta: &Meta, err: &Error) {
    let Ok(name) = image_dataset(store, id) else {
        return;
    };
    let _ = store.zfs.abort_receive(&name).await;
    let _ = store.zfs.destroy(&name, DestroyOptions { recursive: true, ..Default::default() }).await;
    let message: String = err.message.chars().filter(|c| !c.is_control()).take(1000).collect();
    let mut props = meta.props("error");
    props.push(kv(prop::ERROR, message));
    props.push(kv("canmount", "off"));
    if let Err(e) = store.zfs.create_filesystem(&name, true, &props).await {
        tracing::warn!(image = %id, error = %e, "could not record the failed fetch");
    }
}

/// Length, and SHA-256 when a digest is to be checked, of the bytes as served.
#[derive(Default)]
struct Hashed {
    hasher: Option<Sha256>,
    count: u64,
}

/// A reader that counts (and maybe hashes) what passes through and reports progress.
/// The state is shared so it can be read after the reader disappears into a decoder.
struct Metered<R> {
    inner: R,
    hashed: Arc<Mutex<Hashed>>,
    tx: watch::Sender<Progress>,
    /// `max_image_size`: past it the read fails and the fetch is undone.
    max: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = buf.filled().len() - before;
            if n > 0 {
                let count = {
                    let mut h = self.hashed.lock().expect("lock");
                    if let Some(hasher) = h.hasher.as_mut() {
                        hasher.update(&buf.filled()[before..]);
                    }
                    h.count += n as u64;
                    h.count
                };
                self.tx.send_modify(|p| p.received = count);
                if count > self.max {
                    let max = self.max;
                    return Poll::Ready(Err(std::io::Error::other(format!("more than max_image_size ({max} bytes)"))));
                }
            }
        }
        r
    }
}

/// The decompressed bytes, behind one buffer.
fn decompress<R: AsyncBufRead + Unpin + Send + 'static>(
    kind: Compression,
    r: R,
) -> Box<dyn AsyncBufRead + Unpin + Send> {
    const BUF: usize = 1 << 20;
    match kind {
        Compression::None => Box::new(r),
        Compression::Gzip => {
            let mut d = GzipDecoder::new(r);
            d.multiple_members(true);
            Box::new(BufReader::with_capacity(BUF, d))
        }
        Compression::Xz => Box::new(BufReader::with_capacity(BUF, XzDecoder::new(r))),
        Compression::Zstd => Box::new(BufReader::with_capacity(BUF, ZstdDecoder::new(r))),
    }
}

async fn run(store: &Store, id: &str, meta: &Meta, stale: bool, tx: &watch::Sender<Progress>) -> Result<Dataset> {
    let zfs = &store.zfs;
    let url = meta.url.as_str();
    let name = image_dataset(store, id)?;
    let recursive = DestroyOptions { recursive: true, ..Default::default() };
    // Waiting for a fetcher is `pending`, in memory only.
    let _permit = store.images.permits.clone().acquire_owned().await.expect("semaphore open");
    if stale {
        let _ = zfs.abort_receive(&name).await;
        zfs.destroy(&name, recursive).await?;
    }
    tx.send_modify(|p| p.status = ImageStatus::Downloading);

    let client = &store.images.client;
    let resp = client.get(url).send().await.map_err(|e| Error::new(ErrorKind::Internal, format!("GET {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let kind = if status.as_u16() == 404 { ErrorKind::NotFound } else { ErrorKind::Internal };
        return Err(Error::new(kind, format!("GET {url}: HTTP {status}")));
    }
    let expected_len = resp.content_length();
    let max = store.images.config.max_size;
    if expected_len.is_some_and(|n| n > max) {
        return Err(Error::invalid("source", format!("{url} is larger than max_image_size ({max} bytes)")));
    }
    tx.send_modify(|p| p.expected = expected_len);
    let header_digest = checksum::from_headers(
        resp.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect::<Vec<_>>(),
    );
    let expected_sha = match header_digest {
        Some(d) => Some(d),
        None => sidecar_digest(client, url).await,
    };

    let body = resp.bytes_stream().map_err(std::io::Error::other);
    let hashed = Arc::new(Mutex::new(Hashed { hasher: expected_sha.as_ref().map(|_| Sha256::new()), count: 0 }));
    let metered =
        Metered { inner: tokio_util::io::StreamReader::new(body), hashed: hashed.clone(), tx: tx.clone(), max };
    let mut raw = BufReader::with_capacity(1 << 20, metered);
    let compression = decode::sniff_compression(raw.fill_buf().await.map_err(|e| io_err(url, e))?);
    let mut plain = decompress(compression, raw);
    let head = plain.fill_buf().await.map_err(|e| io_err(url, e))?.to_vec();
    if head.is_empty() {
        return Err(Error::invalid("source", format!("{url} is empty")));
    }

    // The dataset is born `downloading` with its metadata; what is only known at the end
    // goes into the one `zfs set` that completes it.
    let mut done = vec![kv(prop::STATUS, "complete")];
    if decode::is_zfs_stream(&head) {
        let mut props = meta.props("downloading");
        let short = decode::stream_snapshot(&head);
        if let Some(short) = &short {
            props.push(kv(prop::SNAPSHOT, format!("{name}@{short}")));
        }
        // `-s`: an interrupted receive keeps its dataset and properties for recovery.
        let args = ReceiveArgs { resumable: true, unmounted: true, props, ..ReceiveArgs::into(name.clone()) };
        zfs.receive(&args, &mut plain).await?;
        if short.is_none() {
            let query = ListQuery::recursive(name.clone(), DatasetType::Snapshot, &[]).depth(Depth::Max(1));
            let snaps = zfs.list(&query).await?;
            let first = snaps.first().ok_or_else(|| Error::invalid("source", "the stream carried no snapshot"))?;
            done.push(kv(prop::SNAPSHOT, &first.name));
        }
    } else {
        let known_len = expected_len.filter(|_| compression == Compression::None);
        let size = write_raw(store, &name, &mut plain, known_len, id, meta.props("downloading")).await?;
        zfs.snapshot(&[name.snapshot("image").expect("valid")], false, &[]).await?;
        done.push(kv(prop::SIZE, size));
        done.push(kv(prop::SNAPSHOT, format!("{name}@image")));
    }

    // Read what is left (trailing bytes after a stream's end) so the digest covers it all.
    tokio::io::copy_buf(&mut plain, &mut tokio::io::sink()).await.map_err(|e| io_err(url, e))?;
    if let Some(expected) = &expected_sha {
        let (actual, total) = {
            let h = hashed.lock().expect("lock");
            (hex::encode(h.hasher.clone().expect("hashing").finalize()), h.count)
        };
        if *expected != actual {
            return Err(Error::invalid(
                "source",
                format!("checksum mismatch for {url}: expected sha256 {expected}, got {actual} ({total} bytes)"),
            ));
        }
        done.push(kv(prop::SHA256, actual));
    }
    // The commit point: only now is the image complete. The read of its type and size
    // runs alongside (they do not change with the set); the set's values are laid over it.
    let props = super::props();
    let (set, got) = tokio::join!(zfs.set(&name, &done), zfs.get(&name, &props));
    set?;
    let mut ds = got?;
    ds.user.extend(done);
    Ok(ds)
}

/// `url` with any `user:password@` replaced, for messages.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn io_err(url: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Internal, format!("reading {url}: {e}"))
}

async fn sidecar_digest(client: &reqwest::Client, url: &str) -> Option<String> {
    let resp = client.get(format!("{url}.sha256")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    checksum::from_sidecar(&resp.text().await.ok()?)
}

/// Write a raw disk image into a new zvol, skipping all-zero chunks (a new zvol reads
/// as zeros, so they cost nothing to skip and keep the volume sparse).
async fn write_raw(
    store: &Store,
    data: &DatasetName,
    plain: &mut Box<dyn AsyncBufRead + Unpin + Send>,
    known_len: Option<u64>,
    id: &str,
    props: Vec<(String, String)>,
) -> Result<u64> {
    let mut spooled: Option<BufReader<tokio::fs::File>> = None;
    let size = match known_len {
        Some(n) => n,
        None => {
            // One temporary copy on disk to learn the size.
            tokio::fs::create_dir_all(&store.images.spool_dir)
                .await
                .map_err(|e| spool_err(&store.images.spool_dir, e))?;
            let path = store.images.spool_dir.join(format!("{id}.raw"));
            let mut file = tokio::fs::File::create(&path).await.map_err(|e| spool_err(&path, e))?;
            let _ = tokio::fs::remove_file(&path).await; // unlinked: gone even if we crash
            let n = tokio::io::copy_buf(plain, &mut file).await.map_err(|e| spool_err(&path, e))?;
            file.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| spool_err(&path, e))?;
            spooled = Some(BufReader::with_capacity(1 << 20, file));
            n
        }
    };
    let source: &mut (dyn AsyncBufRead + Unpin + Send) = match spooled.as_mut() {
        Some(file) => file,
        None => plain.as_mut(),
    };
    let size_mib = size.div_ceil(MIB).max(1);
    let device = crate::volumes::create_zvol(store, data, size_mib, props).await?;
    let mut dev = tokio::fs::OpenOptions::new().write(true).open(&device).await.map_err(|e| spool_err(&device, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = read_full(source, &mut buf).await.map_err(|e| spool_err(&device, e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dev.seek(std::io::SeekFrom::Start(written)).await.map_err(|e| spool_err(&device, e))?;
            dev.write_all(&buf[..n]).await.map_err(|e| spool_err(&device, e))?;
        }
        written += n as u64;
    }
    dev.sync_all().await.map_err(|e| spool_err(&device, e))?;
    if written != size {
        return Err(Error::invalid("source", format!("expected {size} bytes of image, got {written}")));
    }
    Ok(size)
}

async fn read_full(r: &mut (dyn AsyncBufRead + Unpin + Send), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn spool_err(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Internal, format!("{}: {e}", path.as_ref().display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(server: Option<&str>) -> Fetcher {
        let config = FetchConfig {
            image_server: server.map(str::to_owned),
            image_sources: vec![],
            timeout: std::time::Duration::from_secs(1),
            max_size: 1,
            num_fetchers: 1,
            max_pending: 1,
        };
        Fetcher::new(config, std::env::temp_dir().join("tankd-unit-spool"))
    }

    #[test]
    fn sources_with_credentials_are_refused_without_showing_them() {
        let f = fetcher(Some("127.0.0.1:17172"));
        assert_eq!(f.resolve_url("img", "").unwrap(), "http://127.0.0.1:17172/images/img/download");
        for bad in
            ["http://user:s3cret@127.0.0.1:17172/images/x", "http://s3cret@127.0.0.1:17172/x", "ftp://a:s3cret@h/x"]
        {
            let err = f.resolve_url("img", bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("source"), "{bad}");
            assert!(!err.message.contains("s3cret"), "{bad}: {}", err.message);
        }
        assert_eq!(redacted("https://u:p@h:1/a@b"), "https://***@h:1/a@b");
        assert_eq!(redacted("https://h/a@b"), "https://h/a@b");
    }
}
