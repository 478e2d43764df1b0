//! `zfs send` as an HTTP download.
//!
//! The request is checked and the snapshots held before the 200 goes out, so a missing
//! snapshot is a 404, not a broken stream. The hold and `zfs send -P` start together;
//! the send prints its size estimate before its first byte, so the estimate costs no
//! command of its own. The body is read from the (enlarged)
//! pipe into one buffer and handed to the socket as is; when the client goes away the
//! body is dropped, which kills `zfs send` and releases the holds. A send that fails
//! part-way ends the body with an error, so the client sees a cut transfer rather than a
//! short stream that looks whole.
//!
//! A pump task reads the send and hands chunks to the body through a small channel. A
//! client that stops reading (the socket's buffers full) leaves the pump waiting; after
//! `stream_idle_timeout` it gives up: the send is killed, the holds and the slot are
//! released, and the body ends in an error the next time it is polled.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use rpc_schema::streams::{DownloadRequest, ESTIMATED_SIZE_HEADER};
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::bytes::BytesMut;
use zfs_sys_shim::{SendArgs, SendFrom, SendStream, SnapshotName};

use super::Streams;
use super::holds::{self, Held};
use crate::error::{Error, Result};
use crate::ids;
use crate::wire::ApiError;

/// Read size from the pipe; the pipe itself holds up to 8 MiB.
const CHUNK: usize = 1 << 20;

/// mistify's form: a JSON body `{"id": …}`, with or without a JSON content type.
pub async fn by_body(State(s): State<Streams>, body: Bytes) -> Result<Response, ApiError> {
    let req =
        if body.iter().all(u8::is_ascii_whitespace) { DownloadRequest::default() } else { crate::wire::json(&body)? };
    Ok(download(s, req).await?)
}

pub async fn by_query(State(s): State<Streams>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    Ok(download(s, crate::wire::query(q.as_deref())?).await?)
}

/// The send to run and the snapshots it must pin.
struct Plan {
    args: SendArgs,
    hold: Vec<SnapshotName>,
    name: String,
}

fn from_base(s: &Streams, snapshot: &SnapshotName, from: &str, intermediates: bool) -> Result<SendFrom> {
    let dataset = snapshot.dataset();
    let bad = |e: zfs_sys_shim::NameError| Error::invalid("from", e.reason);
    if let Some(mark) = from.strip_prefix('#') {
        if intermediates {
            return Err(Error::invalid("intermediates", "a bookmark base has no intermediate snapshots"));
        }
        return Ok(SendFrom::Bookmark(dataset.bookmark(mark).map_err(bad)?));
    }
    if let Some((ds, mark)) = from.split_once('#') {
        if intermediates {
            return Err(Error::invalid("intermediates", "a bookmark base has no intermediate snapshots"));
        }
        return Ok(SendFrom::Bookmark(s.dataset("from", ds)?.bookmark(mark).map_err(bad)?));
    }
    let base = match from.strip_prefix('@') {
        Some(short) => dataset.snapshot(short).map_err(bad)?,
        None if from.contains('@') => ids::snapshot(&s.root, "from", ids::relative(&s.root, from))?,
        None => dataset.snapshot(from).map_err(bad)?,
    };
    Ok(if intermediates { SendFrom::Intermediates(base) } else { SendFrom::Snapshot(base) })
}

async fn plan(s: &Streams, req: &DownloadRequest) -> Result<Plan> {
    if let Some(token) = &req.resume_token {
        let extra = !req.id.is_empty()
            || req.from.is_some()
            || req.intermediates
            || req.replicate
            || req.raw
            || req.compressed
            || req.large_blocks;
        if extra {
            return Err(Error::invalid(
                "resume_token",
                "a resumed send takes its snapshot and flags from the token; pass none",
            ));
        }
        let args = SendArgs::resume(token)?;
        let target = s.zfs.resume_token_target(token).await?;
        return Ok(Plan { args, name: target.to_string(), hold: vec![target] });
    }
    if req.id.is_empty() {
        return Err(Error::invalid("id", "missing: the snapshot to send (dataset@snap)"));
    }
    let snapshot = ids::snapshot(&s.root, "id", ids::relative(&s.root, &req.id))?;
    let mut hold = vec![snapshot.clone()];
    let mut args = match &req.from {
        Some(from) => {
            let base = from_base(s, &snapshot, from, req.intermediates)?;
            if let SendFrom::Snapshot(b) | SendFrom::Intermediates(b) = &base {
                hold.push(b.clone());
            }
            SendArgs::incremental(snapshot.clone(), base)?
        }
        None if req.intermediates => return Err(Error::invalid("intermediates", "needs `from`")),
        None => SendArgs::full(snapshot.clone()),
    };
    args.replicate = req.replicate;
    args.raw = req.raw;
    args.compressed = req.compressed;
    args.large_blocks = req.large_blocks;
    Ok(Plan { args, hold, name: snapshot.to_string() })
}

pub async fn download(s: Streams, req: DownloadRequest) -> Result<Response> {
    let slot = s.slot()?;
    let plan = plan(&s, &req).await?;
    let (held, send) =
        tokio::join!(holds::hold(&s.zfs, plan.hold.clone(), plan.args.replicate), s.zfs.send_estimated(&plan.args));
    // A hold that fails (the snapshot is missing, say) says why best; the send, if it
    // started, is killed as it drops.
    let held = held?;
    let (send, estimate) = send?;
    tracing::info!(snapshot = %plan.name, command = %send.command(), ?estimate, "download started");

    let running = Running {
        send: Some(send),
        buf: BytesMut::with_capacity(CHUNK),
        bytes: 0,
        span: tracing::Span::current(),
        _held: held,
        _slot: slot,
    };
    let mut resp = Response::new(Body::from_stream(pumped(running, s.idle)));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(n) = estimate {
        headers.insert(ESTIMATED_SIZE_HEADER, HeaderValue::from(n));
    }
    let file = plan.name.replace(['/', '@'], "_");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}.zfs\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// A download in progress. Dropping it (the client left) kills `zfs send`, releases the
/// holds and frees the slot.
struct Running {
    send: Option<SendStream>,
    buf: BytesMut,
    bytes: u64,
    span: tracing::Span,
    _held: Held,
    _slot: OwnedSemaphorePermit,
}

/// The chunks of `r`, read by a task of their own that gives up when the body has not
/// taken a chunk for `idle`.
fn pumped(r: Running, idle: std::time::Duration) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    // Set when the send's own stream ended (whole, or with its error already queued).
    let ended = std::sync::Arc::new(AtomicBool::new(false));
    let span = r.span.clone();
    let pump_ended = ended.clone();
    tokio::spawn(async move {
        let mut chunks = std::pin::pin!(futures_util::stream::try_unfold(r, next_chunk));
        while let Some(chunk) = chunks.next().await {
            match tokio::time::timeout(idle, tx.send(chunk)).await {
                Ok(Ok(())) => {}
                // The client left: dropping the chunks kills the send.
                Ok(Err(_)) => return,
                Err(_) => {
                    let idle_seconds = idle.as_secs();
                    tracing::warn!(parent: &span, idle_seconds, "the client stopped reading; cutting the download");
                    return;
                }
            }
        }
        pump_ended.store(true, Ordering::Release);
    });
    // A channel that closes before the send's end (the pump gave up) must not read as a
    // complete body: it ends in an error, and the client sees a cut transfer.
    futures_util::stream::unfold((rx, ended, false), |(mut rx, ended, over)| async move {
        if over {
            return None;
        }
        match rx.recv().await {
            Some(item) => Some((item, (rx, ended, false))),
            None if ended.load(Ordering::Acquire) => None,
            None => {
                let cut = std::io::Error::other("the download was cut: the client stopped reading");
                Some((Err(cut), (rx, ended, true)))
            }
        }
    })
}

async fn next_chunk(mut r: Running) -> std::io::Result<Option<(Bytes, Running)>> {
    let Some(send) = r.send.as_mut() else {
        return Ok(None);
    };
    // Reuses the buffer's allocation once the socket has released the previous chunk.
    r.buf.reserve(CHUNK);
    let n = send.read_buf(&mut r.buf).await?;
    if n > 0 {
        r.bytes += n as u64;
        return Ok(Some((r.buf.split().freeze(), r)));
    }
    let send = r.send.take().expect("present");
    match send.finish().await {
        Ok(()) => {
            tracing::info!(parent: &r.span, bytes = r.bytes, "download finished");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(parent: &r.span, bytes = r.bytes, error = %e, "zfs send failed part-way; cutting the download");
            Err(std::io::Error::other(e.to_string()))
        }
    }
}
