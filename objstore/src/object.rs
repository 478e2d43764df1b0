//! Objects: publishing a temp file under a key, reading one back, replacing its
//! metadata, deleting it. A key's slashes are directories under `objects/`, so a key
//! cannot also be a prefix of other keys (its name would have to be a file and a
//! directory at once); that is a Conflict.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::stat::{FileStat, fstat, futimens};
use nix::sys::time::TimeSpec;

use crate::error::{Error, ErrorKind, Result};
use crate::fsops::{self, Kind};
use crate::key::check_key;
use crate::meta::{self, Meta};
use crate::temp::Temp;
use crate::{Bucket, OBJECTS};

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
    pub meta: Meta,
}

/// What a commit requires of the object already under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit<'a> {
    /// Nothing: the new object replaces any.
    Replace,
    /// No object (S3 `If-None-Match: *`).
    IfAbsent,
    /// An object whose etag is this one, compared without quotes; "*" accepts any
    /// existing object (S3 `If-Match`).
    IfMatch(&'a str),
}

/// A commit whose parent directory a concurrent delete removed between mkdir and
/// rename tries once more.
const PLACE_ATTEMPTS: usize = 2;

/// The directories of a key's path that a commit opened, `objects/` first, the key's
/// parent last, and which of them it made: those entries need their parent synced.
struct Parents {
    dirs: Vec<OwnedFd>,
    made: Vec<bool>,
}

impl Bucket {
    /// Publishes `temp` as the object `key` with `meta`, if `cond` holds: metadata set,
    /// file synced, renamed into place (or linked, for IfAbsent, so that an object
    /// appearing meanwhile is never replaced), parent directories synced. A crash at
    /// any point leaves the old object or the new one.
    pub fn commit(&self, mut temp: Temp, key: &str, meta: &Meta, cond: Commit<'_>) -> Result<ObjectInfo> {
        check_key(key)?;
        if !Arc::ptr_eq(&temp.tmp_dir, &self.tmp_dir) {
            return Err(Error::new(ErrorKind::Io, format!("key {key:?}: commit: the temp file is another bucket's")));
        }
        let what = format!("key {key:?}");
        meta::store_meta(temp.file.as_fd(), meta, &what)?;
        fsops::sync(&temp.file).map_err(|e| Error::sys_internal(e, format!("{what}: sync")))?;
        let stat = fstat(&temp.file).map_err(|e| Error::sys_internal(e, format!("{what}: stat")))?;

        let _turn = self.key_locks.lock(key);
        self.check_condition(key, cond)?;
        let parents = self.place(&mut temp, key, cond)?;
        sync_parents(&parents).map_err(|e| Error::sys_internal(e, format!("{what}: sync directory")))?;
        // For IfAbsent the temp's own name still links the object; dropping `temp`
        // unlinks that name and leaves the object.
        drop(temp);
        Ok(info(key, &stat, meta.clone()))
    }

    /// The object's size, time and metadata, without reading its data.
    pub fn stat(&self, key: &str) -> Result<ObjectInfo> {
        self.open_object(key).map(|(_, info)| info)
    }

    /// The object open for reading. Only a regular file is an object: a directory (a
    /// prefix of other keys) or anything else under the key is NotFound.
    pub fn open_object(&self, key: &str) -> Result<(File, ObjectInfo)> {
        check_key(key)?;
        self.open_valid_key(key)
    }

    /// Removes the object; false when there was none. Directories the removal leaves
    /// empty are removed up to `objects/`, so deleted keys leave no prefixes behind.
    pub fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let what = format!("key {key:?}");
        let _turn = self.key_locks.lock(key);
        let segments: Vec<&str> = key.split('/').collect();
        let Some((name, dir_segments)) = segments.split_last() else {
            return Ok(false);
        };
        // Held from objects/ down to the parent: the walk back up removes through them.
        let mut dirs = Vec::with_capacity(segments.len());
        let mut path = String::from(OBJECTS);
        for depth in 0..=dir_segments.len() {
            if depth > 0 {
                path.push('/');
                path.push_str(dir_segments[depth - 1]);
            }
            match fsops::open_dir(self.root_dir.as_fd(), &path) {
                Ok(dir) => dirs.push(dir),
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(false),
                Err(errno) => return Err(Error::sys_internal(errno, format!("{what}: delete"))),
            }
        }
        let Some(parent) = dirs.last() else {
            return Ok(false);
        };
        match fsops::kind_at(parent.as_fd(), name) {
            Ok(Some(Kind::File)) => {}
            Ok(_) => return Ok(false),
            Err(errno) => return Err(Error::sys_internal(errno, format!("{what}: delete"))),
        }
        match fsops::unlink_at(parent.as_fd(), name) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(false),
            Err(errno) => return Err(Error::sys_internal(errno, format!("{what}: delete"))),
        }
        fsops::sync(parent).map_err(|e| Error::sys_internal(e, format!("{what}: sync directory")))?;
        // Not synced: an empty directory surviving a crash is invisible to listings and
        // is cleared by the next commit of its name.
        for depth in (1..dirs.len()).rev() {
            if fsops::remove_dir(dirs[depth - 1].as_fd(), dir_segments[depth - 1]).is_err() {
                break;
            }
        }
        Ok(true)
    }

    /// Replaces the object's metadata whole (etag included) and its modification time,
    /// as S3's copy of an object onto itself with the REPLACE directive does.
    pub fn set_meta(&self, key: &str, meta: &Meta) -> Result<()> {
        check_key(key)?;
        let what = format!("key {key:?}");
        let _turn = self.key_locks.lock(key);
        let (file, _) = self.open_valid_key(key)?;
        meta::store_meta(file.as_fd(), meta, &what)?;
        futimens(&file, &TimeSpec::UTIME_OMIT, &TimeSpec::UTIME_NOW)
            .map_err(|e| Error::sys_internal(e, format!("{what}: set modification time")))?;
        fsops::sync(&file).map_err(|e| Error::sys_internal(e, format!("{what}: sync")))
    }

    /// [`Bucket::open_object`] for a key already known to be valid (listings).
    pub(crate) fn open_valid_key(&self, key: &str) -> Result<(File, ObjectInfo)> {
        let what = format!("key {key:?}");
        match fsops::open_regular(self.root_dir.as_fd(), &format!("{OBJECTS}/{key}")) {
            Ok((file, stat)) => {
                let meta = meta::load_meta(file.as_fd(), &what)?;
                let info = info(key, &stat, meta);
                Ok((file, info))
            }
            // A parent that is a file, or a symlink in the way: no object by that key.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                Err(Error::new(ErrorKind::NotFound, format!("{what}: no such object")))
            }
            Err(errno) => Err(Error::sys_internal(errno, format!("{what}: open"))),
        }
    }

    fn check_condition(&self, key: &str, cond: Commit<'_>) -> Result<()> {
        let Commit::IfMatch(wanted) = cond else {
            return Ok(());
        };
        let refuse =
            |why: &str| Err(Error::new(ErrorKind::PreconditionFailed, format!("key {key:?}: If-Match: {why}")));
        let existing = match self.open_valid_key(key) {
            Ok((_, existing)) => existing,
            Err(err) if err.kind == ErrorKind::NotFound => return refuse("no such object"),
            Err(err) => return Err(err),
        };
        let wanted = wanted.trim_matches('"');
        if wanted == "*" || wanted == existing.meta.etag { Ok(()) } else { refuse("the etag differs") }
    }

    fn place(&self, temp: &mut Temp, key: &str, cond: Commit<'_>) -> Result<Parents> {
        for _ in 0..PLACE_ATTEMPTS {
            if let Some(parents) = self.try_place(temp, key, cond)? {
                return Ok(parents);
            }
        }
        Err(Error::new(ErrorKind::Io, format!("key {key:?}: commit: a parent directory kept disappearing")))
    }

    /// One attempt at making the key's directories and moving the temp there; None
    /// when a directory vanished on the way (a concurrent delete's cleanup).
    fn try_place(&self, temp: &mut Temp, key: &str, cond: Commit<'_>) -> Result<Option<Parents>> {
        let what = format!("key {key:?}");
        let segments: Vec<&str> = key.split('/').collect();
        let Some((name, dir_segments)) = segments.split_last() else {
            return Err(Error::new(ErrorKind::InvalidKey, "key may not be empty"));
        };
        let objects = fsops::open_dir(self.root_dir.as_fd(), OBJECTS)
            .map_err(|e| Error::sys_internal(e, format!("{what}: open {OBJECTS}")))?;
        let mut parents = Parents { dirs: vec![objects], made: vec![false] };
        let mut path = String::from(OBJECTS);
        for (depth, segment) in dir_segments.iter().enumerate() {
            let made = match fsops::make_dir(parents.last().as_fd(), segment) {
                Ok(made) => made,
                Err(Errno::ENOENT) => return Ok(None),
                Err(errno) => return Err(Error::sys_internal(errno, format!("{what}: make directory"))),
            };
            path.push('/');
            path.push_str(segment);
            let dir = match fsops::open_dir(self.root_dir.as_fd(), &path) {
                Ok(dir) => dir,
                Err(Errno::ENOTDIR) => {
                    let object = dir_segments[..=depth].join("/");
                    return Err(Error::new(ErrorKind::Conflict, format!("{what}: {object:?} is an object")));
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(errno) => return Err(Error::sys_internal(errno, format!("{what}: open directory"))),
            };
            parents.dirs.push(dir);
            parents.made.push(made);
        }
        let parent = parents.last().as_fd();
        let is_prefix = || Error::new(ErrorKind::Conflict, format!("{what} is a prefix of other keys"));

        // A directory under the key's own name: an empty one is what a crash between a
        // delete's unlink and its rmdir leaves, and goes; one with keys in it stays.
        if let Ok(Some(Kind::Dir)) = fsops::kind_at(parent, name) {
            match fsops::remove_dir(parent, name) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(Errno::ENOTEMPTY | Errno::EEXIST) => return Err(is_prefix()),
                Err(errno) => return Err(Error::sys_internal(errno, format!("{what}: remove empty directory"))),
            }
        }
        #[cfg(test)]
        if let Some(race) = self.before_move.lock().ok().and_then(|mut hook| hook.take()) {
            race();
        }
        let tmp_dir = temp.tmp_dir.clone();
        let moved = match cond {
            Commit::IfAbsent => fsops::link_at(tmp_dir.as_fd(), &temp.name, parent, name),
            Commit::Replace | Commit::IfMatch(_) => fsops::rename_at(tmp_dir.as_fd(), &temp.name, parent, name),
        };
        match moved {
            Ok(()) => {
                if cond != Commit::IfAbsent {
                    temp.mark_published();
                }
                Ok(Some(parents))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::EEXIST) if cond == Commit::IfAbsent => match fsops::kind_at(parent, name) {
                Ok(Some(Kind::Dir)) => Err(is_prefix()),
                _ => Err(Error::new(ErrorKind::PreconditionFailed, format!("{what}: an object exists"))),
            },
            Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => Err(is_prefix()),
            Err(errno) => Err(Error::sys_internal(errno, format!("{what}: move into place"))),
        }
    }
}

impl Parents {
    fn last(&self) -> &OwnedFd {
        // Never empty: `objects/` is pushed first.
        &self.dirs[self.dirs.len() - 1]
    }
}

/// Syncs the key's parent (its new entry) and the parent of every directory the commit
/// made (their entries), so the whole path survives a crash.
fn sync_parents(parents: &Parents) -> nix::Result<()> {
    fsops::sync(parents.last())?;
    for depth in 1..parents.dirs.len() {
        if parents.made[depth] {
            fsops::sync(&parents.dirs[depth - 1])?;
        }
    }
    Ok(())
}

fn info(key: &str, stat: &FileStat, meta: Meta) -> ObjectInfo {
    ObjectInfo { key: key.to_owned(), size: fsops::size(stat), modified: fsops::modified(stat), meta }
}
