//! The HTTP service: `app(state)` builds the router (tests call it with `oneshot`, no
//! socket), `serve` runs it on every TCP address and the unix socket until shutdown.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{Token, require_token_to_mutate};
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a per-process random prefix and a counter, so ids are unique across
/// restarts without a uuid dependency. A client-sent `x-request-id` is kept.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut seed = [0u8; 4];
        let _ = getrandom_fill(&mut seed);
        RequestIds { prefix: format!("{:08x}", u32::from_le_bytes(seed)).into(), next: Arc::new(AtomicU64::new(1)) }
    }
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix).parse().ok().map(RequestId::new)
    }
}

/// Every route of tankd, with request ids, tracing spans and the token check.
pub fn app(state: AppState) -> Router {
    let token = Token(state.config.api_token.as_deref().map(Arc::from));
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
    });
    let store = state.store.clone();
    let streams =
        crate::streams::Streams::new(state.zfs.clone(), state.config.dataset_root.clone(), state.config.max_streams);
    let zfs_routes = if state.config.zfs {
        Router::new().merge(crate::imagestore::routes(store)).merge(crate::streams::routes(streams, token.clone()))
    } else {
        zfs_disabled()
    };
    let imageapi =
        crate::imageapi::routes(state.imageapi.clone()).merge(crate::containers::routes(state.containers.clone()));
    Router::new()
        .merge(crate::health::routes().with_state(state))
        .merge(zfs_routes)
        .merge(imageapi)
        .layer(axum::middleware::from_fn_with_state(token, require_token_to_mutate))
        // Outermost first on the way in: set the id, open the span, then the rest.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
}

/// On a node configured with `zfs = false`, the ZFS endpoints say so instead of 404.
fn zfs_disabled() -> Router {
    use axum::http::StatusCode;
    use rpc_schema::{ErrorBody, ErrorDetail, ErrorKind};
    let off = || async {
        let detail = ErrorDetail {
            kind: ErrorKind::Unavailable,
            message: "this node runs with zfs = false: ImageStore and snapshot streams are off".into(),
            field: None,
        };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ErrorBody { error: detail }))
    };
    Router::new()
        .route("/_mistify_RPC_", axum::routing::any(off))
        .route("/rpc", axum::routing::any(off))
        .route("/snapshots/{*rest}", axum::routing::any(off))
}

/// Bind a unix socket, replacing a stale one from a previous run (only if it is a socket).
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    // Owner and group only: the socket is as powerful as the token-less TCP API.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    addr: String,
    source: std::io::Error,
}

/// Bound listeners, ready to serve. Binding happens before serving so that a taken port
/// is a startup error, not a background one.
pub struct Listeners {
    tcp: Vec<TcpListener>,
    unix: Option<(UnixListener, std::path::PathBuf)>,
}

pub async fn bind(config: &crate::config::Config) -> Result<Listeners, BindError> {
    let mut tcp = Vec::new();
    for addr in &config.listen {
        let l = TcpListener::bind(addr).await.map_err(|source| BindError { addr: addr.to_string(), source })?;
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening on TCP");
        tcp.push(l);
    }
    let unix = match &config.socket {
        Some(path) => {
            let l = bind_unix(path).map_err(|source| BindError { addr: path.display().to_string(), source })?;
            tracing::info!(path = %path.display(), "listening on unix socket");
            Some((l, path.clone()))
        }
        None => None,
    };
    Ok(Listeners { tcp, unix })
}

/// Serve until `shutdown` is cancelled, then stop accepting and give in-flight requests
/// up to `grace` to finish.
pub async fn serve(listeners: Listeners, app: Router, shutdown: CancellationToken, grace: Duration) {
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners.tcp {
        let (app, stop) = (app.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _ = axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
    }
    let socket_path = listeners.unix.as_ref().map(|(_, p)| p.clone());
    if let Some((l, _)) = listeners.unix {
        let (app, stop) = (app.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _ = axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
    }
    shutdown.cancelled().await;
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new connections, finishing requests");
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("requests still running after the grace period; cancelling them");
        tasks.abort_all();
    }
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
}

/// Cancel `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        token.cancel();
    });
    Ok(())
}
