//! The kernel steps the registry takes, behind one object-safe trait: the registry
//! holds an `Arc<dyn Kernel>`, [`Real`] in the daemon (delegating to `crate::attach`
//! and `crate::mounts`, unchanged) and a recording double in the registry's unit tests
//! (`double::Recording`), which makes nothing and can be told to fail a step.
//!
//! Only the steps are here. What the registry decides around them (refcounts, force,
//! pins, the order of a teardown, what is undone after a failed step, the state file
//! written `creating` before a step and `ready` after) stays in the registry, so that
//! is what the double's tests exercise. Start-up re-adoption (`super::adopt`) reads the
//! kernel itself and is not behind this trait.

use std::path::PathBuf;

use futures_util::future::BoxFuture;

use crate::attach::record::AttachRec;
use crate::attach::{self, Env, KeepOpen};
use crate::beneath::Held;
use crate::error::Result;
use crate::mounts::{self, Layers, options::Parsed};

#[cfg(test)]
pub mod double;

pub trait Kernel: Send + Sync {
    /// Resolve what the attachment's record must name before it is written (a loop
    /// attachment's backing file, held open; the kernel rbd devices before the map).
    fn prepare<'a>(&'a self, env: &'a Env, rec: &'a mut AttachRec) -> BoxFuture<'a, Result<Option<Held>>>;

    /// Make the attachment's device and fill in the record. On error nothing is left.
    fn attach<'a>(
        &'a self,
        env: &'a Env,
        rec: &'a mut AttachRec,
        held: Option<Held>,
    ) -> BoxFuture<'a, Result<KeepOpen>>;

    /// Remove the attachment's device; what is already gone is not an error.
    fn detach<'a>(&'a self, env: &'a Env, rec: &'a AttachRec) -> BoxFuture<'a, Result<()>>;

    /// Mount `device` as `fs_type` at `target` (made if missing).
    fn mount_device(&self, device: String, target: PathBuf, fs_type: String, opts: Parsed)
    -> BoxFuture<'_, Result<()>>;

    /// Mount an overlay of `layers` at `target`.
    fn mount_overlay(&self, layers: Layers, target: PathBuf) -> BoxFuture<'_, Result<()>>;

    /// Bind the held `source` at `target`, read-only if asked.
    fn mount_bind(&self, source: Held, target: PathBuf, read_only: bool) -> BoxFuture<'_, Result<()>>;

    /// Unmount `target` and remove the directory; a busy filesystem is a conflict.
    fn unmount(&self, target: PathBuf) -> BoxFuture<'_, Result<()>>;
}

/// The host's kernel.
pub struct Real;

impl Kernel for Real {
    fn prepare<'a>(&'a self, env: &'a Env, rec: &'a mut AttachRec) -> BoxFuture<'a, Result<Option<Held>>> {
        Box::pin(attach::prepare(env, rec))
    }

    fn attach<'a>(
        &'a self,
        env: &'a Env,
        rec: &'a mut AttachRec,
        held: Option<Held>,
    ) -> BoxFuture<'a, Result<KeepOpen>> {
        Box::pin(attach::attach(env, rec, held))
    }

    fn detach<'a>(&'a self, env: &'a Env, rec: &'a AttachRec) -> BoxFuture<'a, Result<()>> {
        Box::pin(attach::detach(env, rec))
    }

    fn mount_device(
        &self,
        device: String,
        target: PathBuf,
        fs_type: String,
        opts: Parsed,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(mounts::mount_device(device, target, fs_type, opts))
    }

    fn mount_overlay(&self, layers: Layers, target: PathBuf) -> BoxFuture<'_, Result<()>> {
        Box::pin(mounts::mount_overlay(layers, target))
    }

    fn mount_bind(&self, source: Held, target: PathBuf, read_only: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(mounts::mount_bind(source, target, read_only))
    }

    fn unmount(&self, target: PathBuf) -> BoxFuture<'_, Result<()>> {
        Box::pin(mounts::unmount(target))
    }
}
