//! Which images exist and which are complete, remembered so that the hot paths (a
//! guest-disk call, a RequestImage) cost only the commands that do their work. ZFS
//! stays the truth: the index is loaded from one scoped `zfs list` (at start, and after
//! a forget), changed only by tankd's own fetches and deletes, and dropped
//! whenever a command finds that an image it named is gone (an operator's `zfs destroy`).

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

/// An image dataset as the catalog knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Ready(ReadyImage),
    /// A dataset that is not a complete image: a failed fetch's placeholder, or one cut
    /// short. A new fetch of the id replaces it.
    Unfinished,
}

#[derive(Default)]
pub struct Catalog {
    /// `None` until loaded, and again after [`Catalog::forget`].
    entries: Mutex<Option<BTreeMap<String, Entry>>>,
}

impl Catalog {
    /// Every entry, if loaded.
    pub fn entries(&self) -> Option<BTreeMap<String, Entry>> {
        self.entries.lock().expect("lock").clone()
    }

    /// The complete images, if loaded.
    pub fn ready(&self) -> Option<BTreeMap<String, ReadyImage>> {
        let entries = self.entries.lock().expect("lock");
        let ready = entries.as_ref()?.iter().filter_map(|(id, e)| match e {
            Entry::Ready(r) => Some((id.clone(), r.clone())),
            Entry::Unfinished => None,
        });
        Some(ready.collect())
    }

    /// Replace the index with a fresh listing.
    pub fn load(&self, entries: BTreeMap<String, Entry>) {
        *self.entries.lock().expect("lock") = Some(entries);
    }

    /// A fetch ended. Ignored while unloaded: the next load lists it.
    pub fn insert(&self, id: &str, entry: Entry) {
        if let Some(map) = self.entries.lock().expect("lock").as_mut() {
            map.insert(id.to_owned(), entry);
        }
    }

    pub fn remove(&self, id: &str) {
        if let Some(map) = self.entries.lock().expect("lock").as_mut() {
            map.remove(id);
        }
    }

    /// Something changed behind tankd's back: list again next time.
    pub fn forget(&self) {
        *self.entries.lock().expect("lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(snap: &str) -> Entry {
        Entry::Ready(ReadyImage { snapshot: snap.parse().unwrap(), is_volume: true, size: 1 << 20 })
    }

    #[test]
    fn unloaded_index_ignores_changes_until_loaded() {
        let c = Catalog::default();
        c.insert("a", image("p/r/images/a@v1"));
        assert_eq!(c.entries(), None);
        assert_eq!(c.ready(), None);
        c.load(BTreeMap::from([("b".to_owned(), image("p/r/images/b@v1")), ("x".to_owned(), Entry::Unfinished)]));
        c.insert("a", image("p/r/images/a@v1"));
        c.remove("b");
        assert_eq!(c.ready().unwrap().keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(c.entries().unwrap().keys().collect::<Vec<_>>(), ["a", "x"]);
        c.forget();
        assert_eq!(c.entries(), None);
    }
}
