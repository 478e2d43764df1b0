//! Writing: create, destroy, snapshot, rollback, clone, promote, rename, set/inherit,
//! hold/release, bookmark. Operations that are naturally idempotent (hold, release,
//! bookmark, destroy of what is gone) say so in their docs.

use crate::error::{Detail, ErrorKind};
use crate::name::{BookmarkName, DatasetName, HoldTag, SnapshotName, UserProp, ZfsName};
use crate::{Error, Prop, Zfs};

/// One property assignment, validated so no value can break the argument (a NUL or
/// newline) and no key can be read as an option. Returns `k=v`.
pub(crate) fn check_one_prop(k: &str, v: &str) -> Result<String, Error> {
    let key_ok = !k.is_empty()
        && !k.starts_with('-')
        && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ':' | '-' | '.' | '_'));
    if !key_ok {
        return Err(Error::InvalidArgument { field: "property", reason: format!("bad property name {k:?}") });
    }
    if k.contains(':') {
        k.parse::<UserProp>()?;
    }
    if v.len() > 8191 || v.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument {
            field: "property",
            reason: format!("value of {k} is too long or has control characters"),
        });
    }
    Ok(format!("{k}={v}"))
}

fn check_props(props: &[(String, String)]) -> Result<Vec<String>, Error> {
    props.iter().map(|(k, v)| check_one_prop(k, v)).collect()
}

fn with_props(
    mut inv: crate::command::Invocation,
    props: &[(String, String)],
) -> Result<crate::command::Invocation, Error> {
    for kv in check_props(props)? {
        inv = inv.arg("-o").arg(kv);
    }
    Ok(inv)
}

#[derive(Debug, Clone, Default)]
pub struct VolumeOptions {
    /// Bytes; ZFS wants a multiple of the volume block size.
    pub size: u64,
    /// `-s`: no reservation.
    pub sparse: bool,
    /// `-b`: bytes, a power of two from 512 to 128 KiB (more with large_blocks).
    pub volblocksize: Option<u64>,
    /// `-p`: create missing parents.
    pub parents: bool,
    pub props: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DestroyOptions {
    /// `-r`: descendants (children, or for a snapshot, same-named snapshots below).
    pub recursive: bool,
    /// `-R`: also dependents outside the hierarchy (clones). Dangerous; rarely wanted.
    pub dependents: bool,
    /// `-d`: for snapshots, destroy once the last hold and clone are gone.
    pub deferred: bool,
}

impl Zfs {
    /// `zfs create [-p] [-o k=v]... name`.
    pub async fn create_filesystem(
        &self,
        name: &DatasetName,
        parents: bool,
        props: &[(String, String)],
    ) -> Result<(), Error> {
        let inv = self.zfs(name)?.arg("create").arg_if(parents, "-p");
        with_props(inv, props)?.arg(name.as_str()).run().await.map(drop)
    }

    /// `zfs create [-p] [-s] [-b bs] -V size [-o k=v]... name`.
    pub async fn create_volume(&self, name: &DatasetName, opts: &VolumeOptions) -> Result<(), Error> {
        if opts.size == 0 {
            return Err(Error::InvalidArgument { field: "size", reason: "a volume needs a size above 0".into() });
        }
        if let Some(bs) = opts.volblocksize
            && (!bs.is_power_of_two() || !(512..=16 << 20).contains(&bs))
        {
            return Err(Error::InvalidArgument {
                field: "volblocksize",
                reason: format!("{bs} is not a power of two between 512 and 16M"),
            });
        }
        let mut inv = self.zfs(name)?.arg("create").arg_if(opts.parents, "-p").arg_if(opts.sparse, "-s");
        if let Some(bs) = opts.volblocksize {
            inv = inv.arg("-b").arg(bs.to_string());
        }
        inv = inv.arg("-V").arg(opts.size.to_string());
        with_props(inv, &opts.props)?.arg(name.as_str()).run().await.map(drop)
    }

    /// `zfs destroy`. Destroying something that does not exist succeeds: the caller
    /// wanted it gone and it is. Then the `/dev/zvol` links under the name that now lead
    /// nowhere go too: udev removes its own, not those tankd made where udev did not.
    pub async fn destroy(&self, name: &dyn ZfsName, opts: DestroyOptions) -> Result<(), Error> {
        let inv = self
            .zfs(name)?
            .arg("destroy")
            .arg_if(opts.recursive, "-r")
            .arg_if(opts.dependents, "-R")
            .arg_if(opts.deferred, "-d")
            .arg(name.as_str())
            .retry_busy();
        match inv.run().await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.forget_zvol_links(name.as_str()).await;
        Ok(())
    }

    /// `zfs snapshot [-r] [-o k=v]... a@s b@s ...`: all names in one atomic call.
    pub async fn snapshot(
        &self,
        snaps: &[SnapshotName],
        recursive: bool,
        props: &[(String, String)],
    ) -> Result<(), Error> {
        let Some(first) = snaps.first() else {
            return Err(Error::InvalidArgument { field: "snapshots", reason: "no snapshot names given".into() });
        };
        let mut seen = std::collections::HashSet::new();
        for s in snaps {
            self.check_root(s)?;
            // ZFS refuses the whole call ("multiple snapshots of same fs not allowed").
            if !seen.insert(s.dataset()) {
                return Err(Error::InvalidArgument {
                    field: "snapshots",
                    reason: format!("two snapshots of {} in one call; ZFS allows one per dataset", s.dataset()),
                });
            }
        }
        let mut inv = self.zfs(first)?.arg("snapshot").arg_if(recursive, "-r");
        inv = with_props(inv, props)?;
        inv.args(snaps.iter().map(|s| s.as_str().to_owned())).run().await.map(drop)
    }

    /// `zfs rollback [-r] snap`. Without `destroy_newer`, rolling back past newer
    /// snapshots fails with [`Error::NewerSnapshots`] naming them.
    pub async fn rollback(&self, snap: &SnapshotName, destroy_newer: bool) -> Result<(), Error> {
        self.zfs(snap)?.arg("rollback").arg_if(destroy_newer, "-r").arg(snap.as_str()).run().await.map(drop)
    }

    /// `zfs clone [-p] [-o k=v]... snap target`.
    pub async fn clone_snapshot(
        &self,
        snap: &SnapshotName,
        target: &DatasetName,
        parents: bool,
        props: &[(String, String)],
    ) -> Result<(), Error> {
        self.check_root(snap)?;
        let inv = self.zfs(target)?.arg("clone").arg_if(parents, "-p");
        with_props(inv, props)?.arg(snap.as_str()).arg(target.as_str()).run().await.map(drop)
    }

    /// `zfs promote clone`.
    pub async fn promote(&self, clone: &DatasetName) -> Result<(), Error> {
        self.zfs(clone)?.arg("promote").arg(clone.as_str()).run().await.map(drop)
    }

    /// `zfs rename [-p] from to` for datasets. The `/dev/zvol` links under `from` are
    /// dropped once they lead to no volume of their name; the new name's link is made when
    /// its device is asked for.
    pub async fn rename(&self, from: &DatasetName, to: &DatasetName, parents: bool) -> Result<(), Error> {
        self.check_root(to)?;
        self.zfs(from)?
            .arg("rename")
            .arg_if(parents, "-p")
            .arg(from.as_str())
            .arg(to.as_str())
            .retry_busy()
            .run()
            .await?;
        self.forget_zvol_links(from.as_str()).await;
        Ok(())
    }

    /// `zfs mount name`. Already mounted is success.
    pub async fn mount(&self, name: &DatasetName) -> Result<(), Error> {
        match self.zfs(name)?.arg("mount").arg(name.as_str()).run().await {
            Ok(_) => Ok(()),
            Err(e) if e.says(Detail::AlreadyMounted) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `zfs unmount name`. Not mounted is success; a mount in use is `Busy` (retried a
    /// few times first, like a destroy).
    pub async fn unmount(&self, name: &DatasetName) -> Result<(), Error> {
        match self.zfs(name)?.arg("unmount").arg(name.as_str()).retry_busy().run().await {
            Ok(_) => Ok(()),
            Err(e) if e.says(Detail::NotMounted) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `zfs rename ds@a ds@b` for snapshots (same dataset only, as ZFS requires).
    pub async fn rename_snapshot(&self, from: &SnapshotName, to: &SnapshotName) -> Result<(), Error> {
        if from.dataset() != to.dataset() {
            return Err(Error::InvalidArgument {
                field: "to",
                reason: format!("{to} is not a snapshot of the same dataset as {from}"),
            });
        }
        self.zfs(from)?.arg("rename").arg(from.as_str()).arg(to.as_str()).run().await.map(drop)
    }

    /// `zfs set k=v [k=v]... name` in one call.
    pub async fn set(&self, name: &dyn ZfsName, props: &[(String, String)]) -> Result<(), Error> {
        if props.is_empty() {
            return Ok(());
        }
        self.zfs(name)?.arg("set").args(check_props(props)?).arg(name.as_str()).run().await.map(drop)
    }

    /// `zfs inherit [-r] prop name`.
    pub async fn inherit(&self, name: &dyn ZfsName, prop: &Prop, recursive: bool) -> Result<(), Error> {
        check_props(&[(prop.name().to_owned(), String::new())])?;
        self.zfs(name)?.arg("inherit").arg_if(recursive, "-r").arg(prop.name()).arg(name.as_str()).run().await.map(drop)
    }

    /// `zfs hold [-r] tag snap...`. A tag already held is success.
    pub async fn hold(&self, snaps: &[SnapshotName], tag: &HoldTag, recursive: bool) -> Result<(), Error> {
        self.hold_or_release("hold", snaps, tag, recursive, ErrorKind::AlreadyExists, Detail::TagExists).await
    }

    /// `zfs release [-r] tag snap...`. A tag that is not held is success.
    pub async fn release(&self, snaps: &[SnapshotName], tag: &HoldTag, recursive: bool) -> Result<(), Error> {
        self.hold_or_release("release", snaps, tag, recursive, ErrorKind::NotFound, Detail::NoSuchTag).await
    }

    async fn hold_or_release(
        &self,
        verb: &str,
        snaps: &[SnapshotName],
        tag: &HoldTag,
        recursive: bool,
        benign: ErrorKind,
        benign_detail: Detail,
    ) -> Result<(), Error> {
        let Some(first) = snaps.first() else {
            return Ok(());
        };
        for s in snaps {
            self.check_root(s)?;
        }
        // One snapshot per call: with several names ZFS stops at the first benign
        // failure and leaves the rest untouched, which would break idempotence.
        for snap in snaps {
            let inv = self.zfs(first)?.arg(verb).arg_if(recursive, "-r").arg(tag.as_str()).arg(snap.as_str());
            match inv.run().await {
                Ok(_) => {}
                Err(e) if e.kind() == benign || e.says(benign_detail) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `zfs bookmark snap ds#mark`. An existing bookmark of the same snapshot (same
    /// GUID) is success; one of a different snapshot is [`Error::AlreadyExists`].
    pub async fn bookmark(&self, snap: &SnapshotName, mark: &BookmarkName) -> Result<(), Error> {
        self.check_root(mark)?;
        let inv = self.zfs(snap)?.arg("bookmark").arg(snap.as_str()).arg(mark.as_str());
        match inv.run().await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let snap_guid = self.get(snap, &[Prop::Guid]).await?.guid;
                let mark_guid = self.get(mark, &[Prop::Guid]).await?.guid;
                if snap_guid.is_some() && snap_guid == mark_guid { Ok(()) } else { Err(e) }
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_are_checked() {
        assert_eq!(
            check_props(&[("compression".into(), "lz4".into()), ("tankd:status".into(), "ok".into())]).unwrap(),
            ["compression=lz4", "tankd:status=ok"]
        );
        assert!(check_props(&[("-o".into(), "x".into())]).is_err());
        assert!(check_props(&[("Compression".into(), "lz4".into())]).is_err());
        assert!(check_props(&[("tankd:x".into(), "a\nb".into())]).is_err());
        assert!(check_props(&[("".into(), "x".into())]).is_err());
    }
}
