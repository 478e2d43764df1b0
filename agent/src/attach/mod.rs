//! Attachments: block devices made from rbd images, files (loop), tankd volumes (zvol)
//! or named local devices. This module does the kernel work for one attachment and
//! checks whether it still exists; the registry, refcounts and routes are in
//! `crate::imageapi`.

pub mod local;
pub mod loopdev;
pub mod rbd;
pub mod record;

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rpc_schema::imageapi::{Attach, AttachKind, RbdPath};
use zfs_sys_shim::{DatasetType, Prop, Zfs};

use crate::beneath::{self, Held};
use crate::error::{Error, Result};
use record::AttachRec;

/// Where attachments come from and go, shared with mounts and re-adoption.
#[derive(Clone)]
pub struct Env {
    pub data_dir: PathBuf,
    pub mount_root: PathBuf,
    pub image_roots: Vec<PathBuf>,
    /// The block devices `local` attachments may name (config `local_devices`).
    pub local_devices: Vec<PathBuf>,
    pub allow_suid_dev: bool,
    pub sys_block: PathBuf,
    pub sys_rbd: PathBuf,
    /// `None` on a node configured without ZFS.
    pub zfs: Option<Zfs>,
    pub dataset_root: zfs_sys_shim::DatasetName,
}

impl Env {
    pub fn zfs(&self, what: &str) -> Result<&Zfs> {
        self.zfs
            .as_ref()
            .ok_or_else(|| Error::unavailable(format!("{what} needs ZFS, and this node runs with zfs = false")))
    }

    pub fn fuse_dir(&self, id: u64) -> PathBuf {
        self.data_dir.join("rbd").join(id.to_string())
    }

    /// A root-relative dataset name from a request field.
    pub fn dataset(&self, field: &str, rel: &str) -> Result<zfs_sys_shim::DatasetName> {
        if rel.is_empty() || rel.contains('@') || rel.contains('#') {
            return Err(Error::invalid(field, format!("{rel:?} is not a dataset relative to {}", self.dataset_root)));
        }
        self.dataset_root.join(rel).map_err(|e| Error::invalid(field, e.reason))
    }

    /// The mountpoint of a tankd filesystem dataset, which must be mounted.
    pub async fn dataset_dir(&self, field: &str, rel: &str) -> Result<PathBuf> {
        let name = self.dataset(field, rel)?;
        let ds = self.zfs(field)?.get(&name, &[Prop::Mountpoint, Prop::Mounted]).await?;
        if ds.kind != Some(DatasetType::Filesystem) {
            return Err(Error::invalid(field, format!("{name} is not a filesystem")));
        }
        match (ds.mountpoint, ds.mounted) {
            (Some(mp), Some(true)) if mp.starts_with('/') => Ok(PathBuf::from(mp)),
            _ => Err(Error::invalid(field, format!("{name} is not mounted"))),
        }
    }
}

/// A request path: absolute, without `.`/`..`, and (resolved) under one of `roots`.
/// Answered held open from the check on (see `crate::beneath`).
pub fn path_under(field: &str, path: &str, roots: &[PathBuf]) -> Result<Held> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
        return Err(Error::invalid(field, format!("{path:?} must be an absolute path without . or ..")));
    }
    let real = std::fs::canonicalize(p).map_err(|e| Error::invalid(field, format!("{path}: {e}")))?;
    let Some(root) = roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).find(|r| real.starts_with(r)) else {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(Error::invalid(field, format!("{path} is outside the allowed roots ({})", roots.join(", "))));
    };
    // A symlink swapped in since canonicalize() resolved the path fails here (ELOOP).
    beneath::open(&root, &real).map_err(|e| Error::invalid(field, format!("{path}: {e}")))
}

/// A relative path inside a directory: no leading `/`, no `..`.
pub fn relative_inside(field: &str, dir: &Path, rel: &str) -> Result<Held> {
    let r = Path::new(rel);
    if rel.is_empty() || r.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(field, format!("{rel:?} must be a relative path without . or ..")));
    }
    path_under(field, &dir.join(r).to_string_lossy(), &[dir.to_path_buf()])
}

/// Check a request before anything is made. Returns it normalised.
pub fn validate(spec: &Attach) -> Result<()> {
    let parts = [spec.rbd.is_some(), spec.loop_.is_some(), spec.zvol.is_some(), spec.local.is_some()];
    if parts.iter().filter(|p| **p).count() > 1 {
        return Err(Error::invalid("kind", "give only the part that matches kind (rbd, loop, zvol or local)"));
    }
    let missing = |k: &str| Error::invalid(k, format!("kind {k} needs a `{k}` object"));
    match spec.kind {
        AttachKind::Rbd => {
            let r = spec.rbd.as_ref().ok_or_else(|| missing("rbd"))?;
            rbd::validate(r).map_err(|(f, m)| Error::invalid(&f, m))
        }
        AttachKind::Loop => {
            let l = spec.loop_.as_ref().ok_or_else(|| missing("loop"))?;
            match (&l.path, &l.dataset, &l.file) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
                _ => Err(Error::invalid("loop", "give `path`, or `dataset` and `file`")),
            }
        }
        AttachKind::Zvol => spec.zvol.as_ref().map(|_| ()).ok_or_else(|| missing("zvol")),
        AttachKind::Local => spec.local.as_ref().map(|_| ()).ok_or_else(|| missing("local")),
    }
}

pub fn read_only(spec: &Attach) -> bool {
    spec.read_only || spec.rbd.as_ref().is_some_and(|r| r.options.ro)
}

/// Resolve what can be resolved before the record is written (the backing file of a
/// loop attachment), so that start-up can find a half-made device by it. Answers the
/// backing file held open: `attach` uses that descriptor, not the path.
pub async fn prepare(env: &Env, rec: &mut AttachRec) -> Result<Option<Held>> {
    let mut held = None;
    if let Some(l) = rec.spec.loop_.as_mut() {
        let file = match (&l.path, &l.dataset, &l.file) {
            (Some(p), _, _) => path_under("loop.path", p, &env.image_roots)?,
            (None, Some(ds), Some(f)) => {
                let dir = env.dataset_dir("loop.dataset", ds).await?;
                relative_inside("loop.file", &dir, f)?
            }
            _ => return Err(Error::invalid("loop", "give `path`, or `dataset` and `file`")),
        };
        if !file.is_file() {
            return Err(Error::invalid("loop", format!("{} is not a regular file", file.path.display())));
        }
        l.backing_file = Some(file.path.display().to_string());
        rec.backing = Some(file.path.clone());
        held = Some(file);
    }
    if rec.spec.kind == AttachKind::Rbd {
        if rbd::kernel_has_rbd(&env.sys_rbd) {
            rec.krbd_before = Some(rbd::krbd_devices(&env.sys_rbd).into_iter().map(|d| d.0).collect());
        } else {
            rec.fuse_dir = Some(env.fuse_dir(rec.id));
        }
    }
    Ok(held)
}

/// Run a blocking syscall sequence off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}

/// An open handle on a new loop device with autoclear: hold it until the mount has
/// opened the device, or the kernel detaches it at once.
pub type KeepOpen = Option<std::fs::File>;

/// Make the device. On error nothing of this attachment is left.
pub async fn attach(env: &Env, rec: &mut AttachRec, held: Option<Held>) -> Result<KeepOpen> {
    let mut keep = None;
    let ro = read_only(&rec.spec);
    // An inline attachment lives as long as its mount: let the kernel drop the loop
    // device when the filesystem lets go. A standalone one must outlive tankd's fds.
    let autoclear = rec.owner.is_some();
    match rec.spec.kind {
        AttachKind::Loop => {
            let file = held.expect("prepare holds a loop attachment's file");
            let opts = loopdev::LoopOptions { read_only: ro, autoclear, direct_io: true };
            let dev = blocking(move || loopdev::attach(&file.fd_path(), &file.path, opts)).await.map_err(|e| {
                Error::os(format!("attaching {} to a loop device", rec.backing.as_ref().unwrap().display()), e)
            })?;
            if let Some(l) = rec.spec.loop_.as_mut() {
                l.direct_io = dev.direct_io;
            }
            rec.device = Some(dev.path);
            keep = autoclear.then_some(dev.handle);
        }
        AttachKind::Zvol => {
            let z = rec.spec.zvol.as_ref().expect("validated");
            let name = env.dataset("zvol.volume", &z.volume)?;
            let zfs = env.zfs("a zvol attachment")?;
            let ds = zfs.get(&name, &[]).await?;
            if ds.kind != Some(DatasetType::Volume) {
                return Err(Error::invalid("zvol.volume", format!("{name} is not a volume")));
            }
            let dev = zfs.zvol_device(&name, Duration::from_secs(30)).await?;
            rec.device = Some(dev.display().to_string());
        }
        AttachKind::Local => {
            let path = &rec.spec.local.as_ref().expect("validated").path;
            let real = local::allowed(path, &env.local_devices, &local::Host::real())?;
            rec.device = Some(real.display().to_string());
        }
        AttachKind::Rbd => keep = attach_rbd(env, rec, ro, autoclear).await?,
    }
    rec.spec.device_file = rec.device.clone();
    Ok(keep)
}

async fn attach_rbd(env: &Env, rec: &mut AttachRec, ro: bool, autoclear: bool) -> Result<KeepOpen> {
    let mut keep = None;
    let spec = rec.spec.rbd.clone().expect("validated");
    let what = format!("rbd image {}/{}", spec.pool, spec.image);
    let (device, device_id, path) = match rec.fuse_dir.clone() {
        None => {
            let sys = env.sys_rbd.clone();
            let s = spec.clone();
            let id = blocking(move || rbd::krbd_map(&sys, &s, ro))
                .await
                .map_err(|e| Error::os(format!("mapping {what}"), e))?;
            rec.krbd_id = Some(id);
            (format!("/dev/rbd{id}"), id, RbdPath::Krbd)
        }
        Some(dir) => {
            let dir = rbd::FuseDir(dir);
            let file = rbd::fuse_start(&dir, &spec).await.map_err(|e| Error::internal(format!("{what}: {e}")))?;
            rec.backing = Some(file.clone());
            let opts = loopdev::LoopOptions { read_only: ro, autoclear, direct_io: false };
            match blocking(move || loopdev::attach(&file, &file, opts)).await {
                Ok(dev) => {
                    keep = autoclear.then_some(dev.handle);
                    (dev.path, dev.number as u64, RbdPath::RbdFuse)
                }
                Err(e) => {
                    let _ = rbd::fuse_stop(&dir);
                    return Err(Error::os(format!("attaching {what} (rbd-fuse) to a loop device"), e));
                }
            }
        }
    };
    let r = rec.spec.rbd.as_mut().expect("validated");
    r.device_id = Some(device_id);
    r.device_file = Some(device.clone());
    r.path = Some(path);
    rec.device = Some(device);
    Ok(keep)
}

/// Remove the device (and rbd-fuse). What is already gone is not an error.
pub async fn detach(env: &Env, rec: &AttachRec) -> Result<()> {
    let rec = rec.clone();
    let env = env.clone();
    blocking(move || detach_now(&env, &rec)).await
}

fn detach_now(env: &Env, rec: &AttachRec) -> Result<()> {
    let loop_of = |file: &Path| -> Option<String> {
        // The recorded device, if it still holds the file; else whichever does.
        rec.device
            .clone()
            .filter(|d| loopdev::backing_file(&env.sys_block, d).as_deref() == Some(file))
            .or_else(|| loopdev::bound(&env.sys_block).into_iter().find(|(_, f)| f == file).map(|(d, _)| d))
    };
    match rec.spec.kind {
        AttachKind::Loop | AttachKind::Rbd if rec.backing.is_some() => {
            let file = rec.backing.clone().expect("checked");
            if let Some(dev) = loop_of(&file) {
                loopdev::detach(&dev).map_err(|e| Error::os(format!("detaching {dev}"), e))?;
            }
        }
        _ => {}
    }
    if let Some(id) = rec.krbd_id {
        rbd::krbd_unmap(&env.sys_rbd, id).map_err(|e| Error::os(format!("unmapping /dev/rbd{id}"), e))?;
    }
    if let Some(dir) = &rec.fuse_dir {
        // The loop device lets go of the file asynchronously after LOOP_CLR_FD.
        let mut tries = 0;
        loop {
            match rbd::fuse_stop(&rbd::FuseDir(dir.clone())) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::os(format!("stopping rbd-fuse on {}", dir.display()), e)),
            }
        }
    }
    Ok(())
}

/// Whether the attachment still exists as recorded.
pub fn present(env: &Env, rec: &AttachRec, mounts: &[crate::mounts::sys::MountEntry]) -> bool {
    let Some(device) = &rec.device else { return false };
    match rec.spec.kind {
        AttachKind::Loop => loopdev::backing_file(&env.sys_block, device).as_ref() == rec.backing.as_ref(),
        AttachKind::Rbd => match (&rec.fuse_dir, rec.krbd_id) {
            (Some(dir), _) => {
                crate::mounts::sys::is_mounted(mounts, &dir.join("fuse"))
                    && loopdev::backing_file(&env.sys_block, device).as_ref() == rec.backing.as_ref()
            }
            (None, Some(id)) => rbd::krbd_present(&env.sys_rbd, id, rec.spec.rbd.as_ref().expect("rbd part")),
            (None, None) => false,
        },
        AttachKind::Zvol | AttachKind::Local => Path::new(device).exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_under_their_roots() {
        let root = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.img"), b"x").unwrap();
        std::fs::write(other.path().join("b.img"), b"x").unwrap();
        std::os::unix::fs::symlink(other.path().join("b.img"), root.path().join("link.img")).unwrap();
        let roots = vec![root.path().to_path_buf()];
        let ok = |p: &Path| path_under("loop.path", &p.to_string_lossy(), &roots).map(|h| h.path);
        assert!(ok(&root.path().join("a.img")).is_ok());
        assert_eq!(ok(&other.path().join("b.img")).unwrap_err().field.as_deref(), Some("loop.path"));
        assert!(ok(&root.path().join("link.img")).is_err(), "a symlink out of the root is refused");
        assert!(ok(&root.path().join("../x/a.img")).is_err());
        assert!(path_under("loop.path", "rel/a.img", &roots).is_err());
        assert!(relative_inside("loop.file", root.path(), "a.img").is_ok());
        assert!(relative_inside("loop.file", root.path(), "../a.img").is_err());
        assert!(relative_inside("loop.file", root.path(), "/etc/passwd").is_err());
    }
}
