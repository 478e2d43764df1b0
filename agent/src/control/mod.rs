//! The control API (corestore's routes) on its own listener, default 127.0.0.1:3000:
//! per-service datasets, volumes, snapshots and undoable restores, plus `/health` and
//! `/metrics`.
//!
//! Auth: with an API token configured, every route but `/health` and `/metrics` needs
//! `Authorization: Bearer <token>`. A service's own token (`TANKD_SERVICE_TOKEN` from
//! provisioning, derived from the master secret) is accepted for that service's
//! snapshot and restore routes only, so a workload can back itself up without holding
//! the node's token.

mod provision;
mod snapshots;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use zfs_sys_shim::{DatasetName, Zfs};

use crate::auth::bearer;
use crate::crypto::constant_time_eq;
use crate::docker::VolumeStore;
use crate::error::{Error, Result};
use crate::master_secret as secret;
pub use crate::master_secret::MasterSecret;

#[derive(Clone)]
pub struct Control {
    /// False on a node with `zfs = false`: provisioning works on directories; volumes
    /// and snapshots answer 503.
    pub zfs_on: bool,
    /// Where services' storage lives (datasets or directories).
    pub backing: crate::backing::Backing,
    /// The S3 endpoint's buckets and keys (provisioning makes a service's bucket).
    pub s3: crate::s3::S3,
    /// The database endpoint's tenants (provisioning makes a service's database).
    pub db: crate::db::Db,
    /// The archive repository, its keys and targets.
    pub archives: crate::archives::Archives,
    pub zfs: Zfs,
    pub root: DatasetName,
    pub volumes: VolumeStore,
    pub secret: MasterSecret,
    /// The node's API token; `None` only under `auth = "none"` (as the rest of tankd).
    pub admin_token: Option<Arc<str>>,
    /// Base URL services reach this API on (`TANKD_CONTROL_URL`).
    pub public_url: String,
    /// Most snapshots one service holds (its dataset and its volumes together).
    pub max_service_snapshots: usize,
}

/// Who is calling, from the Authorization header.
#[derive(Debug, PartialEq)]
pub enum Caller {
    Admin,
    /// A bearer that is not the node's token: maybe a service's own.
    Bearer(String),
    Anonymous,
}

impl Control {
    /// Who sends a request that needs some token: a caller with none is refused here,
    /// before its body is read, so it learns nothing from how the body is judged.
    pub fn token_caller(&self, headers: &HeaderMap) -> Result<Caller> {
        match self.caller(headers) {
            Caller::Anonymous => Err(Error::unauthorized()),
            known => Ok(known),
        }
    }

    pub fn caller(&self, headers: &HeaderMap) -> Caller {
        let Some(admin) = &self.admin_token else { return Caller::Admin };
        match bearer(headers) {
            Some(b) if constant_time_eq(b.as_bytes(), admin.as_bytes()) => Caller::Admin,
            Some(b) => Caller::Bearer(b.to_owned()),
            None => Caller::Anonymous,
        }
    }

    pub fn service_token(&self, service: &str) -> String {
        self.secret.derive(secret::SERVICE_TOKEN_LABEL, service)
    }

    pub(crate) fn require_admin(&self, caller: &Caller) -> Result<()> {
        match caller {
            Caller::Admin => Ok(()),
            _ => Err(Error::unauthorized()),
        }
    }

    /// The node's token, or `service`'s own.
    pub(crate) fn require_service(&self, caller: &Caller, service: Option<&str>) -> Result<()> {
        match (caller, service) {
            (Caller::Admin, _) => Ok(()),
            (Caller::Bearer(given), Some(svc))
                if constant_time_eq(given.as_bytes(), self.service_token(svc).as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(Error::unauthorized()),
        }
    }

    /// The dataset of a volume named by a request's `name`.
    fn volume(&self, name: &str) -> Result<DatasetName> {
        self.volumes.dataset(name).map_err(|mut e| {
            if e.field.is_some() {
                e.field = Some("name".to_owned());
            }
            e
        })
    }

    /// The node's token, or the token of the service owning volume `name`.
    /// Decided before anything about the volume is told: a caller without a token, or
    /// with another service's, learns nothing, not even whether the volume exists.
    async fn require_volume_access(&self, caller: &Caller, name: &str) -> Result<()> {
        match caller {
            Caller::Anonymous => Err(Error::unauthorized()),
            Caller::Admin => self.volumes.owner(name).await.map(drop),
            Caller::Bearer(_) => match self.volumes.owner(name).await {
                Ok(owner) => self.require_service(caller, owner.as_deref()),
                Err(_) => Err(Error::unauthorized()),
            },
        }
    }

    pub fn service_dataset(&self, service: &str) -> Result<DatasetName> {
        crate::docker::store::check_name("serviceId", service)?;
        self.root.join(&format!("services/{service}")).map_err(|e| Error::invalid("serviceId", e.reason))
    }
}

pub fn unavailable(field: &str, message: String) -> Error {
    Error::unavailable(message).with_field(field)
}

/// The volume and snapshot routes on a node with `zfs = false`: behind a token like
/// every route, then 503 saying why.
async fn zfs_off(axum::extract::State(c): axum::extract::State<Control>, headers: HeaderMap) -> crate::wire::ApiError {
    crate::wire::ApiError(match c.token_caller(&headers) {
        Err(e) => e,
        Ok(_) => Error::unavailable("this node runs with zfs = false: volumes and snapshots need ZFS"),
    })
}

/// Every control route but `/health` and `/metrics` (the server adds those, they need
/// the whole agent's state).
pub fn routes(control: Control) -> Router {
    use crate::archives::routes as archives;
    let provisioning = Router::new()
        .route("/resources/provision", post(provision::provision))
        .route("/resources/deprovision", post(provision::deprovision))
        .route("/archives", get(archives::list))
        .route("/archives/receive", post(archives::receive))
        .route("/archives/{id}", axum::routing::delete(archives::delete))
        .route("/archives/{id}/manifest", get(archives::get_manifest))
        .route(
            "/archives/{id}/objects/{sha256}",
            get(archives::get_object)
                .put(archives::put_object)
                .layer::<_, std::convert::Infallible>(axum::extract::DefaultBodyLimit::max(archives::MAX_OBJECT_BYTES))
                // Each upload is held in memory (33 MiB at most) until checked: a few at once.
                .layer::<_, std::convert::Infallible>(tower::limit::ConcurrencyLimitLayer::new(
                    archives::MAX_OBJECT_UPLOADS,
                )),
        )
        .route("/archives/{id}/replicate", post(archives::replicate))
        .route("/archives/{id}/complete", post(archives::complete));
    if !control.zfs_on {
        return provisioning
            .route("/volumes", get(zfs_off))
            .route("/volumes/{*rest}", post(zfs_off))
            .route("/resources/snapshot", post(zfs_off))
            .route("/resources/snapshot/destroy", post(zfs_off))
            .route("/resources/restore", post(zfs_off))
            .route("/resources/restore/{*rest}", post(zfs_off))
            .route("/archives", post(zfs_off))
            .route("/archives/restore", post(zfs_off))
            .with_state(control);
    }
    provisioning
        .route("/archives", post(archives::create))
        .route("/archives/restore", post(archives::restore))
        .route("/volumes", get(snapshots::list_volumes))
        .route("/volumes/snapshot", post(snapshots::snapshot_volume))
        .route("/volumes/snapshot/destroy", post(snapshots::destroy_volume_snapshot))
        .route("/volumes/restore", post(snapshots::restore_volume))
        .route("/volumes/restore/confirm", post(snapshots::confirm_restore))
        .route("/volumes/restore/undo", post(snapshots::undo_restore))
        .route("/resources/snapshot", post(snapshots::snapshot_resources))
        .route("/resources/snapshot/destroy", post(snapshots::destroy_resource_snapshots))
        .route("/resources/restore", post(snapshots::restore_resources))
        .route("/resources/restore/confirm", post(snapshots::confirm_resources_restore))
        .route("/resources/restore/undo", post(snapshots::undo_resources_restore))
        .with_state(control)
}
