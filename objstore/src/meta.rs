//! What the store keeps beside an object's bytes, and how: one extended attribute
//! `user.tankd.s3` holding compact JSON, on the object file itself, so a rename or link
//! that publishes the object publishes its metadata in the same step. Uploads and parts
//! use the same attribute for their own records.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Serialized metadata above this is refused: it keeps the attribute within what every
/// filesystem tankd runs on stores inline (ext4 gives one block to all of an inode's
/// attributes; ZFS system-attribute xattrs are fast only when small).
pub const META_MAX: usize = 3584;

const XATTR_NAME: &CStr = c"user.tankd.s3";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Without quotes, e.g. "9e107d9d372bb6826bd81d3542a419d6" or "…-3".
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// `x-amz-meta-*` headers, name without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Algorithm ("crc32", "sha256", …) → base64 value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
    /// COMPOSITE or FULL_OBJECT, for an object assembled from parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    /// The number of parts of a multipart object (its etag ends in "-parts").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

impl Meta {
    /// The attribute value, refused when larger than [`META_MAX`].
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let bytes = to_json(self)?;
        if bytes.len() > META_MAX {
            return Err(Error::new(ErrorKind::InvalidKey, "metadata too large"));
        }
        Ok(bytes)
    }
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::new(ErrorKind::Io, format!("encode metadata: {e}")))
}

/// Stores `value` as the record of the file or directory `fd`, replacing any.
pub(crate) fn store(fd: BorrowedFd<'_>, value: &impl Serialize, what: &str) -> Result<()> {
    store_bytes(fd, &to_json(value)?, what)
}

/// Stores an object's metadata, refused when larger than [`META_MAX`].
pub(crate) fn store_meta(fd: BorrowedFd<'_>, meta: &Meta, what: &str) -> Result<()> {
    store_bytes(fd, &meta.encode()?, what)
}

fn store_bytes(fd: BorrowedFd<'_>, bytes: &[u8], what: &str) -> Result<()> {
    set_raw(fd, bytes).map_err(|e| Error::sys_internal(e, format!("{what}: write metadata")))
}

fn set_raw(fd: BorrowedFd<'_>, bytes: &[u8]) -> std::result::Result<(), Errno> {
    // SAFETY: `fd` is a live descriptor borrowed for the call, the name is a
    // NUL-terminated C string, and `bytes` is valid for reads of `bytes.len()` bytes.
    let rc = unsafe { libc::fsetxattr(fd.as_raw_fd(), XATTR_NAME.as_ptr(), bytes.as_ptr().cast(), bytes.len(), 0) };
    Errno::result(rc).map(drop)
}

/// The record of `fd`, or None when it has none. `what` names the file in the error
/// when the stored JSON does not parse.
pub(crate) fn load<T: DeserializeOwned>(fd: BorrowedFd<'_>, what: &str) -> Result<Option<T>> {
    let Some(bytes) = get_raw(fd).map_err(|e| Error::sys_internal(e, format!("{what}: read metadata")))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{what}: stored metadata does not parse: {e}")))
}

/// An object's metadata. A file without the attribute reads as an object with an empty
/// etag: tankd never publishes one, but a file put there by other means stays listable.
pub(crate) fn load_meta(fd: BorrowedFd<'_>, what: &str) -> Result<Meta> {
    Ok(load(fd, what)?.unwrap_or_default())
}

fn get_raw(fd: BorrowedFd<'_>) -> std::result::Result<Option<Vec<u8>>, Errno> {
    // The value may grow between asking its size and reading it; ERANGE says so, and
    // asking again converges.
    loop {
        // SAFETY: a null buffer of size 0 asks only for the value's size; `fd` and the
        // name are valid for the call.
        let size = unsafe { libc::fgetxattr(fd.as_raw_fd(), XATTR_NAME.as_ptr(), std::ptr::null_mut(), 0) };
        let size = match Errno::result(size) {
            Ok(size) => size as usize,
            Err(Errno::ENODATA) => return Ok(None),
            Err(errno) => return Err(errno),
        };
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and the kernel writes
        // at most that many; `fd` and the name are valid for the call.
        let read = unsafe { libc::fgetxattr(fd.as_raw_fd(), XATTR_NAME.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(read) {
            Ok(read) => {
                buf.truncate(read as usize);
                return Ok(Some(buf));
            }
            Err(Errno::ERANGE) => continue,
            Err(Errno::ENODATA) => return Ok(None),
            Err(errno) => return Err(errno),
        }
    }
}

/// Sets and removes the attribute on `fd`: a bucket on a filesystem without user
/// xattrs is refused at open instead of at the first PUT.
pub(crate) fn probe(fd: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    set_raw(fd, b"{}")?;
    // SAFETY: `fd` and the NUL-terminated name are valid for the call.
    let rc = unsafe { libc::fremovexattr(fd.as_raw_fd(), XATTR_NAME.as_ptr()) };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn meta_round_trips_through_the_attribute_and_stays_compact() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        assert_eq!(load_meta(file.as_fd(), "f").unwrap(), Meta::default(), "no attribute: empty etag");

        let meta = Meta {
            etag: "abc".into(),
            content_type: Some("text/plain".into()),
            user: BTreeMap::from([("colour".into(), "blue".into())]),
            parts: Some(3),
            ..Meta::default()
        };
        store_meta(file.as_fd(), &meta, "f").unwrap();
        assert_eq!(load_meta(file.as_fd(), "f").unwrap(), meta);
        let raw = get_raw(file.as_fd()).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            r#"{"etag":"abc","content_type":"text/plain","user":{"colour":"blue"},"parts":3}"#
        );
    }

    #[test]
    fn metadata_above_the_limit_is_refused() {
        let mut meta = Meta { etag: "e".into(), ..Meta::default() };
        meta.user.insert("big".into(), "v".repeat(META_MAX));
        let err = meta.encode().unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidKey);
        assert_eq!(err.message, "metadata too large");
        meta.user.insert("big".into(), "v".repeat(META_MAX - 40));
        assert!(meta.encode().unwrap().len() <= META_MAX);
    }

    #[test]
    fn a_record_that_does_not_parse_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        set_raw(file.as_fd(), b"not json").unwrap();
        let err = load_meta(file.as_fd(), "key \"f\"").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Io);
        assert!(err.message.starts_with("key \"f\": stored metadata does not parse"), "{}", err.message);
    }
}
