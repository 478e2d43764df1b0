//! Snapshot streams over HTTP: `zfs send` as a download, `zfs receive` from an upload.
//!
//! - `POST /snapshots/download` (mistify's JSON body) and `GET /snapshots/download?…`
//!   answer a `zfs send` stream ([`download`]).
//! - `POST` (or `PUT`, as `curl -T` sends) `/snapshots/upload?dest=…` feeds the body to
//!   `zfs receive -s` ([`upload`]).
//! - `GET`/`DELETE /snapshots/resume-token?dest=…`: the partial state an interrupted
//!   upload kept, to resume (`resume_token` on the sending side) or abort (`receive -A`).
//! - `GET /snapshots/points?dataset=…`: the dataset's snapshots and bookmarks with their
//!   GUIDs, for a replicating node to find the base of its next stream.
//!
//! At most `max_streams` downloads and uploads run at once; more get 429. Like every
//! main-API route, these need the API token on TCP (`auth`), reads included.

mod download;
mod holds;
mod upload;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use rpc_schema::streams::{PointsQuery, PointsResponse, ResumeTokenQuery, ResumeTokenResponse, SnapshotPoint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zfs_sys_shim::{DatasetName, Zfs};

use crate::error::{Error, Result};
use crate::ids;
use crate::wire::ApiError;

pub use holds::release_leftover_holds;

/// What the stream routes share. Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    pub zfs: Zfs,
    pub root: DatasetName,
    permits: Arc<Semaphore>,
    max: usize,
    /// How long a stream may make no progress (the client neither reads nor sends)
    /// before it is cut and its slot freed.
    pub idle: std::time::Duration,
    /// Datasets an upload is receiving into now. ZFS updates a resumable receive's
    /// token as it goes: one read before the receive has ended (a cut upload is still
    /// being torn down) names a point the final partial state is past, and the resumed
    /// stream is refused. So the token routes wait for the receive to end (409 till
    /// then), and a second upload into the same dataset is refused too.
    receiving: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Marks a dataset as being received into while it lives.
pub struct Receiving {
    set: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    dest: String,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.dest);
    }
}

impl Streams {
    pub fn new(zfs: Zfs, root: DatasetName, max_streams: usize, idle: std::time::Duration) -> Self {
        Streams {
            zfs,
            root,
            permits: Arc::new(Semaphore::new(max_streams)),
            max: max_streams,
            idle,
            receiving: Default::default(),
        }
    }

    /// Claim `dest` for one upload; 409 while another upload receives into it.
    fn receive_into(&self, dest: &DatasetName) -> Result<Receiving> {
        let mut set = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(dest.to_string()) {
            return Err(still_receiving(dest));
        }
        Ok(Receiving { set: self.receiving.clone(), dest: dest.to_string() })
    }

    fn check_not_receiving(&self, dest: &DatasetName) -> Result<()> {
        match self.receiving.lock().unwrap_or_else(|p| p.into_inner()).contains(dest.as_str()) {
            true => Err(still_receiving(dest)),
            false => Ok(()),
        }
    }

    /// Streams running now.
    pub fn active(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A slot for one stream, held until the stream ends; 429 when all are taken.
    fn slot(&self) -> Result<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            Error::too_many(format!("{} snapshot streams are running (max_streams); try again later", self.max))
        })
    }

    /// A root-relative (or full, under the root) dataset from a request field.
    fn dataset(&self, field: &str, id: &str) -> Result<DatasetName> {
        ids::dataset(&self.root, field, ids::relative(&self.root, id))
    }
}

fn still_receiving(dest: &DatasetName) -> Error {
    Error::busy(format!("an upload into {dest} is still running (or ending); ask again when it has ended"))
}

pub fn routes(streams: Streams) -> Router {
    Router::new()
        .route("/snapshots/download", post(download::by_body).get(download::by_query))
        .route("/snapshots/upload", post(upload::upload).put(upload::upload))
        .route("/snapshots/resume-token", get(resume_token).delete(abort_resume))
        .route("/snapshots/points", get(points))
        .with_state(streams)
}

/// The dataset's snapshots and bookmarks, oldest first, with their GUIDs.
async fn points(State(s): State<Streams>, RawQuery(q): RawQuery) -> Result<Json<PointsResponse>, ApiError> {
    let q: PointsQuery = crate::wire::query(q.as_deref())?;
    let dataset = s.dataset("dataset", &q.dataset)?;
    let points = crate::replication::local::points(&s.zfs, &dataset).await?;
    Ok(Json(PointsResponse {
        dataset: dataset.to_string(),
        points: points
            .into_iter()
            .map(|p| SnapshotPoint {
                name: p.name,
                guid: p.guid.to_string(),
                createtxg: p.createtxg,
                bookmark: p.bookmark,
            })
            .collect(),
    }))
}

/// The token of an upload that stopped part-way, to hand to the sending side.
async fn resume_token(State(s): State<Streams>, RawQuery(q): RawQuery) -> Result<Json<ResumeTokenResponse>, ApiError> {
    let q: ResumeTokenQuery = crate::wire::query(q.as_deref())?;
    let dest = s.dataset("dest", &q.dest)?;
    s.check_not_receiving(&dest)?;
    match s.zfs.resume_token(&dest).await? {
        Some(token) => Ok(Json(ResumeTokenResponse { dest: dest.to_string(), token })),
        None => Err(ApiError::from(Error::not_found(format!("{dest} has no interrupted receive to resume")))),
    }
}

/// Give up on an interrupted upload: `zfs receive -A` discards its partial state.
async fn abort_resume(State(s): State<Streams>, RawQuery(q): RawQuery) -> Result<StatusCode, ApiError> {
    let q: ResumeTokenQuery = crate::wire::query(q.as_deref())?;
    let dest = s.dataset("dest", &q.dest)?;
    s.check_not_receiving(&dest)?;
    if s.zfs.resume_token(&dest).await?.is_none() {
        return Err(ApiError::from(Error::not_found(format!("{dest} has no interrupted receive to abort"))));
    }
    s.zfs.abort_receive(&dest).await?;
    Ok(StatusCode::NO_CONTENT)
}
