//! The registry of attachments and mounts: creates and deletes them in order, keeps
//! refcounts (an attachment under a mount, a mount under an overlay or bind cannot go
//! without `force`), and records every step in the state file. One lock serialises
//! changes: each is a few syscalls, and chains must see a consistent graph.

use std::sync::Arc;

use rpc_schema::imageapi::{Attach, AttachKind, Filter, Mount, MountAttach, MountKind, MountOverlay};
use tokio::sync::Mutex;

use super::kernel::{Kernel, Real};
use super::state::{AttachRec, MountRec, Phase, State, StateFile};
use crate::attach::{self, Env};
use crate::error::{Error, Result};
use crate::mounts::{self, options};

#[derive(Clone)]
pub struct Registry {
    pub env: Env,
    /// Every attach, detach, mount and unmount goes through here.
    kernel: Arc<dyn Kernel>,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    state: State,
    file: StateFile,
}

impl Inner {
    fn save(&self) -> Result<()> {
        self.file.save(&self.state).map_err(|e| Error::os(format!("writing {}", self.file.path().display()), e))
    }
}

fn with_refs_attach(state: &State, rec: &AttachRec) -> Attach {
    let mut a = rec.spec.clone();
    a.id = Some(rec.id);
    a.refs = state.mounts_on(rec.id).len() as u64;
    a.device_file = rec.device.clone();
    if let Some(r) = a.rbd.as_mut() {
        r.id = Some(rec.id);
        r.refs = a.refs;
    }
    a
}

fn with_refs_mount(state: &State, rec: &MountRec) -> Mount {
    let mut m = rec.spec.clone();
    m.id = Some(rec.id);
    m.mount_id = Some(rec.id);
    m.refs = state.users_of(rec.id).len() as u64 + u64::from(state.pinned.contains_key(&rec.id));
    m.mountpoint = Some(rec.mountpoint.display().to_string());
    if let Some(o) = m.overlay.as_mut() {
        o.id = Some(rec.id);
        o.refs = m.refs;
        o.mountpoint = m.mountpoint.clone();
    }
    m
}

fn kind_name(k: MountKind) -> &'static str {
    match k {
        MountKind::Attach | MountKind::Rbd => "attach",
        MountKind::Overlay => "overlay",
        MountKind::Bind => "bind",
    }
}

impl Registry {
    /// The registry on the host's kernel.
    pub fn new(env: Env, state: State, file: StateFile) -> Self {
        Self::with_kernel(env, state, file, Arc::new(Real))
    }

    /// The registry taking its kernel steps through `kernel` (a test double).
    pub fn with_kernel(env: Env, state: State, file: StateFile, kernel: Arc<dyn Kernel>) -> Self {
        Registry { env, kernel, inner: Arc::new(Mutex::new(Inner { state, file })) }
    }

    pub async fn attachments(&self, f: &Filter) -> Result<Vec<Attach>> {
        let kind = match f.kind.as_deref() {
            None => None,
            Some(k) => Some(
                serde_json::from_value::<AttachKind>(serde_json::Value::String(k.to_owned()))
                    .map_err(|_| Error::invalid("kind", format!("{k:?} is not rbd, loop, zvol or local")))?,
            ),
        };
        let inner = self.inner.lock().await;
        let s = &inner.state;
        Ok(s.attachments
            .values()
            .filter(|a| a.phase == Phase::Ready)
            .filter(|a| f.id.is_none_or(|id| a.id == id))
            .filter(|a| kind.is_none_or(|k| a.spec.kind == k))
            .filter(|a| f.name.as_ref().is_none_or(|n| a.spec.name.as_ref() == Some(n)))
            .map(|a| with_refs_attach(s, a))
            .collect())
    }

    pub async fn mounts(&self, f: &Filter) -> Result<Vec<Mount>> {
        if let Some(k) = f.kind.as_deref()
            && !["attach", "rbd", "overlay", "bind"].contains(&k)
        {
            return Err(Error::invalid("kind", format!("{k:?} is not attach, rbd, overlay or bind")));
        }
        let inner = self.inner.lock().await;
        let s = &inner.state;
        Ok(s.mounts
            .values()
            .filter(|m| m.phase == Phase::Ready)
            .filter(|m| f.id.is_none_or(|id| m.id == id))
            .filter(|m| match f.kind.as_deref() {
                None => true,
                // v0.1's rbd mounts: attachment mounts of rbd attachments.
                Some("rbd") => {
                    m.attach_id.and_then(|a| s.attachments.get(&a)).is_some_and(|a| a.spec.kind == AttachKind::Rbd)
                }
                Some(k) => kind_name(m.spec.kind) == k,
            })
            .filter(|m| f.name.as_ref().is_none_or(|n| m.spec.name.as_ref() == Some(n)))
            .map(|m| with_refs_mount(s, m))
            .collect())
    }

    fn check_name(state: &State, name: &Option<String>, attachments: bool) -> Result<()> {
        let Some(n) = name else { return Ok(()) };
        super::check_label(n)?;
        let taken = if attachments {
            state.attachments.values().any(|a| a.spec.name.as_ref() == Some(n))
        } else {
            state.mounts.values().any(|m| m.spec.name.as_ref() == Some(n))
        };
        if taken { Err(Error::conflict(format!("the name {n:?} is taken"))) } else { Ok(()) }
    }

    pub async fn create_attach(&self, spec: Attach) -> Result<Attach> {
        let mut inner = self.inner.lock().await;
        let (rec, _) = self.attach_locked(&mut inner, spec, None).await?;
        Ok(with_refs_attach(&inner.state, &rec))
    }

    /// Record (creating), attach, record (ready). On failure the record is dropped.
    async fn attach_locked(
        &self,
        inner: &mut Inner,
        mut spec: Attach,
        owner: Option<u64>,
    ) -> Result<(AttachRec, attach::KeepOpen)> {
        attach::validate(&spec)?;
        Self::check_name(&inner.state, &spec.name, true)?;
        if spec.kind == AttachKind::Rbd
            && let Some(r) = spec.rbd.as_mut()
        {
            r.id = None;
            r.path = None;
            r.device_file = None;
            r.device_id = None;
        }
        spec.read_only = attach::read_only(&spec);
        let id = inner.state.allocate_id();
        spec.id = Some(id);
        let mut rec = AttachRec {
            id,
            phase: Phase::Creating,
            spec,
            device: None,
            backing: None,
            krbd_id: None,
            krbd_before: None,
            fuse_dir: None,
            owner,
        };
        let held = self.kernel.prepare(&self.env, &mut rec).await?;
        inner.state.attachments.insert(id, rec.clone());
        if let Err(e) = inner.save() {
            // Unrecorded, so not made: a record kept in memory would hold its name.
            inner.state.attachments.remove(&id);
            return Err(e);
        }
        let keep = match self.kernel.attach(&self.env, &mut rec, held).await {
            Ok(keep) => {
                crate::fault::point("attach-made");
                keep
            }
            Err(e) => {
                inner.state.attachments.remove(&id);
                let _ = inner.save();
                return Err(e);
            }
        };
        rec.phase = Phase::Ready;
        inner.state.attachments.insert(id, rec.clone());
        if let Err(e) = inner.save() {
            let _ = self.kernel.detach(&self.env, &rec).await;
            inner.state.attachments.remove(&id);
            return Err(e);
        }
        tracing::info!(id, kind = ?rec.spec.kind, device = ?rec.device, "attached");
        Ok((rec, keep))
    }

    pub async fn delete_attach(&self, id: u64, force: bool) -> Result<Attach> {
        let mut inner = self.inner.lock().await;
        let rec = inner
            .state
            .attachments
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("attachment {id} does not exist")))?;
        let out = with_refs_attach(&inner.state, &rec);
        let users = inner.state.attach_teardown(id);
        Self::refuse_pinned(&inner.state, &users)?;
        if !users.is_empty() && !force {
            return Err(Error::conflict(format!(
                "attachment {id} is used by mount(s) {users:?}: delete them first or pass force=true"
            )));
        }
        for m in users {
            self.unmount_locked(&mut inner, m).await?;
        }
        self.detach_locked(&mut inner, id).await?;
        Ok(out)
    }

    async fn detach_locked(&self, inner: &mut Inner, id: u64) -> Result<()> {
        let Some(rec) = inner.state.attachments.get(&id).cloned() else { return Ok(()) };
        self.kernel.detach(&self.env, &rec).await?;
        crate::fault::point("attach-detached");
        inner.state.attachments.remove(&id);
        inner.save()?;
        tracing::info!(id, device = ?rec.device, "detached");
        Ok(())
    }

    pub async fn create_mount(&self, spec: Mount) -> Result<Mount> {
        let mut inner = self.inner.lock().await;
        let rec = self.mount_locked(&mut inner, spec).await?;
        Ok(with_refs_mount(&inner.state, &rec))
    }

    async fn mount_locked(&self, inner: &mut Inner, mut spec: Mount) -> Result<MountRec> {
        Self::check_name(&inner.state, &spec.name, false)?;
        if spec.mountpoint.is_some() {
            return Err(Error::invalid("mountpoint", "tankd chooses the mountpoint (under its mount root)"));
        }
        // v0.1's rbd mount is an attachment mount.
        if spec.kind == MountKind::Rbd {
            let r = spec.rbd.take().ok_or_else(|| Error::invalid("rbd", "kind rbd needs an `rbd` object"))?;
            spec.attach = Some(MountAttach {
                attach_id: r.rbd_id,
                attach: r.rbd.map(|rbd| Box::new(Attach::of_rbd(rbd))),
                fs_type: r.fs_type,
                mount_options: r.mount_options,
            });
            spec.kind = MountKind::Attach;
        }
        let id = inner.state.allocate_id();
        spec.id = Some(id);
        spec.mount_id = None;
        let mountpoint = mounts::mountpoint(&self.env, id);
        let mut rec = MountRec {
            id,
            phase: Phase::Creating,
            spec: spec.clone(),
            mountpoint: mountpoint.clone(),
            attach_id: None,
            lower: Vec::new(),
            bind_of: None,
            managed_dir: None,
        };
        match spec.kind {
            MountKind::Attach | MountKind::Rbd => self.mount_attach(inner, &mut rec).await?,
            MountKind::Overlay => self.mount_overlay(inner, &mut rec).await?,
            MountKind::Bind => self.mount_bind(inner, &mut rec).await?,
        }
        crate::fault::point("mount-made");
        rec.phase = Phase::Ready;
        inner.state.mounts.insert(id, rec.clone());
        if let Err(e) = inner.save() {
            // The client hears a failure: nothing of the mount may stay behind (what the
            // file last said, `creating`, start-up reconciles).
            if let Err(u) = self.unmount_locked(inner, id).await {
                tracing::error!(id, error = %u, "could not undo a mount whose record could not be written");
            }
            return Err(e);
        }
        tracing::info!(id, kind = kind_name(rec.spec.kind), mountpoint = %rec.mountpoint.display(), "mounted");
        Ok(rec)
    }

    /// Write the mount's record as `creating` before its kernel step.
    /// If that cannot be written, the step is not taken and nothing of the mount stays.
    fn record_creating(inner: &mut Inner, rec: &MountRec) -> Result<()> {
        inner.state.mounts.insert(rec.id, rec.clone());
        let saved = inner.save();
        if saved.is_err() {
            inner.state.mounts.remove(&rec.id);
        }
        saved
    }

    fn forget_failed(inner: &mut Inner, id: u64) {
        inner.state.mounts.remove(&id);
        let _ = inner.save();
    }

    async fn mount_attach(&self, inner: &mut Inner, rec: &mut MountRec) -> Result<()> {
        let a =
            rec.spec.attach.clone().ok_or_else(|| Error::invalid("attach", "kind attach needs an `attach` object"))?;
        options::check_fs_type(&a.fs_type).map_err(|m| Error::invalid("attach.fs_type", m))?;
        let existing =
            match (a.attach_id, &a.attach) {
                (Some(aid), None) => {
                    let at = inner.state.attachments.get(&aid).filter(|r| r.phase == Phase::Ready);
                    Some(at.cloned().ok_or_else(|| {
                        Error::invalid("attach.attach_id", format!("attachment {aid} does not exist"))
                    })?)
                }
                (None, Some(_)) => None,
                _ => return Err(Error::invalid("attach", "give `attach_id` or an inline `attach`, one of them")),
            };
        // Check the options against the attachment's read-only-ness before making anything.
        let inline_ro = a.attach.as_ref().map(|s| attach::read_only(s)).unwrap_or(false);
        let ro = rec.spec.read_only || existing.as_ref().map_or(inline_ro, |r| r.spec.read_only);
        let parsed = options::parse(&a.mount_options, &a.fs_type, ro, self.env.allow_suid_dev)
            .map_err(|m| Error::invalid("attach.mount_options", m))?;
        if let Some(inline) = &a.attach {
            attach::validate(inline)?;
        }
        rec.spec.read_only = ro;
        Self::record_creating(inner, rec)?;
        // `_keep` holds an autoclear loop device open until the mount has it.
        let (attach_rec, _keep, inline) = match existing {
            Some(r) => (r, None, false),
            None => {
                let spec = *a.attach.clone().expect("checked");
                match self.attach_locked(inner, spec, Some(rec.id)).await {
                    Ok((r, keep)) => (r, keep, true),
                    Err(e) => {
                        Self::forget_failed(inner, rec.id);
                        return Err(e);
                    }
                }
            }
        };
        rec.attach_id = Some(attach_rec.id);
        if let Some(ma) = rec.spec.attach.as_mut() {
            ma.attach_id = Some(attach_rec.id);
            ma.attach = None;
        }
        if let Err(e) = Self::record_creating(inner, rec) {
            if inline {
                // Detached and forgotten even if the file cannot say so now.
                let _ = self.detach_locked(inner, attach_rec.id).await;
            }
            return Err(e);
        }
        crate::fault::point("after-attach");
        let device = attach_rec.device.clone().expect("a ready attachment has a device");
        if let Err(e) = self.kernel.mount_device(device, rec.mountpoint.clone(), a.fs_type.clone(), parsed).await {
            Self::forget_failed(inner, rec.id);
            if inline {
                let _ = self.detach_locked(inner, attach_rec.id).await;
            }
            return Err(e);
        }
        Ok(())
    }

    async fn mount_overlay(&self, inner: &mut Inner, rec: &mut MountRec) -> Result<()> {
        let o: MountOverlay = rec
            .spec
            .overlay
            .clone()
            .ok_or_else(|| Error::invalid("overlay", "kind overlay needs an `overlay` object"))?;
        if o.lower.is_empty() {
            return Err(Error::invalid("overlay.lower", "at least one lower mount id"));
        }
        let mut lower_dirs = Vec::new();
        for (i, lid) in o.lower.iter().enumerate() {
            if o.lower[..i].contains(lid) {
                return Err(Error::invalid("overlay.lower", format!("mount {lid} is listed twice")));
            }
            let m = inner.state.mounts.get(lid).filter(|m| m.phase == Phase::Ready);
            let m = m.ok_or_else(|| Error::invalid("overlay.lower", format!("mount {lid} does not exist")))?;
            lower_dirs.push(m.mountpoint.clone());
        }
        let (upper, managed) = match (&o.upper_dataset, rec.spec.read_only) {
            (Some(_), true) => return Err(Error::invalid("overlay.upper_dataset", "a read-only overlay has no upper")),
            (_, true) => (None, None),
            (Some(ds), false) => {
                let dir = self.env.dataset_dir("overlay.upper_dataset", ds).await?;
                (Some((dir.join("upper"), dir.join("work"))), None)
            }
            (None, false) => {
                let dir = self.env.data_dir.join("overlays").join(rec.id.to_string());
                (Some((dir.join("upper"), dir.join("work"))), Some(dir))
            }
        };
        rec.lower = o.lower.clone();
        rec.managed_dir = managed.clone();
        if let Some(ov) = rec.spec.overlay.as_mut() {
            ov.upperdir = upper.as_ref().map(|u| u.0.display().to_string());
            ov.workdir = upper.as_ref().map(|u| u.1.display().to_string());
        }
        Self::record_creating(inner, rec)?;
        let layers = mounts::Layers { lower: lower_dirs, upper };
        if let Err(e) = self.kernel.mount_overlay(layers, rec.mountpoint.clone()).await {
            Self::forget_failed(inner, rec.id);
            if let Some(dir) = managed {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
        Ok(())
    }

    async fn mount_bind(&self, inner: &mut Inner, rec: &mut MountRec) -> Result<()> {
        let b = rec.spec.bind.clone().ok_or_else(|| Error::invalid("bind", "kind bind needs a `bind` object"))?;
        let base = match (b.mount_id, &b.dataset) {
            (Some(mid), None) => {
                let m = inner.state.mounts.get(&mid).filter(|m| m.phase == Phase::Ready);
                let m = m.ok_or_else(|| Error::invalid("bind.mount_id", format!("mount {mid} does not exist")))?;
                rec.bind_of = Some(mid);
                m.mountpoint.clone()
            }
            (None, Some(ds)) => self.env.dataset_dir("bind.dataset", ds).await?,
            _ => return Err(Error::invalid("bind", "give `mount_id` or `dataset`, one of them")),
        };
        // The source is held open from its check to the mount (see crate::beneath).
        let source = match &b.path {
            Some(p) => attach::relative_inside("bind.path", &base, p)?,
            None => {
                crate::beneath::open(&base, &base).map_err(|e| Error::os(format!("opening {}", base.display()), e))?
            }
        };
        Self::record_creating(inner, rec)?;
        if let Err(e) = self.kernel.mount_bind(source, rec.mountpoint.clone(), rec.spec.read_only).await {
            Self::forget_failed(inner, rec.id);
            return Err(e);
        }
        Ok(())
    }

    pub async fn delete_mount(&self, id: u64, force: bool) -> Result<Mount> {
        let mut inner = self.inner.lock().await;
        let rec = inner
            .state
            .mounts
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("mount {id} does not exist")))?;
        let out = with_refs_mount(&inner.state, &rec);
        let order = inner.state.mount_teardown(id);
        Self::refuse_pinned(&inner.state, &order)?;
        if order.len() > 1 && !force {
            let users: Vec<u64> = order.iter().copied().filter(|m| *m != id).collect();
            return Err(Error::conflict(format!(
                "mount {id} is used by mount(s) {users:?}: delete them first or pass force=true"
            )));
        }
        for m in order {
            self.unmount_locked(&mut inner, m).await?;
        }
        Ok(out)
    }

    /// Unmount one mount whose users are gone, then what it owned. What the kernel no
    /// longer has goes from the records even when the state file cannot be written now;
    /// that failure is answered at the end.
    async fn unmount_locked(&self, inner: &mut Inner, id: u64) -> Result<()> {
        let Some(rec) = inner.state.mounts.get(&id).cloned() else { return Ok(()) };
        self.kernel.unmount(rec.mountpoint.clone()).await?;
        crate::fault::point("mount-unmounted");
        if let Some(dir) = &rec.managed_dir
            && let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), error = %e, "could not remove an overlay's upper and work dirs");
        }
        inner.state.mounts.remove(&id);
        let saved = inner.save();
        tracing::info!(id, mountpoint = %rec.mountpoint.display(), "unmounted");
        let owned: Vec<u64> = inner.state.attachments.values().filter(|a| a.owner == Some(id)).map(|a| a.id).collect();
        for a in owned {
            match inner.state.mounts_on(a).first() {
                None => self.detach_locked(inner, a).await?,
                // Another mount has it too (by `attach_id`): it goes with that one now.
                // Left owned by a mount that is gone, it would never be detached with
                // its last mount, and start-up would detach it under that mount.
                Some(&next) => {
                    inner.state.attachments.get_mut(&a).expect("listed").owner = Some(next);
                    inner.save()?;
                    tracing::info!(id = a, owner = next, "an inline attachment passes to the mount still on it");
                }
            }
        }
        saved
    }

    fn refuse_pinned(state: &State, mounts: &[u64]) -> Result<()> {
        match mounts.iter().find_map(|m| state.pinned.get(m).map(|c| (m, c))) {
            Some((m, c)) => {
                Err(Error::conflict(format!("mount {m} is the root of container {c}: delete the container first")))
            }
            None => Ok(()),
        }
    }

    /// Make mount `id` container `container`'s root: a ready mount that is no other
    /// container's root. Returns its directory.
    pub async fn pin(&self, id: u64, container: u64) -> Result<std::path::PathBuf> {
        let mut inner = self.inner.lock().await;
        let m = inner.state.mounts.get(&id).filter(|m| m.phase == Phase::Ready);
        let dir = m
            .map(|m| m.mountpoint.clone())
            .ok_or_else(|| Error::invalid("mount.id", format!("mount {id} does not exist")))?;
        match inner.state.pinned.get(&id) {
            Some(c) if *c != container => {
                return Err(Error::invalid("mount.id", format!("mount {id} is already the root of container {c}")));
            }
            _ => {}
        }
        inner.state.pinned.insert(id, container);
        inner.save()?;
        Ok(dir)
    }

    pub async fn unpin(&self, id: u64, container: u64) -> Result<()> {
        let mut inner = self.inner.lock().await;
        if inner.state.pinned.get(&id) == Some(&container) {
            inner.state.pinned.remove(&id);
            inner.save()?;
        }
        Ok(())
    }

    /// At start, with the containers' records loaded: the pins are exactly the
    /// containers' roots. A crash between a pin and its container's record (or between
    /// a container's removal and its unpin) left one more or one fewer.
    pub async fn reconcile_pins(&self, roots: &[(u64, u64)]) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let before = inner.state.pinned.clone();
        inner.state.pinned.retain(|m, c| {
            let keep = roots.contains(&(*m, *c));
            if !keep {
                tracing::warn!(mount = m, container = c, "dropping the pin of a container that does not exist");
            }
            keep
        });
        for (m, c) in roots {
            if inner.state.mounts.get(m).is_some_and(|r| r.phase == Phase::Ready) && !inner.state.pinned.contains_key(m)
            {
                tracing::warn!(mount = m, container = c, "pinning a container's root again");
                inner.state.pinned.insert(*m, *c);
            }
        }
        if inner.state.pinned != before {
            inner.save()?;
        }
        Ok(())
    }

    /// Read the state under the lock (the unknown-objects report); nothing is written.
    pub async fn inspect<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.lock().await.state)
    }
}

#[cfg(test)]
mod tests;
