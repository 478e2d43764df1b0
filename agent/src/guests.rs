//! Guest disks: `<root>/guests/<guest>/disk-<n>`. A disk with `image` is a clone of the
//! image's snapshot; a disk with `size` (MiB) is a new zvol. A call either makes every
//! disk or, on any failure, removes the ones it made.
//!
//! The path is kept to the commands the work needs: one clone or create per disk, with
//! images resolved from the in-memory catalog. The first disk creates the guest's
//! dataset (`-p`); the others are made concurrently once it exists, and the device
//! nodes are awaited together. A disk that already exists makes its create fail with
//! `exists` (the first disk is made with `-p`, for which zfs answers success when it
//! exists), and the rollback removes only what this call made, unless the disk is
//! exactly what this request would make (the same image's clone, or a zvol of the same
//! size): that is a retry of a call a crash cut short, and it takes the disk as made.

use futures_util::future::join_all;
use rpc_schema::ErrorKind;
use rpc_schema::imagestore::{Guest, GuestRequest, GuestResponse};
use zfs_sys_shim::{DatasetName, DestroyOptions, Prop, SnapshotName};

use crate::error::{Error, Result};
use crate::ids::{self, to_mib};
use crate::store::Store;
use crate::volumes::{DEVICE_TIMEOUT, make_zvol};

/// What one requested disk will be, decided before anything is created.
enum Plan {
    Clone { snapshot: SnapshotName, is_volume: bool, size_mib: u64 },
    Blank { size_mib: u64 },
}

/// The guest in the request and its dataset `<root>/guests/<id>`.
fn guest_of<'a>(store: &Store, req: &'a GuestRequest) -> Result<(&'a Guest, DatasetName)> {
    let guest = req.guest.as_ref().ok_or_else(|| Error::invalid("guest", "missing"))?;
    let gid = ids::component("guest.id", &guest.id)?;
    let base = ids::dataset(&store.root, "guest.id", &format!("guests/{gid}"))?;
    Ok((guest, base))
}

/// Validate every disk and resolve every image before anything is created.
async fn plan(store: &Store, guest: &Guest) -> Result<Vec<Plan>> {
    let disks = guest.disks.as_deref().unwrap_or_default();
    let images = if disks.iter().any(|d| !d.image.is_empty()) {
        crate::images::ready_images(store).await?
    } else {
        Default::default()
    };
    let mut plans = Vec::with_capacity(disks.len());
    for (n, disk) in disks.iter().enumerate() {
        if !disk.image.is_empty() {
            let field = format!("guest.disks[{n}].image");
            let id = ids::component(&field, &disk.image)?;
            let image = images.get(&id).ok_or_else(|| {
                Error::not_found(format!(
                    "{field}: image {id} does not exist or is not complete (RequestImage it first)"
                ))
            })?;
            plans.push(Plan::Clone {
                snapshot: image.snapshot.clone(),
                is_volume: image.is_volume,
                size_mib: to_mib(image.size),
            });
        } else {
            let size_mib = ids::size_mib(&format!("guest.disks[{n}].size"), disk.size)?;
            plans.push(Plan::Blank { size_mib });
        }
    }
    Ok(plans)
}

/// Make one disk, without waiting for its device node. `parents` (`-p`) only for the
/// first: it makes the guest's dataset. `-p` also makes zfs answer success for a
/// target that exists, so the other disks go without it and an existing one is
/// reported (`exists`).
async fn make(store: &Store, plan: &Plan, vol: &DatasetName, parents: bool, call: &str) -> Result<()> {
    let mark = (CALL_PROP.to_owned(), call.to_owned());
    match plan {
        Plan::Clone { snapshot, .. } => {
            let props = [("compression".to_owned(), "lz4".to_owned()), mark];
            store.zfs.clone_snapshot(snapshot, vol, parents, &props).await.map_err(|e| {
                if e.is_not_found() {
                    // The image went away behind tankd's back.
                    store.images.catalog.forget();
                }
                Error::from(e)
            })
        }
        Plan::Blank { size_mib } => make_zvol(store, vol, *size_mib, vec![mark], parents).await,
    }
}

/// Which call made a disk (a random mark per CreateGuestDisks): a rollback destroys
/// only disks that carry its own, never one that was there before.
const CALL_PROP: &str = "tankd:guest-call";

/// Whether `vol` was made by the call that set `call` as its mark (one `zfs get`).
async fn carries_mark(store: &Store, vol: &DatasetName, call: &str) -> bool {
    let mark: zfs_sys_shim::UserProp = CALL_PROP.parse().expect("a valid user property");
    store.zfs.get(vol, &[Prop::User(mark)]).await.is_ok_and(|d| d.user.get(CALL_PROP).map(String::as_str) == Some(call))
}

/// Whether the disk that is there is exactly what `plan` would make (one `zfs get`).
async fn is_planned(store: &Store, plan: &Plan, vol: &DatasetName) -> Result<bool> {
    let ds = store.zfs.get(vol, &[Prop::Origin, Prop::Volsize]).await?;
    Ok(match plan {
        Plan::Clone { snapshot, .. } => ds.origin.as_deref() == Some(snapshot.as_str()),
        // A blank disk is a zvol of that size that is no clone (an image's clone can
        // have the same size).
        Plan::Blank { size_mib } => {
            ds.kind == Some(zfs_sys_shim::DatasetType::Volume)
                && ds.volsize == Some(size_mib * ids::MIB)
                && ds.origin.is_none()
        }
    })
}

/// A disk that exists: taken if it is exactly what `plan` would make (a retry of a
/// call a crash cut short), else `exists`.
async fn take(store: &Store, plan: &Plan, vol: &DatasetName) -> Result<bool> {
    if !is_planned(store, plan, vol).await? {
        return Err(Error::new(ErrorKind::Exists, format!("{vol} exists and is not what this call asks for")));
    }
    tracing::info!(disk = %vol, "a disk an interrupted call made is what this one asks for; taking it");
    Ok(false)
}

/// Make one disk, or take one that is already there. Answers whether it was made.
/// The first disk goes with `-p` (zfs then answers success for a target that exists),
/// so it is looked for in /dev first (no command; a volume's node is there).
async fn make_or_take(store: &Store, plan: &Plan, vol: &DatasetName, first: bool, call: &str) -> Result<bool> {
    let volume = matches!(plan, Plan::Blank { .. } | Plan::Clone { is_volume: true, .. });
    if first && volume && store.zfs.zvol_device_now(vol).is_some() {
        return take(store, plan, vol).await;
    }
    match make(store, plan, vol, first, call).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind == ErrorKind::Exists => take(store, plan, vol).await.map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// The device path of a made disk (empty for a filesystem image's clone) and its size.
async fn finish(store: &Store, plan: &Plan, vol: &DatasetName) -> Result<(String, u64)> {
    let (is_volume, size_mib) = match plan {
        Plan::Clone { is_volume, size_mib, .. } => (*is_volume, *size_mib),
        Plan::Blank { size_mib } => (true, *size_mib),
    };
    if !is_volume {
        return Ok((String::new(), size_mib));
    }
    let device = store.zfs.zvol_device(vol, DEVICE_TIMEOUT).await?;
    Ok((device.display().to_string(), size_mib))
}

pub async fn create_disks(store: &Store, req: GuestRequest) -> Result<GuestResponse> {
    let (guest, base) = guest_of(store, &req)?;
    let plans = plan(store, guest).await?;
    let vols = (0..plans.len())
        .map(|n| base.join(&format!("disk-{n}")).map_err(|e| Error::invalid("guest.id", e.reason)))
        .collect::<Result<Vec<_>>>()?;

    let call = hex::encode(
        crate::crypto::random_bytes::<8>().map_err(|e| Error::new(ErrorKind::Internal, format!("random: {e}")))?,
    );
    // Make the first disk alone (it creates the guest's dataset), then the rest at once.
    let mut made: Vec<&DatasetName> = Vec::new();
    let mut failure: Option<Error> = None;
    if let (Some(first), Some(vol)) = (plans.first(), vols.first()) {
        match make_or_take(store, first, vol, true, &call).await {
            Ok(new) => made.extend(new.then_some(vol)),
            Err(e) => failure = Some(e),
        }
        crate::fault::point("guest-disk-made");
    }
    if failure.is_none() {
        let rest = join_all(plans.iter().zip(&vols).skip(1).map(|(p, v)| {
            let call = &call;
            async move { (v, make_or_take(store, p, v, false, call).await) }
        }));
        for (vol, result) in rest.await {
            match result {
                Ok(new) => made.extend(new.then_some(vol)),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
    }
    let mut devices = Vec::new();
    if failure.is_none() {
        for result in join_all(plans.iter().zip(&vols).map(|(p, v)| finish(store, p, v))).await {
            match result {
                Ok(d) => devices.push(d),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
    }

    if let Some(e) = failure {
        tracing::warn!(guest = %guest.id, error = %e, "guest disks failed; removing the ones made");
        for vol in made.iter().rev() {
            // The other disks went without `-p`, so "made" means this call made them. The
            // first went with it, for which zfs answers success when the disk was there
            // before: it goes only if it carries this call's mark.
            if *vol == &vols[0] && !carries_mark(store, vol, &call).await {
                continue;
            }
            let _ = store.zfs.destroy(*vol, DestroyOptions { recursive: true, ..Default::default() }).await;
        }
        if !made.is_empty() {
            // Not recursive: the guest's dataset goes only if nothing else is in it.
            let _ = store.zfs.destroy(&base, DestroyOptions::default()).await;
        }
        return Err(e);
    }
    let mut disks = guest.disks.clone().unwrap_or_default();
    for ((disk, vol), (device, size_mib)) in disks.iter_mut().zip(&vols).zip(devices) {
        disk.volume = vol.to_string();
        disk.source = device;
        disk.size = size_mib as i64;
    }
    let mut out = guest.clone();
    out.disks = Some(disks);
    Ok(GuestResponse { guest: Some(out), ..Default::default() })
}

/// Remove every disk of a guest. A guest with no disks (or unknown) is success.
pub async fn delete_disks(store: &Store, req: GuestRequest) -> Result<GuestResponse> {
    let (guest, base) = guest_of(store, &req)?;
    store.zfs.destroy(&base, DestroyOptions { recursive: true, ..Default::default() }).await?;
    Ok(GuestResponse { guest: Some(guest.clone()), ..Default::default() })
}

/// The pre-flight check: every image exists and is complete, and the new zvols fit in
/// the space available to the dataset root. Both sides are MiB (upstream compared KiB
/// with MiB and never refused).
pub async fn verify_disks(store: &Store, req: GuestRequest) -> Result<GuestResponse> {
    let (guest, _) = guest_of(store, &req)?;
    let plans = plan(store, guest).await?;
    let needed: u64 = plans.iter().map(|p| if let Plan::Blank { size_mib } = p { *size_mib } else { 0 }).sum();
    let available = store.zfs.get(&store.root, &[Prop::Available]).await?.available.unwrap_or(0) / ids::MIB;
    if needed > available {
        return Err(Error::new(
            ErrorKind::NoSpace,
            format!("guest {} needs {needed} MiB for new volumes; {available} MiB are available", guest.id),
        ));
    }
    Ok(GuestResponse { guest: Some(guest.clone()), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use rpc_schema::imagestore::Disk;

    use super::*;
    use crate::testing::{FakeZfs, answer, rule, store};

    fn three_blank_disks() -> GuestRequest {
        let disk = |size| Disk { size, ..Default::default() };
        let guest = Guest { id: "g1".into(), disks: Some(vec![disk(64), disk(64), disk(64)]), ..Default::default() };
        GuestRequest { guest: Some(guest), ..Default::default() }
    }

    /// The mark the first `create` of this run set, as `zfs get` shows it.
    const MARK_OF_THIS_CALL: &str = r#"printf 'tankd:guest-call\t%s\n' "$(grep -o 'tankd:guest-call=[0-9a-f]*' "$CALLS" | head -n1 | cut -d= -f2)""#;
    const FULL: &str = "cannot create 'tank/tankd/guests/g1/disk-2': out of space\n";

    #[tokio::test]
    async fn a_failing_later_disk_removes_the_ones_this_call_made() {
        let fake = FakeZfs::new(
            "tank/tankd",
            vec![
                rule("\"create\"*\"guests/g1/disk-2\"", 1, FULL),
                answer("\"get\"*\"tankd:guest-call\"*\"guests/g1/disk-0\"", MARK_OF_THIS_CALL),
            ],
        );
        let spool = tempfile::tempdir().unwrap();
        let err = create_disks(&store(&fake, spool.path().into()), three_blank_disks()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoSpace, "{err}");
        assert!(err.message.contains("disk-2"), "the error names the disk: {err}");
        let creates = fake.calls_of("create");
        assert_eq!(creates.len(), 3, "{creates:?}");
        assert!(
            creates[0].contains(" -p ") && !creates[1].contains(" -p "),
            "only the first makes parents: {creates:?}"
        );
        assert_eq!(
            fake.calls_of("destroy"),
            vec![
                "destroy -r tank/tankd/guests/g1/disk-1".to_owned(),
                "destroy -r tank/tankd/guests/g1/disk-0".to_owned(),
                "destroy tank/tankd/guests/g1".to_owned(),
            ],
            "disk-2 was never made; the others go, then the guest's dataset if empty"
        );
    }

    #[tokio::test]
    async fn a_first_disk_that_was_there_before_is_kept() {
        // disk-0 carries another call's mark: `create -p` answered success for a disk
        // that existed, so this call did not make it and must not remove it.
        let fake = FakeZfs::new(
            "tank/tankd",
            vec![
                rule("\"create\"*\"guests/g1/disk-2\"", 1, FULL),
                rule("\"get\"*\"tankd:guest-call\"*\"guests/g1/disk-0\"", 0, "tankd:guest-call\t0123456789abcdef\n"),
            ],
        );
        let spool = tempfile::tempdir().unwrap();
        create_disks(&store(&fake, spool.path().into()), three_blank_disks()).await.unwrap_err();
        let destroys = fake.calls_of("destroy");
        assert!(destroys.contains(&"destroy -r tank/tankd/guests/g1/disk-1".to_owned()), "{destroys:?}");
        assert!(!destroys.iter().any(|d| d.contains("disk-0")), "{destroys:?}");
    }

    #[tokio::test]
    async fn bad_disks_are_refused_before_anything_is_made() {
        let fake = FakeZfs::new("tank/tankd", vec![]);
        let spool = tempfile::tempdir().unwrap();
        let mut req = three_blank_disks();
        req.guest.as_mut().unwrap().disks.as_mut().unwrap()[2].size = -1;
        let err = create_disks(&store(&fake, spool.path().into()), req).await.unwrap_err();
        assert_eq!(err.field.as_deref(), Some("guest.disks[2].size"));
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    }
}
