//! The complete images, remembered so that a guest-disk call costs only the commands
//! that make its disks. ZFS stays the truth: the index is loaded from one scoped
//! `zfs list` on first use, changed only by tankd's own fetches and deletes, and dropped
//! whenever a clone finds that an image it named is gone (an operator's `zfs destroy`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use zfs_sys_shim::SnapshotName;

/// What guest disks need of a complete image.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyImage {
    pub snapshot: SnapshotName,
    pub is_volume: bool,
    /// Bytes.
    pub size: u64,
}

#[derive(Default)]
pub struct Catalog {
    /// `None` until loaded, and again after [`Catalog::forget`].
    ready: Mutex<Option<BTreeMap<String, ReadyImage>>>,
}

impl Catalog {
    /// The index, if loaded.
    pub fn snapshot(&self) -> Option<BTreeMap<String, ReadyImage>> {
        self.ready.lock().expect("lock").clone()
    }

    /// Replace the index with a fresh listing.
    pub fn load(&self, images: BTreeMap<String, ReadyImage>) {
        *self.ready.lock().expect("lock") = Some(images);
    }

    /// A fetch completed. Ignored while unloaded: the next load lists it.
    pub fn insert(&self, id: &str, image: ReadyImage) {
        if let Some(map) = self.ready.lock().expect("lock").as_mut() {
            map.insert(id.to_owned(), image);
        }
    }

    pub fn remove(&self, id: &str) {
        if let Some(map) = self.ready.lock().expect("lock").as_mut() {
            map.remove(id);
        }
    }

    /// Something changed behind tankd's back: list again next time.
    pub fn forget(&self) {
        *self.ready.lock().expect("lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(snap: &str) -> ReadyImage {
        ReadyImage { snapshot: snap.parse().unwrap(), is_volume: true, size: 1 << 20 }
    }

    #[test]
    fn unloaded_index_ignores_changes_until_loaded() {
        let c = Catalog::default();
        c.insert("a", image("p/r/images/a@v1"));
        assert_eq!(c.snapshot(), None);
        c.load(BTreeMap::from([("b".to_owned(), image("p/r/images/b@v1"))]));
        c.insert("a", image("p/r/images/a@v1"));
        c.remove("b");
        let map = c.snapshot().unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a"]);
        c.forget();
        assert_eq!(c.snapshot(), None);
    }
}
