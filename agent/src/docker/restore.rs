//! Restore by clone-and-swap, undoable until confirmed.
//!
//! A rollback would destroy every newer snapshot, and with it any way back. Instead the
//! snapshot is cloned, the live dataset is renamed aside under `<root>/prerestore/`
//! (never mounted: `mountpoint=none` there), the clone takes the live name, and is
//! promoted so it owns the snapshots up to the restored one. The kept dataset holds the
//! pre-restore state and the newer snapshots until `confirm` destroys it or `undo` swaps
//! it back. Every step is one `zfs` command; [`recover`] finishes or reverts a swap that
//! a crash interrupted, so no half-restored volume survives a restart.
//!
//! A service's dataset has children, its buckets (`s3/<bucket>`, mounted outside the
//! service at a mountpoint of their own). A rename carries children along, so the swap
//! does too: each child with the restored snapshot is cloned under the incoming clone
//! (`canmount=noauto`, so it cannot mount over the live bucket), the two renames swap the
//! whole trees, and [`settle`] then unmounts the children that went aside and mounts the
//! ones that came in at the same places.

use zfs_sys_shim::{Dataset, DatasetName, DatasetType, DestroyOptions, ListQuery, Prop, SnapshotName, Zfs};

use crate::error::{Error, Result};

/// The names one restore of `live` works with.
#[derive(Debug, Clone, PartialEq)]
pub struct Swap {
    pub live: DatasetName,
    /// The pre-restore state, until confirm or undo.
    pub kept: DatasetName,
    /// The clone being made, before it takes the live name.
    pub incoming: DatasetName,
    /// The restored state being thrown away by an undo.
    pub discard: DatasetName,
    /// Whether the swapped dataset can have children to carry (a service's buckets and
    /// database); a volume has none, and its restore skips the listing that finds them.
    pub carries_children: bool,
}

impl Swap {
    pub fn of(root: &DatasetName, live: &DatasetName) -> Result<Swap> {
        let rel = live
            .relative_to(root)
            .filter(|r| !r.is_empty() && !r.starts_with("prerestore"))
            .ok_or_else(|| Error::invalid("name", format!("{live} is not a dataset tankd restores")))?;
        let at = |prefix: &str| {
            root.join(&format!("prerestore/{prefix}/{rel}")).map_err(|e| Error::invalid("name", e.reason))
        };
        Ok(Swap {
            live: live.clone(),
            kept: at("kept")?,
            incoming: at("incoming")?,
            discard: at("discard")?,
            carries_children: rel.starts_with("services/"),
        })
    }
}

/// Properties a clone needs to look like the dataset it replaces: the local ones but
/// `mountpoint`/`canmount` (the clone must not mount over the live dataset while both
/// exist; the live name brings the mountpoint back).
async fn clone_props(zfs: &Zfs, live: &DatasetName) -> Result<(Vec<(String, String)>, Option<String>)> {
    let mut mountpoint = None;
    let mut props = Vec::new();
    for (k, v) in zfs.local_props(live).await? {
        match k.as_str() {
            "mountpoint" => mountpoint = Some(v),
            "canmount" => {}
            _ => props.push((k, v)),
        }
    }
    Ok((props, mountpoint))
}

/// The datasets below `top` (not `top` itself), parents before children, and the names
/// of the snapshots in that tree.
async fn tree(zfs: &Zfs, top: &DatasetName) -> Result<(Vec<Dataset>, Vec<String>)> {
    let q =
        ListQuery::recursive(top.clone(), DatasetType::Filesystem, &[Prop::Mountpoint, Prop::Canmount, Prop::Mounted])
            .types(&[DatasetType::Filesystem, DatasetType::Volume, DatasetType::Snapshot]);
    let (snaps, mut children): (Vec<Dataset>, Vec<Dataset>) = zfs
        .list(&q)
        .await?
        .into_iter()
        .filter(|d| d.name != top.as_str())
        .partition(|d| d.kind == Some(DatasetType::Snapshot));
    children.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((children, snaps.into_iter().map(|d| d.name).collect()))
}

/// `name` relative to `top`, for a dataset below it.
fn rel<'a>(top: &DatasetName, name: &'a str) -> Option<&'a str> {
    name.strip_prefix(top.as_str())?.strip_prefix('/')
}

fn below(top: &DatasetName, rel: &str) -> Result<DatasetName> {
    top.join(rel).map_err(|e| Error::internal(format!("{top}/{rel}: {}", e.reason)))
}

/// Clones the children of `live` that have the snapshot `snap_name` under `incoming`,
/// which is the clone of `live` itself. A child with its own mountpoint (a bucket) keeps
/// it but is made `canmount=noauto`: the live bucket is mounted there until the swap. A
/// child without the snapshot (a bucket made after it) is not restored; one that is only
/// a parent of restored children (a service's `s3`) is made again with its properties.
/// Returns the children cloned, relative to `live`.
async fn clone_children(zfs: &Zfs, live: &DatasetName, incoming: &DatasetName, snap_name: &str) -> Result<Vec<String>> {
    let (children, snaps) = tree(zfs, live).await?;
    let mut cloned = Vec::new();
    for child in &children {
        let Some(r) = rel(live, &child.name) else { continue };
        let src = below(live, r)?;
        let dst = below(incoming, r)?;
        let (mut props, mountpoint) = clone_props(zfs, &src).await?;
        if snaps.iter().any(|s| *s == format!("{src}@{snap_name}")) {
            if let Some(mp) = mountpoint {
                props.push(("mountpoint".into(), mp));
                props.push(("canmount".into(), "noauto".into()));
            }
            let snap = src.snapshot(snap_name).map_err(|e| Error::internal(e.reason))?;
            zfs.clone_snapshot(&snap, &dst, true, &props).await?;
            cloned.push(r.to_owned());
        } else if children.iter().any(|c| {
            rel(live, &c.name).is_some_and(|cr| cr.starts_with(&format!("{r}/")))
                && snaps.iter().any(|s| s.starts_with(&format!("{}@", c.name)))
        }) {
            if let Some(canmount) = child.canmount.as_ref().filter(|c| *c != "on") {
                props.push(("canmount".into(), canmount.clone()));
            }
            zfs.create_filesystem(&dst, true, &props).await?;
        }
    }
    Ok(cloned)
}

/// After a swap of trees: the children now under `away` (a prerestore name) that mount at
/// a place of their own are unmounted and made `canmount=noauto`, so they stay unmounted
/// after a reboot too; then the children of `here` that an earlier settle parked mount
/// again. Idempotent: [`recover`] runs it for a swap a crash interrupted.
pub async fn settle(zfs: &Zfs, swap: &Swap, away: &DatasetName, here: &DatasetName) -> Result<()> {
    if !swap.carries_children {
        return Ok(());
    }
    if zfs.exists(away).await? {
        for child in tree(zfs, away).await?.0 {
            let own_place = child.mountpoint.as_deref().is_some_and(|m| m.starts_with('/'));
            if own_place && child.canmount.as_deref() == Some("on") {
                let name = below(away, rel(away, &child.name).unwrap_or_default())?;
                zfs.unmount(&name).await?;
                zfs.set(&name, &[("canmount".into(), "noauto".into())]).await?;
            }
        }
    }
    for child in tree(zfs, here).await?.0 {
        if child.canmount.as_deref() == Some("noauto") {
            let name = below(here, rel(here, &child.name).unwrap_or_default())?;
            zfs.set(&name, &[("canmount".into(), "on".into())]).await?;
            zfs.mount(&name).await?;
        }
    }
    Ok(())
}

/// Promotes `live` and each child of it that is a clone of its counterpart under `other`
/// (the kept or discarded tree), so `other` can be destroyed on its own.
async fn promote_tree(zfs: &Zfs, swap: &Swap, live: &DatasetName, other: &DatasetName) -> Result<()> {
    if is_clone_of(zfs, live, other).await? {
        zfs.promote(live).await?;
    }
    if !swap.carries_children {
        return Ok(());
    }
    for child in tree(zfs, live).await?.0 {
        let Some(r) = rel(live, &child.name) else { continue };
        let (mine, theirs) = (below(live, r)?, below(other, r)?);
        if is_clone_of(zfs, &mine, &theirs).await? {
            zfs.promote(&mine).await?;
        }
    }
    Ok(())
}

/// Restore `snap` (a snapshot of `live`) into `live`; the old state is kept. Returns the
/// kept dataset's name.
pub async fn restore(zfs: &Zfs, root: &DatasetName, snap: &SnapshotName) -> Result<DatasetName> {
    let live = snap.dataset();
    let swap = Swap::of(root, &live)?;
    if zfs.exists(&swap.kept).await? {
        return Err(Error::conflict(format!(
            "{live} has a restore awaiting confirm or undo (kept as {}); confirm or undo it first",
            swap.kept
        )));
    }
    if !zfs.exists(snap).await? {
        return Err(Error::not_found(format!("no snapshot {snap}")));
    }
    // A leftover from a crash that recover() did not see (it runs at start only).
    let recursive = DestroyOptions { recursive: true, ..Default::default() };
    zfs.destroy(&swap.incoming, recursive).await?;
    let (props, mountpoint) = clone_props(zfs, &live).await?;
    zfs.clone_snapshot(snap, &swap.incoming, true, &props).await?;
    let snap_name = snap.as_str().rsplit_once('@').map(|(_, n)| n).unwrap_or_default();
    let cloned = if swap.carries_children {
        clone_children(zfs, &live, &swap.incoming, snap_name).await
    } else {
        Ok(Vec::new())
    };
    let children = match cloned {
        Ok(c) => c,
        Err(e) => {
            let _ = zfs.destroy(&swap.incoming, recursive).await;
            return Err(e);
        }
    };
    crate::fault::point("restore-cloned");
    if let Err(e) = zfs.rename(&live, &swap.kept, true).await {
        let _ = zfs.destroy(&swap.incoming, recursive).await;
        return Err(e.into());
    }
    crate::fault::point("restore-set-aside");
    if let Err(e) = zfs.rename(&swap.incoming, &live, false).await {
        // Put the live dataset back before reporting.
        let back = zfs.rename(&swap.kept, &live, false).await;
        let _ = zfs.destroy(&swap.incoming, recursive).await;
        if let Err(b) = back {
            tracing::error!(dataset = %live, error = %b, "could not put the dataset back after a failed restore; the next start will");
        }
        return Err(e.into());
    }
    if let Some(mp) = mountpoint {
        zfs.set(&live, &[("mountpoint".into(), mp)]).await?;
    }
    crate::fault::point("restore-swapped");
    settle(zfs, &swap, &swap.kept, &live).await?;
    // Promotion moves the snapshots up to the restored one onto the live datasets; the
    // kept ones become their clones and can later be destroyed on their own.
    if let Err(e) = promote_tree(zfs, &swap, &live, &swap.kept).await {
        tracing::warn!(dataset = %live, error = %e, "promote after restore failed; confirm will retry it");
    }
    if !children.is_empty() {
        tracing::info!(dataset = %live, children = ?children, "children restored with it");
    }
    tracing::info!(dataset = %live, snapshot = %snap, kept = %swap.kept, "restored; the old state is kept until confirm or undo");
    Ok(swap.kept)
}

/// The clone relation between two datasets: whether `a` is a clone of a snapshot of `b`.
async fn is_clone_of(zfs: &Zfs, a: &DatasetName, b: &DatasetName) -> Result<bool> {
    let origin = zfs.get(a, &[Prop::Origin]).await?.origin;
    Ok(origin.is_some_and(|o| o.split_once('@').is_some_and(|(ds, _)| ds == b.as_str())))
}

/// Keep the restored state: destroy the kept pre-restore dataset.
pub async fn confirm(zfs: &Zfs, root: &DatasetName, live: &DatasetName) -> Result<()> {
    let swap = Swap::of(root, live)?;
    if !zfs.exists(&swap.kept).await? {
        return Err(Error::conflict(format!("{live} has no restore awaiting confirm")));
    }
    promote_tree(zfs, &swap, live, &swap.kept).await?;
    zfs.destroy(&swap.kept, DestroyOptions { recursive: true, ..Default::default() }).await?;
    tracing::info!(dataset = %live, "restore confirmed");
    Ok(())
}

/// Go back to the pre-restore state: the kept dataset takes the live name again and the
/// restored one is destroyed.
pub async fn undo(zfs: &Zfs, root: &DatasetName, live: &DatasetName) -> Result<()> {
    let swap = Swap::of(root, live)?;
    if !zfs.exists(&swap.kept).await? {
        return Err(Error::conflict(format!("{live} has no restore to undo")));
    }
    let mountpoint = clone_props(zfs, live).await?.1;
    zfs.destroy(&swap.discard, DestroyOptions { recursive: true, ..Default::default() }).await?;
    zfs.rename(live, &swap.discard, true).await?;
    if let Err(e) = zfs.rename(&swap.kept, live, false).await {
        let _ = zfs.rename(&swap.discard, live, false).await;
        return Err(e.into());
    }
    if let Some(mp) = mountpoint {
        zfs.set(live, &[("mountpoint".into(), mp)]).await?;
    }
    settle(zfs, &swap, &swap.discard, live).await?;
    promote_tree(zfs, &swap, live, &swap.discard).await?;
    zfs.destroy(&swap.discard, DestroyOptions { recursive: true, ..Default::default() }).await?;
    tracing::info!(dataset = %live, "restore undone");
    Ok(())
}

/// A pending restore of `live`: (the snapshot restored, relative to the root; the kept
/// dataset), or `None`.
pub async fn pending(zfs: &Zfs, root: &DatasetName, live: &DatasetName) -> Result<Option<(String, String)>> {
    let swap = Swap::of(root, live)?;
    let kept = match zfs.get(&swap.kept, &[Prop::Origin]).await {
        Ok(k) => k,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // After promotion the kept dataset is the clone of the restored snapshot; before it,
    // the live one is.
    let origin = match kept.origin {
        Some(o) => Some(o),
        None => zfs.get(live, &[Prop::Origin]).await?.origin,
    };
    let rel = |full: &str| full.strip_prefix(&format!("{root}/")).unwrap_or(full).to_owned();
    let snapshot = origin.map(|o| rel(&o)).unwrap_or_default();
    Ok(Some((snapshot, swap.kept.to_string())))
}

/// At start: finish or revert swaps a crash interrupted.
/// - an `incoming` clone whose live dataset still exists never took its place: destroyed;
/// - an `incoming` clone with the live name free: the crash fell between the two renames,
///   so it takes the name (the kept state stays, undoable);
/// - a `discard` with a live dataset: an undo that did not finish destroying it;
/// - a `kept` with the live name free (an undo between its renames): it takes the name.
pub async fn recover(zfs: &Zfs, root: &DatasetName) -> Result<()> {
    let pre = root.join("prerestore").map_err(|e| Error::invalid("root", e.reason))?;
    // Nothing under (or no) prerestore: nothing to settle.
    let all = zfs.list_if_exists(&ListQuery::recursive(pre.clone(), DatasetType::Filesystem, &[])).await?;
    for (kind, at) in [("incoming", 0), ("discard", 1), ("kept", 2)] {
        let prefix = format!("{pre}/{kind}/");
        for d in all.iter().filter(|d| d.name.starts_with(&prefix)) {
            let rel = &d.name[prefix.len()..];
            // Only the swapped datasets, volumes/<name> or services/<id>, not what they
            // carry (a service's buckets move with it).
            if rel.matches('/').count() != 1 {
                continue;
            }
            let (Ok(here), Ok(live)) = (d.name.parse::<DatasetName>(), root.join(rel)) else { continue };
            if !zfs.exists(&here).await? {
                continue;
            }
            let swap = Swap::of(root, &live)?;
            let live_exists = zfs.exists(&live).await?;
            match (at, live_exists) {
                (0, true) | (1, true) => {
                    tracing::warn!(dataset = %here, "removing what an interrupted restore left");
                    if at == 1 {
                        settle(zfs, &swap, &here, &live).await?;
                    }
                    promote_tree(zfs, &swap, &live, &here).await?;
                    zfs.destroy(&here, DestroyOptions { recursive: true, ..Default::default() }).await?;
                }
                (0, false) => {
                    tracing::warn!(dataset = %here, live = %live, "completing an interrupted restore");
                    zfs.rename(&here, &live, false).await?;
                    settle(zfs, &swap, &swap.kept, &live).await?;
                    if let Err(e) = promote_tree(zfs, &swap, &live, &swap.kept).await {
                        tracing::warn!(dataset = %live, error = %e, "promote after restore failed; confirm will retry it");
                    }
                }
                (2, false) => {
                    tracing::warn!(dataset = %here, live = %live, "completing an interrupted undo");
                    zfs.rename(&here, &live, false).await?;
                    settle(zfs, &swap, &swap.discard, &live).await?;
                    promote_tree(zfs, &swap, &live, &swap.discard).await?;
                    zfs.destroy(&swap.discard, DestroyOptions { recursive: true, ..Default::default() }).await?;
                }
                // A restore awaiting confirm or undo: its children may not have been
                // settled when the crash came.
                (2, true) => settle(zfs, &swap, &here, &live).await?,
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_stay_under_prerestore() {
        let root: DatasetName = "tank/tankd".parse().unwrap();
        let s = Swap::of(&root, &"tank/tankd/volumes/v1".parse().unwrap()).unwrap();
        assert_eq!(s.kept.as_str(), "tank/tankd/prerestore/kept/volumes/v1");
        assert_eq!(s.incoming.as_str(), "tank/tankd/prerestore/incoming/volumes/v1");
        assert_eq!(s.discard.as_str(), "tank/tankd/prerestore/discard/volumes/v1");
        assert!(!s.carries_children, "a volume has nothing to carry");
        assert!(Swap::of(&root, &"tank/tankd/services/svc".parse().unwrap()).unwrap().carries_children);
        assert!(Swap::of(&root, &"tank/other".parse().unwrap()).is_err());
        assert!(Swap::of(&root, &"tank/tankd/prerestore/kept/volumes/v1".parse().unwrap()).is_err());
    }
}
