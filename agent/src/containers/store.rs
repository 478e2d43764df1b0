//! The container records, their state file, and the checks a request passes before
//! anything is made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rpc_schema::containers::{Container, ContainerState};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::imageapi::Registry;

/// One container and what tankd needs to find its processes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rec {
    pub spec: Container,
    /// `<data_dir>/containers/<id>`: launch.json, container.log, exit.
    pub dir: PathBuf,
    /// The mount's directory, the container's `/`.
    pub root: PathBuf,
    /// PID 1's start time (clock ticks since boot, /proc/<pid>/stat field 22): a pid
    /// with another start time is another process.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    #[serde(default)]
    pub shim_pid: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub next_id: u64,
    pub containers: BTreeMap<u64, Rec>,
}

#[derive(Clone)]
pub struct Containers {
    pub(super) inner: Arc<Mutex<State>>,
    pub(super) mounts: Registry,
    pub(super) dir: PathBuf,
    pub(super) stop_timeout: Duration,
    /// The cgroup filesystem root (`/sys/fs/cgroup`).
    pub(super) cgroup_fs: PathBuf,
    /// This tankd's parent group under it (`cgroup::parent_for`).
    pub(super) cgroup_parent: String,
    /// Where veth host ends may go (config `container_networks`, `container_bridges`).
    pub(super) net_policy: super::netpolicy::NetPolicy,
    /// One lock per container id: a start and a stop (or two starts) of one container
    /// run one after the other, so two requests can never make two PID 1s.
    pub(super) changing: Arc<std::sync::Mutex<std::collections::HashMap<u64, Arc<Mutex<()>>>>>,
}

impl Rec {
    /// Whether PID 1 may still run: running, or a stop under way.
    pub fn is_live(&self) -> bool {
        matches!(self.spec.state, Some(ContainerState::Running) | Some(ContainerState::Stopping))
    }
}

impl Containers {
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub(super) fn save(&self, state: &State) -> Result<()> {
        let path = self.state_file();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).expect("serialises"))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::os(format!("writing {}", path.display()), e))
    }

    pub(super) fn load(dir: &std::path::Path) -> std::io::Result<State> {
        match std::fs::read(dir.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// The record for `key`: a number, or `byname/<name>` resolved by the route.
    pub(super) async fn find(&self, id: u64) -> Result<Rec> {
        self.inner
            .lock()
            .await
            .containers
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("container {id} does not exist")))
    }

    pub(super) async fn id_by_name(&self, name: &str) -> Result<u64> {
        let st = self.inner.lock().await;
        st.containers
            .values()
            .find(|r| r.spec.name.as_deref() == Some(name))
            .and_then(|r| r.spec.id)
            .ok_or_else(|| Error::not_found(format!("no container named {name:?}")))
    }

    pub async fn list(&self) -> Vec<Container> {
        self.inner.lock().await.containers.values().map(|r| r.spec.clone()).collect()
    }

    /// Record a container (state `created`); the route starts it when asked.
    pub(super) async fn create(&self, mut spec: Container) -> Result<Rec> {
        validate(&spec)?;
        if let Some(net) = &spec.network {
            if let Some(h) = &net.host_address {
                self.net_policy.check_host_address(h)?;
            }
            if let Some(b) = &net.bridge {
                self.net_policy.check_bridge(b)?;
            }
        }
        let mut st = self.inner.lock().await;
        if let Some(n) = &spec.name
            && st.containers.values().any(|r| r.spec.name.as_ref() == Some(n))
        {
            return Err(Error::conflict(format!("a container is already named {n:?}")));
        }
        if spec.userns.is_some() || spec.namespaces.iter().any(|n| n == "user") {
            let others: Vec<_> = st.containers.values().filter_map(|r| r.spec.userns.as_ref()).collect();
            let u = super::userns::resolve(&spec.userns.clone().unwrap_or_default(), &others)?;
            super::userns::validate(&u, spec.uid.unwrap_or(0), spec.gid.unwrap_or(0))?;
            spec.userns = Some(u);
        }
        st.next_id = st.next_id.max(1);
        let id = st.next_id;
        let root = self.mounts.pin(spec.mount.id, id).await?;
        crate::fault::point("container-pinned");
        st.next_id += 1;
        let dir = self.dir.join(id.to_string());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            let _ = self.mounts.unpin(spec.mount.id, id).await;
            return Err(Error::os(format!("creating {}", dir.display()), e));
        }
        spec.id = Some(id);
        spec.state = Some(ContainerState::Created);
        spec.logfile = Some(super::shim::log_file(&dir).display().to_string());
        spec.pid = None;
        spec.exit_code = None;
        spec.exit_signal = None;
        spec.started_at = None;
        spec.finished_at = None;
        let rec = Rec { spec, dir, root, start_ticks: None, shim_pid: None };
        st.containers.insert(id, rec.clone());
        if let Err(e) = self.save(&st) {
            st.containers.remove(&id);
            let _ = self.mounts.unpin(rec.spec.mount.id, id).await;
            return Err(e);
        }
        Ok(rec)
    }

    pub(super) async fn update(&self, rec: &Rec) -> Result<()> {
        let mut st = self.inner.lock().await;
        st.containers.insert(rec.spec.id.expect("recorded"), rec.clone());
        self.save(&st)
    }

    /// Hold this while starting or stopping container `id`.
    pub(super) async fn change_lock(&self, id: u64) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.changing.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default().clone();
        lock.lock_owned().await
    }

    pub(super) async fn remove(&self, id: u64) -> Result<()> {
        let mut st = self.inner.lock().await;
        self.changing.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Some(rec) = st.containers.remove(&id) {
            self.save(&st)?;
            crate::fault::point("container-removed");
            self.mounts.unpin(rec.spec.mount.id, id).await?;
            let _ = std::fs::remove_dir_all(&rec.dir);
        }
        Ok(())
    }
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Everything checkable before a record exists.
pub fn validate(c: &Container) -> Result<()> {
    if c.command.trim().is_empty() {
        return Err(Error::invalid("command", "empty: what should PID 1 run?"));
    }
    if c.command.contains('\0') || c.args.iter().chain(&c.env).any(|a| a.contains('\0')) {
        return Err(Error::invalid("command", "NUL bytes in the command, args or env"));
    }
    if let Some(n) = &c.name {
        crate::imageapi::check_label(n)?;
    }
    if let Some(h) = &c.hostname
        && !is_hostname(h)
    {
        return Err(Error::invalid("hostname", format!("{h:?} is not a hostname")));
    }
    if let Some(k) = &c.mount.kind
        && !["attach", "rbd", "overlay", "bind"].contains(&k.as_str())
    {
        return Err(Error::invalid("mount.kind", format!("{k:?} is not attach, rbd, overlay or bind")));
    }
    for e in &c.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(Error::invalid("env", format!("{e:?} is not KEY=value"))),
        }
    }
    if let Some(w) = &c.workdir
        && (!w.starts_with('/') || w.split('/').any(|p| p == ".."))
    {
        return Err(Error::invalid("workdir", format!("{w:?} must be absolute, without ..")));
    }
    for ns in &c.namespaces {
        // mount, pid, uts, ipc and cgroup are always the container's own; net and user on
        // request.
        if !["mount", "pid", "uts", "ipc", "net", "cgroup", "user"].contains(&ns.as_str()) {
            return Err(Error::invalid(
                "namespaces",
                format!("{ns:?} is not mount, pid, uts, ipc, cgroup, net or user"),
            ));
        }
    }
    if let Some(u) = &c.userns {
        super::userns::validate(u, c.uid.unwrap_or(0), c.gid.unwrap_or(0))?;
    }
    if let Some(net) = &c.network {
        match net.mode.as_str() {
            "host" | "none" => {
                if net.address.is_some() || net.host_address.is_some() || net.bridge.is_some() {
                    return Err(Error::invalid("network", "addresses and bridges are for mode veth"));
                }
            }
            "veth" => {
                let address = net
                    .address
                    .as_deref()
                    .ok_or_else(|| Error::invalid("network.address", "veth needs the container's address (CIDR)"))?;
                super::net::parse_cidr(address).map_err(|e| Error::invalid("network.address", e))?;
                if let Some(h) = &net.host_address {
                    super::net::parse_cidr(h).map_err(|e| Error::invalid("network.host_address", e))?;
                }
                if let Some(b) = &net.bridge {
                    let ok = !b.is_empty()
                        && b.len() <= 15
                        && b.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                    if !ok {
                        return Err(Error::invalid("network.bridge", format!("{b:?} is not an interface name")));
                    }
                }
            }
            other => return Err(Error::invalid("network.mode", format!("{other:?} is not host, none or veth"))),
        }
        if net.host_interface.is_some() {
            return Err(Error::invalid("network.host_interface", "tankd names the host end"));
        }
    }
    if let Some(l) = &c.limits {
        super::cgroup::check(l)?;
    }
    if let Some(s) = c.state
        && s != ContainerState::Created
        && s != ContainerState::Running
    {
        return Err(Error::invalid("state", "a new container is created or running"));
    }
    if c.stop_timeout == Some(0) || c.stop_timeout.is_some_and(|t| t > 3600) {
        return Err(Error::invalid("stop_timeout", "between 1 and 3600 seconds"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_schema::containers::MountRef;

    fn spec() -> Container {
        Container {
            mount: MountRef { id: 3, kind: Some("overlay".into()) },
            command: "/bin/sh".into(),
            ..Default::default()
        }
    }

    #[test]
    fn hostnames_and_names_are_checked() {
        assert!(is_hostname("node-1.example"));
        for bad in ["", "-a", "a-", "a..b", "a b", &"x".repeat(65)] {
            assert!(!is_hostname(bad), "{bad}");
        }
        let mut c = spec();
        c.hostname = Some("bad host".into());
        assert_eq!(validate(&c).unwrap_err().field.as_deref(), Some("hostname"));
        let mut c = spec();
        c.command = " ".into();
        assert_eq!(validate(&c).unwrap_err().field.as_deref(), Some("command"));
        let mut c = spec();
        c.env = vec!["NOEQUALS".into()];
        assert_eq!(validate(&c).unwrap_err().field.as_deref(), Some("env"));
        let mut c = spec();
        c.workdir = Some("/a/../b".into());
        assert_eq!(validate(&c).unwrap_err().field.as_deref(), Some("workdir"));
        assert!(validate(&spec()).is_ok());
    }
}
