//! `zfs receive` fed from an async byte stream, plus the resumable-receive helpers
//! (`receive_resume_token`, `receive -A`).

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::error::{Detail, ErrorKind};
use crate::name::{DatasetName, SnapshotName};
use crate::send::enlarge_pipe;
use crate::{Error, Prop, Zfs};

#[derive(Debug, Clone, Default)]
pub struct ReceiveArgs {
    pub dest: Option<DatasetName>,
    /// `-s`: keep partial state when the stream stops, so the sender can resume.
    pub resumable: bool,
    /// `-F`: roll back the destination and destroy what the stream does not have.
    pub force: bool,
    /// `-o origin=snap`: receive an incremental stream as a clone of `origin`.
    pub origin: Option<SnapshotName>,
    /// `-u`: do not mount what was received.
    pub unmounted: bool,
    /// `-o k=v` properties set on the received dataset.
    pub props: Vec<(String, String)>,
}

/// Properties a received stream never sets: they would place its data on the host
/// (`mountpoint`, `canmount`), share it (`sharenfs`, `sharesmb`) or let its setuid
/// programs and device nodes work (`setuid`, `devices`). The received dataset inherits
/// them from its parent under tankd's root instead (`zfs receive -x`).
pub const HOST_PROPS: [&str; 6] = ["mountpoint", "canmount", "sharenfs", "sharesmb", "setuid", "devices"];

impl ReceiveArgs {
    pub fn into(dest: DatasetName) -> Self {
        ReceiveArgs { dest: Some(dest), ..Default::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOutcome {
    /// Bytes of stream consumed.
    pub bytes: u64,
}

impl Zfs {
    /// Run `zfs receive` with `stream` as its standard input.
    ///
    /// If the stream itself fails part-way (a client disconnects), standard input is
    /// closed so ZFS sees the end, and with `resumable` the error is
    /// [`Error::Interrupted`] carrying the resume token.
    pub async fn receive<R: AsyncRead + Unpin>(&self, args: &ReceiveArgs, stream: R) -> Result<ReceiveOutcome, Error> {
        let dest =
            args.dest.as_ref().ok_or(Error::InvalidArgument { field: "dest", reason: "no destination".into() })?;
        let mut inv = self
            .zfs(dest)?
            .arg("receive")
            .arg_if(args.resumable, "-s")
            .arg_if(args.force, "-F")
            .arg_if(args.unmounted, "-u");
        for p in HOST_PROPS {
            inv = inv.arg("-x").arg(p);
        }
        if let Some(origin) = &args.origin {
            self.check_root(origin)?;
            inv = inv.arg("-o").arg(format!("origin={origin}"));
        }
        for (k, v) in &args.props {
            crate::write::check_one_prop(k, v)?;
            inv = inv.arg("-o").arg(format!("{k}={v}"));
        }
        let inv = inv.arg(dest.as_str());

        let started = std::time::Instant::now();
        let mut cmd = inv.command();
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| inv.spawn_error(e))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        {
            use std::os::fd::AsFd;
            enlarge_pipe(stdin.as_fd());
        }
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut buf).await;
            buf
        });

        // One buffer between the source and the pipe; 1 MiB keeps syscalls few.
        let mut reader = BufReader::with_capacity(1 << 20, stream);
        let copied = tokio::io::copy_buf(&mut reader, &mut stdin).await;
        let flushed = stdin.shutdown().await;
        drop(stdin);
        let status = child.wait().await.map_err(|e| inv.spawn_error(e))?;
        let stderr = stderr_task.await.unwrap_or_default();
        inv.record(status.success() && copied.is_ok(), started.elapsed());
        tracing::debug!(command = %inv.display(), %status, "zfs receive finished");

        match (copied, status.success()) {
            (Ok(bytes), true) => {
                flushed.map_err(|e| inv.spawn_error(e))?;
                Ok(ReceiveOutcome { bytes })
            }
            (copied, false) => {
                let err = inv.failure(status, &stderr);
                match (&copied, err.kind()) {
                    // ZFS failed by itself: its words are the answer.
                    (Ok(_), _) => Err(self.with_resume_token(err, dest, args.resumable).await),
                    // The source broke and ZFS then saw a short stream.
                    (Err(source), ErrorKind::InvalidStream | ErrorKind::Interrupted | ErrorKind::Failed) => {
                        let token = if args.resumable { self.resume_token(dest).await.ok().flatten() } else { None };
                        Err(Error::Interrupted {
                            target: dest.as_str().to_owned(),
                            command: inv.display(),
                            stderr: format!(
                                "the stream ended early ({source}); zfs: {}",
                                String::from_utf8_lossy(&stderr).trim()
                            ),
                            resume_token: token,
                        })
                    }
                    // ZFS refused the stream early (garbage, no space): the broken pipe is a consequence.
                    (Err(_), _) => Err(err),
                }
            }
            (Err(source), true) => Err(inv.spawn_error(source)),
        }
    }

    async fn with_resume_token(&self, err: Error, dest: &DatasetName, resumable: bool) -> Error {
        match err {
            Error::Interrupted { target, command, stderr, resume_token: None } if resumable => {
                let resume_token = self.resume_token(dest).await.ok().flatten();
                Error::Interrupted { target, command, stderr, resume_token }
            }
            other => other,
        }
    }

    /// The `receive_resume_token` of a partially received dataset, if any.
    pub async fn resume_token(&self, dest: &DatasetName) -> Result<Option<String>, Error> {
        match self.get(dest, &[Prop::ReceiveResumeToken]).await {
            Ok(ds) => Ok(ds.receive_resume_token),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `zfs receive -A dest`: discard partial receive state. Nothing to abort is success.
    pub async fn abort_receive(&self, dest: &DatasetName) -> Result<(), Error> {
        let inv = self.zfs(dest)?.args(["receive", "-A"]).arg(dest.as_str());
        match inv.run().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.says(Detail::NoResumableState) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
