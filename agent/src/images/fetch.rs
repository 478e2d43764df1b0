//! Fetching an image: at most `num_fetchers` at a time, at most `max_pending` queued or
//! running (more fails at once with `busy`), one shared fetch per id. The body streams
//! through a SHA-256 hasher and a decompressor straight into `zfs receive` (a send
//! stream) or a new zvol (a raw disk image); nothing is held whole in memory, and a raw
//! image of unknown size is spooled to one temporary file to learn its size.

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
use zfs_sys_shim::{DatasetName, DatasetType, Depth, DestroyOptions, ListQuery, ReceiveArgs};

use super::checksum;
use super::decode::{self, Compression};
use super::{images_root, incoming_dataset, prop};
use crate::imagestore::Store;
use crate::imagestore::error::{StoreError, StoreResult};
use crate::imagestore::ids::MIB;

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// `host:port` or a base URL; `http://<server>/images/<id>/download` is fetched
    /// when a request names no source.
    pub image_server: Option<String>,
    pub num_fetchers: usize,
    pub max_pending: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub status: ImageStatus,
    pub received: u64,
    pub expected: Option<u64>,
    pub error: Option<StoreError>,
}

pub struct Fetcher {
    config: FetchConfig,
    permits: Arc<Semaphore>,
    inflight: Mutex<HashMap<String, watch::Receiver<Progress>>>,
    client: reqwest::Client,
    spool_dir: PathBuf,
}

impl Fetcher {
    pub fn new(config: FetchConfig, spool_dir: PathBuf) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()
            .expect("HTTP client");
        Fetcher {
            permits: Arc::new(Semaphore::new(config.num_fetchers.max(1))),
            config,
            inflight: Mutex::new(HashMap::new()),
            client,
            spool_dir,
        }
    }

    /// The URL to fetch: the request's `source` when given (a relative one is joined to
    /// the image server), else the server's `/images/<id>/download`.
    pub fn resolve_url(&self, id: &str, source: &str) -> StoreResult<String> {
        let base = self.config.image_server.as_deref().map(|s| {
            let s = s.trim_end_matches('/');
            if s.contains("://") { s.to_owned() } else { format!("http://{s}") }
        });
        let url = if source.contains("://") {
            source.to_owned()
        } else {
            let base =
                base.ok_or_else(|| StoreError::invalid("source", "no source URL and no image_server configured"))?;
            if source.is_empty() {
                format!("{base}/images/{id}/download")
            } else {
                format!("{base}/{}", source.trim_start_matches('/'))
            }
        };
        let parsed = reqwest::Url::parse(&url).map_err(|e| StoreError::invalid("source", format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(StoreError::invalid("source", format!("{url:?}: only http and https")));
        }
        Ok(url)
    }

    pub fn in_flight(&self, id: &str) -> bool {
        self.inflight.lock().expect("lock").contains_key(id)
    }

    /// Fill in live progress for a fetch that is running.
    pub fn overlay_progress(&self, id: &str, img: &mut Image) {
        if let Some(rx) = self.inflight.lock().expect("lock").get(id) {
            let p = rx.borrow();
            img.status = Some(p.status);
            img.bytes_received = Some(p.received);
            img.bytes_expected = p.expected;
        }
    }

    /// Join the running fetch of `id`, or start one. Refuses with `busy` beyond
    /// `max_pending`.
    pub fn start(&self, store: &Store, id: &str, url: &str, kind: &str) -> StoreResult<watch::Receiver<Progress>> {
        let mut inflight = self.inflight.lock().expect("lock");
        if let Some(rx) = inflight.get(id) {
            return Ok(rx.clone());
        }
        if inflight.len() >= self.config.max_pending {
            return Err(StoreError::new(
                ErrorKind::Busy,
                format!("{} image fetches are pending (max_pending); try again later", inflight.len()),
            ));
        }
        let (tx, rx) =
            watch::channel(Progress { status: ImageStatus::Pending, received: 0, expected: None, error: None });
        inflight.insert(id.to_owned(), rx.clone());
        let (store, id, url, kind) = (store.clone(), id.to_owned(), url.to_owned(), kind.to_owned());
        tokio::spawn(async move {
            let result = run(&store, &id, &url, &kind, &tx).await;
            if let Err(e) = &result {
                tracing::warn!(image = %id, %url, error = %e, "image fetch failed");
                record_failure(&store, &id, e).await;
            } else {
                tracing::info!(image = %id, %url, "image fetch complete");
            }
            store.images.inflight.lock().expect("lock").remove(&id);
            tx.send_modify(|p| match result {
                Ok(()) => p.status = ImageStatus::Complete,
                Err(e) => {
                    p.status = ImageStatus::Error;
                    p.error = Some(e);
                }
            });
        });
        Ok(rx)
    }
}

/// Wait for a fetch to end; its error, if it failed.
pub async fn wait(mut rx: watch::Receiver<Progress>) -> StoreResult<()> {
    let p = rx
        .wait_for(|p| matches!(p.status, ImageStatus::Complete | ImageStatus::Error))
        .await
        .map_err(|_| StoreError::new(ErrorKind::Internal, "the fetch task ended without a result"))?
        .clone();
    match p.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_owned(), v.to_string())
}

async fn record_failure(store: &Store, id: &str, err: &StoreError) {
    let Ok(placeholder) = incoming_dataset(store, id) else {
        return;
    };
    let data = placeholder.join("data").expect("valid");
    let _ = store.zfs.abort_receive(&data).await;
    let _ = store.zfs.destroy(&data, DestroyOptions { recursive: true, ..Default::default() }).await;
    let message: String = err.message.chars().filter(|c| !c.is_control()).take(1000).collect();
    let _ = store.zfs.set(&placeholder, &[kv(prop::STATUS, "error"), kv(prop::ERROR, message)]).await;
}

/// SHA-256 and length of the bytes as served.
#[derive(Default)]
struct Hashed {
    hasher: Sha256,
    count: u64,
}

/// A reader that hashes and counts what passes through and reports progress. The hash
/// state is shared so it can be read after the reader disappears into a decoder.
struct Metered<R> {
    inner: R,
    hashed: Arc<Mutex<Hashed>>,
    tx: watch::Sender<Progress>,
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
                    h.hasher.update(&buf.filled()[before..]);
                    h.count += n as u64;
                    h.count
                };
                self.tx.send_modify(|p| p.received = count);
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

async fn run(store: &Store, id: &str, url: &str, kind: &str, tx: &watch::Sender<Progress>) -> StoreResult<()> {
    let zfs = &store.zfs;
    let placeholder = incoming_dataset(store, id)?;
    let data = placeholder.join("data").expect("valid");
    let recursive = DestroyOptions { recursive: true, ..Default::default() };
    // A previous failed or interrupted attempt leaves a placeholder; start clean. (Image
    // receives are not resumable, so there is no partial receive state to abort.)
    zfs.destroy(&placeholder, recursive).await?;
    let created = now();
    let meta =
        vec![kv(prop::STATUS, "pending"), kv(prop::SOURCE, url), kv(prop::TYPE, kind), kv(prop::CREATED, created)];
    let mut placeholder_props = meta.clone();
    placeholder_props.push(kv("canmount", "off"));
    // With a fetcher free, the placeholder is born `downloading`: one command, not two.
    let permits = store.images.permits.clone();
    let _permit = match permits.clone().try_acquire_owned() {
        Ok(permit) => {
            placeholder_props[0] = kv(prop::STATUS, "downloading");
            zfs.create_filesystem(&placeholder, true, &placeholder_props).await?;
            permit
        }
        Err(_) => {
            zfs.create_filesystem(&placeholder, true, &placeholder_props).await?;
            let permit = permits.acquire_owned().await.expect("semaphore open");
            zfs.set(&placeholder, &[kv(prop::STATUS, "downloading")]).await?;
            permit
        }
    };
    tx.send_modify(|p| p.status = ImageStatus::Downloading);

    let client = &store.images.client;
    let resp =
        client.get(url).send().await.map_err(|e| StoreError::new(ErrorKind::Internal, format!("GET {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let kind = if status.as_u16() == 404 { ErrorKind::NotFound } else { ErrorKind::Internal };
        return Err(StoreError::new(kind, format!("GET {url}: HTTP {status}")));
    }
    let expected_len = resp.content_length();
    tx.send_modify(|p| p.expected = expected_len);
    let header_digest = checksum::from_headers(
        resp.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect::<Vec<_>>(),
    );
    let expected_sha = match header_digest {
        Some(d) => Some(d),
        None => sidecar_digest(client, url).await,
    };

    let body = resp.bytes_stream().map_err(std::io::Error::other);
    let hashed = Arc::new(Mutex::new(Hashed::default()));
    let metered = Metered { inner: tokio_util::io::StreamReader::new(body), hashed: hashed.clone(), tx: tx.clone() };
    let mut raw = BufReader::with_capacity(1 << 20, metered);
    let compression = decode::sniff_compression(raw.fill_buf().await.map_err(|e| io_err(url, e))?);
    let mut plain = decompress(compression, raw);
    let head = plain.fill_buf().await.map_err(|e| io_err(url, e))?.to_vec();
    if head.is_empty() {
        return Err(StoreError::invalid("source", format!("{url} is empty")));
    }

    // Raw images record their exact byte size; received datasets are sized by ZFS
    // (volsize or referenced), not by the length of the stream that carried them.
    let (image_bytes, snapshot_short) = if decode::is_zfs_stream(&head) {
        let args = ReceiveArgs { unmounted: true, ..ReceiveArgs::into(data.clone()) };
        zfs.receive(&args, &mut plain).await?;
        let short = match decode::stream_snapshot(&head) {
            Some(short) => short,
            None => {
                let query = ListQuery::recursive(data.clone(), DatasetType::Snapshot, &[]).depth(Depth::Max(1));
                let snaps = zfs.list(&query).await?;
                let first =
                    snaps.first().ok_or_else(|| StoreError::invalid("source", "the stream carried no snapshot"))?;
                first.name.split_once('@').map(|(_, s)| s.to_owned()).unwrap_or_default()
            }
        };
        (None, short)
    } else {
        let size =
            write_raw(store, &data, &mut plain, expected_len.filter(|_| compression == Compression::None), id).await?;
        zfs.snapshot(&[data.snapshot("image").expect("valid")], false, &[]).await?;
        (Some(size), "image".to_owned())
    };

    // Read what is left (trailing bytes after a stream's end) so the digest covers it all.
    tokio::io::copy_buf(&mut plain, &mut tokio::io::sink()).await.map_err(|e| io_err(url, e))?;
    let (actual, total) = {
        let h = hashed.lock().expect("lock");
        (checksum::hex(&h.hasher.clone().finalize()), h.count)
    };
    if let Some(expected) = &expected_sha
        && *expected != actual
    {
        zfs.destroy(&data, recursive).await?;
        return Err(StoreError::invalid(
            "source",
            format!("checksum mismatch for {url}: expected sha256 {expected}, got {actual} ({total} bytes)"),
        ));
    }

    let final_name = images_root(store).join(id).map_err(|e| StoreError::invalid("id", e.reason))?;
    let mut done = meta;
    done[0] = kv(prop::STATUS, "complete");
    if let Some(bytes) = image_bytes {
        done.push(kv(prop::SIZE, bytes));
    }
    done.push(kv(prop::SNAPSHOT, format!("{final_name}@{snapshot_short}")));
    if expected_sha.is_some() {
        done.push(kv(prop::SHA256, &actual));
    }
    zfs.set(&data, &done).await?;
    // The rename is the commit point: only now is the image listed as complete.
    zfs.rename(&data, &final_name, true).await?;
    zfs.destroy(&placeholder, recursive).await?;
    Ok(())
}

fn io_err(url: &str, e: std::io::Error) -> StoreError {
    StoreError::new(ErrorKind::Internal, format!("reading {url}: {e}"))
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
) -> StoreResult<u64> {
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
    let device = crate::volumes::create_zvol(store, data, size_mib).await?;
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
        return Err(StoreError::invalid("source", format!("expected {size} bytes of image, got {written}")));
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

fn spool_err(path: impl AsRef<std::path::Path>, e: std::io::Error) -> StoreError {
    StoreError::new(ErrorKind::Internal, format!("{}: {e}", path.as_ref().display()))
}
