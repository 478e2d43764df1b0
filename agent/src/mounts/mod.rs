//! Mounts: an attachment's filesystem, an overlay over other mounts, or a bind mount.
//! This module does the kernel work for one mount; the registry and routes are in
//! `crate::imageapi`. Every mountpoint is `<mount_root>/<id>`.

pub mod options;
pub mod sys;

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::attach::{Env, blocking};
use crate::error::{Error, Result};

pub fn mountpoint(env: &Env, id: u64) -> PathBuf {
    env.mount_root.join(id.to_string())
}

fn make_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::os(format!("creating {}", path.display()), e))
}

/// Mount `device` as `fs_type` at `target`.
pub async fn mount_device(device: String, target: PathBuf, fs_type: String, opts: options::Parsed) -> Result<()> {
    make_dir(&target)?;
    let what = format!("mounting {device} ({fs_type}) on {}", target.display());
    let t = target.clone();
    let res = blocking(move || sys::mount(&device, &t, &fs_type, opts.flags, &opts.data)).await;
    res.map_err(|e| {
        let _ = std::fs::remove_dir(&target);
        Error::os(what, e)
    })
}

/// The layers of an overlay.
pub struct Layers {
    /// Lower directories, top first.
    pub lower: Vec<PathBuf>,
    /// Upper and work dirs; `None` for a read-only overlay.
    pub upper: Option<(PathBuf, PathBuf)>,
}

pub fn overlay_data(layers: &Layers) -> Result<String> {
    let mut parts = Vec::new();
    let mut lower = Vec::new();
    for l in &layers.lower {
        let s = l.to_string_lossy().into_owned();
        options::check_layer_path(&s).map_err(|m| Error::invalid("overlay.lower", m))?;
        lower.push(s);
    }
    parts.push(format!("lowerdir={}", lower.join(":")));
    if let Some((upper, work)) = &layers.upper {
        for (field, p) in [("overlay.upper", upper), ("overlay.work", work)] {
            let s = p.to_string_lossy();
            options::check_layer_path(&s).map_err(|m| Error::invalid(field, m))?;
        }
        parts.push(format!("upperdir={}", upper.display()));
        parts.push(format!("workdir={}", work.display()));
    }
    Ok(parts.join(","))
}

/// The flags and data of an overlay's mount(2), or why the layers cannot make one.
pub fn overlay_args(layers: &Layers) -> Result<(MsFlags, String)> {
    if layers.upper.is_none() && layers.lower.len() < 2 {
        return Err(Error::invalid("overlay.lower", "a read-only overlay needs at least two lower mounts"));
    }
    let data = overlay_data(layers)?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if layers.upper.is_none() {
        flags |= MsFlags::MS_RDONLY;
    }
    Ok((flags, data))
}

pub async fn mount_overlay(layers: Layers, target: PathBuf) -> Result<()> {
    let (flags, data) = overlay_args(&layers)?;
    if let Some((upper, work)) = &layers.upper {
        make_dir(upper)?;
        make_dir(work)?;
    }
    make_dir(&target)?;
    let t = target.clone();
    let res = blocking(move || sys::mount("overlay", &t, "overlay", flags, &data)).await;
    res.map_err(|e| {
        let _ = std::fs::remove_dir(&target);
        Error::os(format!("mounting an overlay on {}", target.display()), e)
    })
}

/// Bind the held `source` (mount(2) gets its descriptor's path, so no path is walked
/// again between the check and the bind).
pub async fn mount_bind(source: crate::beneath::Held, target: PathBuf, read_only: bool) -> Result<()> {
    make_dir(&target)?;
    let what = format!("binding {} on {}", source.path.display(), target.display());
    let t = target.clone();
    blocking(move || sys::bind(&source.fd_path(), &t, read_only)).await.map_err(|e| {
        let _ = std::fs::remove_dir(&target);
        Error::os(what, e)
    })
}

/// What an unmount of a busy filesystem answers.
pub fn busy(target: &Path) -> Error {
    Error::conflict(format!("{} is busy (files open or a process inside)", target.display()))
}

/// Unmount and remove the mountpoint directory. A busy filesystem is a 409: tankd does
/// not detach lazily, which would hide a filesystem still in use.
pub async fn unmount(target: PathBuf) -> Result<()> {
    let t = target.clone();
    match blocking(move || sys::umount(&t)).await {
        Ok(()) => {}
        Err(nix::errno::Errno::EBUSY) => return Err(busy(&target)),
        Err(e) => return Err(Error::os(format!("unmounting {}", target.display()), e)),
    }
    match std::fs::remove_dir(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %target.display(), error = %e, "could not remove the mountpoint");
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_list_layers_top_first() {
        let l = Layers {
            lower: vec!["/m/2".into(), "/m/1".into()],
            upper: Some(("/o/5/upper".into(), "/o/5/work".into())),
        };
        assert_eq!(overlay_data(&l).unwrap(), "lowerdir=/m/2:/m/1,upperdir=/o/5/upper,workdir=/o/5/work");
        let bad = Layers { lower: vec!["/m/a:b".into()], upper: None };
        assert_eq!(overlay_data(&bad).unwrap_err().field.as_deref(), Some("overlay.lower"));
    }
}
