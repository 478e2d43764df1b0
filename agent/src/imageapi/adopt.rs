//! Start-up: reconcile the state file with the kernel.
//! - A record still `creating` was cut by a crash: whatever of it exists is undone (a
//!   mount unmounted, its inline attachment detached, rbd-fuse stopped) and it is dropped.
//! - A `ready` record whose device or mount no longer exists is dropped (and logged).
//! - Loop devices, mounts and rbd-fuse directories under tankd's roots that no record
//!   names are reported (`GET /imageapi/v1/unknown`), never touched.

use std::path::Path;

use rpc_schema::imageapi::Unknown;

use super::state::{Phase, State};
use crate::attach::{self, Env, loopdev};
use crate::mounts::{self, sys};

pub async fn adopt(env: &Env, state: &mut State) -> Unknown {
    let table = sys::mountinfo();

    // Mounts first: a half-made chain's mount goes before its attachment.
    let ids: Vec<u64> = state.mounts.keys().copied().collect();
    for id in ids.into_iter().rev() {
        let rec = state.mounts[&id].clone();
        let mounted = sys::is_mounted(&table, &rec.mountpoint);
        let keep = rec.phase == Phase::Ready && mounted;
        if keep {
            continue;
        }
        if mounted {
            tracing::warn!(id, mountpoint = %rec.mountpoint.display(), "undoing a mount a crash left half made");
            if let Err(e) = mounts::unmount(rec.mountpoint.clone()).await {
                tracing::error!(id, error = %e.message, "could not undo a half-made mount; keeping its record");
                continue;
            }
        } else {
            tracing::warn!(id, mountpoint = %rec.mountpoint.display(), phase = ?rec.phase, "a recorded mount is gone; dropping it");
            let _ = std::fs::remove_dir(&rec.mountpoint);
        }
        if let Some(dir) = &rec.managed_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        state.mounts.remove(&id);
    }

    let mounts = state.mounts.clone();
    state.pinned.retain(|m, _| mounts.contains_key(m));

    let table = sys::mountinfo();
    let ids: Vec<u64> = state.attachments.keys().copied().collect();
    for id in ids {
        let claimed: Vec<String> = state.attachments.values().filter_map(|a| a.device.clone()).collect();
        refind_loop(env, state.attachments.get_mut(&id).expect("listed"), &claimed);
        let claimed_krbd: Vec<u64> = state.attachments.values().filter_map(|a| a.krbd_id).collect();
        refind_krbd(env, state.attachments.get_mut(&id).expect("listed"), &claimed_krbd);
        let rec = state.attachments[&id].clone();
        let orphaned_inline = rec.owner.is_some_and(|m| !state.mounts.contains_key(&m));
        let present = attach::present(env, &rec, &table);
        if rec.phase == Phase::Ready && present && !orphaned_inline {
            continue;
        }
        if rec.phase == Phase::Creating || orphaned_inline || (rec.fuse_dir.is_some() && !present) {
            tracing::warn!(id, device = ?rec.device, "undoing an attachment a crash left half made or without its mount");
            if let Err(e) = attach::detach(env, &rec).await {
                tracing::error!(id, error = %e.message, "could not undo a half-made attachment; keeping its record");
                continue;
            }
        } else {
            tracing::warn!(id, device = ?rec.device, "a recorded attachment is gone; dropping it");
        }
        state.attachments.remove(&id);
    }

    let found = unknown(env, state, &sys::mountinfo());
    for (what, list) in [
        ("mount", &found.mounts),
        ("rbd-fuse", &found.rbd_fuse),
        ("loop device", &found.loop_devices),
        ("kernel rbd device", &found.rbd_devices),
    ] {
        for item in list {
            tracing::warn!(what, item = %item, "found on the host under tankd's roots but not in its state; left alone");
        }
    }
    found
}

/// A loop attachment is known by its backing file: if the recorded device no longer
/// holds it but another does, that one is the attachment.
fn refind_loop(env: &Env, rec: &mut super::state::AttachRec, claimed: &[String]) {
    let Some(file) = rec.backing.clone() else { return };
    let holds = |dev: &str| loopdev::backing_file(&env.sys_block, dev).as_ref() == Some(&file);
    if rec.device.as_deref().is_some_and(holds) {
        return;
    }
    if let Some((dev, _)) = loopdev::bound(&env.sys_block).into_iter().find(|(d, f)| *f == file && !claimed.contains(d))
    {
        tracing::info!(id = rec.id, was = ?rec.device, now = %dev, file = %file.display(), "found a loop attachment again by its backing file");
        rec.spec.device_file = Some(dev.clone());
        if let Some(r) = rec.spec.rbd.as_mut() {
            r.device_file = Some(dev.clone());
            r.device_id = dev.trim_start_matches("/dev/loop").parse().ok();
        }
        rec.device = Some(dev);
    }
}

/// A kernel rbd map a crash cut off before its id was recorded: found by image among
/// the devices made after the record was written, so that it can be undone.
fn refind_krbd(env: &Env, rec: &mut super::state::AttachRec, claimed: &[u64]) {
    let (Some(before), None, Some(r)) = (&rec.krbd_before, rec.krbd_id, rec.spec.rbd.as_ref()) else { return };
    if let Some(id) = attach::rbd::krbd_made_after(&env.sys_rbd, r, before, claimed) {
        tracing::info!(attachment = rec.id, device = id, "found the kernel rbd device of a half-made attachment");
        rec.krbd_id = Some(id);
    }
}

/// What looks like tankd's but is in no record (start-up logs it; the route reports it).
pub fn unknown(env: &Env, state: &State, table: &[sys::MountEntry]) -> Unknown {
    let under = |p: &Path, root: &Path| p.starts_with(root) && p != root;
    let mut out = Unknown::default();
    for m in table {
        if under(&m.mountpoint, &env.mount_root) && !state.mounts.values().any(|r| r.mountpoint == m.mountpoint) {
            out.mounts.push(m.mountpoint.display().to_string());
        }
        let fuse_root = env.data_dir.join("rbd");
        if under(&m.mountpoint, &fuse_root)
            && !state.attachments.values().any(|a| a.fuse_dir.as_ref().is_some_and(|d| d.join("fuse") == m.mountpoint))
        {
            out.rbd_fuse.push(m.mountpoint.display().to_string());
        }
    }
    // Every kernel rbd device no record names: tankd cannot tell which are another
    // tool's, so it reports them all and touches none.
    for (id, pool, ns, image, snap) in attach::rbd::krbd_devices(&env.sys_rbd) {
        if !state.attachments.values().any(|a| a.krbd_id == Some(id)) {
            let ns = if ns.is_empty() { String::new() } else { format!("{ns}/") };
            let snap = if snap == "-" { String::new() } else { format!("@{snap}") };
            out.rbd_devices.push(format!("/dev/rbd{id} ({pool}/{ns}{image}{snap})"));
        }
    }
    let roots: Vec<_> = env.image_roots.iter().chain(std::iter::once(&env.data_dir)).collect();
    for (dev, file) in loopdev::bound(&env.sys_block) {
        let ours = roots.iter().any(|r| file.starts_with(r));
        let known = state.attachments.values().any(|a| a.device.as_deref() == Some(dev.as_str()));
        if ours && !known {
            out.loop_devices.push(format!("{dev} ({})", file.display()));
        }
    }
    out
}
