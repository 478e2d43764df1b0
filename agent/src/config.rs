//! Configuration: a TOML file, then `TANKD_*` environment variables, then flags; each
//! later source overrides the earlier one. The table in `docs/configuration.md` lists
//! every setting; keep it in step with [`Layer`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use zfs_sys_shim::{DatasetName, PoolName};

/// Where the config file is looked for when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/tankd/tankd.toml";
/// corestore's environment names for settings tankd shares with it.
pub const CORESTORE_ALIASES: &[(&str, &str)] = &[
    ("TANKD_API_TOKEN", "CORESTORE_API_TOKEN"),
    ("TANKD_PUBLIC_HOST", "CORESTORE_PUBLIC_HOST"),
    ("TANKD_DOCKER_SOCKET", "CORESTORE_VOLUME_PLUGIN_SOCKET"),
    ("TANKD_DATA_DIR", "CORESTORE_DATA_DIR"),
    ("TANKD_S3_REGION", "CORESTORE_REGION"),
    ("TANKD_ARCHIVE_PASSPHRASE", "CORESTORE_ARCHIVE_PASSPHRASE"),
];

/// corestore's per-endpoint ports: with `CORESTORE_BIND_ADDRESS` they make the listen
/// address of the endpoint whose `TANKD_*_LISTEN` is not set.
const CORESTORE_PORTS: &[(&str, &str, u16)] = &[
    ("TANKD_CONTROL_LISTEN", "CORESTORE_CONTROL_PORT", 3000),
    ("TANKD_S3_LISTEN", "CORESTORE_S3_PORT", 9000),
    ("TANKD_DB_LISTEN", "CORESTORE_DB_PORT", 27017),
];

/// The default name of the pool tankd creates on a sparse file when no pool is configured.
pub const EMBEDDED_POOL: &str = "tankd";

/// One source's worth of settings; `None` means "not said here".
#[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// ZFS pool to use. Unset: an embedded pool on a sparse file in the data dir.
    #[arg(long)]
    pub pool: Option<String>,
    /// Dataset under which tankd keeps everything (default `<pool>/tankd`).
    #[arg(long)]
    pub dataset_root: Option<String>,
    /// State directory (default `/var/lib/tankd`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TCP addresses to listen on (default 127.0.0.1:7070). Repeat the flag for several.
    #[arg(long = "listen")]
    pub listen: Option<Vec<String>>,
    /// Unix socket path (default /run/tankd/tankd.sock); empty to disable.
    #[arg(long, value_parser = path_or_empty())]
    pub socket: Option<PathBuf>,
    /// Group that may use the unix socket besides root (default: root only).
    #[arg(long)]
    pub socket_group: Option<String>,
    /// `token` (default): TCP requests need the API token, tankd makes one if none is set.
    /// `none`: no token at all, for a closed legacy network (logged at every start).
    #[arg(long)]
    pub auth: Option<String>,
    /// API token. Prefer `api_token_file`: flags show in `ps`. Default: one tankd makes
    /// in `<data_dir>/api-token`.
    #[arg(long)]
    pub api_token: Option<String>,
    /// File holding the API token (first line); must not be readable by group or others.
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// Name of the embedded pool (default `tankd`); used only when `pool` is unset.
    #[arg(long)]
    pub embedded_pool_name: Option<String>,
    /// Size of the embedded pool's sparse file, e.g. `8G` (default 8G).
    #[arg(long)]
    pub embedded_pool_size: Option<String>,
    /// `text` (default) or `json` log lines.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Seconds to let in-flight requests finish after SIGTERM (default 30).
    #[arg(long)]
    pub shutdown_timeout: Option<u64>,
    /// Image server (`host:port` or URL) for RequestImage.
    #[arg(long)]
    pub image_server: Option<String>,
    /// URL prefixes RequestImage may fetch from besides the image server; repeat for several.
    #[arg(long = "image-source")]
    pub image_sources: Option<Vec<String>>,
    /// Seconds one image fetch may take, start to end (default 3600).
    #[arg(long)]
    pub image_fetch_timeout: Option<u64>,
    /// The largest image RequestImage takes, as sent (`64G`, default 64G).
    #[arg(long)]
    pub max_image_size: Option<String>,
    /// Image fetches running at once (default: number of CPUs).
    #[arg(long)]
    pub num_fetchers: Option<usize>,
    /// Image fetches queued or running before RequestImage answers busy (default 64).
    #[arg(long)]
    pub max_pending: Option<usize>,
    /// Snapshot streams (downloads and uploads) at once; more get 429 (default 4).
    #[arg(long)]
    pub max_streams: Option<usize>,
    /// Snapshots one service may hold through the control API, over its dataset and its
    /// volumes; more get 429 until some are destroyed (default 256).
    #[arg(long)]
    pub max_service_snapshots: Option<usize>,
    /// Seconds a snapshot stream may make no progress before it is cut (default 120).
    #[arg(long)]
    pub stream_idle_timeout: Option<u64>,
    /// `false` on a node without ZFS: imageapi (attach, mount, overlay) still works;
    /// ImageStore, streams and ZFS-backed attachments answer 503 (default true).
    #[arg(long)]
    pub zfs: Option<bool>,
    /// Where imageapi mounts go; every mountpoint is below it (default `<data_dir>/mounts`).
    #[arg(long)]
    pub mount_root: Option<PathBuf>,
    /// Directories whose files may be attached as loop devices (default `<data_dir>/images`).
    #[arg(long = "image-root")]
    pub image_roots: Option<Vec<PathBuf>>,
    /// Block devices (by path) that `local` attachments may name; repeat for several.
    /// Default: none, so `local` attachments are refused.
    #[arg(long = "local-device")]
    pub local_devices: Option<Vec<PathBuf>>,
    /// Address ranges (CIDR) a container's veth host end may be given; repeat for several.
    /// Default: none.
    #[arg(long = "container-network")]
    pub container_networks: Option<Vec<String>>,
    /// Bridges a container's veth host end may join (`name`, or `prefix*`); repeat.
    /// Default: none.
    #[arg(long = "container-bridge")]
    pub container_bridges: Option<Vec<String>>,
    /// Allow the `suid` and `dev` mount options (default false: mounts are nosuid,nodev).
    #[arg(long)]
    pub allow_suid_dev: Option<bool>,
    /// Control API addresses (default 127.0.0.1:3000); repeat for several, "" for none.
    #[arg(long = "control-listen")]
    pub control_listen: Option<Vec<String>>,
    /// Docker VolumeDriver socket (default /run/docker/plugins/tankd.sock); empty to disable.
    #[arg(long, value_parser = path_or_empty())]
    pub docker_socket: Option<PathBuf>,
    /// Host name services reach the control API by, put in `TANKD_CONTROL_URL`
    /// (default: this node's hostname).
    #[arg(long)]
    pub public_host: Option<String>,
    /// S3 endpoint addresses (default 127.0.0.1:9000); repeat for several, "" for none.
    #[arg(long = "s3-listen")]
    pub s3_listen: Option<Vec<String>>,
    /// The region the S3 endpoint reports and provisioning hands out (default us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// Enable the node's S3 admin key, which reaches every bucket; `tankd s3-admin-key`
    /// prints it (default false).
    #[arg(long)]
    pub s3_admin_key: Option<bool>,
    /// The largest object one PUT (or a multipart upload's whole) may make (default 5G).
    #[arg(long)]
    pub s3_max_object_size: Option<String>,
    /// Seconds an unfinished multipart upload is kept (default 604800, a week).
    #[arg(long)]
    pub s3_multipart_expiry: Option<u64>,
    /// S3 requests served at once; more get 503 SlowDown (default 256).
    #[arg(long)]
    pub s3_max_requests: Option<usize>,
    /// Database endpoint addresses (default 127.0.0.1:27017), for the MongoDB-wire
    /// endpoint; accepted and checked, not served yet.
    #[arg(long = "db-listen")]
    pub db_listen: Option<Vec<String>>,
    /// Passphrase that will encrypt archives (`CORESTORE_ARCHIVE_PASSPHRASE`); environment
    /// only, never a flag (flags show in `ps`). Prefer `archive_passphrase_file`.
    #[arg(skip)]
    #[serde(skip)]
    pub archive_passphrase: Option<String>,
    /// File holding the archive passphrase (first line); must not be readable by others.
    #[arg(long)]
    pub archive_passphrase_file: Option<PathBuf>,
    /// Archives kept per dataset (the newest, with the archives they apply on); older
    /// ones are deleted from this node after each new archive. Default: all kept.
    #[arg(long)]
    pub archive_keep_last: Option<usize>,
    /// Where archives are replicated to (`[[archive_targets]]` tables; file only).
    #[arg(skip)]
    pub archive_targets: Option<Vec<crate::archives::TargetConfig>>,
}

impl Layer {
    /// `other` wins wherever it says something.
    fn overlay(self, other: Layer) -> Layer {
        Layer {
            pool: other.pool.or(self.pool),
            dataset_root: other.dataset_root.or(self.dataset_root),
            data_dir: other.data_dir.or(self.data_dir),
            listen: other.listen.or(self.listen),
            socket: other.socket.or(self.socket),
            socket_group: other.socket_group.or(self.socket_group),
            auth: other.auth.or(self.auth),
            api_token: other.api_token.or(self.api_token),
            api_token_file: other.api_token_file.or(self.api_token_file),
            embedded_pool_name: other.embedded_pool_name.or(self.embedded_pool_name),
            embedded_pool_size: other.embedded_pool_size.or(self.embedded_pool_size),
            log_format: other.log_format.or(self.log_format),
            shutdown_timeout: other.shutdown_timeout.or(self.shutdown_timeout),
            image_server: other.image_server.or(self.image_server),
            image_sources: other.image_sources.or(self.image_sources),
            image_fetch_timeout: other.image_fetch_timeout.or(self.image_fetch_timeout),
            max_image_size: other.max_image_size.or(self.max_image_size),
            num_fetchers: other.num_fetchers.or(self.num_fetchers),
            max_pending: other.max_pending.or(self.max_pending),
            max_streams: other.max_streams.or(self.max_streams),
            max_service_snapshots: other.max_service_snapshots.or(self.max_service_snapshots),
            stream_idle_timeout: other.stream_idle_timeout.or(self.stream_idle_timeout),
            zfs: other.zfs.or(self.zfs),
            mount_root: other.mount_root.or(self.mount_root),
            image_roots: other.image_roots.or(self.image_roots),
            local_devices: other.local_devices.or(self.local_devices),
            container_networks: other.container_networks.or(self.container_networks),
            container_bridges: other.container_bridges.or(self.container_bridges),
            allow_suid_dev: other.allow_suid_dev.or(self.allow_suid_dev),
            control_listen: other.control_listen.or(self.control_listen),
            docker_socket: other.docker_socket.or(self.docker_socket),
            public_host: other.public_host.or(self.public_host),
            s3_listen: other.s3_listen.or(self.s3_listen),
            s3_region: other.s3_region.or(self.s3_region),
            s3_admin_key: other.s3_admin_key.or(self.s3_admin_key),
            s3_max_object_size: other.s3_max_object_size.or(self.s3_max_object_size),
            s3_multipart_expiry: other.s3_multipart_expiry.or(self.s3_multipart_expiry),
            s3_max_requests: other.s3_max_requests.or(self.s3_max_requests),
            db_listen: other.db_listen.or(self.db_listen),
            archive_passphrase: other.archive_passphrase.or(self.archive_passphrase),
            archive_passphrase_file: other.archive_passphrase_file.or(self.archive_passphrase_file),
            archive_targets: other.archive_targets.or(self.archive_targets),
            archive_keep_last: other.archive_keep_last.or(self.archive_keep_last),
        }
    }

    /// The `TANKD_*` variables, and corestore's `CORESTORE_*` names for the settings both
    /// have (the `TANKD_` name wins when both are set). `env` is passed in so tests need
    /// not touch the process's.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Layer, ConfigError> {
        let get = |k: &str| {
            env.get(k).cloned().or_else(|| {
                let alias = CORESTORE_ALIASES.iter().find(|(t, _)| *t == k)?.1;
                env.get(alias).cloned()
            })
        };
        let list = |k: &str| {
            get(k).map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>())
        };
        let [control_listen, s3_listen, db_listen] = corestore_listens(env)?;
        Ok(Layer {
            pool: get("TANKD_POOL"),
            dataset_root: get("TANKD_DATASET_ROOT"),
            data_dir: get("TANKD_DATA_DIR").map(PathBuf::from),
            listen: get("TANKD_LISTEN")
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()),
            socket: get("TANKD_SOCKET").map(PathBuf::from),
            socket_group: get("TANKD_SOCKET_GROUP"),
            auth: get("TANKD_AUTH"),
            api_token: get("TANKD_API_TOKEN"),
            api_token_file: get("TANKD_API_TOKEN_FILE").map(PathBuf::from),
            embedded_pool_name: get("TANKD_EMBEDDED_POOL_NAME"),
            embedded_pool_size: get("TANKD_EMBEDDED_POOL_SIZE"),
            log_format: get("TANKD_LOG_FORMAT"),
            shutdown_timeout: get("TANKD_SHUTDOWN_TIMEOUT")
                .map(|v| v.parse().map_err(|_| ConfigError::field("TANKD_SHUTDOWN_TIMEOUT", "not a number of seconds")))
                .transpose()?,
            image_server: get("TANKD_IMAGE_SERVER"),
            image_sources: get("TANKD_IMAGE_SOURCES").map(|v| v.split_whitespace().map(str::to_owned).collect()),
            image_fetch_timeout: env
                .get("TANKD_IMAGE_FETCH_TIMEOUT")
                .map(|v| v.parse().map_err(|_| ConfigError::field("TANKD_IMAGE_FETCH_TIMEOUT", "not a whole number")))
                .transpose()?,
            max_image_size: get("TANKD_MAX_IMAGE_SIZE"),
            num_fetchers: number(env, "TANKD_NUM_FETCHERS")?,
            max_pending: number(env, "TANKD_MAX_PENDING")?,
            max_streams: number(env, "TANKD_MAX_STREAMS")?,
            max_service_snapshots: number(env, "TANKD_MAX_SERVICE_SNAPSHOTS")?,
            stream_idle_timeout: number(env, "TANKD_STREAM_IDLE_TIMEOUT")?.map(|n| n as u64),
            zfs: boolean(env, "TANKD_ZFS")?,
            mount_root: get("TANKD_MOUNT_ROOT").map(PathBuf::from),
            image_roots: get("TANKD_IMAGE_ROOTS")
                .map(|v| v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect()),
            local_devices: get("TANKD_LOCAL_DEVICES")
                .map(|v| v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect()),
            container_networks: get("TANKD_CONTAINER_NETWORKS")
                .map(|v| v.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect()),
            container_bridges: get("TANKD_CONTAINER_BRIDGES")
                .map(|v| v.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect()),
            allow_suid_dev: boolean(env, "TANKD_ALLOW_SUID_DEV")?,
            control_listen: list("TANKD_CONTROL_LISTEN").or(control_listen),
            docker_socket: get("TANKD_DOCKER_SOCKET").map(PathBuf::from),
            public_host: get("TANKD_PUBLIC_HOST"),
            s3_listen: list("TANKD_S3_LISTEN").or(s3_listen),
            s3_region: get("TANKD_S3_REGION"),
            s3_admin_key: boolean(env, "TANKD_S3_ADMIN_KEY")?,
            s3_max_object_size: get("TANKD_S3_MAX_OBJECT_SIZE"),
            s3_multipart_expiry: number(env, "TANKD_S3_MULTIPART_EXPIRY")?.map(|n| n as u64),
            s3_max_requests: number(env, "TANKD_S3_MAX_REQUESTS")?,
            db_listen: list("TANKD_DB_LISTEN").or(db_listen),
            archive_passphrase: get("TANKD_ARCHIVE_PASSPHRASE"),
            archive_passphrase_file: get("TANKD_ARCHIVE_PASSPHRASE_FILE").map(PathBuf::from),
            archive_targets: None,
            archive_keep_last: number(env, "TANKD_ARCHIVE_KEEP_LAST")?,
        })
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Layer, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError { field: origin.to_owned(), reason: e.to_string() })
    }
}

/// The control, S3 and database addresses corestore's variables make: for each endpoint,
/// `CORESTORE_BIND_ADDRESS` (default tankd's 127.0.0.1, not corestore's 0.0.0.0: a node
/// is not opened to the network by a port setting alone) and its `CORESTORE_*_PORT`
/// (default corestore's), when either is set.
fn corestore_listens(env: &HashMap<String, String>) -> Result<[Option<Vec<String>>; 3], ConfigError> {
    let bind = env
        .get("CORESTORE_BIND_ADDRESS")
        .map(|a| {
            a.trim()
                .parse::<std::net::IpAddr>()
                .map_err(|_| ConfigError::field("CORESTORE_BIND_ADDRESS", format!("{a:?} is not an IP address")))
        })
        .transpose()?;
    let mut out = [None, None, None];
    for (slot, (_, port_var, default)) in out.iter_mut().zip(CORESTORE_PORTS) {
        let port = env
            .get(*port_var)
            .map(|p| p.trim().parse::<u16>().map_err(|_| ConfigError::field(port_var, format!("{p:?} is not a port"))))
            .transpose()?;
        if bind.is_some() || port.is_some() {
            let ip = bind.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            *slot = Some(vec![SocketAddr::new(ip, port.unwrap_or(*default)).to_string()]);
        }
    }
    Ok(out)
}

fn boolean(env: &HashMap<String, String>, key: &str) -> Result<Option<bool>, ConfigError> {
    env.get(key)
        .map(|v| match v.as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(ConfigError::field(key, "not true or false")),
        })
        .transpose()
}

fn number(env: &HashMap<String, String>, key: &str) -> Result<Option<usize>, ConfigError> {
    env.get(key).map(|v| v.parse().map_err(|_| ConfigError::field(key, "not a whole number"))).transpose()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration {field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

/// A count or a number of seconds that 0 would make meaningless: the value given, or
/// `default` when unset; 0 is refused naming the field (`unit` ends the message).
fn at_least_one<T: Copy + Default + PartialEq>(
    field: &str,
    value: Option<T>,
    unit: &str,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        Some(v) if v == T::default() => Err(ConfigError::field(field, format!("must be at least 1{unit}"))),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

impl ConfigError {
    fn field(field: &str, reason: impl Into<String>) -> Self {
        ConfigError { field: field.to_owned(), reason: reason.into() }
    }
}

/// How the TCP listeners authenticate (`auth::` has the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Token,
    None,
}

/// A path flag that may be given empty ("" turns the listener off); clap's own path
/// parser refuses empty values.
fn path_or_empty() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A list of listen addresses (`""` entries dropped: `[""]` turns the listener off).
fn addresses(field: &str, given: Option<Vec<String>>, default: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    given
        .unwrap_or_else(|| vec![default.to_owned()])
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| ConfigError::field(field, format!("{a:?} is not an address:port")))
        })
        .collect()
}

/// The resolved configuration tankd runs with.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub pool: PoolName,
    /// True when `pool` was not configured and tankd manages a file-backed pool.
    pub embedded_pool: bool,
    pub dataset_root: DatasetName,
    pub data_dir: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub auth: AuthMode,
    /// The configured token; with `auth = "token"` and none configured, tankd makes one
    /// at start (`auth::node_token`) and puts it here.
    pub api_token: Option<String>,
    pub embedded_pool_size: u64,
    pub log_format: LogFormat,
    pub shutdown_timeout: std::time::Duration,
    pub image_server: Option<String>,
    pub image_sources: Vec<String>,
    pub image_fetch_timeout: std::time::Duration,
    pub max_image_size: u64,
    pub num_fetchers: usize,
    pub max_pending: usize,
    pub max_streams: usize,
    pub max_service_snapshots: usize,
    pub stream_idle_timeout: std::time::Duration,
    pub zfs: bool,
    pub mount_root: PathBuf,
    pub image_roots: Vec<PathBuf>,
    pub local_devices: Vec<PathBuf>,
    pub container_networks: Vec<String>,
    pub container_bridges: Vec<String>,
    pub allow_suid_dev: bool,
    pub control_listen: Vec<SocketAddr>,
    pub docker_socket: Option<PathBuf>,
    pub public_host: String,
    pub s3_listen: Vec<SocketAddr>,
    pub s3_region: String,
    pub s3_admin_key: bool,
    pub s3_max_object_size: u64,
    pub s3_multipart_expiry: std::time::Duration,
    pub s3_max_requests: usize,
    pub db_listen: Vec<SocketAddr>,
    pub archive_passphrase: Option<String>,
    pub archive_targets: Vec<crate::archives::TargetConfig>,
    pub archive_keep_last: Option<usize>,
}

// Hand-written so the token never reaches a log line.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("pool", &self.pool.as_str())
            .field("embedded_pool", &self.embedded_pool)
            .field("dataset_root", &self.dataset_root.as_str())
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("socket", &self.socket)
            .field("socket_group", &self.socket_group)
            .field("auth", &self.auth)
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("embedded_pool_size", &self.embedded_pool_size)
            .field("log_format", &self.log_format)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("image_server", &self.image_server)
            .field("image_sources", &self.image_sources)
            .field("image_fetch_timeout", &self.image_fetch_timeout)
            .field("max_image_size", &self.max_image_size)
            .field("num_fetchers", &self.num_fetchers)
            .field("max_pending", &self.max_pending)
            .field("max_streams", &self.max_streams)
            .field("max_service_snapshots", &self.max_service_snapshots)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("zfs", &self.zfs)
            .field("mount_root", &self.mount_root)
            .field("image_roots", &self.image_roots)
            .field("local_devices", &self.local_devices)
            .field("container_networks", &self.container_networks)
            .field("container_bridges", &self.container_bridges)
            .field("allow_suid_dev", &self.allow_suid_dev)
            .field("control_listen", &self.control_listen)
            .field("docker_socket", &self.docker_socket)
            .field("public_host", &self.public_host)
            .field("s3_listen", &self.s3_listen)
            .field("s3_region", &self.s3_region)
            .field("s3_admin_key", &self.s3_admin_key)
            .field("s3_max_object_size", &self.s3_max_object_size)
            .field("s3_multipart_expiry", &self.s3_multipart_expiry)
            .field("s3_max_requests", &self.s3_max_requests)
            .field("db_listen", &self.db_listen)
            .field("archive_passphrase", &self.archive_passphrase.as_ref().map(|_| "<set>"))
            .field("archive_targets", &self.archive_targets.iter().map(|t| t.name()).collect::<Vec<_>>())
            .field("archive_keep_last", &self.archive_keep_last)
            .finish()
    }
}

/// `8G`, `512M`, `1073741824`: binary units.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let mult = match t[i..].to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1u64 << 40,
                "" => 1,
                _ => return None,
            };
            (&t[..i], mult)
        }
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

impl Config {
    /// Resolve the layers (file, env, flags; later wins) and fill in defaults.
    pub fn resolve(file: Layer, env: Layer, flags: Layer) -> Result<Config, ConfigError> {
        let l = file.overlay(env).overlay(flags);
        let (pool, embedded_pool) = match &l.pool {
            Some(p) => (p.parse::<PoolName>().map_err(|e| ConfigError::field("pool", e.to_string()))?, false),
            None => {
                let name = l.embedded_pool_name.as_deref().unwrap_or(EMBEDDED_POOL);
                (name.parse::<PoolName>().map_err(|e| ConfigError::field("embedded_pool_name", e.to_string()))?, true)
            }
        };
        let dataset_root: DatasetName = match &l.dataset_root {
            Some(r) => {
                r.parse().map_err(|e: zfs_sys_shim::NameError| ConfigError::field("dataset_root", e.to_string()))?
            }
            None => format!("{pool}/tankd").parse().expect("valid"),
        };
        if dataset_root.pool() != pool.as_str() {
            return Err(ConfigError::field("dataset_root", format!("{dataset_root} is not in pool {pool}")));
        }
        if dataset_root.parent().is_none() {
            return Err(ConfigError::field("dataset_root", "must be below the pool's root dataset, e.g. <pool>/tankd"));
        }
        let data_dir = l.data_dir.unwrap_or_else(|| PathBuf::from("/var/lib/tankd"));
        if !data_dir.is_absolute() {
            return Err(ConfigError::field("data_dir", "must be an absolute path"));
        }
        let listen = l
            .listen
            .unwrap_or_else(|| vec!["127.0.0.1:7070".to_owned()])
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::field("listen", format!("{a:?} is not an address:port")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let socket = match l.socket {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) if !p.is_absolute() => {
                return Err(ConfigError::field("socket", "must be an absolute path"));
            }
            Some(p) => Some(p),
            None => Some(PathBuf::from("/run/tankd/tankd.sock")),
        };
        if listen.is_empty() && socket.is_none() {
            return Err(ConfigError::field("listen", "no TCP address and no socket: nothing to serve on"));
        }
        let api_token = match (l.api_token, l.api_token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::field("api_token", "set api_token or api_token_file, not both"));
            }
            (Some(t), None) => Some(t),
            (None, Some(path)) => Some(
                crate::secrets::read_private(&path).map_err(|e| ConfigError::field("api_token_file", e.to_string()))?,
            ),
            (None, None) => None,
        };
        let auth = match l.auth.as_deref() {
            None | Some("token") => AuthMode::Token,
            Some("none") if api_token.is_some() => {
                return Err(ConfigError::field("auth", "auth = \"none\" and an API token: set one or the other"));
            }
            Some("none") => AuthMode::None,
            Some(other) => return Err(ConfigError::field("auth", format!("{other:?} is not token or none"))),
        };
        let socket_group = match l.socket_group {
            Some(g) if g.is_empty() => None,
            Some(g) if g.starts_with('-') || !g.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) => {
                return Err(ConfigError::field("socket_group", format!("{g:?} is not a group name")));
            }
            other => other,
        };
        if api_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::field("api_token", "must be at least 16 characters"));
        }
        let size_text = l.embedded_pool_size.unwrap_or_else(|| "8G".to_owned());
        let embedded_pool_size = parse_size(&size_text).filter(|s| *s >= 128 << 20).ok_or_else(|| {
            ConfigError::field("embedded_pool_size", format!("{size_text:?} is not a size of at least 128M"))
        })?;
        let image_size_text = l.max_image_size.clone().unwrap_or_else(|| "64G".to_owned());
        let max_image_size = parse_size(&image_size_text)
            .filter(|s| *s > 0)
            .ok_or_else(|| ConfigError::field("max_image_size", format!("{image_size_text:?} is not a size")))?;
        for source in l.image_sources.iter().flatten() {
            let ok = reqwest::Url::parse(source).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::field("image_sources", format!("{source:?} is not an http(s) URL prefix")));
            }
        }
        let log_format = match l.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::field("log_format", format!("{other:?} is not text or json")));
            }
        };
        let control_listen = addresses("control_listen", l.control_listen, "127.0.0.1:3000")?;
        let s3_listen = addresses("s3_listen", l.s3_listen, "127.0.0.1:9000")?;
        let db_listen = addresses("db_listen", l.db_listen, "127.0.0.1:27017")?;
        let s3_region = l.s3_region.unwrap_or_else(|| "us-east-1".to_owned());
        if s3_region.is_empty()
            || s3_region.len() > 32
            || !s3_region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError::field("s3_region", format!("{s3_region:?} is not a region name like us-east-1")));
        }
        let object_text = l.s3_max_object_size.unwrap_or_else(|| "5G".to_owned());
        let s3_max_object_size = parse_size(&object_text)
            .filter(|s| *s > 0)
            .ok_or_else(|| ConfigError::field("s3_max_object_size", format!("{object_text:?} is not a size")))?;
        let archive_passphrase = match (l.archive_passphrase, l.archive_passphrase_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::field(
                    "archive_passphrase_file",
                    "set the passphrase in the environment or in a file, not both",
                ));
            }
            (Some(p), None) => Some(p),
            (None, Some(path)) => Some(
                crate::secrets::read_private(&path)
                    .map_err(|e| ConfigError::field("archive_passphrase_file", e.to_string()))?,
            ),
            (None, None) => None,
        };
        if archive_passphrase.as_ref().is_some_and(|p| p.chars().count() < 8) {
            return Err(ConfigError::field("archive_passphrase", "must be at least 8 characters"));
        }
        let archive_targets = l.archive_targets.unwrap_or_default();
        let mut target_names = std::collections::HashSet::new();
        for t in &archive_targets {
            t.check().map_err(|e| ConfigError::field("archive_targets", format!("target {:?}: {e}", t.name())))?;
            if !target_names.insert(t.name()) {
                return Err(ConfigError::field("archive_targets", format!("two targets are named {:?}", t.name())));
            }
        }
        let docker_socket = match l.docker_socket {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) if !p.is_absolute() => return Err(ConfigError::field("docker_socket", "must be an absolute path")),
            Some(p) => Some(p),
            None => Some(PathBuf::from("/run/docker/plugins/tankd.sock")),
        };
        let public_host = match l.public_host {
            Some(h) if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') => {
                return Err(ConfigError::field("public_host", format!("{h:?} is not a host name")));
            }
            Some(h) => h,
            None => {
                nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
            }
        };
        let mount_root = l.mount_root.unwrap_or_else(|| data_dir.join("mounts"));
        let image_roots = l.image_roots.unwrap_or_else(|| vec![data_dir.join("images")]);
        let local_devices = l.local_devices.unwrap_or_default();
        let container_networks = l.container_networks.unwrap_or_default();
        let container_bridges = l.container_bridges.unwrap_or_default();
        if let Some(bad) = container_networks
            .iter()
            .find(|n| crate::containers::netpolicy::NetPolicy::new(std::slice::from_ref(n), &[]).is_err())
        {
            return Err(ConfigError::field("container_networks", format!("{bad:?} is not an address range (CIDR)")));
        }
        for (field, path) in std::iter::once(("mount_root", &mount_root))
            .chain(image_roots.iter().map(|p| ("image_roots", p)))
            .chain(local_devices.iter().map(|p| ("local_devices", p)))
        {
            let plain = path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !path.is_absolute() || !plain || path == Path::new("/") {
                return Err(ConfigError::field(
                    field,
                    format!("{} must be an absolute path without `..`, not /", path.display()),
                ));
            }
        }
        Ok(Config {
            pool,
            embedded_pool,
            dataset_root,
            data_dir,
            listen,
            socket,
            socket_group,
            auth,
            api_token,
            embedded_pool_size,
            log_format,
            shutdown_timeout: std::time::Duration::from_secs(l.shutdown_timeout.unwrap_or(30)),
            image_server: l.image_server,
            image_sources: l.image_sources.unwrap_or_default(),
            image_fetch_timeout: std::time::Duration::from_secs(at_least_one(
                "image_fetch_timeout",
                l.image_fetch_timeout,
                " second",
                3600,
            )?),
            max_image_size,
            num_fetchers: at_least_one(
                "num_fetchers",
                l.num_fetchers,
                "",
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            )?,
            max_pending: at_least_one("max_pending", l.max_pending, "", 64)?,
            max_streams: at_least_one("max_streams", l.max_streams, "", 4)?,
            max_service_snapshots: at_least_one("max_service_snapshots", l.max_service_snapshots, "", 256)?,
            stream_idle_timeout: std::time::Duration::from_secs(at_least_one(
                "stream_idle_timeout",
                l.stream_idle_timeout,
                " second",
                120,
            )?),
            zfs: l.zfs.unwrap_or(true),
            mount_root,
            image_roots,
            local_devices,
            container_networks,
            container_bridges,
            allow_suid_dev: l.allow_suid_dev.unwrap_or(false),
            control_listen,
            docker_socket,
            public_host,
            s3_listen,
            s3_region,
            s3_admin_key: l.s3_admin_key.unwrap_or(false),
            s3_max_object_size,
            s3_multipart_expiry: std::time::Duration::from_secs(at_least_one(
                "s3_multipart_expiry",
                l.s3_multipart_expiry,
                " second",
                7 * 24 * 3600,
            )?),
            s3_max_requests: at_least_one("s3_max_requests", l.s3_max_requests, "", 256)?,
            db_listen,
            archive_passphrase,
            archive_targets,
            archive_keep_last: match l.archive_keep_last {
                Some(0) => return Err(ConfigError::field("archive_keep_last", "must be at least 1")),
                n => n,
            },
        })
    }

    /// The embedded pool's backing file.
    pub fn embedded_vdev(&self) -> PathBuf {
        self.data_dir.join("pool").join(format!("{}.img", self.pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Layer {
        Layer::from_env(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap()
    }

    #[test]
    fn defaults_give_an_embedded_pool() {
        let c = Config::resolve(Layer::default(), Layer::default(), Layer::default()).unwrap();
        assert!(c.embedded_pool);
        assert_eq!(c.pool.as_str(), "tankd");
        assert_eq!(c.dataset_root.as_str(), "tankd/tankd");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/tankd"));
        assert_eq!(c.listen, vec!["127.0.0.1:7070".parse().unwrap()]);
        assert_eq!(c.socket, Some(PathBuf::from("/run/tankd/tankd.sock")));
        assert_eq!(c.embedded_pool_size, 8 << 30);
        assert_eq!(c.embedded_vdev(), PathBuf::from("/var/lib/tankd/pool/tankd.img"));
        assert_eq!(c.control_listen, vec!["127.0.0.1:3000".parse().unwrap()]);
        assert_eq!(c.docker_socket, Some(PathBuf::from("/run/docker/plugins/tankd.sock")));
    }

    #[test]
    fn corestore_names_are_aliases_tankd_names_win() {
        let c = Config::resolve(
            Layer::default(),
            env(&[("CORESTORE_API_TOKEN", "corestore-token-0123456789"), ("CORESTORE_PUBLIC_HOST", "node7")]),
            Layer::default(),
        )
        .unwrap();
        assert_eq!(c.api_token.as_deref(), Some("corestore-token-0123456789"));
        assert_eq!(c.public_host, "node7");
        let both = env(&[
            ("CORESTORE_API_TOKEN", "corestore-token-0123456789"),
            ("TANKD_API_TOKEN", "tankd-token-0123456789"),
        ]);
        let c = Config::resolve(Layer::default(), both, Layer::default()).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("tankd-token-0123456789"));
        let off = env(&[("TANKD_CONTROL_LISTEN", ""), ("TANKD_DOCKER_SOCKET", "")]);
        let c = Config::resolve(Layer::default(), off, Layer::default()).unwrap();
        assert!(c.control_listen.is_empty() && c.docker_socket.is_none());
    }

    #[test]
    fn corestore_endpoint_settings() {
        let c = Config::resolve(Layer::default(), Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.s3_listen, vec!["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(c.db_listen, vec!["127.0.0.1:27017".parse().unwrap()]);
        assert_eq!((c.s3_region.as_str(), c.s3_admin_key, c.s3_max_object_size), ("us-east-1", false, 5 << 30));
        // A port alone keeps tankd's loopback default; the bind address applies to all three.
        let c = Config::resolve(Layer::default(), env(&[("CORESTORE_S3_PORT", "9100")]), Layer::default()).unwrap();
        assert_eq!(c.s3_listen, vec!["127.0.0.1:9100".parse().unwrap()]);
        assert_eq!(c.control_listen, vec!["127.0.0.1:3000".parse().unwrap()]);
        let all = env(&[
            ("CORESTORE_BIND_ADDRESS", "0.0.0.0"),
            ("CORESTORE_CONTROL_PORT", "3001"),
            ("CORESTORE_DB_PORT", "27018"),
            ("CORESTORE_REGION", "eu-central-1"),
            ("CORESTORE_DATA_DIR", "/data/corestore"),
            ("TANKD_S3_LISTEN", "127.0.0.1:9999"),
        ]);
        let c = Config::resolve(Layer::default(), all, Layer::default()).unwrap();
        assert_eq!(c.control_listen, vec!["0.0.0.0:3001".parse().unwrap()]);
        assert_eq!(c.db_listen, vec!["0.0.0.0:27018".parse().unwrap()]);
        assert_eq!(c.s3_listen, vec!["127.0.0.1:9999".parse().unwrap()], "the TANKD_ name wins");
        assert_eq!((c.s3_region.as_str(), c.data_dir.as_path()), ("eu-central-1", Path::new("/data/corestore")));
        let v6 = env(&[("CORESTORE_BIND_ADDRESS", "::1")]);
        let c = Config::resolve(Layer::default(), v6, Layer::default()).unwrap();
        assert_eq!(c.s3_listen, vec!["[::1]:9000".parse().unwrap()]);
        for (k, v) in [("CORESTORE_S3_PORT", "99999"), ("CORESTORE_BIND_ADDRESS", "any")] {
            let err = Layer::from_env(&[(k.to_string(), v.to_string())].into()).unwrap_err();
            assert_eq!(err.field, k);
        }
        let secret = env(&[("CORESTORE_ARCHIVE_PASSPHRASE", "correct horse battery")]);
        let c = Config::resolve(Layer::default(), secret, Layer::default()).unwrap();
        assert_eq!(c.archive_passphrase.as_deref(), Some("correct horse battery"));
        assert!(!format!("{c:?}").contains("horse"), "the passphrase never reaches a log line");
        let bad = Layer { s3_region: Some("US East".into()), ..Default::default() };
        assert_eq!(Config::resolve(Layer::default(), Layer::default(), bad).unwrap_err().field, "s3_region");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file =
            Layer::from_toml("pool = \"filepool\"\ndata_dir = \"/srv/a\"\nlisten = [\"127.0.0.1:1\"]\n", "tankd.toml")
                .unwrap();
        let env = env(&[("TANKD_POOL", "envpool"), ("TANKD_LISTEN", "127.0.0.1:2, [::1]:3")]);
        let flags = Layer { pool: Some("flagpool".into()), ..Default::default() };
        let c = Config::resolve(file.clone(), env.clone(), flags).unwrap();
        assert_eq!(c.pool.as_str(), "flagpool");
        assert!(!c.embedded_pool);
        assert_eq!(c.dataset_root.as_str(), "flagpool/tankd");
        assert_eq!(c.listen.len(), 2, "env listen beats the file's");
        assert_eq!(c.data_dir, PathBuf::from("/srv/a"), "only the file said data_dir");
        let c = Config::resolve(file, env, Layer::default()).unwrap();
        assert_eq!(c.pool.as_str(), "envpool");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: [(Layer, &str); 7] = [
            (Layer { pool: Some("-x".into()), ..Default::default() }, "pool"),
            (Layer { dataset_root: Some("other/tankd".into()), ..Default::default() }, "dataset_root"),
            (Layer { dataset_root: Some("tankd".into()), ..Default::default() }, "dataset_root"),
            (Layer { listen: Some(vec!["localhost".into()]), ..Default::default() }, "listen"),
            (Layer { api_token: Some("short".into()), ..Default::default() }, "api_token"),
            (Layer { embedded_pool_size: Some("12Q".into()), ..Default::default() }, "embedded_pool_size"),
            (Layer { data_dir: Some("rel/dir".into()), ..Default::default() }, "data_dir"),
        ];
        for (layer, field) in cases {
            let err = Config::resolve(Layer::default(), Layer::default(), layer).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        assert!(Layer::from_toml("pool = \"a\"\nbogus = 1\n", "tankd.toml").is_err(), "unknown keys are refused");
        let err = Layer::from_env(&[("TANKD_SHUTDOWN_TIMEOUT".to_string(), "soon".to_string())].into()).unwrap_err();
        assert_eq!(err.field, "TANKD_SHUTDOWN_TIMEOUT");
    }

    #[test]
    fn token_file_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let from_file = || {
            Config::resolve(
                Layer { api_token_file: Some(path.clone()), ..Default::default() },
                Layer::default(),
                Layer::default(),
            )
        };
        // A token file others can read is refused, without the token in the message.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = from_file().unwrap_err();
        assert_eq!(err.field, "api_token_file");
        assert!(err.reason.contains("chmod 600") && !err.reason.contains("0123456789abcdef"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = from_file().unwrap();
        assert_eq!(c.api_token.as_deref(), Some("0123456789abcdef0123"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789abcdef") && shown.contains("<set>"), "{shown}");
    }

    #[test]
    fn auth_modes() {
        let with = |auth: &str, token: Option<&str>| {
            let l = Layer { auth: Some(auth.into()), api_token: token.map(Into::into), ..Default::default() };
            Config::resolve(Layer::default(), Layer::default(), l)
        };
        assert_eq!(
            Config::resolve(Layer::default(), Layer::default(), Layer::default()).unwrap().auth,
            AuthMode::Token
        );
        assert_eq!(with("token", None).unwrap().auth, AuthMode::Token);
        assert_eq!(with("none", None).unwrap().auth, AuthMode::None);
        assert_eq!(with("none", Some("0123456789abcdef0123")).unwrap_err().field, "auth");
        assert_eq!(with("open", None).unwrap_err().field, "auth");
    }

    #[test]
    fn empty_flags_turn_listeners_off() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            flags: Layer,
        }
        let cli = Cli::try_parse_from(["tankd", "--socket", "", "--docker-socket", "", "--control-listen", ""])
            .expect("empty values are accepted");
        let c = Config::resolve(Layer::default(), Layer::default(), cli.flags).unwrap();
        assert_eq!((c.socket, c.docker_socket, c.control_listen), (None, None, vec![]));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("G"), None);
    }
}
