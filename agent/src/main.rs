//! tankd: the node storage agent. Reads its configuration, checks the host, prepares
//! the pool and dataset root, then serves HTTP on TCP and a unix socket until SIGTERM.

mod attach;
mod auth;
mod beneath;
mod config;
mod containers;
mod control;
mod crypto;
mod docker;
mod error;
mod fault;
mod guests;
mod health;
mod ids;
mod imageapi;
mod images;
mod imagestore;
mod master_secret;
mod metrics;
mod mounts;
mod secrets;
mod server;
mod snapshots;
mod startup;
mod state;
mod store;
mod streams;
mod systemd;
mod volumes;
mod wire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DEFAULT_CONFIG_FILE, Layer, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "tankd", version, about = "Node storage agent over OpenZFS and block devices")]
struct Cli {
    /// TOML configuration file (default /etc/tankd/tankd.toml when it exists).
    #[arg(long, env = "TANKD_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Layer,
}

/// Environment variables that hold secrets: read once at start, then removed from the
/// environment so that no child process (zfs, rbd-fuse, the container shim) inherits them.
const SECRET_VARS: &[&str] =
    &["TANKD_API_TOKEN", "CORESTORE_API_TOKEN", "TANKD_MASTER_SECRET", "CORESTORE_MASTER_SECRET"];

/// tankd's and corestore's variables, with the secret ones taken out of the environment.
/// Called while the process has one thread (changing the environment is not thread-safe).
fn take_environment() -> HashMap<String, String> {
    let env: HashMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("TANKD_") || k.starts_with("CORESTORE_")).collect();
    for var in SECRET_VARS {
        // SAFETY: main() calls this before any other thread exists.
        unsafe { std::env::remove_var(var) };
    }
    env
}

fn load_config(cli: Cli, env: &HashMap<String, String>) -> Result<Config, String> {
    let file = match &cli.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    let file_layer = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Layer::from_toml(&text, &path.display().to_string()).map_err(|e| e.to_string())?
        }
        None => Layer::default(),
    };
    let env_layer = Layer::from_env(env).map_err(|e| e.to_string())?;
    Config::resolve(file_layer, env_layer, cli.flags).map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // The container shim must fork with one thread: it runs before any runtime exists.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == containers::shim::ARG) {
        return match args.get(2) {
            Some(dir) => containers::shim::main(Path::new(dir)),
            None => ExitCode::from(2),
        };
    }
    // Socket activation is read (and its variables removed) while tankd is one thread.
    let activated = systemd::listen_fds();
    let env = take_environment();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(agent_main(activated, env)),
        Err(e) => {
            eprintln!("tankd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn agent_main(activated: Vec<(String, std::os::fd::OwnedFd)>, env: HashMap<String, String>) -> ExitCode {
    let config = match load_config(Cli::parse(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tankd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let master_secret = env.get("TANKD_MASTER_SECRET").or_else(|| env.get("CORESTORE_MASTER_SECRET")).cloned();
    match run(config, activated, master_secret).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tankd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Docker volumes and the control API: the volume parents, interrupted restores
/// finished or reverted, mount counts rebuilt, the master secret loaded or made.
async fn start_control(
    config: &Config,
    zfs: &zfs_sys_shim::Zfs,
    master_secret: Option<String>,
) -> Result<control::Control, Box<dyn std::error::Error>> {
    let root = config.dataset_root.clone();
    docker::restore::recover(zfs, &root).await.map_err(|e| format!("restores left by the last run: {}", e.message))?;
    let volumes = docker::VolumeStore::start(zfs.clone(), root.clone()).await?;
    let secret = control::MasterSecret::load_or_create(&config.data_dir, master_secret.as_deref())?;
    let port = config.control_listen.first().map_or(3000, |a| a.port());
    Ok(control::Control {
        zfs: zfs.clone(),
        root,
        volumes,
        secret,
        admin_token: config.api_token.as_deref().map(Arc::from),
        public_url: format!("http://{}:{port}", config.public_host),
        max_service_snapshots: config.max_service_snapshots,
    })
}

async fn run(
    mut config: Config,
    activated: Vec<(String, std::os::fd::OwnedFd)>,
    master_secret: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(?config, "starting tankd {}", env!("CARGO_PKG_VERSION"));
    let zfs = if config.zfs {
        let probe = zfs_sys_shim::Zfs::new(zfs_sys_shim::Roots::default());
        startup::check_host(&probe, Path::new("/dev/zfs")).await?;
        startup::prepare_storage(&config).await?
    } else {
        startup::check_root()?;
        tracing::warn!("zfs = false: ImageStore, snapshot streams and ZFS-backed attachments are off on this node");
        zfs_sys_shim::Zfs::new(zfs_sys_shim::Roots::new(vec![config.dataset_root.clone()]))
    };
    // After the host checks: a user who is not root hears that first.
    config.api_token = auth::node_token(&config).map_err(|e| format!("API token: {e}"))?;
    let listeners = server::bind(&config, activated).await?;
    let shutdown = CancellationToken::new();
    server::cancel_on_signals(shutdown.clone())?;
    let grace = config.shutdown_timeout;
    let fetch = images::FetchConfig {
        image_server: config.image_server.clone(),
        image_sources: config.image_sources.clone(),
        timeout: config.image_fetch_timeout,
        max_size: config.max_image_size,
        num_fetchers: config.num_fetchers,
        max_pending: config.max_pending,
    };
    let store = store::Store {
        zfs: zfs.clone(),
        root: config.dataset_root.clone(),
        images: Arc::new(images::Fetcher::new(fetch, config.data_dir.join("spool"))),
    };
    if config.zfs {
        images::recover(&store).await?;
        match streams::release_leftover_holds(&zfs, &config.dataset_root).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "released stream holds left by the last run"),
            Err(e) => tracing::warn!(error = %e, "could not check for stream holds left by the last run"),
        }
    }
    let imageapi = imageapi::start(imageapi::env(&config, config.zfs.then(|| zfs.clone())))
        .await
        .map_err(|e| format!("imageapi state: {e}"))?;
    let net_policy = containers::netpolicy::NetPolicy::new(&config.container_networks, &config.container_bridges)
        .map_err(|e| format!("configuration container_networks: {e}"))?;
    let containers = containers::Containers::start_service(&config.data_dir, imageapi.clone(), net_policy)
        .await
        .map_err(|e| format!("container state: {e}"))?;
    let control = if config.zfs { Some(start_control(&config, &zfs, master_secret).await?) } else { None };
    let streams =
        streams::Streams::new(zfs.clone(), config.dataset_root.clone(), config.max_streams, config.stream_idle_timeout);
    let state = state::AppState {
        config: Arc::new(config),
        zfs,
        started: Instant::now(),
        store,
        streams,
        imageapi,
        containers,
        control,
        http: metrics::HttpMetrics::default(),
    };
    let mut served: Vec<(server::Bound, axum::Router)> = Vec::new();
    let (tcp_app, unix_app) = (server::app(state.clone()), server::unix_app(state.clone()));
    served.extend(listeners.main.into_iter().map(|l| {
        let app = if matches!(l, server::Bound::Unix(_)) { unix_app.clone() } else { tcp_app.clone() };
        (l, app)
    }));
    if let Some(control_app) = server::control_app(state.clone()) {
        served.extend(listeners.control.into_iter().map(|l| (l, control_app.clone())));
    }
    if let (Some(docker_app), Some(l)) = (server::docker_app(state.clone()), listeners.docker) {
        served.push((l, docker_app));
    }
    tracing::info!("ready");
    systemd::notify("READY=1");
    server::serve(served, listeners.owned_paths, shutdown, grace).await;
    tracing::info!("stopped");
    Ok(())
}
