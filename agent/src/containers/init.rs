//! Inside the container, before the command runs: the syscall seam of a launch. This
//! runs in the shim's forked child, which is PID 1 of the new pid namespace and alone in
//! the new mount, uts and ipc (and, on request, net and cgroup) namespaces. It is a
//! freshly exec'd single-threaded process, so allocating here is safe.
//!
//! Order matters: mounts private first (nothing leaks back to the host), then the new
//! root's /proc, /dev, /sys, then pivot_root into it and detach the old root, then the
//! hostname, then the hardening (session, capabilities, no_new_privs, fds, ids), and
//! exec last.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use serde::{Deserialize, Serialize};

/// What the init needs, resolved by tankd (paths checked, names validated).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub root: PathBuf,
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub hostname: String,
    pub systemd: bool,
    pub network: bool,
    pub uid: u32,
    pub gid: u32,
    /// Capabilities kept in the bounding set (names as in capabilities(7), lower case).
    pub capabilities: Vec<String>,
    /// A user namespace, its maps written by the shim before PID 1 is let go.
    #[serde(default)]
    pub userns: Option<rpc_schema::containers::UserNs>,
}

/// The default capability set: Docker's and crun's defaults.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "cap_chown",
    "cap_dac_override",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_net_bind_service",
    "cap_net_raw",
    "cap_sys_chroot",
    "cap_mknod",
    "cap_audit_write",
    "cap_setfcap",
];

type Step = Result<(), String>;

fn ctx<T>(what: impl std::fmt::Display, r: nix::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn mount_at(root: &Path, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Step {
    let path = root.join(target.trim_start_matches('/'));
    std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    ctx(format!("mounting {fstype} on {target}"), mount(Some(fstype), &path, Some(fstype), flags, data))
}

/// Parts of /proc that reach the host kernel, read-only in the container (runc's
/// defaults): a root container could otherwise tune host-wide sysctls or trigger SysRq.
const PROC_READ_ONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Parts of /proc and /sys that reveal or reach the host's kernel memory, keys,
/// timers and firmware, hidden (runc's defaults): an empty read-only tmpfs over a
/// directory, /dev/null over a file.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Apply [`PROC_READ_ONLY`] and [`MASKED`] under `root` (paths the kernel lacks are skipped).
fn confine_proc_and_sys(root: &Path) -> Step {
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for p in PROC_READ_ONLY {
        let path = root.join(p.trim_start_matches('/'));
        if !path.exists() {
            continue;
        }
        ctx(
            format!("binding {p}"),
            mount(Some(&path), &path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>),
        )?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hidden;
        ctx(format!("making {p} read-only"), mount(None::<&str>, &path, None::<&str>, ro, None::<&str>))?;
    }
    for p in MASKED {
        let path = root.join(p.trim_start_matches('/'));
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => ctx(
                format!("masking {p}"),
                mount(Some("tmpfs"), &path, Some("tmpfs"), hidden | MsFlags::MS_RDONLY, Some("size=0")),
            )?,
            Ok(_) => ctx(
                format!("masking {p}"),
                mount(Some("/dev/null"), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>),
            )?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// /dev as a small tmpfs with the basic nodes and links.
fn make_dev(root: &Path, userns: bool) -> Step {
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // noexec: nothing runs from /dev; device nodes still work (no nodev here).
    let dev_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME;
    mount_at(root, "/dev", "tmpfs", dev_flags, Some("mode=755,size=65536k"))?;
    let dev = root.join("dev");
    let nodes = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];
    for (name, major, minor) in nodes {
        let path = dev.join(name);
        if userns {
            // mknod is refused in a user namespace whatever the capabilities: the host's
            // nodes are bound instead (as runc does), on empty files.
            std::fs::File::create(&path).map_err(|e| format!("creating /dev/{name}: {e}"))?;
            let host = format!("/dev/{name}");
            ctx(
                format!("binding {host}"),
                mount(Some(host.as_str()), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>),
            )?;
            continue;
        }
        ctx(
            format!("mknod /dev/{name}"),
            mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(major, minor)),
        )?;
        // mknod obeys the umask; the nodes must be 0666.
        ctx(
            format!("chmod /dev/{name}"),
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                &path,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            ),
        )?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).map_err(|e| format!("/dev/{link}: {e}"))?;
    }
    mount_at(root, "/dev/pts", "devpts", nosuid_noexec, Some("newinstance,ptmxmode=0666,mode=0620,gid=5"))?;
    mount_at(root, "/dev/shm", "tmpfs", nosuid_noexec | MsFlags::MS_NODEV, Some("mode=1777,size=65536k"))?;
    mount_at(root, "/dev/mqueue", "mqueue", nosuid_noexec | MsFlags::MS_NODEV, None)
}

fn make_sys(root: &Path, network: bool) -> Step {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // sysfs shows the network devices of the mounting namespace; without a network
    // namespace of its own the container gets a read-only bind of the host's /sys.
    if network {
        return mount_at(root, "/sys", "sysfs", flags, None);
    }
    let target = root.join("sys");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating /sys: {e}"))?;
    ctx("binding /sys", mount(Some("/sys"), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>))?;
    ctx(
        "making /sys read-only",
        mount(None::<&str>, &target, None::<&str>, flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT, None::<&str>),
    )
}

fn systemd_mounts(root: &Path) -> Step {
    let tmp = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_at(root, "/run", "tmpfs", tmp, Some("mode=755,size=65536k"))?;
    mount_at(root, "/tmp", "tmpfs", tmp, Some("mode=1777"))?;
    mount_at(root, "/var/lib/journal", "tmpfs", tmp, Some("mode=755"))?;
    // The container's own cgroup subtree (a cgroup namespace was made for it).
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        mount_at(root, "/sys/fs/cgroup", "cgroup2", tmp | MsFlags::MS_NOEXEC, None)
    } else {
        mount_at(root, "/sys/fs/cgroup", "tmpfs", tmp | MsFlags::MS_NOEXEC, Some("mode=755"))?;
        mount_at(root, "/sys/fs/cgroup/systemd", "cgroup", tmp | MsFlags::MS_NOEXEC, Some("none,name=systemd"))
    }
}

/// Make the mount the root of this mount namespace and drop the host's.
fn pivot(root: &Path) -> Step {
    ctx("chdir to the new root", nix::unistd::chdir(root))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one, then goes.
    ctx("pivot_root", nix::unistd::pivot_root(".", "."))?;
    ctx("detaching the old root", umount2(".", MntFlags::MNT_DETACH))?;
    ctx("chdir /", nix::unistd::chdir("/"))
}

fn drop_capabilities(keep: &[String]) -> Step {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = keep.iter().filter_map(|n| n.to_uppercase().parse::<Capability>().ok()).collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &keep).map_err(|e| format!("setting the {set:?} capabilities: {e}"))?;
    }
    Ok(())
}

/// A new network namespace has `lo` down; "none" still means localhost works.
fn loopback_up() -> Step {
    // SAFETY: a plain datagram socket and the SIOC[GS]IFFLAGS ioctls on a zeroed ifreq
    // naming "lo"; the fd is closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket for lo: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(format!("bringing lo up: {err}"));
        }
    }
    Ok(())
}

/// PATH lookup inside the new root for a bare command name.
fn resolve(command: &str, env: &[String]) -> String {
    if command.contains('/') {
        return command.to_owned();
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|d| format!("{d}/{command}"))
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| command.to_owned())
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// Set the container up and exec its command; returns only on failure.
pub fn run(l: &Launch) -> String {
    match setup(l) {
        Ok(()) => unreachable!("exec returned"),
        Err(e) => e,
    }
}

/// In a user namespace: become its root (the shim has written the maps by now). Until
/// this, the process is the host's root seen from inside as an unmapped id, which can
/// make nothing on the filesystems the namespace owns.
fn become_namespace_root() -> Step {
    let zero_g = nix::unistd::Gid::from_raw(0);
    let zero_u = nix::unistd::Uid::from_raw(0);
    ctx("setresgid(0) in the user namespace", nix::unistd::setresgid(zero_g, zero_g, zero_g))?;
    ctx("setresuid(0) in the user namespace", nix::unistd::setresuid(zero_u, zero_u, zero_u))?;
    ctx("setgroups in the user namespace", nix::unistd::setgroups(&[zero_g]))
}

fn setup(l: &Launch) -> Step {
    ctx(
        "making the mounts private",
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>),
    )?;
    ctx(
        "binding the root onto itself",
        mount(Some(&l.root), &l.root, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>),
    )?;
    // From here the root is reached as ".", not by its path: in a user namespace the
    // directories above it (tankd's data dir) need not be open to the mapped ids.
    ctx(format!("chdir {}", l.root.display()), nix::unistd::chdir(&l.root))?;
    if l.userns.is_some() {
        become_namespace_root()?;
    }
    let root = Path::new(".");
    mount_at(root, "/proc", "proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None)?;
    make_dev(root, l.userns.is_some())?;
    make_sys(root, l.network)?;
    confine_proc_and_sys(root)?;
    if l.systemd {
        systemd_mounts(root)?;
    }
    pivot(root)?;
    ctx("sethostname", nix::unistd::sethostname(&l.hostname))?;
    ctx("setsid", nix::unistd::setsid())?;
    if l.network {
        loopback_up()?;
    }
    drop_capabilities(&l.capabilities)?;
    ctx("no_new_privs", nix::sys::prctl::set_no_new_privs())?;
    if l.gid != 0 || l.uid != 0 {
        ctx("setgroups", nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(l.gid)]))?;
        ctx("setgid", nix::unistd::setgid(nix::unistd::Gid::from_raw(l.gid)))?;
        ctx("setuid", nix::unistd::setuid(nix::unistd::Uid::from_raw(l.uid)))?;
    }
    ctx(format!("chdir {}", l.workdir), nix::unistd::chdir(Path::new(&l.workdir)))?;
    // Last before exec: from here on the container's calls are filtered.
    super::seccomp::install()?;
    // Every inherited descriptor above stdio goes (the exec closes nothing by itself).
    // SAFETY: close_range on fds this process owns; nothing uses them after exec.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let program = cstring(&resolve(&l.command, &l.env))?;
    let mut argv = vec![cstring(&l.command)?];
    for a in &l.args {
        argv.push(cstring(a)?);
    }
    let envp = l.env.iter().map(|e| cstring(e)).collect::<Result<Vec<_>, _>>()?;
    let e = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
    Err(format!("exec {}: {e}", Path::new(std::ffi::OsStr::from_bytes(program.as_bytes())).display()))
}
