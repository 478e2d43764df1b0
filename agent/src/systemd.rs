//! The two pieces of the systemd protocol tankd speaks, without libsystemd:
//! readiness (`sd_notify`: a datagram to `$NOTIFY_SOCKET`) and socket activation
//! (`sd_listen_fds`: descriptors from fd 3 on, named by `$LISTEN_FDNAMES`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

/// Tell systemd something (`READY=1`, `STOPPING=1`, `STATUS=...`). Without
/// `$NOTIFY_SOCKET` (not under systemd, or not Type=notify) it does nothing.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket: '@' stands for the leading NUL.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}

/// Descriptors passed by socket activation, with their names (`FileDescriptorName=`,
/// "unknown" when unnamed). Taken once: the variables are removed so children (the
/// container shims) do not think the descriptors are theirs.
pub fn listen_fds() -> Vec<(String, OwnedFd)> {
    const FIRST: i32 = 3;
    let pid_matches = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // SAFETY: tankd runs this at start, before any thread that reads the environment.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !pid_matches || count <= 0 {
        return Vec::new();
    }
    let mut names = names.split(':');
    (0..count)
        .map(|i| {
            let fd = FIRST + i;
            // Ours from here on; not inherited by what tankd starts.
            let _ = nix::fcntl::fcntl(
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            let name = names.next().filter(|n| !n.is_empty()).unwrap_or("unknown").to_owned();
            // SAFETY: systemd passed fds FIRST..FIRST+count to this process and nothing
            // else has taken ownership of them.
            (name, unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test is the only one touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
