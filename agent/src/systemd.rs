//! The two pieces of the systemd protocol tankd speaks, through the `sd-notify` crate:
//! readiness (`sd_notify`: a datagram to `$NOTIFY_SOCKET`) and socket activation
//! (`sd_listen_fds_with_names`: descriptors from fd 3 on, named by `$LISTEN_FDNAMES`).

use std::os::fd::{FromRawFd, OwnedFd};

pub use sd_notify::NotifyState;

/// Tell systemd something (ready, stopping, a status). Without `$NOTIFY_SOCKET` (not
/// under systemd, or not Type=notify) it does nothing.
pub fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, ?state, "could not notify systemd");
    }
}

/// Descriptors passed by socket activation, with their names (`FileDescriptorName=`,
/// "unknown" when unnamed), close-on-exec. Taken once: the variables are removed so
/// children (the container shims) do not think the descriptors are theirs.
///
/// # Safety
/// Changes the environment: call it while the process has one thread.
pub unsafe fn listen_fds() -> Vec<(String, OwnedFd)> {
    // SAFETY: the caller runs this before any other thread exists.
    match unsafe { sd_notify::listen_fds_with_names_and_unset_env() } {
        Ok(fds) => fds
            .map(|(fd, name)| {
                let name = if name.is_empty() { "unknown".to_owned() } else { name };
                // SAFETY: systemd passed these fds to this process (LISTEN_PID matched)
                // and nothing else has taken ownership of them.
                (name, unsafe { OwnedFd::from_raw_fd(fd) })
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring socket activation variables that do not parse");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test is the only one touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify(&[NotifyState::Ready]);
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
