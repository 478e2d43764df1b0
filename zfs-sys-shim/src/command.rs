//! The one helper that runs `zfs`/`zpool`: an argument vector (never a shell), `LC_ALL=C`
//! so stderr can be classified, and argv/status/stderr packed into the error.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::error::{Error, ErrorKind, classify};

/// One command line, with the name of what it acts on for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    program: OsString,
    args: Vec<String>,
    /// The dataset, snapshot or pool the command is about.
    pub(crate) target: String,
    /// Retry when ZFS reports a transient busy (destroy/rename/export right after a
    /// unmount or a send finished often race with the kernel releasing its references).
    retry_busy: bool,
}

impl Invocation {
    pub(crate) fn new(program: &Path, target: impl Into<String>) -> Self {
        Invocation {
            program: program.as_os_str().to_owned(),
            args: Vec::new(),
            target: target.into(),
            retry_busy: false,
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn arg_if(self, cond: bool, arg: &str) -> Self {
        if cond { self.arg(arg) } else { self }
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn retry_busy(mut self) -> Self {
        self.retry_busy = true;
        self
    }

    /// `zfs destroy -r tank/x`, for messages.
    pub(crate) fn display(&self) -> String {
        let prog = Path::new(&self.program).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        std::iter::once(prog).chain(self.args.iter().cloned()).collect::<Vec<_>>().join(" ")
    }

    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    pub(crate) fn spawn_error(&self, source: std::io::Error) -> Error {
        Error::Spawn { target: self.target.clone(), command: self.display(), source }
    }

    pub(crate) fn failure(&self, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
        classify(&self.target, &self.display(), status.to_string(), &String::from_utf8_lossy(stderr))
    }

    /// Count this run in [`crate::stats`] under its program and subcommand.
    pub(crate) fn record(&self, ok: bool, elapsed: Duration) {
        let prog = Path::new(&self.program).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let verb = self.args.first().map(String::as_str).unwrap_or("");
        crate::stats::record(&prog, verb, ok, elapsed);
    }

    /// Run to completion and return stdout.
    pub(crate) async fn run(&self) -> Result<String, Error> {
        const BUSY_RETRIES: u32 = 5;
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            let out = self.command().output().await.map_err(|e| self.spawn_error(e))?;
            self.record(out.status.success(), started.elapsed());
            tracing::debug!(
                command = %self.display(),
                status = %out.status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "zfs command"
            );
            if out.status.success() {
                return String::from_utf8(out.stdout)
                    .map_err(|_| Error::Parse { command: self.display(), reason: "output is not UTF-8".into() });
            }
            let err = self.failure(out.status, &out.stderr);
            attempt += 1;
            if self.retry_busy && err.kind() == ErrorKind::Busy && attempt <= BUSY_RETRIES {
                tracing::debug!(command = %self.display(), attempt, "busy, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failure_names_command_target_and_stderr() {
        // `sh -c` is used here only to produce a known exit status and stderr in a unit
        // test; production code never runs a shell.
        let inv = Invocation::new(Path::new("/bin/sh"), "tank/x")
            .arg("-c")
            .arg("echo \"cannot open 'tank/x': dataset does not exist\" >&2; exit 1");
        let err = inv.run().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let msg = err.to_string();
        assert!(msg.contains("tank/x") && msg.contains("sh -c"), "{msg}");
    }

    #[tokio::test]
    async fn missing_binary_is_a_spawn_error() {
        let err = Invocation::new(Path::new("/nonexistent/zfs"), "tank").arg("list").run().await;
        assert!(matches!(err, Err(Error::Spawn { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn busy_is_retried_then_reported() {
        let inv = Invocation::new(Path::new("/bin/sh"), "tank/x")
            .args(["-c", "echo 'cannot destroy: dataset is busy' >&2; exit 1"])
            .retry_busy();
        let started = std::time::Instant::now();
        let err = inv.run().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
        // 100+200+400+800+1600 ms of back-off: proof that it retried, bounded.
        assert!(started.elapsed() >= Duration::from_millis(3000), "{:?}", started.elapsed());
    }
}
