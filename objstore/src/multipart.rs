//! Multipart uploads: one directory per upload under `.uploads/`, holding the upload's
//! record (key, start time, metadata) in its xattr and one file per part, each with its
//! own record. Completing assembles the parts into a temp file with copy_file_range
//! (block clones on ZFS, not copies) and commits it like any object.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::fsops;
use crate::key::check_key;
use crate::meta::{self, Meta};
use crate::object::{Commit, ObjectInfo};
use crate::temp::{Temp, random_hex};
use crate::{Bucket, UPLOADS};

/// S3's part numbers.
const PART_NUMBERS: std::ops::RangeInclusive<u32> = 1..=10_000;
/// Upload ids are this many random bytes, in hex.
const ID_BYTES: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartMeta {
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    #[serde(with = "hex_md5")]
    pub md5: [u8; 16],
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub modified: SystemTime,
    pub meta: PartMeta,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UploadInfo {
    pub id: String,
    pub key: String,
    pub initiated: SystemTime,
    pub meta: Meta,
}

/// What the upload directory's xattr holds. The start time is kept here because the
/// directory's own mtime moves with every part.
#[derive(Debug, Serialize, Deserialize)]
struct UploadRecord {
    key: String,
    initiated_ns: u64,
    meta: Meta,
}

impl UploadRecord {
    fn info(self, id: &str) -> UploadInfo {
        UploadInfo {
            id: id.to_owned(),
            key: self.key,
            initiated: SystemTime::UNIX_EPOCH + Duration::from_nanos(self.initiated_ns),
            meta: self.meta,
        }
    }
}

impl Bucket {
    /// Starts an upload of `key` with the object's future `meta`; returns its id
    /// (32 random hex digits). The upload directory is prepared in `.tmp/` and renamed
    /// into `.uploads/`, so an upload is either complete with its record or absent.
    pub fn create_upload(&self, key: &str, meta: &Meta) -> Result<String> {
        check_key(key)?;
        meta.encode()?;
        let id = random_hex(ID_BYTES)?;
        let what = format!("key {key:?}: create upload");
        let initiated_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
        let record = UploadRecord { key: key.to_owned(), initiated_ns, meta: meta.clone() };

        let staging = format!("upload-{id}");
        let tmp = self.tmp_dir.as_fd();
        fsops::make_dir(tmp, &staging).map_err(|e| Error::sys_internal(e, &what))?;
        let prepared = fsops::open_dir(tmp, &staging)
            .map_err(|e| Error::sys_internal(e, &what))
            .and_then(|dir| {
                meta::store(dir.as_fd(), &record, &what)?;
                fsops::sync(&dir).map_err(|e| Error::sys_internal(e, &what))
            })
            .and_then(|()| {
                fsops::rename_at(tmp, &staging, self.uploads_dir.as_fd(), &id)
                    .map_err(|e| Error::sys_internal(e, &what))
            });
        if let Err(err) = prepared {
            // Best effort: whatever stays is swept at the next open.
            let _ = fsops::remove_tree(tmp, &std::ffi::CString::new(staging).unwrap_or_default());
            return Err(err);
        }
        fsops::sync(&self.uploads_dir).map_err(|e| Error::sys_internal(e, &what))?;
        Ok(id)
    }

    /// The upload's key, start time and metadata. An id that is not 32 hex digits is
    /// no upload (NotFound), never a path.
    pub fn upload(&self, id: &str) -> Result<UploadInfo> {
        check_id(id)?;
        let (_, record) = self.open_upload(id)?;
        Ok(record.info(id))
    }

    /// Stores `temp` as part `number` (1..=10000, else InvalidPart) of the upload,
    /// replacing a part with that number; its etag is the temp's MD5, so every byte of
    /// the temp must have been written through `Write` (else Io).
    pub fn put_part(
        &self,
        id: &str,
        number: u32,
        mut temp: Temp,
        checksums: BTreeMap<String, String>,
    ) -> Result<PartMeta> {
        check_id(id)?;
        check_part_number(id, number)?;
        let what = format!("upload {id:?}: part {number}");
        if !Arc::ptr_eq(&temp.tmp_dir, &self.tmp_dir) {
            return Err(Error::new(ErrorKind::Io, format!("{what}: the temp file is another bucket's")));
        }
        if !temp.md5_covers_all() {
            // Its MD5 would not be the part's: the part's etag, and the object's, would lie.
            return Err(Error::new(ErrorKind::Io, format!("{what}: the temp holds appended bytes without an MD5")));
        }
        let md5 = temp.md5();
        let part = PartMeta { etag: hex::encode(md5), md5, size: temp.len(), checksums };
        meta::store(temp.file.as_fd(), &part, &what)?;
        fsops::sync(&temp.file).map_err(|e| Error::sys_internal(e, format!("{what}: sync")))?;

        let _turn = self.upload_locks.lock(id);
        let (dir, _) = self.open_upload(id)?;
        fsops::rename_at(self.tmp_dir.as_fd(), &temp.name, dir.as_fd(), &part_name(number))
            .map_err(|e| Error::sys_internal(e, format!("{what}: move into place")))?;
        temp.mark_published();
        fsops::sync(&dir).map_err(|e| Error::sys_internal(e, format!("{what}: sync directory")))?;
        Ok(part)
    }

    /// The upload's parts numbered above `after`, ascending, at most `max`; true when
    /// more follow.
    pub fn parts(&self, id: &str, after: u32, max: usize) -> Result<(Vec<PartInfo>, bool)> {
        check_id(id)?;
        let (dir, _) = self.open_upload(id)?;
        if max == 0 {
            return Ok((Vec::new(), false));
        }
        let entries = fsops::read_dir(dir).map_err(|e| Error::sys_internal(e, format!("upload {id:?}: list parts")))?;
        let mut numbers: Vec<u32> = entries
            .iter()
            .filter_map(|(name, _)| name.to_str().ok().and_then(part_number))
            .filter(|number| *number > after)
            .collect();
        numbers.sort_unstable();
        let mut parts = Vec::new();
        for number in numbers {
            if parts.len() == max {
                return Ok((parts, true));
            }
            match self.open_part(id, number) {
                Ok((_, part)) => parts.push(part),
                Err(err) if err.kind == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok((parts, false))
    }

    /// The part open for reading (UploadPartCopy of a part, or checks).
    pub fn part_file(&self, id: &str, number: u32) -> Result<(File, PartInfo)> {
        check_id(id)?;
        self.open_upload(id)?;
        self.open_part(id, number)
    }

    /// Uploads whose key starts with `prefix`, ordered by (key, initiated, id), after
    /// the marker, at most `max`; true when more follow. The marker is the upload
    /// `id_marker` of key `key_marker` when it still exists; otherwise, as in S3, uploads
    /// of a key after `key_marker`, and of that key with an id after `id_marker`.
    pub fn list_uploads(
        &self,
        prefix: &str,
        key_marker: Option<&str>,
        id_marker: Option<&str>,
        max: usize,
    ) -> Result<(Vec<UploadInfo>, bool)> {
        if max == 0 {
            return Ok((Vec::new(), false));
        }
        let mut uploads = self.all_uploads()?;
        uploads.retain(|upload| upload.key.starts_with(prefix));
        uploads.sort_by(|a, b| (&a.key, a.initiated, &a.id).cmp(&(&b.key, b.initiated, &b.id)));
        if let Some(key_marker) = key_marker {
            let marker = id_marker
                .and_then(|id| uploads.iter().find(|u| u.id == id && u.key == key_marker))
                .map(|u| (u.key.clone(), u.initiated, u.id.clone()));
            uploads.retain(|u| match (&marker, id_marker) {
                (Some((key, initiated, id)), _) => (&u.key, u.initiated, &u.id) > (key, *initiated, id),
                (None, Some(id_marker)) => {
                    u.key.as_str() > key_marker || (u.key == key_marker && u.id.as_str() > id_marker)
                }
                (None, None) => u.key.as_str() > key_marker,
            });
        }
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        Ok((uploads, truncated))
    }

    /// Checks the list (strictly ascending numbers → else InvalidPartOrder; each part exists and its
    /// etag equals the given one ignoring quotes → else InvalidPart naming the number; every part but
    /// the last ≥ min_part_size → else EntityTooSmall), assembles the parts in order into a temp
    /// with append_from, sets meta.etag = hex(md5(md5_1‖…‖md5_N)) + "-N" and meta.parts = Some(N),
    /// commits under `cond`, then removes the upload dir. Returns the object.
    ///
    /// On any error before the commit the upload stays as it was, so the client can retry.
    pub fn complete(
        &self,
        id: &str,
        parts: &[(u32, String)],
        min_part_size: u64,
        mut meta: Meta,
        cond: Commit<'_>,
    ) -> Result<ObjectInfo> {
        check_id(id)?;
        let _turn = self.upload_locks.lock(id);
        let (_, record) = self.open_upload(id)?;
        let chosen = self.check_parts(id, parts, min_part_size)?;

        let mut temp = self.temp()?;
        let mut md5_of_md5s = Md5::new();
        for (file, part) in &chosen {
            let appended = temp.append_from(file, 0, part.size)?;
            if appended != part.size {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("upload {id:?}: part {} is shorter than its record says", part.number),
                ));
            }
            md5_of_md5s.update(part.meta.md5);
        }
        meta.etag = format!("{}-{}", hex::encode(md5_of_md5s.finalize()), chosen.len());
        meta.parts = Some(u32::try_from(chosen.len()).unwrap_or(u32::MAX));
        let object = self.commit(temp, &record.key, &meta, cond)?;
        // The object is published whatever happens next: an upload left behind is only
        // clutter that expire_uploads removes, so its removal cannot fail the request.
        let _ = self.remove_upload(id);
        Ok(object)
    }

    /// Removes the upload and its parts.
    pub fn abort(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let _turn = self.upload_locks.lock(id);
        self.remove_upload(id)
    }

    /// Aborts every upload started longer than `older_than` ago; returns how many.
    pub fn expire_uploads(&self, older_than: Duration) -> Result<usize> {
        let Some(cutoff) = SystemTime::now().checked_sub(older_than) else {
            return Ok(0);
        };
        let mut expired = 0;
        for id in self.upload_ids()? {
            let _turn = self.upload_locks.lock(&id);
            let initiated = match self.open_upload(&id) {
                Ok((_, record)) => record.info(&id).initiated,
                Err(err) if err.kind == ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            if initiated < cutoff {
                match self.remove_upload(&id) {
                    Ok(()) => expired += 1,
                    Err(err) if err.kind == ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(expired)
    }

    /// The listed parts, opened, once the list passes complete's checks.
    fn check_parts(&self, id: &str, parts: &[(u32, String)], min_part_size: u64) -> Result<Vec<(File, PartInfo)>> {
        let upload = format!("upload {id:?}");
        if parts.is_empty() {
            return Err(Error::new(ErrorKind::InvalidPart, format!("{upload}: complete: no parts listed")));
        }
        for pair in parts.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(Error::new(
                    ErrorKind::InvalidPartOrder,
                    format!("{upload}: complete: part {} follows part {}: numbers must ascend", pair[1].0, pair[0].0),
                ));
            }
        }
        let mut chosen = Vec::with_capacity(parts.len());
        for (number, etag) in parts {
            let (file, part) = match self.open_part(id, *number) {
                Ok(found) => found,
                Err(err) if err.kind == ErrorKind::NotFound => {
                    return Err(Error::new(ErrorKind::InvalidPart, format!("{upload}: part {number} does not exist")));
                }
                Err(err) => return Err(err),
            };
            if etag.trim_matches('"') != part.meta.etag {
                return Err(Error::new(ErrorKind::InvalidPart, format!("{upload}: part {number}: the etag differs")));
            }
            chosen.push((file, part));
        }
        let all_but_last = chosen.split_last().map_or(&[][..], |(_, rest)| rest);
        if let Some((_, too_small)) = all_but_last.iter().find(|(_, part)| part.size < min_part_size) {
            return Err(Error::new(
                ErrorKind::EntityTooSmall,
                format!(
                    "{upload}: part {} is {} bytes, below the minimum of {min_part_size} for all but the last part",
                    too_small.number, too_small.size
                ),
            ));
        }
        Ok(chosen)
    }

    fn open_upload(&self, id: &str) -> Result<(OwnedFd, UploadRecord)> {
        let what = format!("upload {id:?}");
        let no_such = || Error::new(ErrorKind::NotFound, format!("{what}: no such upload"));
        let dir = match fsops::open_dir(self.root_dir.as_fd(), &format!("{UPLOADS}/{id}")) {
            Ok(dir) => dir,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Err(no_such()),
            Err(errno) => return Err(Error::sys_internal(errno, what)),
        };
        let record = meta::load(dir.as_fd(), &what)?.ok_or_else(no_such)?;
        Ok((dir, record))
    }

    fn open_part(&self, id: &str, number: u32) -> Result<(File, PartInfo)> {
        let what = format!("upload {id:?}: part {number}");
        if !PART_NUMBERS.contains(&number) {
            return Err(Error::new(ErrorKind::NotFound, format!("{what}: no such part")));
        }
        match fsops::open_regular(self.root_dir.as_fd(), &format!("{UPLOADS}/{id}/{}", part_name(number))) {
            Ok((file, stat)) => {
                let meta = meta::load(file.as_fd(), &what)?.unwrap_or_default();
                let info = PartInfo { number, size: fsops::size(&stat), modified: fsops::modified(&stat), meta };
                Ok((file, info))
            }
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                Err(Error::new(ErrorKind::NotFound, format!("{what}: no such part")))
            }
            Err(errno) => Err(Error::sys_internal(errno, what)),
        }
    }

    fn upload_ids(&self) -> Result<Vec<String>> {
        // A fresh open, not a dup of `uploads_dir`: a dup shares the directory offset,
        // and two threads listing through it would each see part of the entries.
        let listing =
            fsops::open_dir(self.root_dir.as_fd(), UPLOADS).map_err(|e| Error::sys_internal(e, "list uploads"))?;
        let entries = fsops::read_dir(listing).map_err(|e| Error::sys_internal(e, "list uploads"))?;
        Ok(entries.into_iter().filter_map(|(name, _)| name.into_string().ok()).filter(|id| is_id(id)).collect())
    }

    fn all_uploads(&self) -> Result<Vec<UploadInfo>> {
        let mut uploads = Vec::new();
        for id in self.upload_ids()? {
            match self.open_upload(&id) {
                Ok((_, record)) => uploads.push(record.info(&id)),
                // Completed or aborted since the directory was read.
                Err(err) if err.kind == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(uploads)
    }

    /// Moves the upload's directory out of `.uploads/` in one step (so it is gone for
    /// every reader at once) and then removes it from `.tmp/`. The caller holds the
    /// upload's turn.
    fn remove_upload(&self, id: &str) -> Result<()> {
        let what = format!("upload {id:?}");
        let graveyard = format!("gone-{}", random_hex(8)?);
        match fsops::rename_at(self.uploads_dir.as_fd(), id, self.tmp_dir.as_fd(), &graveyard) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Err(Error::new(ErrorKind::NotFound, format!("{what}: no such upload"))),
            Err(errno) => return Err(Error::sys_internal(errno, format!("{what}: remove"))),
        }
        fsops::sync(&self.uploads_dir).map_err(|e| Error::sys_internal(e, format!("{what}: sync")))?;
        // What stays after a failure here is swept at the next open.
        let _ = fsops::remove_tree(self.tmp_dir.as_fd(), &std::ffi::CString::new(graveyard).unwrap_or_default());
        Ok(())
    }
}

fn check_id(id: &str) -> Result<()> {
    if is_id(id) { Ok(()) } else { Err(Error::new(ErrorKind::NotFound, format!("upload {id:?}: no such upload"))) }
}

fn is_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_part_number(id: &str, number: u32) -> Result<()> {
    if PART_NUMBERS.contains(&number) {
        return Ok(());
    }
    Err(Error::new(ErrorKind::InvalidPart, format!("upload {id:?}: part number {number} is outside 1..=10000")))
}

fn part_name(number: u32) -> String {
    format!("part-{number:05}")
}

fn part_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("part-")?;
    if digits.len() != 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|number| PART_NUMBERS.contains(number))
}

/// The part's MD5 as hex in its JSON record.
mod hex_md5 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(md5: &[u8; 16], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(md5))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut md5 = [0u8; 16];
        hex::decode_to_slice(&text, &mut md5).map_err(serde::de::Error::custom)?;
        Ok(md5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(part_name(1), "part-00001");
        assert_eq!(part_name(10_000), "part-10000");
        assert_eq!(part_number("part-00001"), Some(1));
        assert_eq!(part_number("part-10000"), Some(10_000));
        for stranger in ["part-00000", "part-10001", "part-1", "part-000001", "part-0000a", "x-00001"] {
            assert_eq!(part_number(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        assert!(is_id(&"0123456789abcdef".repeat(2)));
        assert!(!is_id(&"0123456789ABCDEF".repeat(2)));
        assert!(!is_id("../../objects/secret"));
        assert!(!is_id(&"a".repeat(31)));
        assert_eq!(check_id("..").unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn part_meta_keeps_its_md5_as_hex() {
        let part = PartMeta { etag: "00ff".into(), md5: [0xab; 16], size: 5, checksums: BTreeMap::new() };
        let json = serde_json::to_string(&part).unwrap();
        assert_eq!(json, format!(r#"{{"etag":"00ff","md5":"{}","size":5}}"#, "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<PartMeta>(&json).unwrap(), part);
        assert!(serde_json::from_str::<PartMeta>(r#"{"etag":"","md5":"zz","size":0}"#).is_err());
    }
}
