//! `zfs send` as an async byte stream.
//!
//! Arguments are validated into [`SendArgs`], the only thing [`Zfs::send`] accepts. The
//! stream owns the child: dropping it kills `zfs send` (a disconnected HTTP client ends
//! the send at once); [`SendStream::finish`] reports the exit status with stderr.

use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::{Child, ChildStdout};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::command::Invocation;
use crate::name::{BookmarkName, SnapshotName};
use crate::{Error, Zfs};

/// The base of an incremental send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFrom {
    /// `-i snap`: only the difference between two snapshots.
    Snapshot(SnapshotName),
    /// `-I snap`: the difference, with every snapshot in between.
    Intermediates(SnapshotName),
    /// `-i ds#mark`: from a bookmark (the base snapshot may be gone).
    Bookmark(BookmarkName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendSource {
    Snapshot {
        snapshot: SnapshotName,
        from: Option<SendFrom>,
    },
    /// `-t token`: continue an interrupted send where the receiver stopped.
    ResumeToken(String),
}

/// Validated arguments of one `zfs send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendArgs {
    source: SendSource,
    /// `-R`: the dataset with its descendants, snapshots and properties.
    pub replicate: bool,
    /// `-w`: raw blocks, as stored (encrypted datasets stay encrypted).
    pub raw: bool,
    /// `-c`: blocks compressed as on disk.
    pub compressed: bool,
    /// `-L`: blocks larger than 128 KiB as they are.
    pub large_blocks: bool,
}

impl SendArgs {
    pub fn full(snapshot: SnapshotName) -> Self {
        Self::with_source(SendSource::Snapshot { snapshot, from: None })
    }

    fn with_source(source: SendSource) -> Self {
        SendArgs { source, replicate: false, raw: false, compressed: false, large_blocks: false }
    }

    pub fn incremental(snapshot: SnapshotName, from: SendFrom) -> Result<Self, Error> {
        let base_dataset = match &from {
            SendFrom::Snapshot(s) | SendFrom::Intermediates(s) => s.dataset(),
            SendFrom::Bookmark(b) => b.dataset(),
        };
        if base_dataset != snapshot.dataset() {
            return Err(Error::InvalidArgument {
                field: "from",
                reason: format!("the base must belong to {}, the dataset of {snapshot}", snapshot.dataset()),
            });
        }
        if matches!(&from, SendFrom::Snapshot(s) | SendFrom::Intermediates(s) if *s == snapshot) {
            return Err(Error::InvalidArgument { field: "from", reason: "the base is the snapshot itself".into() });
        }
        Ok(Self::with_source(SendSource::Snapshot { snapshot, from: Some(from) }))
    }

    /// Resume from a token read off the receiving side's `receive_resume_token`. The
    /// token carries the original flags, so none may be added.
    pub fn resume(token: &str) -> Result<Self, Error> {
        let ok = !token.is_empty()
            && token.len() <= 64 * 1024
            && !token.starts_with('-')
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(Error::InvalidArgument { field: "resume_token", reason: "not a ZFS resume token".into() });
        }
        Ok(Self::with_source(SendSource::ResumeToken(token.to_owned())))
    }

    pub fn source(&self) -> &SendSource {
        &self.source
    }

    /// Everything after `zfs send`.
    fn flags(&self) -> Result<Vec<String>, Error> {
        let mut args = Vec::new();
        match &self.source {
            SendSource::ResumeToken(token) => {
                if self.replicate || self.raw || self.compressed || self.large_blocks {
                    return Err(Error::InvalidArgument {
                        field: "resume_token",
                        reason: "a resumed send takes its flags from the token; pass none".into(),
                    });
                }
                args.extend(["-t".to_owned(), token.clone()]);
            }
            SendSource::Snapshot { snapshot, from } => {
                for (on, flag) in
                    [(self.replicate, "-R"), (self.raw, "-w"), (self.compressed, "-c"), (self.large_blocks, "-L")]
                {
                    if on {
                        args.push(flag.to_owned());
                    }
                }
                match from {
                    Some(SendFrom::Snapshot(s)) => args.extend(["-i".to_owned(), s.as_str().to_owned()]),
                    Some(SendFrom::Intermediates(s)) => args.extend(["-I".to_owned(), s.as_str().to_owned()]),
                    Some(SendFrom::Bookmark(b)) => args.extend(["-i".to_owned(), b.as_str().to_owned()]),
                    None => {}
                }
                args.push(snapshot.as_str().to_owned());
            }
        }
        Ok(args)
    }
}

/// Raise a pipe's capacity so `zfs send`/`receive` are not throttled to 64 KiB at a
/// time. Root may go beyond `/proc/sys/fs/pipe-max-size`; failure is harmless.
pub(crate) fn enlarge_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    for size in [8 << 20, 4 << 20, 1 << 20] {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size)).is_ok() {
            return;
        }
    }
}

/// The bytes of a running `zfs send`.
pub struct SendStream {
    inv: Invocation,
    child: Child,
    stdout: ChildStdout,
    stderr: JoinHandle<Vec<u8>>,
    /// Bytes read off stdout before the caller started reading (while waiting for the
    /// estimate), handed out first.
    prefix: Vec<u8>,
    prefix_at: usize,
    started: std::time::Instant,
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream").field("command", &self.inv.display()).finish()
    }
}

impl SendStream {
    /// The command line, for logs.
    pub fn command(&self) -> String {
        self.inv.display()
    }

    /// Wait for `zfs send` to exit after the stream was read to its end.
    pub async fn finish(mut self) -> Result<(), Error> {
        // Anything left unread means the caller stopped early; drain so the child can exit.
        let mut sink = [0u8; 64 * 1024];
        while self.stdout.read(&mut sink).await.map_err(|e| self.inv.spawn_error(e))? > 0 {}
        let status = self.child.wait().await.map_err(|e| self.inv.spawn_error(e))?;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        self.inv.record(status.success(), self.started.elapsed());
        if status.success() { Ok(()) } else { Err(self.inv.failure(status, &stderr)) }
    }

    /// End the send now (the consumer went away). Waits for the child so no zombie is left.
    pub async fn abort(mut self) {
        let _ = self.child.kill().await;
        self.inv.record(false, self.started.elapsed());
    }
}

impl AsyncRead for SendStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.prefix_at < self.prefix.len() {
            let n = (self.prefix.len() - self.prefix_at).min(buf.remaining());
            let at = self.prefix_at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.prefix_at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl Zfs {
    /// `zfs send [-n -P] <flags>`; `dry_run` asks for the size estimate only.
    /// `dry_run` is `-n -P`; `parsable` alone is `-P` (the estimate on stderr first).
    fn send_invocation(
        &self,
        args: &SendArgs,
        target: &str,
        dry_run: bool,
        parsable: bool,
    ) -> Result<Invocation, Error> {
        let inv = match &args.source {
            SendSource::Snapshot { snapshot, from } => {
                if let Some(SendFrom::Snapshot(s) | SendFrom::Intermediates(s)) = from {
                    self.check_root(s)?;
                }
                self.zfs(snapshot)?
            }
            SendSource::ResumeToken(_) => self.zfs_unscoped(target),
        };
        Ok(inv.arg("send").arg_if(dry_run, "-n").arg_if(dry_run || parsable, "-P").args(args.flags()?))
    }

    /// The snapshot a resume token continues, read with `zfs send -nv -t` and checked
    /// against the roots: a token is opaque, so this is where it is validated.
    pub async fn resume_token_target(&self, token: &str) -> Result<SnapshotName, Error> {
        let args = SendArgs::resume(token)?;
        let SendSource::ResumeToken(token) = &args.source else { unreachable!() };
        let inv = self.zfs_unscoped("resume token").args(["send", "-n", "-v", "-t", token]);
        let out = inv.command().output().await.map_err(|e| inv.spawn_error(e))?;
        if !out.status.success() {
            return Err(inv.failure(out.status, &out.stderr));
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let toname = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("toname = "))
            .ok_or_else(|| Error::Parse { command: inv.display(), reason: "no toname in the token".into() })?;
        let snap: SnapshotName = toname.trim().parse()?;
        self.check_root(&snap)?;
        Ok(snap)
    }

    async fn target_of(&self, args: &SendArgs) -> Result<String, Error> {
        Ok(match &args.source {
            SendSource::Snapshot { snapshot, .. } => snapshot.as_str().to_owned(),
            SendSource::ResumeToken(t) => self.resume_token_target(t).await?.as_str().to_owned(),
        })
    }

    /// Estimated stream size in bytes (`zfs send -n -P`).
    pub async fn send_estimate(&self, args: &SendArgs) -> Result<u64, Error> {
        let target = self.target_of(args).await?;
        let inv = self.send_invocation(args, &target, true, false)?;
        let out = inv.command().output().await.map_err(|e| inv.spawn_error(e))?;
        if !out.status.success() {
            return Err(inv.failure(out.status, &out.stderr));
        }
        // 2.x prints the dry run on stdout, older releases on stderr.
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        text.lines()
            .find_map(|l| l.strip_prefix("size\t"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| Error::Parse { command: inv.display(), reason: "no size line in the dry run".into() })
    }

    /// Start `zfs send`. Read the returned stream to its end, then call `finish`.
    pub async fn send(&self, args: &SendArgs) -> Result<SendStream, Error> {
        Ok(self.spawn_send(args, false).await?.0)
    }

    /// `zfs send -P`: the stream, and the size estimate that `-P` prints on stderr
    /// before the first byte (`None` if it printed none). One process instead of a dry
    /// run followed by the send.
    ///
    /// The estimate is taken when its total (`size`) line appears, when stderr ends, or
    /// when the first bytes of stream arrive, whichever is first: a send that prints no
    /// total must not wait for a reader that is itself waiting for the estimate.
    pub async fn send_estimated(&self, args: &SendArgs) -> Result<(SendStream, Option<u64>), Error> {
        let (mut stream, estimate) = self.spawn_send(args, true).await?;
        let mut estimate = estimate.expect("parsable send reports an estimate");
        let mut first = vec![0u8; 64 * 1024];
        tokio::select! {
            _ = estimate.wait_for(|e| e.done) => {}
            read = stream.stdout.read(&mut first) => {
                let n = read.map_err(|e| stream.inv.spawn_error(e))?;
                first.truncate(n);
                stream.prefix = first;
            }
        }
        let sum = estimate.borrow().bytes;
        Ok((stream, sum))
    }

    async fn spawn_send(
        &self,
        args: &SendArgs,
        parsable: bool,
    ) -> Result<(SendStream, Option<watch::Receiver<Estimate>>), Error> {
        let target = self.target_of(args).await?;
        let inv = self.send_invocation(args, &target, false, parsable)?;
        let mut cmd = inv.command();
        cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| inv.spawn_error(e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        {
            use std::os::fd::AsFd;
            enlarge_pipe(stdout.as_fd());
        }
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = watch::channel(Estimate::default());
        let stderr = tokio::spawn(collect_stderr(stderr_pipe, parsable.then_some(tx)));
        tracing::debug!(command = %inv.display(), "zfs send started");
        let stream = SendStream {
            inv,
            child,
            stdout,
            stderr,
            prefix: Vec::new(),
            prefix_at: 0,
            started: std::time::Instant::now(),
        };
        Ok((stream, parsable.then_some(rx)))
    }
}

/// What `-P` has said so far about the stream's size.
#[derive(Debug, Clone, Copy, Default)]
struct Estimate {
    /// The total, or the sum of the per-snapshot lines seen so far.
    bytes: Option<u64>,
    /// The total line came, or stderr ended.
    done: bool,
}

/// The size on a `-P` line: the last field of `full\t<snap>\t<n>`,
/// `incremental\t<from>\t<to>\t<n>` or `size\t<n>`.
fn estimate_line(line: &str) -> Option<(bool, u64)> {
    let mut fields = line.trim_end().split('\t');
    let kind = fields.next()?;
    let total = match kind {
        "size" => true,
        "full" | "incremental" => false,
        _ => return None,
    };
    Some((total, fields.next_back()?.parse().ok()?))
}

/// Most stderr kept for an error message; `-P` progress can run for hours.
const STDERR_KEEP: usize = 64 * 1024;

/// Collect `zfs send`'s stderr, keeping what an error message needs. With `-P`,
/// report the size lines to `estimate` as they appear and keep them out of the text.
async fn collect_stderr(pipe: tokio::process::ChildStderr, estimate: Option<watch::Sender<Estimate>>) -> Vec<u8> {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut kept = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(tx) = &estimate
            && let Some((total, n)) = estimate_line(&String::from_utf8_lossy(&line))
        {
            tx.send_modify(|e| {
                e.bytes = Some(if total { n } else { e.bytes.unwrap_or(0) + n });
                e.done |= total;
            });
            continue;
        }
        if kept.len() < STDERR_KEEP {
            kept.extend_from_slice(&line);
        }
    }
    if let Some(tx) = &estimate {
        tx.send_modify(|e| e.done = true);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(s: &str) -> SnapshotName {
        s.parse().unwrap()
    }

    #[test]
    fn reads_estimate_lines() {
        assert_eq!(estimate_line("full\tt/a@1\t4242\n"), Some((false, 4242)));
        assert_eq!(estimate_line("incremental\tt/a@1\tt/a@2\t17\n"), Some((false, 17)));
        assert_eq!(estimate_line("size\t9000\n"), Some((true, 9000)));
        assert_eq!(estimate_line("12:00:01\t1048576\tt/a@1\n"), None);
        assert_eq!(estimate_line("full\tt/a@1\tmany\n"), None);
    }

    #[test]
    fn builds_flags() {
        let mut a = SendArgs::incremental(snap("t/a@2"), SendFrom::Intermediates(snap("t/a@1"))).unwrap();
        a.raw = true;
        a.replicate = true;
        assert_eq!(a.flags().unwrap(), ["-R", "-w", "-I", "t/a@1", "t/a@2"]);
        let b = SendArgs::incremental(snap("t/a@2"), SendFrom::Bookmark("t/a#m".parse().unwrap())).unwrap();
        assert_eq!(b.flags().unwrap(), ["-i", "t/a#m", "t/a@2"]);
        assert_eq!(SendArgs::full(snap("t/a@1")).flags().unwrap(), ["t/a@1"]);
    }

    #[test]
    fn refuses_bad_combinations() {
        assert!(SendArgs::incremental(snap("t/a@2"), SendFrom::Snapshot(snap("t/b@1"))).is_err());
        assert!(SendArgs::incremental(snap("t/a@2"), SendFrom::Snapshot(snap("t/a@2"))).is_err());
        assert!(SendArgs::resume("-R").is_err());
        assert!(SendArgs::resume("1-abc def").is_err());
        let mut r = SendArgs::resume("1-abc-0-789c").unwrap();
        assert_eq!(r.flags().unwrap(), ["-t", "1-abc-0-789c"]);
        r.raw = true;
        assert!(r.flags().is_err());
    }
}
