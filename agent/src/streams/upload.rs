//! `zfs receive` from an HTTP upload.
//!
//! The first bytes are checked before anything runs: a body that is not a `zfs send`
//! stream is refused with nothing touched. The receive is resumable (`-s`), and what
//! happens to partial state depends on who stopped:
//! - the client's connection broke: the state is kept, for `GET /snapshots/resume-token`
//!   and a resumed send (or `DELETE` to give up);
//! - the body ended cleanly but the stream inside was short or bad: the state this
//!   upload made is discarded (`receive -A`), so nothing half-made is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use futures_util::{StreamExt, TryStreamExt};
use rpc_schema::streams::{UploadQuery, UploadResponse};
use tokio::io::AsyncReadExt;
use zfs_sys_shim::ReceiveArgs;

use super::Streams;
use crate::error::{Error, Kind, Result};
use crate::ids;
use crate::images::decode;
use crate::wire::ApiError;

/// Enough of the stream to read its BEGIN record (312 bytes).
const HEAD: usize = 1024;

pub async fn upload(
    State(s): State<Streams>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Json<UploadResponse>, ApiError> {
    let q: UploadQuery = crate::wire::query(q.as_deref())?;
    let dest = s.dataset("dest", &q.dest)?;
    let origin =
        q.origin.as_deref().map(|o| ids::snapshot(&s.root, "origin", ids::relative(&s.root, o))).transpose()?;
    let _slot = s.slot()?;
    // Until the receive has ended, whichever way (the abort of a failed one included).
    let _receiving = s.receive_into(&dest)?;

    // Whether the body broke (the client left) rather than ended.
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    // A client that sends nothing for `idle` is cut like one that left: the slot goes
    // back and the partial state stays for a resumed send.
    let idle = s.idle;
    let chunks = body.into_data_stream().map_err(std::io::Error::other);
    let data = futures_util::stream::unfold(Box::pin(chunks), move |mut chunks| async move {
        match tokio::time::timeout(idle, chunks.next()).await {
            Ok(Some(item)) => Some((item, chunks)),
            Ok(None) => None,
            Err(_) => Some((Err(std::io::Error::other(format!("no data for {} s", idle.as_secs()))), chunks)),
        }
    })
    .map_err(move |e| {
        flag.store(true, Ordering::Relaxed);
        e
    })
    .boxed();
    let mut body = tokio_util::io::StreamReader::new(data);
    let mut head = Vec::with_capacity(HEAD);
    while head.len() < HEAD {
        if (&mut body).take((HEAD - head.len()) as u64).read_to_end(&mut head).await.map_err(read_err)? == 0 {
            break;
        }
    }
    if head.is_empty() {
        return Err(ApiError::from(invalid("the body is empty; send a `zfs send` stream")));
    }
    if !decode::is_zfs_stream(&head) {
        return Err(ApiError::from(invalid("the body is not a `zfs send` stream (no DRR_BEGIN record)")));
    }
    let resuming = decode::is_resuming(&head);
    let snapshot = decode::stream_snapshot(&head).map(|short| format!("{dest}@{short}"));
    tracing::info!(%dest, resuming, toname = ?decode::stream_toname(&head), "upload started");

    let args =
        ReceiveArgs { resumable: true, force: q.force, origin, unmounted: true, ..ReceiveArgs::into(dest.clone()) };
    let stream = std::io::Cursor::new(head).chain(body);
    match s.zfs.receive(&args, stream).await {
        Ok(outcome) => {
            tracing::info!(%dest, bytes = outcome.bytes, "upload received");
            Ok(Json(UploadResponse { dest: dest.to_string(), snapshot, bytes: outcome.bytes }))
        }
        Err(e) if broken.load(Ordering::Relaxed) => {
            tracing::warn!(%dest, error = %e, "upload cut off; partial state kept for a resumed send");
            let mut err = Error::from(e);
            err.message.push_str("; the partial state is kept: GET /snapshots/resume-token to resume");
            Err(err.into())
        }
        Err(e) => {
            // State from an earlier interrupted upload is not this upload's to discard:
            // a failed resume keeps it, and ZFS refuses a new stream before touching it.
            let earlier = resuming || e.says(zfs_sys_shim::Detail::PartialReceiveState);
            if !earlier && let Err(abort) = s.zfs.abort_receive(&dest).await {
                tracing::warn!(%dest, error = %abort, "could not discard a failed upload's partial state");
            }
            let mut err = Error::from(e);
            if err.kind == Kind::Conflict && !earlier {
                // With -s a short stream reads as "interrupted"; from a body that ended
                // cleanly it is a truncated stream, and nothing of it was kept.
                err = invalid(&format!("the stream is truncated or corrupt; nothing was kept ({})", err.message));
            }
            Err(err.into())
        }
    }
}

fn invalid(message: &str) -> Error {
    Error::invalid("body", message)
}

fn read_err(e: std::io::Error) -> Error {
    Error::new(Kind::Invalid, format!("reading the request body: {e}"))
}
