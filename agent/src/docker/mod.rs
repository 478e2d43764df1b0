//! Docker's legacy VolumeDriver plugin on a unix socket (`/run/docker/plugins/tankd.sock`):
//! `docker volume create -d tankd --opt size=64M v1` makes `<root>/volumes/v1`.
//!
//! Docker POSTs JSON, sometimes without a Content-Type, and reads `{"Err": ...}`; errors
//! are HTTP 500 with the message in `Err`, as Docker's plugin helpers do. The socket is
//! served without the API token: it is root-only (0600) and Docker cannot send one.

pub mod known;
pub mod options;
pub mod report;
pub mod restore;
pub mod store;

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;

use axum::routing::post;

use rpc_schema::control::docker::{Reply, Request, Volume};

use crate::error::Result;
use crate::wire::docker::PluginReply;
use known::KnownVolume;
pub use store::{VolumeOpts, VolumeStore};

fn ok(reply: Reply) -> PluginReply {
    PluginReply::ok(serde_json::to_value(reply).unwrap_or_default())
}

fn parse(body: &Bytes) -> Result<Request> {
    // Docker sends some calls (List, Capabilities) with no body at all.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Request::default());
    }
    crate::wire::json(body)
}

pub fn routes(store: VolumeStore) -> Router {
    Router::new()
        .route(
            "/Plugin.Activate",
            post(|| async { PluginReply::ok(serde_json::json!({ "Implements": ["VolumeDriver"] })) }),
        )
        .route(
            "/VolumeDriver.Capabilities",
            post(|| async { PluginReply::ok(serde_json::json!({ "Capabilities": { "Scope": "local" } })) }),
        )
        .route("/VolumeDriver.Create", post(create))
        .route("/VolumeDriver.Remove", post(remove))
        .route("/VolumeDriver.Mount", post(mount))
        .route("/VolumeDriver.Unmount", post(unmount))
        .route("/VolumeDriver.Path", post(path))
        .route("/VolumeDriver.Get", post(get))
        .route("/VolumeDriver.List", post(list))
        .with_state(store)
}

async fn create(State(store): State<VolumeStore>, body: Bytes) -> PluginReply {
    let run = async {
        let req = parse(&body)?;
        let opts = VolumeOpts::parse(&req.opts.unwrap_or_default())?;
        store.create(&req.name, &opts).await
    };
    run.await.map_or_else(PluginReply::err, |()| ok(Reply::default()))
}

async fn remove(State(store): State<VolumeStore>, body: Bytes) -> PluginReply {
    let run = async { store.remove(&parse(&body)?.name).await };
    run.await.map_or_else(PluginReply::err, |()| ok(Reply::default()))
}

async fn mount(State(store): State<VolumeStore>, body: Bytes) -> PluginReply {
    let run = async {
        let req = parse(&body)?;
        store.mount(&req.name, &req.id).await
    };
    run.await.map_or_else(PluginReply::err, |mp| ok(Reply { mountpoint: Some(mp), ..Default::default() }))
}

async fn unmount(State(store): State<VolumeStore>, body: Bytes) -> PluginReply {
    let run = async {
        let req = parse(&body)?;
        store.unmount(&req.name, &req.id).await
    };
    run.await.map_or_else(PluginReply::err, |()| ok(Reply::default()))
}

async fn path(State(store): State<VolumeStore>, body: Bytes) -> PluginReply {
    let run = async { store.known(&parse(&body)?.name).await };
    run.await.map_or_else(PluginReply::err, |v| ok(Reply { mountpoint: Some(v.mountpoint), ..Default::default() }))
}

/// Docker's view of a volume. `Status` holds what stays true between calls (usage does
/// not: `GET /volumes` on the control API and `zfs list` show it).
fn docker_volume(name: String, v: KnownVolume) -> Volume {
    let mut status = BTreeMap::new();
    status.insert("dataset".to_owned(), serde_json::json!(v.dataset));
    status.insert("mounts".to_owned(), serde_json::json!(v.mount_count()));
    if let Some(s) = v.size {
        status.insert("size".to_owned(), serde_json::json!(s));
    }
    if let Some(s) = &v.service {
        status.insert("service".to_owned(), serde_json::json!(s));
    }
    Volume { name, mountpoint: v.mountpoint, created_at: rfc3339(v.created_at), status }
}

async fn get(State(store): State<VolumeStore>, body: Bytes) -> PluginReply {
    let run = async {
        let name = parse(&body)?.name;
        store.known(&name).await.map(|v| docker_volume(name, v))
    };
    run.await.map_or_else(PluginReply::err, |v| ok(Reply { volume: Some(v), ..Default::default() }))
}

async fn list(State(store): State<VolumeStore>) -> PluginReply {
    store.known_all().await.map_or_else(PluginReply::err, |vs| {
        let volumes = vs.into_iter().map(|(name, v)| docker_volume(name, v)).collect();
        ok(Reply { volumes: Some(volumes), ..Default::default() })
    })
}

/// Seconds since the epoch as RFC 3339 UTC (civil-from-days, H. Hinnant's algorithm).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn empty_and_bad_bodies() {
        assert_eq!(parse(&Bytes::from_static(b"")).unwrap(), Request::default());
        assert_eq!(parse(&Bytes::from_static(b"{}")).unwrap(), Request::default());
        assert_eq!(parse(&Bytes::from_static(b"{nope")).unwrap_err().field.as_deref(), Some("body"));
    }
}
