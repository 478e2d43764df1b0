//! Starting, watching, stopping and re-adopting containers.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rpc_schema::containers::{Container, ContainerState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::init::{DEFAULT_CAPABILITIES, Launch};
use super::shim::{self, Exit};
use super::store::{Containers, Rec};
use crate::error::{Error, Result};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A lifecycle line in the container's log, as upstream wrote them.
fn log_line(rec: &Rec, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(shim::log_file(&rec.dir)) {
        let _ = writeln!(f, "container({}): {text}", rec.spec.id.unwrap_or(0));
    }
}

/// The fields of /proc/<pid>/stat after the command name: state first, start time
/// (clock ticks since boot) 20th. The name may hold spaces and parens: split after its
/// last ')'.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 2..].split(' ').map(str::to_owned).collect())
}

/// Field 22 of /proc/<pid>/stat: the start time in clock ticks since boot.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether `pid` is still the process that was started (and not a zombie), from one
/// read of its stat file.
fn alive(pid: i32, ticks: Option<u64>) -> bool {
    let Some(fields) = stat_fields(pid) else { return false };
    ticks.is_some() && fields.get(19).and_then(|t| t.parse().ok()) == ticks && fields[0] != "Z"
}

impl Containers {
    fn launch(&self, rec: &Rec) -> Launch {
        let s = &rec.spec;
        let mut env = s.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if s.systemd {
            env.push("container=tankd".into());
        }
        let network = s.namespaces.iter().any(|n| n == "net") || s.network.as_ref().is_some_and(|n| n.mode != "host");
        Launch {
            root: rec.root.clone(),
            command: s.command.clone(),
            args: s.args.clone(),
            env,
            workdir: s.workdir.clone().unwrap_or_else(|| "/".into()),
            hostname: s
                .hostname
                .clone()
                .or_else(|| s.name.clone())
                .unwrap_or_else(|| format!("container-{}", s.id.unwrap_or(0))),
            systemd: s.systemd,
            network,
            uid: s.uid.unwrap_or(0),
            gid: s.gid.unwrap_or(0),
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            userns: s.userns.clone(),
        }
    }

    /// Record a container and, when its spec asks for `running`, start it. A start
    /// that fails takes the record with it: nothing is left of the request.
    pub(super) async fn create_and_start(&self, spec: Container) -> Result<Rec> {
        let start = spec.state == Some(ContainerState::Running);
        let rec = self.create(spec).await?;
        if !start {
            return Ok(rec);
        }
        let id = rec.spec.id.expect("recorded");
        match self.start(id).await {
            Ok(rec) => Ok(rec),
            Err(e) => {
                if let Err(r) = self.remove(id).await {
                    tracing::warn!(id, error = %r, "could not remove a container whose start failed");
                }
                Err(e)
            }
        }
    }

    /// Ask for a state: `running` starts, `exited` stops.
    pub(super) async fn change_state(&self, id: u64, to: ContainerState) -> Result<Rec> {
        match to {
            ContainerState::Running => self.start(id).await,
            ContainerState::Exited => self.stop(id).await,
            other => Err(Error::invalid("state", format!("{other:?} cannot be asked for: running or exited"))),
        }
    }

    /// Remove a container; a running one only with `force` (it is stopped first).
    /// Answers the container as it was last.
    pub(super) async fn delete(&self, id: u64, force: bool) -> Result<Rec> {
        let rec = self.find(id).await?;
        if rec.is_live() {
            if !force {
                return Err(Error::conflict(format!("container {id} is running: stop it first or pass force=true")));
            }
            self.stop(id).await?;
        }
        let rec = self.find(id).await?;
        self.remove(id).await?;
        Ok(rec)
    }

    /// Start a created (or exited) container: shim, handshake, running. Whatever a
    /// failed start made is undone in one place ([`Starting::undo`]), whichever step
    /// failed.
    pub(super) async fn start(&self, id: u64) -> Result<Rec> {
        let _changing = self.change_lock(id).await;
        let mut rec = self.find(id).await?;
        if rec.is_live() {
            return Err(Error::conflict(format!("container {id} is already running")));
        }
        let mut made = Starting::default();
        if let Err(e) = self.bring_up(&mut rec, &mut made).await {
            made.undo(self, id).await;
            return Err(e);
        }
        log_line(&rec, &format!("running as host pid {}", rec.spec.pid.unwrap_or(0)));
        tracing::info!(id, pid = rec.spec.pid, "container started");
        // The shim is tankd's child while tankd lives: reap it, then read the exit.
        let mut shim = made.shim.take().expect("a started container has its shim");
        let this = self.clone();
        tokio::spawn(async move {
            let _ = shim.wait().await;
            this.finished(id).await;
        });
        Ok(rec)
    }

    /// The steps of a start, each recording in `made` what it made.
    async fn bring_up(&self, rec: &mut Rec, made: &mut Starting) -> Result<()> {
        let id = rec.spec.id.expect("recorded");
        let launch = self.launch(rec);
        let _ = std::fs::remove_file(shim::exit_file(&rec.dir));
        std::fs::write(shim::launch_file(&rec.dir), serde_json::to_vec_pretty(&launch).expect("serialises"))
            .map_err(|e| Error::os(format!("writing {}", shim::launch_file(&rec.dir).display()), e))?;
        log_line(rec, &format!("starting container: {} {}", launch.command, launch.args.join(" ")));

        // Every container has a group: its device policy, and its limits if any.
        let limits = rec.spec.limits.clone().unwrap_or_default();
        let groups = made.groups.insert(super::cgroup::create(
            &self.cgroup_fs,
            &self.cgroup_parent,
            id,
            &limits,
            super::devices::apply,
        )?);
        let exe = std::env::current_exe().map_err(|e| Error::os("finding tankd's own binary", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(shim::log_file(&rec.dir))
            .map_err(|e| Error::os("opening the container log", e))?;
        let child = made.shim.insert(
            tokio::process::Command::new(exe)
                .arg(shim::ARG)
                .arg(&rec.dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(false)
                .spawn()
                .map_err(|e| Error::os("starting the container shim", e))?,
        );
        let shim_pid = child.id().map(|p| p as i32);
        let mut stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let pid = match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) => line.strip_prefix("pid ").and_then(|p| p.trim().parse::<i32>().ok()),
            _ => None,
        };
        let Some(pid) = pid else {
            let log = std::fs::read_to_string(shim::log_file(&rec.dir)).unwrap_or_default();
            let last = log.lines().last().unwrap_or("no output").to_owned();
            return Err(Error::internal(format!("container {id} did not start: {last}")));
        };
        // PID 1 joins its cgroups before it is let go.
        super::cgroup::join(groups, pid)?;
        let ticks = start_ticks(pid);
        made.veth = self.wire_veth(rec, pid).await?;
        crate::fault::point("container-start");
        // Recorded before PID 1 is let go: a crash from here on leaves a record that
        // names the process (re-adopted, or found ended, at the next start). A crash
        // before it leaves a shim that never gets its go: it ends PID 1 and itself.
        rec.spec.pid = Some(pid);
        rec.spec.state = Some(ContainerState::Running);
        rec.spec.started_at = Some(now());
        rec.spec.finished_at = None;
        rec.spec.exit_code = None;
        rec.spec.exit_signal = None;
        rec.start_ticks = ticks;
        rec.shim_pid = shim_pid;
        self.update(rec).await?;
        made.recorded = true;
        crate::fault::point("container-started");
        stdin.write_all(b"go\n").await.map_err(|e| Error::os("releasing the container", e))?;
        Ok(())
    }

    /// veth mode: the pair, addresses and default route, before PID 1 is let go.
    /// Returns the host end's name.
    async fn wire_veth(&self, rec: &mut Rec, pid: i32) -> Result<Option<String>> {
        let Some(net) = rec.spec.network.clone().filter(|n| n.mode == "veth") else { return Ok(None) };
        let id = rec.spec.id.unwrap_or(0);
        let (host, peer) = (format!("tk{id}h"), format!("tk{id}c"));
        let fail = |e: String| Error::internal(format!("container {id} network: {e}"));
        // A pair left by an earlier run of this id goes first.
        let _ = super::net::delete(&host).await;
        super::net::create_veth(&host, &peer, pid).await.map_err(fail)?;
        let wired = async {
            super::net::configure_host_end(&host, net.host_address.as_deref(), net.bridge.as_deref()).await?;
            let gateway = match &net.host_address {
                Some(h) => Some(super::net::parse_cidr(h)?.0),
                None => None,
            };
            super::net::configure_container_end(pid, net.address.as_deref().unwrap_or_default(), gateway).await
        };
        if let Err(e) = wired.await {
            let _ = super::net::delete(&host).await;
            return Err(fail(e));
        }
        if let Some(n) = rec.spec.network.as_mut() {
            n.host_interface = Some(host.clone());
        }
        Ok(Some(host))
    }

    /// PID 1 is gone: record how it ended (from the shim's exit file).
    /// Both the shim's watcher and a stop end here; the first records the exit.
    pub(super) async fn finished(&self, id: u64) {
        let Ok(mut rec) = self.find(id).await else { return };
        if matches!(rec.spec.state, Some(ContainerState::Exited) | Some(ContainerState::Dead)) {
            return;
        }
        let exit: Option<Exit> =
            std::fs::read(shim::exit_file(&rec.dir)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        match exit {
            Some(e) => {
                rec.spec.state = Some(ContainerState::Exited);
                rec.spec.exit_code = e.code;
                rec.spec.exit_signal = e.signal;
                rec.spec.finished_at = Some(e.finished_at);
            }
            None => {
                rec.spec.state = Some(ContainerState::Dead);
                rec.spec.finished_at = Some(now());
            }
        }
        sync_root(&rec.root);
        let groups = super::cgroup::existing(&self.cgroup_fs, &self.cgroup_parent, id);
        crate::attach::blocking(move || super::cgroup::remove(&groups)).await;
        if let Some(host) = rec.spec.network.as_ref().and_then(|n| n.host_interface.clone()) {
            // The pair dies with the namespace; this only catches a slow teardown.
            let _ = super::net::delete(&host).await;
        }
        log_line(&rec, &format!("exited: code {:?}, signal {:?}", rec.spec.exit_code, rec.spec.exit_signal));
        tracing::info!(id, code = ?rec.spec.exit_code, signal = ?rec.spec.exit_signal, "container exited");
        if let Err(e) = self.update(&rec).await {
            tracing::warn!(id, error = %e.message, "could not record a container's exit");
        }
    }

    /// Stop: the polite signal (SIGRTMIN+3 for systemd), SIGKILL after the timeout.
    pub(super) async fn stop(&self, id: u64) -> Result<Rec> {
        let _changing = self.change_lock(id).await;
        let mut rec = self.find(id).await?;
        // Stopping too: a stop a crash cut short (its record says stopping) can be
        // asked for again, and ends with SIGKILL like any other.
        if !rec.is_live() {
            return Ok(rec);
        }
        let pid = rec.spec.pid.expect("running has a pid");
        rec.spec.state = Some(ContainerState::Stopping);
        self.update(&rec).await?;
        let polite = if rec.spec.systemd { libc::SIGRTMIN() + 3 } else { libc::SIGTERM };
        log_line(&rec, &format!("stopping: signal {polite}"));
        let timeout = rec.spec.stop_timeout.map(Duration::from_secs).unwrap_or(self.stop_timeout);
        let ticks = rec.start_ticks;
        // SAFETY: kill(2) on the pid recorded for this container, checked alive first.
        if alive(pid, ticks) {
            unsafe { libc::kill(pid, polite) };
        }
        crate::fault::point("container-stop");
        let deadline = tokio::time::Instant::now() + timeout;
        while alive(pid, ticks) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive(pid, ticks) {
            log_line(&rec, "still running after the stop timeout: SIGKILL");
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // The exit file appears once the shim has reaped PID 1.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !shim::exit_file(&rec.dir).exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.finished(id).await;
        self.find(id).await
    }

    /// After a restart: running containers are watched again; ones that ended while
    /// tankd was away get their exit from the shim's file.
    pub(super) async fn adopt(&self) {
        let ids: Vec<u64> = self.inner.lock().await.containers.keys().copied().collect();
        for id in ids {
            let Ok(rec) = self.find(id).await else { continue };
            if !rec.is_live() {
                continue;
            }
            let pid = rec.spec.pid.unwrap_or(0);
            if alive(pid, rec.start_ticks) {
                tracing::info!(id, pid, "re-adopted a running container");
                log_line(&rec, "re-adopted by a new tankd");
                let this = self.clone();
                tokio::spawn(async move { this.watch_adopted(id, pid).await });
            } else {
                self.finished(id).await;
            }
        }
    }

    /// Wait for a container tankd is not the (grand)parent of: a pidfd becomes
    /// readable when the process exits; then the shim writes the exit file.
    async fn watch_adopted(&self, id: u64, pid: i32) {
        // SAFETY: pidfd_open(2) returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        if fd >= 0 {
            // SAFETY: the fd was just returned to us.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // One blocked thread per re-adopted container, until it exits.
            let _ = tokio::task::spawn_blocking(move || {
                let mut p = libc::pollfd { fd: owned.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd; poll returns when the process exits.
                while unsafe { libc::poll(&mut p, 1, -1) } < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {}
            })
            .await;
        }
        let rec = self.find(id).await;
        if let Ok(rec) = rec {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !shim::exit_file(&rec.dir).exists() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.finished(id).await;
    }
}

/// What a start has made so far, so that a failure at any step undoes exactly that.
#[derive(Default)]
struct Starting {
    groups: Option<super::cgroup::Groups>,
    shim: Option<tokio::process::Child>,
    veth: Option<String>,
    /// The record says running (with PID 1's pid).
    recorded: bool,
}

impl Starting {
    /// The shim goes (PID 1, still waiting for its go, ends with it), then the
    /// container's cgroup and network pair; a record that already says running is
    /// brought to its end like any exit.
    async fn undo(self, containers: &Containers, id: u64) {
        if let Some(mut shim) = self.shim {
            let _ = shim.kill().await;
        }
        if let Some(groups) = self.groups {
            crate::attach::blocking(move || super::cgroup::remove(&groups)).await;
        }
        if let Some(host) = self.veth {
            let _ = super::net::delete(&host).await;
        }
        if self.recorded {
            containers.finished(id).await;
        }
    }
}

/// syncfs on the container's root after it stops, so its writes are on disk.
fn sync_root(root: &Path) {
    if let Ok(f) = std::fs::File::open(root) {
        // SAFETY: syncfs on an fd we own.
        unsafe { libc::syncfs(f.as_raw_fd()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_reads_this_process() {
        let me = std::process::id() as i32;
        let t = start_ticks(me).expect("our own stat");
        assert_eq!(start_ticks(me), Some(t), "stable");
        assert!(alive(me, Some(t)));
        assert!(!alive(me, Some(t + 1)), "another start time is another process");
        assert!(!alive(i32::MAX, Some(t)));
    }
}
