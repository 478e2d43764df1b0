//! imageapi under `/imageapi/v1`: attachments, mounts and overlays.
//!
//! The general (v0.2) collections `/attach` and `/mount` take `?id=&kind=&name=&force=`;
//! the v0.1 routes (`/attach/rbd`, `/mount/rbd`, `/mount/overlay`, by id) are the same
//! operations seen through upstream's kind-specific objects. The kernel work is in
//! `crate::attach` and `crate::mounts`, reached by the registry through `kernel::Kernel`
//! (a recording double in its tests); the graph and its state file in `registry`.

pub mod adopt;
pub mod kernel;
pub mod registry;
pub mod state;

use std::path::Path;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use rpc_schema::imageapi::{Attach, Filter, Mount, MountKind, MountOverlay, MountRbd, Rbd, Unknown};

use crate::error::{Error, Result};
use crate::wire::imageapi::ImageApiError;

/// What an imageapi route answers: its value, or the error in imageapi's shape.
pub(crate) type Answer<T> = std::result::Result<T, ImageApiError>;
pub use self::registry::Registry;
use crate::attach::Env;

/// Load the state file, reconcile it with the kernel, and build the registry.
pub async fn start(env: Env) -> std::io::Result<Registry> {
    for dir in [&env.mount_root, &env.data_dir.join("imageapi")] {
        std::fs::create_dir_all(dir)?;
    }
    let file = state::StateFile::new(&env.data_dir.join("imageapi"));
    let mut st = file.load()?;
    let unknown = adopt::adopt(&env, &mut st).await;
    file.save(&st)?;
    tracing::info!(
        attachments = st.attachments.len(),
        mounts = st.mounts.len(),
        unknown = unknown.mounts.len() + unknown.loop_devices.len() + unknown.rbd_fuse.len(),
        "imageapi state re-adopted"
    );
    Ok(Registry::new(env, st, file))
}

use crate::wire::json;

/// An optional label (`name`) of an attachment, mount or container.
pub(crate) fn check_label(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("name", format!("{name:?}: use letters, digits and _ - . (not leading -)")))
    }
}

fn filter(q: Option<String>) -> Result<Filter> {
    crate::wire::query(q.as_deref())
}

fn the_id(f: &Filter) -> Result<u64> {
    f.id.ok_or_else(|| Error::invalid("id", "missing: which object (?id=N)"))
}

type Created<T> = (StatusCode, Json<T>);

// ---- v0.2: the general collections ----

async fn list_attach(State(r): State<Registry>, RawQuery(q): RawQuery) -> Answer<Json<Vec<Attach>>> {
    Ok(Json(r.attachments(&filter(q)?).await?))
}

async fn post_attach(State(r): State<Registry>, body: Bytes) -> Answer<Created<Attach>> {
    Ok((StatusCode::CREATED, Json(r.create_attach(json(&body)?).await?)))
}

async fn delete_attach(State(r): State<Registry>, RawQuery(q): RawQuery) -> Answer<Json<Attach>> {
    let f = filter(q)?;
    Ok(Json(r.delete_attach(the_id(&f)?, f.force.unwrap_or(false)).await?))
}

async fn list_mount(State(r): State<Registry>, RawQuery(q): RawQuery) -> Answer<Json<Vec<Mount>>> {
    Ok(Json(r.mounts(&filter(q)?).await?))
}

async fn post_mount(State(r): State<Registry>, body: Bytes) -> Answer<Created<Mount>> {
    Ok((StatusCode::CREATED, Json(r.create_mount(json(&body)?).await?)))
}

/// `?id=N[&force=true]`, or v0.1's body `{"mount_id": N, "kind": …}`.
async fn delete_mount(State(r): State<Registry>, RawQuery(q): RawQuery, body: Bytes) -> Answer<Json<Mount>> {
    let f = filter(q)?;
    let id = match f.id {
        Some(id) => id,
        None if !body.iter().all(u8::is_ascii_whitespace) => {
            let m: Mount = json(&body)?;
            m.id.or(m.mount_id).ok_or_else(|| Error::invalid("mount_id", "missing: which mount"))?
        }
        None => return Err(ImageApiError::from(Error::invalid("id", "missing: which mount (?id=N)"))),
    };
    Ok(Json(r.delete_mount(id, f.force.unwrap_or(false)).await?))
}

async fn unknown(State(r): State<Registry>) -> Answer<Json<Unknown>> {
    let env = r.env.clone();
    let table = crate::mounts::sys::mountinfo();
    Ok(Json(r.inspect(move |s| adopt::unknown(&env, s, &table)).await))
}

// ---- v0.1: kind-specific views ----

fn as_rbd(a: Attach) -> Rbd {
    let mut r = a.rbd.unwrap_or_default();
    r.id = a.id;
    r.refs = a.refs;
    r.device_file = a.device_file;
    r
}

fn as_mount_rbd(m: Mount) -> MountRbd {
    let a = m.attach.unwrap_or_default();
    MountRbd {
        id: m.id,
        mountpoint: m.mountpoint,
        refs: m.refs,
        rbd_id: a.attach_id,
        rbd: None,
        fs_type: a.fs_type,
        mount_options: a.mount_options,
    }
}

fn as_overlay(m: Mount) -> MountOverlay {
    let mut o = m.overlay.unwrap_or_default();
    o.id = m.id;
    o.refs = m.refs;
    o.mountpoint = m.mountpoint;
    o
}

/// The `{id}` of a v0.1 route, refused in upstream's error shape.
fn path_id(text: &str) -> Result<u64> {
    text.parse().map_err(|_| Error::invalid("id", format!("{text:?} is not an id (a number)")))
}

fn by_id(id: u64, kind: &str) -> Filter {
    Filter { id: Some(id), kind: Some(kind.to_owned()), ..Default::default() }
}

fn one<T>(mut v: Vec<T>, what: &str, id: u64) -> Result<T> {
    v.pop().ok_or_else(|| Error::not_found(format!("{what} {id} does not exist")))
}

async fn v01_list_rbd(State(r): State<Registry>) -> Answer<Json<Vec<Rbd>>> {
    let f = Filter { kind: Some("rbd".into()), ..Default::default() };
    Ok(Json(r.attachments(&f).await?.into_iter().map(as_rbd).collect()))
}

async fn v01_post_rbd(State(r): State<Registry>, body: Bytes) -> Answer<Created<Rbd>> {
    let rbd: Rbd = json(&body)?;
    Ok((StatusCode::CREATED, Json(as_rbd(r.create_attach(Attach::of_rbd(rbd)).await?))))
}

async fn v01_get_rbd(State(r): State<Registry>, UrlPath(id): UrlPath<String>) -> Answer<Json<Rbd>> {
    let id = path_id(&id)?;
    Ok(Json(as_rbd(one(r.attachments(&by_id(id, "rbd")).await?, "rbd attachment", id)?)))
}

async fn v01_delete_rbd(State(r): State<Registry>, UrlPath(id): UrlPath<String>) -> Answer<Json<Rbd>> {
    let id = path_id(&id)?;
    one(r.attachments(&by_id(id, "rbd")).await?, "rbd attachment", id)?;
    Ok(Json(as_rbd(r.delete_attach(id, false).await?)))
}

async fn v01_list_mount_rbd(State(r): State<Registry>) -> Answer<Json<Vec<MountRbd>>> {
    let f = Filter { kind: Some("rbd".into()), ..Default::default() };
    Ok(Json(r.mounts(&f).await?.into_iter().map(as_mount_rbd).collect()))
}

async fn v01_post_mount_rbd(State(r): State<Registry>, body: Bytes) -> Answer<Created<MountRbd>> {
    let m: MountRbd = json(&body)?;
    let spec = Mount { rbd: Some(m), ..Mount::new(MountKind::Rbd) };
    Ok((StatusCode::CREATED, Json(as_mount_rbd(r.create_mount(spec).await?))))
}

async fn v01_get_mount_rbd(State(r): State<Registry>, UrlPath(id): UrlPath<String>) -> Answer<Json<MountRbd>> {
    let id = path_id(&id)?;
    Ok(Json(as_mount_rbd(one(r.mounts(&by_id(id, "rbd")).await?, "rbd mount", id)?)))
}

async fn v01_delete_mount_rbd(State(r): State<Registry>, UrlPath(id): UrlPath<String>) -> Answer<Json<MountRbd>> {
    let id = path_id(&id)?;
    one(r.mounts(&by_id(id, "rbd")).await?, "rbd mount", id)?;
    Ok(Json(as_mount_rbd(r.delete_mount(id, false).await?)))
}

async fn v01_list_overlay(State(r): State<Registry>) -> Answer<Json<Vec<MountOverlay>>> {
    let f = Filter { kind: Some("overlay".into()), ..Default::default() };
    Ok(Json(r.mounts(&f).await?.into_iter().map(as_overlay).collect()))
}

async fn v01_post_overlay(State(r): State<Registry>, body: Bytes) -> Answer<Created<MountOverlay>> {
    let o: MountOverlay = json(&body)?;
    let spec = Mount { overlay: Some(o), ..Mount::new(MountKind::Overlay) };
    Ok((StatusCode::CREATED, Json(as_overlay(r.create_mount(spec).await?))))
}

async fn v01_get_overlay(State(r): State<Registry>, UrlPath(id): UrlPath<String>) -> Answer<Json<MountOverlay>> {
    let id = path_id(&id)?;
    Ok(Json(as_overlay(one(r.mounts(&by_id(id, "overlay")).await?, "overlay", id)?)))
}

async fn v01_delete_overlay(State(r): State<Registry>, UrlPath(id): UrlPath<String>) -> Answer<Json<MountOverlay>> {
    let id = path_id(&id)?;
    one(r.mounts(&by_id(id, "overlay")).await?, "overlay", id)?;
    Ok(Json(as_overlay(r.delete_mount(id, false).await?)))
}

pub fn routes(registry: Registry) -> Router {
    Router::new()
        .route("/imageapi/v1/attach", get(list_attach).post(post_attach).delete(delete_attach))
        .route("/imageapi/v1/mount", get(list_mount).post(post_mount).delete(delete_mount))
        .route("/imageapi/v1/unknown", get(unknown))
        .route("/imageapi/v1/attach/rbd", get(v01_list_rbd).post(v01_post_rbd))
        .route("/imageapi/v1/attach/rbd/{id}", get(v01_get_rbd).delete(v01_delete_rbd))
        .route("/imageapi/v1/mount/rbd", get(v01_list_mount_rbd).post(v01_post_mount_rbd))
        .route("/imageapi/v1/mount/rbd/{id}", get(v01_get_mount_rbd).delete(v01_delete_mount_rbd))
        .route("/imageapi/v1/mount/overlay", get(v01_list_overlay).post(v01_post_overlay))
        .route("/imageapi/v1/mount/overlay/{id}", get(v01_get_overlay).delete(v01_delete_overlay))
        .with_state(registry)
}

/// The environment from the config.
pub fn env(config: &crate::config::Config, zfs: Option<zfs_sys_shim::Zfs>) -> Env {
    Env {
        data_dir: config.data_dir.clone(),
        mount_root: config.mount_root.clone(),
        image_roots: config.image_roots.clone(),
        local_devices: config.local_devices.clone(),
        allow_suid_dev: config.allow_suid_dev,
        sys_block: Path::new("/sys/block").to_path_buf(),
        sys_rbd: Path::new(crate::attach::rbd::SYS_RBD).to_path_buf(),
        zfs,
        dataset_root: config.dataset_root.clone(),
    }
}
