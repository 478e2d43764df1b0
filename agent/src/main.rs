//! tankd: the node storage agent. Reads its configuration, checks the host, prepares
//! the pool and dataset root, then serves HTTP on TCP and a unix socket until SIGTERM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use tankd::config::{Config, DEFAULT_CONFIG_FILE, Layer, LogFormat};
use tankd::{auth, containers, server, startup, systemd};

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
const SECRET_VARS: &[&str] = &[
    "TANKD_API_TOKEN",
    "CORESTORE_API_TOKEN",
    "TANKD_MASTER_SECRET",
    "CORESTORE_MASTER_SECRET",
    "TANKD_ARCHIVE_PASSPHRASE",
    "CORESTORE_ARCHIVE_PASSPHRASE",
];

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
        // s3s logs every refused S3 request (a bad signature, another tenant's bucket) as
        // an error; tankd logs the answer itself, at the level it deserves.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s=off"));
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
    // SAFETY: one thread so far (the runtime is built below).
    let activated = unsafe { systemd::listen_fds() };
    let env = take_environment();
    if let Some(at) = args.iter().skip(1).position(|a| a == "s3-admin-key") {
        return print_s3_admin_key(&args, at + 1, &env);
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(agent_main(activated, env)),
        Err(e) => {
            eprintln!("tankd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tankd s3-admin-key [--config F] [flags]`: prints the node's S3 admin key pair (the
/// only way to learn it: it is derived from the master secret, never stored or logged).
/// Refuses when `s3_admin_key` is off, since the endpoint would not take the key.
fn print_s3_admin_key(args: &[std::ffi::OsString], at: usize, env: &HashMap<String, String>) -> ExitCode {
    let rest = args.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, a)| a.clone());
    let config = match Cli::try_parse_from(rest).map_err(|e| e.to_string()).and_then(|cli| load_config(cli, env)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tankd: {e}");
            return ExitCode::from(2);
        }
    };
    if !config.s3_admin_key {
        eprintln!("tankd: s3_admin_key is off in this configuration: the S3 endpoint takes no admin key");
        return ExitCode::from(2);
    }
    let from_env = env.get("TANKD_MASTER_SECRET").or_else(|| env.get("CORESTORE_MASTER_SECRET"));
    match tankd::master_secret::MasterSecret::load_or_create(&config.data_dir, from_env.map(String::as_str)) {
        Ok(secret) => {
            let keys = tankd::s3::admin_keys(&secret);
            println!("AWS_ACCESS_KEY_ID={}", keys.access_key);
            println!("AWS_SECRET_ACCESS_KEY={}", keys.secret_key);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tankd: master secret: {e}");
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
    let state = tankd::assemble(config, zfs, master_secret).await?;
    let mut served: Vec<(server::Bound, axum::Router)> = Vec::new();
    let (tcp_app, unix_app) = (server::app(state.clone()), server::unix_app(state.clone()));
    served.extend(listeners.main.into_iter().map(|l| {
        let app = if matches!(l, server::Bound::Unix(_)) { unix_app.clone() } else { tcp_app.clone() };
        (l, app)
    }));
    if let Some(control_app) = server::control_app(state.clone()) {
        served.extend(listeners.control.into_iter().map(|l| (l, control_app.clone())));
    }
    if let Some(s3_app) = server::s3_app(state.clone()) {
        served.extend(listeners.s3.into_iter().map(|l| (l, s3_app.clone())));
    }
    if let Some(control) = &state.control {
        for l in listeners.db {
            tokio::spawn(tankd::db::serve(control.db.clone(), l, shutdown.clone()));
        }
    }
    if let (Some(docker_app), Some(l)) = (server::docker_app(state.clone()), listeners.docker) {
        served.push((l, docker_app));
    }
    tracing::info!("ready");
    systemd::notify(&[systemd::NotifyState::Ready]);
    server::serve(served, listeners.owned_paths, shutdown, grace).await;
    tracing::info!("stopped");
    Ok(())
}
