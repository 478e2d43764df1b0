//! Request ids → validated dataset names under the root, and MiB conversions.
//! Every id passes through here before it can reach the shim.

use zfs_sys_shim::{DatasetName, SnapshotName};

use super::error::{Error, Result};

pub const MIB: u64 = 1 << 20;
/// Sizes above this many MiB (1 PiB) are refused as absurd before ZFS sees them.
pub const MAX_SIZE_MIB: i64 = 1 << 30;

/// An id as a client may send it: root-relative, or a full name under the root (as
/// responses show them), which is made relative here.
pub fn relative<'a>(root: &DatasetName, id: &'a str) -> &'a str {
    id.strip_prefix(root.as_str()).and_then(|rest| rest.strip_prefix('/')).unwrap_or(id)
}

/// A root-relative dataset id (`guests/g1/disk-0`). The empty id is refused: nothing
/// addresses the root itself.
pub fn dataset(root: &DatasetName, field: &str, id: &str) -> Result<DatasetName> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.contains('@') {
        return Err(Error::invalid(field, format!("{id:?} is a snapshot, not a dataset")));
    }
    root.join(id).map_err(|e| Error::invalid(field, e.reason))
}

/// A root-relative snapshot id (`guests/g1/disk-0@s1`).
pub fn snapshot(root: &DatasetName, field: &str, id: &str) -> Result<SnapshotName> {
    let Some((ds, snap)) = id.split_once('@') else {
        return Err(Error::invalid(field, format!("{id:?} is not a snapshot (dataset@name)")));
    };
    let ds = dataset(root, field, ds)?;
    ds.snapshot(snap).map_err(|e| Error::invalid(field, e.reason))
}

/// A single path component (an image id, a guest id, a snapshot's short name).
pub fn component(field: &str, id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.contains('/') || id.contains('@') {
        return Err(Error::invalid(field, format!("{id:?} may not contain '/' or '@'")));
    }
    zfs_sys_shim::name::check_component(id, id).map_err(|e| Error::invalid(field, e.reason))?;
    Ok(id.to_owned())
}

/// A size in MiB from a request: positive and not absurd.
pub fn size_mib(field: &str, size: i64) -> Result<u64> {
    if size <= 0 {
        return Err(Error::invalid(field, format!("{size} MiB: must be above 0")));
    }
    if size > MAX_SIZE_MIB {
        return Err(Error::invalid(field, format!("{size} MiB is more than 1 PiB")));
    }
    Ok(size as u64)
}

/// Bytes → MiB, rounded up (a 1-byte dataset is 1 MiB, as upstream reported).
pub fn to_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> DatasetName {
        "tank/tankd".parse().unwrap()
    }

    #[test]
    fn ids_resolve_under_the_root() {
        assert_eq!(dataset(&root(), "id", "guests/g1/disk-0").unwrap().as_str(), "tank/tankd/guests/g1/disk-0");
        assert_eq!(snapshot(&root(), "id", "vols/v1@s1").unwrap().as_str(), "tank/tankd/vols/v1@s1");
    }

    #[test]
    fn bad_ids_name_the_field() {
        for bad in ["", "../etc", "a/../../b", "-R", "a b", "a\nb", "/abs", "a//b", "x@y"] {
            let err = dataset(&root(), "id", bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("id"), "{bad:?}");
        }
        for bad in ["nosnap", "a@", "a@b@c", "@s", "a@-x", "a@b/c"] {
            assert!(snapshot(&root(), "id", bad).is_err(), "{bad:?}");
        }
        let long = "a".repeat(300);
        assert!(dataset(&root(), "id", &long).is_err());
        assert!(component("guest.id", "g/1").is_err());
        assert!(component("guest.id", "-g").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size_mib("size", 1024).unwrap(), 1024);
        for bad in [0, -1, i64::MAX, MAX_SIZE_MIB + 1] {
            assert_eq!(size_mib("size", bad).unwrap_err().field.as_deref(), Some("size"));
        }
        assert_eq!(to_mib(0), 0);
        assert_eq!(to_mib(1), 1);
        assert_eq!(to_mib(MIB), 1);
        assert_eq!(to_mib(MIB + 1), 2);
    }
}
