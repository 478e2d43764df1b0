//! Listing keys in S3 order (byte-wise) a page at a time, without reading the whole
//! bucket for each page: a depth-first walk of `objects/` that sorts each directory it
//! reads, with a subdirectory ordered as `name + "/"`. That makes walk order equal key
//! order (`a-c` < `a/b` < `a0`), so a page ends as soon as it is full, and whole
//! directories are skipped when no key in them can match the prefix or come after the
//! last page.

use std::ops::ControlFlow;
use std::os::fd::AsFd;

use nix::errno::Errno;

use crate::error::{Error, ErrorKind, Result};
use crate::fsops::{self, Kind};
use crate::key::check_key;
use crate::object::ObjectInfo;
use crate::{Bucket, OBJECTS};

#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "most entries are objects: boxing them would cost an allocation each and change the API"
)]
pub enum Entry {
    Object(ObjectInfo),
    /// A common prefix: keys grouped up to and including the delimiter.
    Prefix(String),
}

impl Entry {
    /// The key or the prefix: what the next page's `after` is when this entry ends a page.
    pub fn name(&self) -> &str {
        match self {
            Entry::Object(object) => &object.key,
            Entry::Prefix(prefix) => prefix,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// More entries follow the last one.
    pub truncated: bool,
}

impl Bucket {
    /// Keys (and common prefixes when `delimiter` is given) in byte-wise lexicographic order
    /// of the key, starting strictly after `after` (a key or a prefix returned by an earlier
    /// page), at most `max` entries (max 0 → empty page, truncated = false).
    ///
    /// With a delimiter, each key whose rest after `prefix` contains it is replaced by one
    /// `Prefix` (the key up to and including the delimiter's first occurrence there); a
    /// prefix is listed only if it is after `after`, so a page that ended on a prefix
    /// resumes past all of its keys. An empty delimiter is no delimiter.
    pub fn list(&self, prefix: &str, delimiter: Option<&str>, after: Option<&str>, max: usize) -> Result<Page> {
        if max == 0 {
            return Ok(Page::default());
        }
        // Keys matching the prefix all live in the directory its last "/" ends; if that
        // directory's path cannot be a key's, no key matches.
        let start = prefix.rfind('/').map_or("", |slash| &prefix[..=slash]);
        if !start.is_empty() && check_key(&start[..start.len() - 1]).is_err() {
            return Ok(Page::default());
        }
        let mut walk = Walk {
            bucket: self,
            prefix,
            delimiter: delimiter.filter(|d| !d.is_empty()),
            after,
            max,
            page: Page::default(),
        };
        // Stopped early by a full page or not, the page holds what the walk found.
        let _stopped = walk.dir(start)?;
        Ok(walk.page)
    }

    /// The entries of `objects/<dir_path>` in key order, or none when it is not a
    /// directory (any more).
    fn sorted_entries(&self, dir_path: &str) -> Result<Vec<(String, Kind)>> {
        let path = format!("{OBJECTS}/{dir_path}");
        let dir = match fsops::open_dir(self.root_dir.as_fd(), path.trim_end_matches('/')) {
            Ok(dir) => dir,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(Vec::new()),
            Err(errno) => return Err(Error::sys_internal(errno, format!("list {dir_path:?}"))),
        };
        let raw = fsops::read_dir(dir).map_err(|e| Error::sys_internal(e, format!("list {dir_path:?}")))?;
        let mut entries: Vec<(String, Kind)> = raw
            .into_iter()
            .filter(|(_, kind)| *kind != Kind::Other)
            // A name that is not UTF-8 is no key tankd wrote.
            .filter_map(|(name, kind)| name.into_string().ok().map(|name| (name, kind)))
            .collect();
        entries.sort_by(|(a, a_kind), (b, b_kind)| sort_key(a, *a_kind).cmp(sort_key(b, *b_kind)));
        Ok(entries)
    }

    /// Whether any object lives under `objects/<dir_path>`: a directory only a crash
    /// left empty is no prefix.
    fn has_object(&self, dir_path: &str) -> Result<bool> {
        for (name, kind) in self.sorted_entries(dir_path)? {
            if kind == Kind::File || self.has_object(&format!("{dir_path}{name}/"))? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A directory sorts as its name followed by "/", the way its keys do.
fn sort_key(name: &str, kind: Kind) -> impl Iterator<Item = u8> + '_ {
    name.bytes().chain((kind == Kind::Dir).then_some(b'/'))
}

/// The common prefix `key` falls in: up to and including the first `delimiter` after
/// `prefix` (which `key` starts with).
fn group_of<'k>(key: &'k str, prefix: &str, delimiter: &str) -> Option<&'k str> {
    let rest = key.get(prefix.len()..)?;
    rest.find(delimiter).map(|at| &key[..prefix.len() + at + delimiter.len()])
}

struct Walk<'a> {
    bucket: &'a Bucket,
    prefix: &'a str,
    delimiter: Option<&'a str>,
    after: Option<&'a str>,
    max: usize,
    page: Page,
}

impl Walk<'_> {
    /// Visits `objects/<dir_path>` (`dir_path` is "" or ends in "/"); Break once the
    /// page is full and one more entry was seen.
    fn dir(&mut self, dir_path: &str) -> Result<ControlFlow<()>> {
        for (name, kind) in self.bucket.sorted_entries(dir_path)? {
            let flow = match kind {
                Kind::Dir => self.subdir(&format!("{dir_path}{name}/"))?,
                Kind::File => self.key(&format!("{dir_path}{name}"))?,
                Kind::Other => ControlFlow::Continue(()),
            };
            if flow.is_break() {
                return Ok(flow);
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// `path` ends in "/" and every key below it starts with it.
    fn subdir(&mut self, path: &str) -> Result<ControlFlow<()>> {
        if !path.starts_with(self.prefix) && !self.prefix.starts_with(path) {
            return Ok(ControlFlow::Continue(()));
        }
        // Below `after` and not on its way: every key in here sorts before it.
        if self.after.is_some_and(|after| path < after && !after.starts_with(path)) {
            return Ok(ControlFlow::Continue(()));
        }
        // When the delimiter occurs in the path past the prefix, every key below falls in
        // the same group: one entry, if anything is in there, and no descent.
        if path.starts_with(self.prefix)
            && let Some(delimiter) = self.delimiter
            && let Some(group) = group_of(path, self.prefix, delimiter)
        {
            if self.is_listed_group(group) || !self.bucket.has_object(path)? {
                return Ok(ControlFlow::Continue(()));
            }
            return Ok(self.push(Entry::Prefix(group.to_owned())));
        }
        self.dir(path)
    }

    fn key(&mut self, key: &str) -> Result<ControlFlow<()>> {
        if !key.starts_with(self.prefix) {
            return Ok(ControlFlow::Continue(()));
        }
        if let Some(delimiter) = self.delimiter
            && let Some(group) = group_of(key, self.prefix, delimiter)
        {
            if self.is_listed_group(group) {
                return Ok(ControlFlow::Continue(()));
            }
            return Ok(self.push(Entry::Prefix(group.to_owned())));
        }
        if self.after.is_some_and(|after| key <= after) {
            return Ok(ControlFlow::Continue(()));
        }
        match self.bucket.open_valid_key(key) {
            Ok((_, object)) => Ok(self.push(Entry::Object(object))),
            // Deleted since the directory was read.
            Err(err) if err.kind == ErrorKind::NotFound => Ok(ControlFlow::Continue(())),
            Err(err) => Err(err),
        }
    }

    /// Whether `group` was listed already, on this page or (being at or before `after`)
    /// an earlier one. The keys of a group are contiguous in key order, so the last
    /// entry is the only one to compare with.
    fn is_listed_group(&self, group: &str) -> bool {
        self.after.is_some_and(|after| group <= after)
            || matches!(self.page.entries.last(), Some(Entry::Prefix(last)) if last == group)
    }

    /// Adds `entry`, or marks the page truncated when it is full (`entry` is the first
    /// of the next page).
    fn push(&mut self, entry: Entry) -> ControlFlow<()> {
        if self.page.entries.len() == self.max {
            self.page.truncated = true;
            return ControlFlow::Break(());
        }
        self.page.entries.push(entry);
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_sort_as_their_keys_do() {
        let mut names = [("a0", Kind::File), ("a", Kind::Dir), ("a-c", Kind::File), ("a.b", Kind::File)];
        names.sort_by(|(a, ak), (b, bk)| sort_key(a, *ak).cmp(sort_key(b, *bk)));
        let order: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        assert_eq!(order, ["a-c", "a.b", "a", "a0"], "a-c < a.b < a/ < a0");
    }

    #[test]
    fn a_group_ends_at_the_first_delimiter_after_the_prefix() {
        assert_eq!(group_of("photos/2024/x.jpg", "photos/", "/"), Some("photos/2024/"));
        assert_eq!(group_of("photos/2024/x.jpg", "", "/"), Some("photos/"));
        assert_eq!(group_of("photos/x.jpg", "photos/", "/"), None);
        assert_eq!(group_of("a-b-c", "a", "-"), Some("a-"));
        assert_eq!(group_of("a-b-c", "a-", "-"), Some("a-b-"));
        assert_eq!(group_of("abXYcd", "", "XY"), Some("abXY"));
    }
}
