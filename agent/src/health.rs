//! `GET /health`: pool health and space, ZFS versions, uptime. 200 while the pool can
//! serve I/O (ONLINE or DEGRADED), 503 otherwise, so a load balancer can act on it.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use rpc_schema::{Health, HealthStatus, PoolHealth, ZfsVersions};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if !state.config.zfs {
        let body = Health {
            status: HealthStatus::Ok,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pool: None,
            zfs: None,
            dataset_root: String::new(),
            embedded_pool: false,
            uptime_seconds: state.started.elapsed().as_secs(),
            problem: None,
        };
        return (StatusCode::OK, Json(body));
    }
    let (pool, version) = tokio::join!(state.zfs.pool_info(&state.config.pool), state.zfs.version());
    let mut problem = None;
    let pool = match pool {
        Ok(p) => {
            Some(PoolHealth { name: p.name, health: p.health, size: p.size, allocated: p.allocated, free: p.free })
        }
        Err(e) => {
            problem = Some(e.to_string());
            None
        }
    };
    let zfs = match version {
        Ok(v) => Some(ZfsVersions { userland: v.userland, kernel: v.kernel }),
        Err(e) => {
            problem.get_or_insert(e.to_string());
            None
        }
    };
    let status = pool.as_ref().map_or(HealthStatus::Down, |p| HealthStatus::from_pool_health(&p.health));
    let code = if status == HealthStatus::Down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = Health {
        status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pool,
        zfs,
        dataset_root: state.config.dataset_root.to_string(),
        embedded_pool: state.config.embedded_pool,
        uptime_seconds: state.started.elapsed().as_secs(),
        problem,
    };
    (code, Json(body))
}
