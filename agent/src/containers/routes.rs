//! HTTP for containers: by id (`/container/{id}`) and by name
//! (`/container/byname/{name}`), each with state changes (`PATCH {state}` and upstream's
//! `GET …/{running|exited}`) and the log (`…/log?tail=N`).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use rpc_schema::containers::{Container, ContainerState, StateChange};
use serde::Deserialize;

use super::logread;
use super::store::Containers;
use crate::error::{Error, Result};
use crate::imageapi::Answer;
use crate::wire::imageapi::ImageApiError;
use crate::wire::json;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    #[serde(default)]
    force: Option<bool>,
    #[serde(default)]
    tail: Option<usize>,
    /// Log paging: where to start (bytes) and how much to read.
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    /// Keep the answer open and send what the container writes until it has exited.
    #[serde(default)]
    follow: Option<bool>,
}

fn query(q: Option<String>) -> Result<Query> {
    crate::wire::query(q.as_deref())
}

async fn resolve(c: &Containers, key: &str, by_name: bool) -> Result<u64> {
    if by_name {
        c.id_by_name(key).await
    } else {
        key.parse().map_err(|_| Error::invalid("id", format!("{key:?} is not an id (a number)")))
    }
}

async fn list(State(c): State<Containers>) -> Json<Vec<Container>> {
    Json(c.list().await)
}

async fn create(State(c): State<Containers>, b: Bytes) -> Answer<(StatusCode, Json<Container>)> {
    let spec: Container = json(&b)?;
    Ok((StatusCode::CREATED, Json(c.create_and_start(spec).await?.spec)))
}

async fn get_one(c: &Containers, key: &str, by_name: bool) -> Answer<Json<Container>> {
    let id = resolve(c, key, by_name).await?;
    Ok(Json(c.find(id).await?.spec))
}

async fn delete_one(c: &Containers, key: &str, by_name: bool, q: Option<String>) -> Answer<Json<Container>> {
    let id = resolve(c, key, by_name).await?;
    let force = query(q)?.force.unwrap_or(false);
    Ok(Json(c.delete(id, force).await?.spec))
}

async fn change(c: &Containers, key: &str, by_name: bool, to: ContainerState) -> Answer<Json<Container>> {
    let id = resolve(c, key, by_name).await?;
    Ok(Json(c.change_state(id, to).await?.spec))
}

async fn log(c: &Containers, key: &str, by_name: bool, q: Option<String>) -> Answer<axum::response::Response> {
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    let id = resolve(c, key, by_name).await?;
    let q = query(q)?;
    let rec = c.find(id).await?;
    let path = super::shim::log_file(&rec.dir);
    let page = match (q.tail, q.offset) {
        (Some(_), Some(_)) => return Err(ImageApiError::from(Error::invalid("tail", "give tail or offset, not both"))),
        (Some(n), None) => logread::tail(&path, n)?,
        (None, offset) => logread::range(&path, offset.unwrap_or(0), q.limit)?,
    };
    let headers = [("x-log-next-offset", page.next.to_string()), ("x-log-size", page.size.to_string())];
    let start = page.next;
    let head = page.bytes;
    if !q.follow.unwrap_or(false) {
        return Ok((headers, head).into_response());
    }
    let body = futures_util::stream::once(async move { Ok(axum::body::Bytes::from(head)) }).chain(logread::follow(
        c.clone(),
        id,
        path,
        start,
    ));
    Ok(axum::body::Body::from_stream(body).into_response())
}

fn state_word(word: &str) -> Result<ContainerState> {
    match word {
        "running" => Ok(ContainerState::Running),
        "exited" => Ok(ContainerState::Exited),
        other => Err(Error::invalid("state", format!("{other:?}: running or exited"))),
    }
}

pub fn routes(c: Containers) -> Router {
    Router::new()
        .route("/imageapi/v1/container", get(list).post(create))
        .route(
            "/imageapi/v1/container/{id}",
            get(|State(c): State<Containers>, UrlPath(k): UrlPath<String>| async move { get_one(&c, &k, false).await })
                .delete(|State(c): State<Containers>, UrlPath(k): UrlPath<String>, RawQuery(q): RawQuery| async move {
                    delete_one(&c, &k, false, q).await
                })
                .patch(|State(c): State<Containers>, UrlPath(k): UrlPath<String>, b: Bytes| async move {
                    change(&c, &k, false, json::<StateChange>(&b)?.state).await
                }),
        )
        .route(
            "/imageapi/v1/container/{id}/log",
            get(|State(c): State<Containers>, UrlPath(k): UrlPath<String>, RawQuery(q): RawQuery| async move {
                log(&c, &k, false, q).await
            }),
        )
        .route(
            "/imageapi/v1/container/{id}/{state}",
            get(|State(c): State<Containers>, UrlPath((k, s)): UrlPath<(String, String)>| async move {
                change(&c, &k, false, state_word(&s)?).await
            }),
        )
        .route(
            "/imageapi/v1/container/byname/{name}",
            get(|State(c): State<Containers>, UrlPath(k): UrlPath<String>| async move { get_one(&c, &k, true).await })
                .delete(|State(c): State<Containers>, UrlPath(k): UrlPath<String>, RawQuery(q): RawQuery| async move {
                    delete_one(&c, &k, true, q).await
                })
                .patch(|State(c): State<Containers>, UrlPath(k): UrlPath<String>, b: Bytes| async move {
                    change(&c, &k, true, json::<StateChange>(&b)?.state).await
                }),
        )
        .route(
            "/imageapi/v1/container/byname/{name}/log",
            get(|State(c): State<Containers>, UrlPath(k): UrlPath<String>, RawQuery(q): RawQuery| async move {
                log(&c, &k, true, q).await
            }),
        )
        .route(
            "/imageapi/v1/container/byname/{name}/{state}",
            get(|State(c): State<Containers>, UrlPath((k, s)): UrlPath<(String, String)>| async move {
                change(&c, &k, true, state_word(&s)?).await
            }),
        )
        .with_state(c)
}

impl Containers {
    /// Load the records, re-adopt what runs, and hand back the service.
    pub async fn start_service(
        data_dir: &std::path::Path,
        mounts: crate::imageapi::Registry,
        net_policy: super::netpolicy::NetPolicy,
    ) -> std::io::Result<Self> {
        let dir = data_dir.join("containers");
        std::fs::create_dir_all(&dir)?;
        let state = Self::load(&dir)?;
        let c = Containers {
            inner: std::sync::Arc::new(tokio::sync::Mutex::new(state)),
            mounts,
            dir,
            stop_timeout: std::time::Duration::from_secs(10),
            cgroup_fs: std::path::PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: super::cgroup::parent_for(data_dir),
            net_policy,
            changing: Default::default(),
        };
        c.adopt().await;
        c.reconcile().await;
        Ok(c)
    }
}
