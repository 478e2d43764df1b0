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

use crate::auth::{Token, refuse_forgery, require_token};
use crate::config::AuthMode;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The largest JSON (or JSON-RPC) request body any route takes; larger ones get 413.
/// Snapshot uploads stream their body and are bounded by the pool, not by this.
pub const MAX_JSON_BODY: usize = 1 << 20;

fn bounded(router: Router) -> Router {
    router.layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BODY))
}

/// Request ids: a per-process random prefix and a counter, so ids are unique across
/// restarts without a uuid dependency. A client-sent `x-request-id` is kept.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let seed = crate::crypto::random_bytes::<4>().unwrap_or_default();
        RequestIds { prefix: format!("{:08x}", u32::from_le_bytes(seed)).into(), next: Arc::new(AtomicU64::new(1)) }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix).parse().ok().map(RequestId::new)
    }
}

/// Request ids, the tracing span and the request metrics: what every listener's router
/// gets around its routes.
fn observed(router: Router, state: &AppState, listener: &'static str) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(move |req: &Request<_>| {
        let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", listener, id = %id, method = %req.method(), path = %req.uri().path())
    });
    let tracked = crate::metrics::Tracked { metrics: state.http.clone(), listener };
    router
        .layer(axum::middleware::from_fn_with_state(tracked, crate::metrics::track))
        // Outermost first on the way in: set the id, open the span, then the rest.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
}

/// `/health` and `/metrics`, on every TCP listener.
fn node_routes(state: &AppState) -> Router {
    crate::health::routes().route("/metrics", axum::routing::get(metrics)).with_state(state.clone())
}

/// The main API's own routes: ImageStore, streams, imageapi and containers.
fn api_routes(state: &AppState) -> Router {
    let zfs_routes = if state.config.zfs {
        Router::new()
            .merge(crate::imagestore::routes(state.store.clone()))
            .merge(crate::streams::routes(state.streams.clone()))
    } else {
        zfs_disabled()
    };
    let imageapi =
        crate::imageapi::routes(state.imageapi.clone()).merge(crate::containers::routes(state.containers.clone()));
    bounded(zfs_routes.merge(imageapi))
}

/// The main API on TCP: every route but `/health` and `/metrics` needs the token; under
/// `auth = "none"`, requests a web page could forge are refused instead (`auth`).
pub fn app(state: AppState) -> Router {
    let guarded = match state.config.auth {
        AuthMode::Token => {
            let token =
                Token(Arc::from(state.config.api_token.as_deref().expect("auth = token: node_token set it at start")));
            api_routes(&state).layer(axum::middleware::from_fn_with_state(token, require_token))
        }
        AuthMode::None => api_routes(&state).layer(axum::middleware::from_fn(refuse_forgery)),
    };
    observed(node_routes(&state).merge(guarded), &state, "api")
}

/// The main API on the unix socket: the socket's file mode (root and `socket_group`) is
/// the authorization, as for Docker's socket, so no token is asked for.
pub fn unix_app(state: AppState) -> Router {
    observed(node_routes(&state).merge(api_routes(&state)), &state, "unix")
}

/// The control API (it checks tokens itself: service tokens are per route).
pub fn control_app(state: AppState) -> Option<Router> {
    let control = state.control.clone()?;
    let routes = Router::new().merge(node_routes(&state)).merge(bounded(crate::control::routes(control)));
    Some(observed(routes, &state, "control"))
}

/// The S3 endpoint (`s3s` checks every signature; the in-flight cap is its own).
pub fn s3_app(state: AppState) -> Option<Router> {
    let control = state.control.clone()?;
    let routes = Router::new().merge(node_routes(&state)).merge(crate::s3::routes(control.s3));
    Some(observed(routes, &state, "s3"))
}

/// The Docker VolumeDriver plugin (ZFS only).
pub fn docker_app(state: AppState) -> Option<Router> {
    let control = state.control.clone().filter(|c| c.zfs_on)?;
    Some(observed(bounded(crate::docker::routes(control.volumes)), &state, "docker"))
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl axum::response::IntoResponse {
    let mut g = crate::metrics::Gauges {
        fetches_in_flight: state.store.images.in_flight_ids().len(),
        streams_active: state.streams.active(),
        uptime_seconds: state.started.elapsed().as_secs(),
        ..Default::default()
    };
    if state.config.zfs
        && let Ok(p) = state.zfs.pool_info(&state.config.pool).await
    {
        let healthy = rpc_schema::HealthStatus::from_pool_health(&p.health) != rpc_schema::HealthStatus::Down;
        g.pool = Some((p.name, p.size, p.allocated, p.free, healthy));
    }
    for c in state.containers.list().await {
        let st = serde_json::to_value(c.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        *g.containers_by_state.entry(st).or_insert(0) += 1;
    }
    if let Some(control) = &state.control
        && let Ok(vs) = control.volumes.count().await
    {
        g.docker_volumes = Some((vs, control.volumes.mount_count().await));
    }
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(&state.http, &g))
}

/// On a node configured with `zfs = false`, the ZFS endpoints say so instead of 404.
fn zfs_disabled() -> Router {
    let off = || async {
        crate::wire::ApiError(crate::error::Error::unavailable(
            "this node runs with zfs = false: ImageStore and snapshot streams are off",
        ))
    };
    Router::new()
        .route("/_mistify_RPC_", axum::routing::any(off))
        .route("/rpc", axum::routing::any(off))
        .route("/snapshots/{*rest}", axum::routing::any(off))
}

/// Bind a unix socket, replacing a stale one from a previous run (only if it is a socket).
/// Mode 0660: root, and `group` when given, may connect.
fn bind_unix(path: &Path, group: Option<&str>) -> std::io::Result<UnixListener> {
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
    // Owner and group only: the socket needs no token, so its mode is its authorization.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(name) = group {
        let gid = nix::unistd::Group::from_name(name)
            .map_err(std::io::Error::from)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no group named {name:?}")))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(std::io::Error::from)?;
    }
    Ok(listener)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    addr: String,
    source: std::io::Error,
}

/// A bound socket and what it serves.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Bound listeners, ready to serve. Binding happens before serving so that a taken port
/// is a startup error, not a background one.
pub struct Listeners {
    /// The main API (ImageStore, streams, imageapi, containers).
    pub main: Vec<Bound>,
    /// The control API.
    pub control: Vec<Bound>,
    /// The S3 endpoint.
    pub s3: Vec<Bound>,
    /// The MongoDB-wire endpoint (served by `docstore`, not a router).
    pub db: Vec<TcpListener>,
    /// The Docker VolumeDriver socket.
    pub docker: Option<Bound>,
    /// Socket files tankd made and removes on the way out (not systemd's).
    pub owned_paths: Vec<std::path::PathBuf>,
}

async fn bind_tcp(addr: &std::net::SocketAddr, what: &str) -> Result<TcpListener, BindError> {
    let l = TcpListener::bind(addr).await.map_err(|source| BindError { addr: addr.to_string(), source })?;
    tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), what, "listening on TCP");
    Ok(l)
}

/// Bind what the config asks for. `activated` are descriptors from systemd socket
/// activation; the one named `docker-plugin` is used instead of binding the plugin socket.
pub async fn bind(
    config: &crate::config::Config,
    activated: Vec<(String, std::os::fd::OwnedFd)>,
) -> Result<Listeners, BindError> {
    let mut ls = Listeners {
        main: Vec::new(),
        control: Vec::new(),
        s3: Vec::new(),
        db: Vec::new(),
        docker: None,
        owned_paths: Vec::new(),
    };
    // The main API is bound last: whoever waits for its port finds the others ready too.
    bind_control_and_plugin(config, activated, &mut ls).await?;
    for addr in &config.s3_listen {
        ls.s3.push(Bound::Tcp(bind_tcp(addr, "s3").await?));
    }
    for addr in &config.db_listen {
        ls.db.push(bind_tcp(addr, "db").await?);
    }
    for addr in &config.listen {
        ls.main.push(Bound::Tcp(bind_tcp(addr, "api").await?));
    }
    if let Some(path) = &config.socket {
        let l = bind_unix(path, config.socket_group.as_deref())
            .map_err(|source| BindError { addr: path.display().to_string(), source })?;
        tracing::info!(path = %path.display(), group = ?config.socket_group, "listening on unix socket");
        ls.main.push(Bound::Unix(l));
        ls.owned_paths.push(path.clone());
    }
    Ok(ls)
}

async fn bind_control_and_plugin(
    config: &crate::config::Config,
    activated: Vec<(String, std::os::fd::OwnedFd)>,
    ls: &mut Listeners,
) -> Result<(), BindError> {
    for addr in &config.control_listen {
        ls.control.push(Bound::Tcp(bind_tcp(addr, "control").await?));
    }
    let mut activated = activated;
    if !config.zfs {
        // Docker volumes are datasets: no plugin on a node without ZFS.
    } else if let Some(i) = activated.iter().position(|(name, _)| name == "docker-plugin") {
        let (_, fd) = activated.swap_remove(i);
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        let l = std_listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(std_listener))
            .map_err(|source| BindError { addr: "systemd socket docker-plugin".into(), source })?;
        tracing::info!("docker volume plugin on the socket systemd passed");
        ls.docker = Some(Bound::Unix(l));
    } else if let Some(path) = &config.docker_socket {
        let l = bind_unix(path, None).map_err(|source| BindError { addr: path.display().to_string(), source })?;
        tracing::info!(path = %path.display(), "docker volume plugin listening");
        ls.docker = Some(Bound::Unix(l));
        ls.owned_paths.push(path.clone());
    }
    for (name, _) in &activated {
        tracing::warn!(name, "ignoring a socket systemd passed that tankd has no use for");
    }
    Ok(())
}

/// Serve every (listener, router) pair until `shutdown` is cancelled, then stop
/// accepting and give in-flight requests up to `grace` to finish.
pub async fn serve(
    served: Vec<(Bound, Router)>,
    owned_paths: Vec<std::path::PathBuf>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (bound, app) in served {
        let stop = shutdown.clone();
        match bound {
            Bound::Tcp(l) => tasks.spawn(async move {
                use axum::serve::ListenerExt;
                // axum 0.8 leaves Nagle on: a small response then waits for the client's
                // delayed ACK (a 4 KiB S3 GET took 28 ms instead of 3).
                let l = l.tap_io(|s| {
                    let _ = s.set_nodelay(true);
                });
                let _ = axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await;
            }),
            Bound::Unix(l) => tasks.spawn(async move {
                let _ = axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await;
            }),
        };
    }
    shutdown.cancelled().await;
    crate::systemd::notify(&[crate::systemd::NotifyState::Stopping]);
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new connections, finishing requests");
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("requests still running after the grace period; cancelling them");
        tasks.abort_all();
    }
    for p in owned_paths {
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
