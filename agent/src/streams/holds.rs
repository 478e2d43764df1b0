//! User holds that pin a download's snapshots for as long as its stream runs, so a
//! concurrent `zfs destroy` is refused instead of cutting the stream.
//!
//! Each stream has its own tag (`tankd_stream_<pid>_<n>`), so streams of one snapshot
//! do not release each other's hold. The guard releases on drop, which covers a stream
//! that ends, fails, or loses its client; holds left by a crashed agent are released at
//! the next start ([`release_leftover_holds`]).

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::try_join_all;
use zfs_sys_shim::{DatasetName, DatasetType, HoldTag, ListQuery, Prop, SnapshotName, Zfs};

/// The purpose prefix of every stream hold tag.
const PURPOSE: &str = "stream_";

static NEXT: AtomicU64 = AtomicU64::new(1);

fn new_tag() -> HoldTag {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HoldTag::new(&format!("{PURPOSE}{}_{n}", std::process::id())).expect("valid tag")
}

/// Holds placed for one stream; released when dropped.
pub struct Held {
    zfs: Zfs,
    tag: HoldTag,
    snaps: Vec<SnapshotName>,
    recursive: bool,
}

/// Hold every snapshot in `snaps` (with `-r`: the same-named snapshots of every
/// descendant too), all at once. On failure nothing stays held.
pub async fn hold(zfs: &Zfs, snaps: Vec<SnapshotName>, recursive: bool) -> Result<Held, zfs_sys_shim::Error> {
    let tag = new_tag();
    // From here on the guard exists, so a partial failure releases what was placed.
    let held = Held { zfs: zfs.clone(), tag, snaps, recursive };
    try_join_all(held.snaps.iter().map(|s| zfs.hold(std::slice::from_ref(s), &held.tag, recursive))).await?;
    Ok(held)
}

impl Drop for Held {
    fn drop(&mut self) {
        let (zfs, tag, snaps, recursive) =
            (self.zfs.clone(), self.tag.clone(), std::mem::take(&mut self.snaps), self.recursive);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Err(e) = zfs.release(&snaps, &tag, recursive).await {
                tracing::warn!(tag = %tag.as_str(), error = %e, "could not release a stream hold");
            }
        });
    }
}

/// At start-up: release every stream hold under the root. No stream survives a restart,
/// so any such hold was left by a crash.
pub async fn release_leftover_holds(zfs: &Zfs, root: &DatasetName) -> Result<usize, zfs_sys_shim::Error> {
    let query = ListQuery::recursive(root.clone(), DatasetType::Snapshot, &[Prop::Userrefs]);
    let held: Vec<SnapshotName> = zfs
        .list(&query)
        .await?
        .into_iter()
        .filter(|s| s.userrefs.unwrap_or(0) > 0)
        .filter_map(|s| s.name.parse().ok())
        .collect();
    let mut released = 0;
    for snap in held {
        for tag in zfs.holds(&snap).await? {
            let Some(purpose) = HoldTag::parse(&tag).filter(|p| p.starts_with(PURPOSE)) else {
                continue;
            };
            let tag = HoldTag::new(purpose).expect("a tag tankd made");
            zfs.release(std::slice::from_ref(&snap), &tag, false).await?;
            tracing::info!(snapshot = %snap, tag = %tag.as_str(), "released a hold left by a previous run");
            released += 1;
        }
    }
    Ok(released)
}
