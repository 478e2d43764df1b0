//! The object-as-file store behind tankd's S3 endpoint: one bucket is one directory
//! tree (a ZFS dataset's mountpoint, or a plain directory), each object one regular
//! file named by its key, its S3 metadata in an extended attribute of that file.
//!
//! ```text
//! <root>/objects/<key>          the only tree holding tenant data; a key "a/b/c" is objects/a/b/c
//! <root>/.tmp/<random>          temp files of PUTs, copies and assemblies in flight
//! <root>/.uploads/<uploadId>/   one dir per multipart upload: xattr with the upload's Meta + key;
//!                               part-00001 … part-10000, each with a PartMeta xattr
//! ```
//!
//! All three live on one filesystem, so publishing an object is a rename (or link) and
//! assembling one from parts can clone blocks with copy_file_range. A write becomes
//! visible only when committed: metadata set, file fsynced, renamed into place, parent
//! directories fsynced. A crash at any point leaves the old object or the new one, and
//! at most a stray file in `.tmp/` that the next [`Bucket::open`] removes.
//!
//! Every path under `objects/` is resolved beneath the bucket root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so neither a key nor a symlink
//! planted inside the dataset reaches outside it.
//!
//! The code is synchronous and blocking (the agent calls it from `spawn_blocking`);
//! [`Bucket`] is `Send + Sync` and every method takes `&self`.

mod error;
mod fsops;
mod key;
mod locks;
mod meta;
mod temp;

pub use error::{Error, ErrorKind, Result};
pub use key::{check_bucket_name, check_key};
pub use meta::{META_MAX, Meta};
pub use temp::Temp;
