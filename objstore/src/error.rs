//! The one error type of the store. Its kind is what the S3 layer maps to a response;
//! its message is what a user reads, so it names the key, upload or part and the
//! operation, never the bucket's absolute root path.

use nix::errno::Errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The key, upload or part is missing.
    NotFound,
    /// The key cannot map onto a path (the message says which rule), or the metadata
    /// is too large to store.
    InvalidKey,
    /// The key is longer than 1024 bytes.
    KeyTooLong,
    /// The key is a "directory" (a prefix of other keys) or a parent of it is an object.
    Conflict,
    /// `Commit::IfAbsent` found an object, or `Commit::IfMatch` found none or another etag.
    PreconditionFailed,
    /// Complete: a listed part is missing or its etag differs; put_part: the part number
    /// is outside 1..=10000.
    InvalidPart,
    /// Complete: part numbers are not strictly ascending.
    InvalidPartOrder,
    /// Complete: a part other than the last is below the minimum part size.
    EntityTooSmall,
    /// EDQUOT anywhere (write, fsync, close, rename, mkdir).
    Quota,
    /// ENOSPC anywhere.
    NoSpace,
    /// Anything else.
    Io,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into() }
    }

    /// A failed system call during `what` (e.g. `key "a": rename`), its kind by errno.
    pub(crate) fn sys(errno: Errno, what: impl std::fmt::Display) -> Error {
        Error::new(kind_of_errno(errno), format!("{what}: {}", errno.desc()))
    }

    /// Like [`Error::sys`], for a failure whose ENOENT does not mean the key is missing
    /// (a temp file or the bucket layout gone): that is an I/O fault, not a 404.
    pub(crate) fn sys_internal(errno: Errno, what: impl std::fmt::Display) -> Error {
        let kind = match kind_of_errno(errno) {
            ErrorKind::NotFound => ErrorKind::Io,
            kind => kind,
        };
        Error::new(kind, format!("{what}: {}", errno.desc()))
    }
}

/// Lets a caller that writes a [`crate::Temp`] through `std::io::Write` keep the kind
/// (a full quota stays `Quota`, not a generic I/O error).
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        match err.raw_os_error() {
            Some(code) => Error::sys_internal(Errno::from_raw(code), "write"),
            None => Error::new(ErrorKind::Io, format!("write: {err}")),
        }
    }
}

/// The kind a failed system call maps to. ENOENT is NotFound only where the caller
/// looked up a key; callers where it means something else use [`Error::sys_internal`].
pub(crate) fn kind_of_errno(errno: Errno) -> ErrorKind {
    match errno {
        Errno::EDQUOT => ErrorKind::Quota,
        Errno::ENOSPC => ErrorKind::NoSpace,
        Errno::ENOENT => ErrorKind::NotFound,
        // A file where a directory of the key's path should be, or the reverse.
        Errno::ENOTDIR | Errno::EISDIR => ErrorKind::Conflict,
        _ => ErrorKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        assert_eq!(kind_of_errno(Errno::EDQUOT), ErrorKind::Quota);
        assert_eq!(kind_of_errno(Errno::ENOSPC), ErrorKind::NoSpace);
        assert_eq!(kind_of_errno(Errno::ENOENT), ErrorKind::NotFound);
        assert_eq!(kind_of_errno(Errno::ENOTDIR), ErrorKind::Conflict);
        assert_eq!(kind_of_errno(Errno::EISDIR), ErrorKind::Conflict);
        assert_eq!(kind_of_errno(Errno::EIO), ErrorKind::Io);
        assert_eq!(kind_of_errno(Errno::ELOOP), ErrorKind::Io);
    }

    #[test]
    fn an_internal_enoent_is_io_but_quota_stays_quota() {
        assert_eq!(Error::sys_internal(Errno::ENOENT, "temp").kind, ErrorKind::Io);
        assert_eq!(Error::sys_internal(Errno::EDQUOT, "temp").kind, ErrorKind::Quota);
        let err = Error::sys(Errno::ENOSPC, "key \"a\": fsync");
        assert_eq!(err.kind, ErrorKind::NoSpace);
        assert_eq!(err.to_string(), "key \"a\": fsync: No space left on device");
    }

    #[test]
    fn an_io_error_keeps_its_errno_kind() {
        let quota: Error = std::io::Error::from_raw_os_error(libc::EDQUOT).into();
        assert_eq!(quota.kind, ErrorKind::Quota);
        let full: Error = std::io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert_eq!(full.kind, ErrorKind::NoSpace);
        let other: Error = std::io::Error::other("boom").into();
        assert_eq!(other.kind, ErrorKind::Io);
    }
}
