//! tankd as a library: every capability module, and [`assemble`], which builds the
//! state the routers serve from a resolved configuration. The binary (`main.rs`) reads
//! the configuration, checks the host, binds the listeners and serves
//! `server::app(state)`; tests build the same state and drive the same routers
//! in-process (`tower::ServiceExt::oneshot`), with a recording `zfs` double where the
//! logic under test is tankd's and not ZFS's.

pub mod archives;
pub mod attach;
pub mod auth;
pub mod backing;
pub mod beneath;
pub mod config;
pub mod containers;
pub mod control;
pub mod crypto;
pub mod db;
pub mod docker;
pub mod error;
pub mod fault;
pub mod guests;
pub mod health;
pub mod ids;
pub mod imageapi;
pub mod images;
pub mod imagestore;
pub mod master_secret;
pub mod metrics;
pub mod mounts;
pub mod replication;
pub mod s3;
pub mod secrets;
pub mod server;
pub mod snapshots;
pub mod startup;
pub mod state;
pub mod store;
pub mod streams;
pub mod systemd;
pub mod volumes;
pub mod wire;

#[cfg(test)]
mod app_tests;
#[cfg(test)]
pub mod testing;

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;

/// The control API, the S3 endpoint's buckets and (with ZFS) Docker volumes: the volume
/// parents, interrupted restores finished or reverted, mount counts rebuilt, the master
/// secret loaded or made, every bucket opened.
async fn start_control(
    config: &Config,
    zfs: &zfs_sys_shim::Zfs,
    master_secret: Option<String>,
) -> Result<control::Control, Box<dyn std::error::Error>> {
    let root = config.dataset_root.clone();
    // A restore the last run left half-done is settled first: it may swap the datasets
    // that the volumes, buckets and databases below are read from.
    if config.zfs {
        docker::restore::recover(zfs, &root)
            .await
            .map_err(|e| format!("restores left by the last run: {}", e.message))?;
    }
    let secret = control::MasterSecret::load_or_create(&config.data_dir, master_secret.as_deref())?;
    let backing = backing::Backing::new(config, zfs);
    // Then each capability reads its own datasets, at once: under a slow `zfs` (a second
    // or more per command in the test VM) a start costs the longest of them, not the sum.
    let volumes = async {
        if config.zfs {
            docker::VolumeStore::start(zfs.clone(), root.clone()).await.map_err(|e| e.to_string())
        } else {
            Ok(docker::VolumeStore::off(zfs.clone(), root.clone()))
        }
    };
    let s3 = async {
        s3::S3::start(config, backing.clone(), secret.clone()).await.map_err(|e| format!("S3 buckets: {}", e.message))
    };
    let db = async {
        db::Db::start(config, backing.clone(), secret.clone()).await.map_err(|e| format!("databases: {}", e.message))
    };
    let archives =
        async { archives::Archives::start(config, &backing).await.map_err(|e| format!("archives: {}", e.message)) };
    let (volumes, s3, db, archives) = tokio::try_join!(volumes, s3, db, archives)?;
    let port = config.control_listen.first().map_or(3000, |a| a.port());
    Ok(control::Control {
        zfs_on: config.zfs,
        backing,
        s3,
        db,
        archives,
        zfs: zfs.clone(),
        root,
        volumes,
        secret,
        admin_token: config.api_token.as_deref().map(Arc::from),
        public_url: format!("http://{}:{port}", config.public_host),
        max_service_snapshots: config.max_service_snapshots,
    })
}

/// Every capability's state, recovered from what the last run left: image fetches,
/// stream holds, imageapi's records, containers, and (with ZFS) the control API.
pub async fn assemble(
    config: Config,
    zfs: zfs_sys_shim::Zfs,
    master_secret: Option<String>,
) -> Result<state::AppState, Box<dyn std::error::Error>> {
    let store = store::Store::new(&config, zfs.clone());
    // The capabilities recover independently of each other, so at once (see start_control).
    let images_and_holds = async {
        if config.zfs {
            images::recover(&store).await.map_err(|e| e.to_string())?;
            match streams::release_leftover_holds(&zfs, &config.dataset_root).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "released stream holds left by the last run"),
                Err(e) => tracing::warn!(error = %e, "could not check for stream holds left by the last run"),
            }
        }
        Ok::<_, String>(())
    };
    let imageapi_and_containers = async {
        let imageapi = imageapi::start(imageapi::env(&config, config.zfs.then(|| zfs.clone())))
            .await
            .map_err(|e| format!("imageapi state: {e}"))?;
        let net_policy = containers::netpolicy::NetPolicy::new(&config.container_networks, &config.container_bridges)
            .map_err(|e| format!("configuration container_networks: {e}"))?;
        let containers = containers::Containers::start_service(&config.data_dir, imageapi.clone(), net_policy)
            .await
            .map_err(|e| format!("container state: {e}"))?;
        Ok::<_, String>((imageapi, containers))
    };
    let control = async { start_control(&config, &zfs, master_secret).await.map_err(|e| e.to_string()) };
    let ((), (imageapi, containers), control) = tokio::try_join!(images_and_holds, imageapi_and_containers, control)?;
    let control = Some(control);
    let streams =
        streams::Streams::new(zfs.clone(), config.dataset_root.clone(), config.max_streams, config.stream_idle_timeout);
    Ok(state::AppState {
        config: Arc::new(config),
        zfs,
        started: Instant::now(),
        store,
        streams,
        imageapi,
        containers,
        control,
        http: metrics::HttpMetrics::default(),
    })
}
