//! imageapi containers: a process tree in its own namespaces, rooted in a tankd mount,
//! under `/imageapi/v1/container`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Stopping,
    Exited,
    Dead,
}

/// The mount the container is rooted in: upstream's `{id, kind}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MountRef {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Network: the host's (default), a namespace with loopback only, or a veth pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `host`, `none` (loopback only) or `veth`.
    pub mode: String,
    /// veth: the container end's address, CIDR (`10.88.0.2/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// veth: the host end's address, CIDR; without it the host end is only up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<String>,
    /// veth: attach the host end to this bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Set by tankd: the host end's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_interface: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Bytes of memory (the cgroup's hard limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Most processes at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU weight, 1–10000 (cgroup v2 scale; mapped to shares on v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
}

/// One line of a user namespace's id map: `size` ids from `container_id` inside are
/// `host_id`… on the host (`/proc/<pid>/uid_map`'s three columns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// A user namespace for the container: root inside is an unprivileged id outside.
/// Both maps empty: tankd picks a free range of 65536 ids and records it here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserNs {
    #[serde(default)]
    pub uid_map: Vec<IdMap>,
    /// Default: the same as `uid_map`.
    #[serde(default)]
    pub gid_map: Vec<IdMap>,
}

/// `POST /container` and every answer about one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub mount: MountRef,
    /// The program to run as PID 1 (a path inside the root, or a name on its PATH).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=value` entries; the environment is otherwise empty (PATH aside).
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// systemd mode: tmpfs /run and /tmp, a cgroup mount, /var/lib/journal,
    /// `container=tankd`, stopped with SIGRTMIN+3.
    #[serde(default)]
    pub systemd: bool,
    /// `created` (default: made, not started) or `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
    /// Upstream's list of extra namespaces; `net` means a network namespace (`none`),
    /// `user` a user namespace with a range tankd picks (see `userns`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// A user namespace (also asked for by `"user"` in `namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UserNs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Seconds between the polite stop signal and SIGKILL (default from config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,

    // Set by tankd.
    /// Host pid of the container's PID 1 (`nsenter -t <pid> -a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

/// `PATCH /container/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    pub state: ContainerState,
}
