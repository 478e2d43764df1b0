//! `tankd __container-shim <dir>`: the small process between tankd and a container, as
//! conmon is for podman. tankd starts it; it makes the namespaces, forks the container's
//! PID 1, and stays its parent for life, so the exit status is never lost: it writes it
//! to `<dir>/exit` when PID 1 is reaped, whether or not tankd is still running.
//!
//! Talks to tankd on stdin/stdout while starting: prints `pid <host pid>`, then waits for
//! `go` (tankd has placed the process in its cgroup and wired its network) before
//! letting PID 1 continue into `init::run`.
//!
//! Runs before any tokio runtime exists: a fork here is a fork of a single thread.

use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};

use super::init::{self, Launch};

pub const ARG: &str = "__container-shim";

/// How PID 1 ended, written by the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Seconds since the epoch.
    pub finished_at: u64,
}

pub fn launch_file(dir: &Path) -> PathBuf {
    dir.join("launch.json")
}
pub fn exit_file(dir: &Path) -> PathBuf {
    dir.join("exit")
}
pub fn log_file(dir: &Path) -> PathBuf {
    dir.join("container.log")
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// The shim's `main`. Exit status: 0 once the container's exit is recorded.
pub fn main(dir: &Path) -> std::process::ExitCode {
    match run(dir) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tankd container shim: {e}");
            std::process::ExitCode::from(125)
        }
    }
}

fn run(dir: &Path) -> Result<(), String> {
    let launch: Launch = serde_json::from_slice(
        &std::fs::read(launch_file(dir)).map_err(|e| format!("{}: {e}", launch_file(dir).display()))?,
    )
    .map_err(|e| format!("{}: {e}", launch_file(dir).display()))?;
    // Its own session: a signal to tankd's process group does not reach containers.
    let _ = nix::unistd::setsid();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(dir))
        .map_err(|e| format!("{}: {e}", log_file(dir).display()))?;
    let (ready_read, ready_write) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (go_read, go_write) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;

    match fork_pid1(launch.userns.is_some())? {
        ForkResult::Child => {
            drop(go_write);
            drop(ready_read);
            child(&launch, ready_write, go_read, log)
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            drop(ready_write);
            // The child's namespaces exist once it says so (or it failed: EOF).
            let mut byte = [0u8; 1];
            if nix::unistd::read(&ready_read, &mut byte).unwrap_or(0) != 1 {
                let _ = waitpid(child, None);
                return Err("the container's namespaces could not be made (see the log)".into());
            }
            if let Some(u) = &launch.userns
                && let Err(e) = write_id_maps(child, u)
            {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
            parent(dir, child, go_write)
        }
    }
}

/// Fork the container's PID 1 into a new pid namespace. Only the pid namespace is made
/// here (the others belong to the child alone: in a mount namespace shared with the
/// shim, the child's pivot_root would move the shim's root too). With a user namespace
/// both come from one clone, the user namespace first, so it owns the pid namespace
/// and the container may mount its own /proc; the shim itself stays the host's root.
fn fork_pid1(userns: bool) -> Result<ForkResult, String> {
    if !userns {
        nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))?;
        // SAFETY: this process has one thread (no runtime was started), so the child
        // may allocate and run ordinary Rust before exec.
        return unsafe { fork() }.map_err(|e| format!("fork: {e}"));
    }
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::SIGCHLD;
    // SAFETY: clone with no new stack behaves as fork (the child runs on a copy of this
    // stack); the process has one thread, so no lock is held by another that the child
    // would inherit taken. The remaining arguments (tids, tls) are unused without the
    // flags that read them.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    match pid {
        -1 => Err(format!("clone(CLONE_NEWUSER|CLONE_NEWPID): {}", std::io::Error::last_os_error())),
        0 => Ok(ForkResult::Child),
        p => Ok(ForkResult::Parent { child: Pid::from_raw(p as i32) }),
    }
}

/// The maps of the child's user namespace, written from outside it (the shim has the
/// host's capabilities, so no `setgroups` deny is needed and many lines are allowed).
fn write_id_maps(child: Pid, u: &rpc_schema::containers::UserNs) -> Result<(), String> {
    for (file, map) in [("uid_map", &u.uid_map), ("gid_map", &u.gid_map)] {
        let path = format!("/proc/{child}/{file}");
        std::fs::write(&path, super::userns::map_text(map)).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

fn child(launch: &Launch, ready: OwnedFd, go: OwnedFd, log: std::fs::File) -> ! {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if launch.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = nix::sched::unshare(flags) {
        let _ = nix::unistd::dup2_stderr(&log);
        let _ = writeln!(std::io::stderr(), "tankd init: unshare: {e}");
        std::process::exit(125);
    }
    let _ = nix::unistd::write(&ready, b"r");
    drop(ready);
    // Wait for tankd's go (via the shim); EOF means the start was abandoned.
    let mut byte = [0u8; 1];
    let got = nix::unistd::read(&go, &mut byte).unwrap_or(0);
    if got != 1 {
        std::process::exit(126);
    }
    drop(go);
    // tankd put this process in the container's cgroup before the go: a cgroup
    // namespace made now has that group as its root, so the container sees (and, in
    // systemd mode, mounts) its own subtree, never the host's tree.
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP) {
        let _ = nix::unistd::dup2_stderr(&log);
        let _ = writeln!(std::io::stderr(), "tankd init: unshare(CLONE_NEWCGROUP): {e}");
        std::process::exit(125);
    }
    let null = std::fs::File::open("/dev/null").expect("/dev/null");
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&log);
    let _ = nix::unistd::dup2_stderr(&log);
    let err = init::run(launch);
    let _ = writeln!(std::io::stderr(), "tankd init: {err}");
    std::process::exit(127)
}

fn parent(dir: &Path, pid: Pid, go: OwnedFd) -> Result<(), String> {
    let mut out = std::io::stdout();
    writeln!(out, "pid {pid}").and_then(|_| out.flush()).map_err(|e| format!("telling tankd the pid: {e}"))?;
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "go" {
        nix::unistd::write(&go, b"g").map_err(|e| format!("releasing PID 1: {e}"))?;
    }
    drop(go);
    // tankd may go away from here on; nothing more is said to it.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let exit = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break Exit { code: Some(code), signal: None, finished_at: now() },
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                break Exit { code: None, signal: Some(sig as i32), finished_at: now() };
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for PID 1: {e}")),
        }
    };
    write_atomic(&exit_file(dir), &serde_json::to_vec(&exit).expect("serialises"))
        .map_err(|e| format!("{}: {e}", exit_file(dir).display()))
}
