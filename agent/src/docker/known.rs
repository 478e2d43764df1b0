//! What tankd knows about its volumes without asking ZFS: the facts Docker's `Get` and
//! `Path` are answered with, and the Docker mount ids holding each volume.
//!
//! Docker calls `Get` six to eight times per `create` + `run` + `rm` of one volume;
//! answering each with a `zfs get` (a process, ~10 ms on metal, a second under the test
//! VM's emulator) made the tankd cycle half again as slow as Docker's `local` driver, which
//! answers from memory too. Kept are only facts a volume holds for life: its dataset,
//! mountpoint, creation time, size and owner (a restore keeps all of them: restore.rs
//! copies the local properties onto the clone that takes the live name). Usage changes
//! by the second and is not kept; `List` and the control API read it fresh.
//!
//! Filled from one `zfs list` at start and on every `List`, by every create, and by a
//! `zfs get` when asked about a name it does not hold that the kernel has mounted (a
//! dataset `zfs receive` put there). A volume destroyed behind tankd's back is dropped
//! when mounting it fails.

use std::collections::BTreeMap;

use zfs_sys_shim::{Dataset, DatasetName};

use super::store::{MOUNTS_PROP, OWNER_PROP, VolumeOpts, created_at};

#[derive(Debug, Clone, PartialEq)]
pub struct KnownVolume {
    pub dataset: String,
    /// Where ZFS mounts it; corrected from the kernel's mount table on every mount.
    pub mountpoint: String,
    pub created_at: u64,
    /// `refquota`, if set.
    pub size: Option<u64>,
    pub service: Option<String>,
    /// Docker mount id → how many times that id mounted it. Written to the dataset
    /// (`tankd:docker-mounts`) before it changes here, so a crash never forgets a mount.
    pub mounts: BTreeMap<String, u32>,
}

impl KnownVolume {
    pub fn from_dataset(d: &Dataset) -> KnownVolume {
        KnownVolume {
            dataset: d.name.clone(),
            mountpoint: d.mountpoint.clone().unwrap_or_default(),
            created_at: created_at(d),
            size: d.refquota,
            service: d.user.get(OWNER_PROP).cloned(),
            mounts: parse_mounts(d.user.get(MOUNTS_PROP).map(String::as_str).unwrap_or("")),
        }
    }

    /// A volume just made with `opts` at `created_at` (its `tankd:created`), mounted at
    /// `mountpoint`: what a listing would say.
    pub fn made(dataset: &DatasetName, mountpoint: String, opts: &VolumeOpts, created_at: u64) -> KnownVolume {
        KnownVolume {
            dataset: dataset.to_string(),
            mountpoint,
            created_at,
            size: opts.size,
            service: opts.service.clone(),
            mounts: BTreeMap::new(),
        }
    }

    pub fn mount_count(&self) -> usize {
        self.mounts.values().sum::<u32>() as usize
    }
}

/// `tankd:docker-mounts` is a comma list of mount ids, an id once per mount it holds.
pub fn parse_mounts(text: &str) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for id in text.split(',').filter(|s| !s.is_empty()) {
        *m.entry(id.to_owned()).or_insert(0) += 1;
    }
    m
}

pub fn format_mounts(m: &BTreeMap<String, u32>) -> String {
    m.iter().flat_map(|(id, n)| std::iter::repeat_n(id.as_str(), *n as usize)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_lists_round_trip_with_repeats() {
        let m = parse_mounts("b,a,b");
        assert_eq!(m.get("b"), Some(&2));
        assert_eq!(format_mounts(&m), "a,b,b");
        assert!(parse_mounts("").is_empty());
    }

    #[test]
    fn facts_come_from_the_listing() {
        let mut d = Dataset { name: "tank/tankd/volumes/v1".into(), ..Default::default() };
        d.mountpoint = Some("/tank/tankd/volumes/v1".into());
        d.creation = Some(1_795_000_000);
        let zfs_only = KnownVolume::from_dataset(&d);
        assert_eq!(zfs_only.created_at, 1_795_000_000, "made outside tankd: ZFS's creation");
        d.user.insert(super::super::store::CREATED_PROP.into(), "1_794_999_999".replace('_', ""));
        d.refquota = Some(64 << 20);
        d.user.insert(OWNER_PROP.into(), "svc-1".into());
        d.user.insert(MOUNTS_PROP.into(), "c1,c2,c1".into());
        let k = KnownVolume::from_dataset(&d);
        assert_eq!(k.mountpoint, "/tank/tankd/volumes/v1");
        assert_eq!((k.created_at, k.size, k.service.as_deref()), (1_794_999_999, Some(64 << 20), Some("svc-1")));
        assert_eq!(k.mount_count(), 3);
        let bare = KnownVolume::from_dataset(&Dataset { name: "tank/v".into(), ..Default::default() });
        assert_eq!((bare.size, bare.mount_count()), (None, 0));
    }

    #[test]
    fn a_new_volume_is_what_it_was_made_with() {
        let opts = VolumeOpts { size: Some(8 << 20), service: Some("svc-2".into()), ..Default::default() };
        let ds: DatasetName = "tank/tankd/volumes/v2".parse().unwrap();
        let k = KnownVolume::made(&ds, "/srv/v2".into(), &opts, 1_796_000_000);
        assert_eq!((k.dataset.as_str(), k.mountpoint.as_str()), ("tank/tankd/volumes/v2", "/srv/v2"));
        assert_eq!((k.size, k.service.as_deref(), k.mount_count()), (Some(8 << 20), Some("svc-2"), 0));
        assert_eq!(k.created_at, 1_796_000_000);
    }
}
