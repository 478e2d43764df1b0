//! A kernel that makes nothing, for the registry's unit tests: it records every step in
//! order (failed ones too), hands out fake devices (`/dev/loop0`, `/dev/loop1`, … in the
//! order of successful attaches), and fails a step when a rule says so. Told where the
//! state file is, it also keeps what the file said when each step was taken, so a test
//! can see a record written `creating` before its step.
//!
//! Pure: no file is opened, no directory made. `prepare` takes a loop path as given
//! (the real one resolves and holds it under an image root), so it never answers a
//! `Held`; a bind's source is held by the registry itself, and the double only reads
//! its path.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use rpc_schema::imageapi::{AttachKind, RbdPath};

use super::Kernel;
use crate::attach::record::AttachRec;
use crate::attach::{Env, KeepOpen};
use crate::beneath::Held;
use crate::error::{Error, Result};
use crate::imageapi::state::{State, StateFile};
use crate::mounts::{self, Layers, options::Parsed};

/// A step, as failure rules name it. `Mount` is any of the three kinds of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Prepare,
    Attach,
    Detach,
    Mount,
    Unmount,
}

/// One step taken, with what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Prepare { attach: u64 },
    Attach { attach: u64 },
    Detach { attach: u64, device: Option<String> },
    MountDevice { device: String, target: PathBuf, fs_type: String, read_only: bool },
    MountOverlay { lower: Vec<PathBuf>, upper: Option<PathBuf>, target: PathBuf },
    MountBind { source: PathBuf, target: PathBuf, read_only: bool },
    Unmount { target: PathBuf },
}

impl Call {
    fn step(&self) -> Step {
        match self {
            Call::Prepare { .. } => Step::Prepare,
            Call::Attach { .. } => Step::Attach,
            Call::Detach { .. } => Step::Detach,
            Call::MountDevice { .. } | Call::MountOverlay { .. } | Call::MountBind { .. } => Step::Mount,
            Call::Unmount { .. } => Step::Unmount,
        }
    }

    /// What a rule's path matches: a mount's or unmount's target, a detach's device.
    fn subject(&self) -> Option<&Path> {
        match self {
            Call::Prepare { .. } | Call::Attach { .. } => None,
            Call::Detach { device, .. } => device.as_deref().map(Path::new),
            Call::MountDevice { target, .. }
            | Call::MountOverlay { target, .. }
            | Call::MountBind { target, .. }
            | Call::Unmount { target } => Some(target),
        }
    }
}

enum When {
    /// The n-th call of the step (from 1), once.
    Nth(usize),
    /// Every call of the step on this path, until `heal`.
    At(PathBuf),
}

struct Rule {
    step: Step,
    when: When,
    error: Error,
}

#[derive(Default)]
struct Log {
    calls: Vec<Call>,
    /// The state file as each call found it (when watching one).
    files: Vec<Option<State>>,
    rules: Vec<Rule>,
    devices: u64,
    /// Run once after the next successful call of the step (to change the world
    /// between a kernel step and what follows it, e.g. make the state file unwritable).
    then: Option<(Step, Box<dyn FnOnce() + Send>)>,
}

#[derive(Default)]
pub struct Recording {
    log: Mutex<Log>,
    watch: Option<PathBuf>,
}

impl Recording {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep, with each call, what the state file in `dir` said at that moment.
    pub fn watching(dir: &Path) -> Self {
        Recording { watch: Some(dir.to_path_buf()), ..Self::default() }
    }

    /// Fail the `n`-th call (from 1) of `step` with `error`.
    pub fn fail_nth(&self, step: Step, n: usize, error: Error) {
        self.log.lock().unwrap().rules.push(Rule { step, when: When::Nth(n), error });
    }

    /// Fail every call of `step` on `path` (a target, or a detach's device) with `error`.
    pub fn fail_at(&self, step: Step, path: &Path, error: Error) {
        self.log.lock().unwrap().rules.push(Rule { step, when: When::At(path.to_path_buf()), error });
    }

    /// Unmounting `target` answers what the kernel's EBUSY becomes.
    pub fn busy(&self, target: &Path) {
        self.fail_at(Step::Unmount, target, mounts::busy(target));
    }

    /// Run `action` once, right after the next call of `step` that succeeds.
    pub fn then(&self, step: Step, action: impl FnOnce() + Send + 'static) {
        self.log.lock().unwrap().then = Some((step, Box::new(action)));
    }

    /// Drop every rule: the next calls succeed.
    pub fn heal(&self) {
        self.log.lock().unwrap().rules.clear();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.log.lock().unwrap().calls.clone()
    }

    /// The calls from the `from`-th on (what one operation did, after `calls().len()`).
    pub fn calls_since(&self, from: usize) -> Vec<Call> {
        self.calls().split_off(from)
    }

    /// The state file as the `i`-th call found it (`None`: no file yet, or not watching).
    pub fn file_at(&self, i: usize) -> Option<State> {
        self.log.lock().unwrap().files[i].clone()
    }

    /// Record `call`; answer the error of the first rule that matches it.
    fn take(&self, call: Call) -> Result<()> {
        let file = self.watch.as_deref().and_then(|dir| {
            let f = StateFile::new(dir);
            f.path().exists().then(|| f.load().expect("the state file loads"))
        });
        let mut log = self.log.lock().unwrap();
        let step = call.step();
        let nth = log.calls.iter().filter(|c| c.step() == step).count() + 1;
        let hit = log.rules.iter().position(|r| {
            r.step == step
                && match &r.when {
                    When::Nth(n) => *n == nth,
                    When::At(p) => call.subject() == Some(p.as_path()),
                }
        });
        log.calls.push(call);
        log.files.push(file);
        match hit {
            Some(i) => Err(log.rules[i].error.clone()),
            None => {
                if log.then.as_ref().is_some_and(|(s, _)| *s == step) {
                    let (_, action) = log.then.take().expect("checked");
                    action();
                }
                Ok(())
            }
        }
    }

    fn next_device(&self, kind: AttachKind) -> (u64, String) {
        let mut log = self.log.lock().unwrap();
        let n = log.devices;
        log.devices += 1;
        let prefix = match kind {
            AttachKind::Loop => "/dev/loop",
            AttachKind::Rbd => "/dev/rbd",
            AttachKind::Zvol => "/dev/zd",
            AttachKind::Local => "/dev/local",
        };
        (n, format!("{prefix}{n}"))
    }
}

fn done<'a, T: Send + 'a>(r: Result<T>) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(r))
}

impl Kernel for Recording {
    fn prepare<'a>(&'a self, _env: &'a Env, rec: &'a mut AttachRec) -> BoxFuture<'a, Result<Option<Held>>> {
        let r = self.take(Call::Prepare { attach: rec.id }).map(|()| {
            if let Some(l) = rec.spec.loop_.as_mut()
                && let Some(path) = l.path.clone()
            {
                l.backing_file = Some(path.clone());
                rec.backing = Some(path.into());
            }
            if rec.spec.kind == AttachKind::Rbd {
                rec.krbd_before = Some(Vec::new());
            }
            None
        });
        done(r)
    }

    fn attach<'a>(
        &'a self,
        _env: &'a Env,
        rec: &'a mut AttachRec,
        _held: Option<Held>,
    ) -> BoxFuture<'a, Result<KeepOpen>> {
        let r = self.take(Call::Attach { attach: rec.id }).map(|()| {
            let (n, device) = self.next_device(rec.spec.kind);
            if let Some(r) = rec.spec.rbd.as_mut() {
                rec.krbd_id = Some(n);
                r.device_id = Some(n);
                r.device_file = Some(device.clone());
                r.path = Some(RbdPath::Krbd);
            }
            rec.device = Some(device);
            rec.spec.device_file = rec.device.clone();
            None
        });
        done(r)
    }

    fn detach<'a>(&'a self, _env: &'a Env, rec: &'a AttachRec) -> BoxFuture<'a, Result<()>> {
        done(self.take(Call::Detach { attach: rec.id, device: rec.device.clone() }))
    }

    fn mount_device(
        &self,
        device: String,
        target: PathBuf,
        fs_type: String,
        opts: Parsed,
    ) -> BoxFuture<'_, Result<()>> {
        let read_only = opts.flags.contains(nix::mount::MsFlags::MS_RDONLY);
        done(self.take(Call::MountDevice { device, target, fs_type, read_only }))
    }

    fn mount_overlay(&self, layers: Layers, target: PathBuf) -> BoxFuture<'_, Result<()>> {
        // What the real step refuses before mount(2), refused here too.
        let r = mounts::overlay_args(&layers).and_then(|_| {
            let upper = layers.upper.map(|(upper, _work)| upper);
            self.take(Call::MountOverlay { lower: layers.lower, upper, target })
        });
        done(r)
    }

    fn mount_bind(&self, source: Held, target: PathBuf, read_only: bool) -> BoxFuture<'_, Result<()>> {
        done(self.take(Call::MountBind { source: source.path, target, read_only }))
    }

    fn unmount(&self, target: PathBuf) -> BoxFuture<'_, Result<()>> {
        done(self.take(Call::Unmount { target }))
    }
}
