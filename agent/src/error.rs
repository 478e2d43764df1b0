//! The one error every capability returns: what went wrong (`kind`), in words that
//! name the dataset, command or path (`message`), and the request member that was
//! refused (`field`). No HTTP here: each wire format maps kinds onto its own codes in
//! one place (`crate::wire`: REST JSON, imageapi, Docker; `imagestore::legacy` and
//! `imagestore::jsonrpc2` for the mistify codecs).

pub use rpc_schema::ErrorKind as Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    /// The request member that was refused (`guest.disks[0].size`, `userns.uid_map`).
    pub field: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), field: None }
    }

    /// `invalid`, naming the refused member. The message starts with the member's name
    /// (the mistify codec shows only the message, and a bare "must not be empty" would
    /// not say what must not be).
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.starts_with(&format!("{field}:")) { message } else { format!("{field}: {message}") };
        Error { kind: Kind::Invalid, message, field: Some(field.to_owned()) }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(Kind::Busy, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, message)
    }
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(Kind::TooManyRequests, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }

    /// A caller without a token, or with one that does not reach what it asked for.
    pub fn unauthorized() -> Self {
        Self::new(Kind::Unauthorized, "missing or wrong API token (Authorization: Bearer <token>)")
    }

    /// A failed system call or command, with what was being done.
    pub fn os(doing: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::internal(format!("{doing}: {e}"))
    }

    /// The same error, naming `field` as the refused member.
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// How the shim's classification of a ZFS failure reads as a domain kind. The shim
/// alone reads ZFS's stderr; everything above it goes by this kind.
pub fn kind_of(kind: zfs_sys_shim::ErrorKind) -> Kind {
    use zfs_sys_shim::ErrorKind as K;
    match kind {
        K::NotFound => Kind::NotFound,
        K::AlreadyExists => Kind::Exists,
        K::Busy => Kind::Busy,
        K::NoSpace => Kind::NoSpace,
        K::PermissionDenied => Kind::Forbidden,
        K::InvalidName | K::InvalidStream => Kind::Invalid,
        K::Conflict | K::Interrupted => Kind::Conflict,
        K::Timeout => Kind::Timeout,
        K::Failed => Kind::Internal,
    }
}

impl From<zfs_sys_shim::Error> for Error {
    fn from(err: zfs_sys_shim::Error) -> Self {
        let field = match &err {
            zfs_sys_shim::Error::InvalidArgument { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        Error { kind: kind_of(err.kind()), message: err.to_string(), field }
    }
}

/// The object store's failures as domain kinds (for provisioning; the S3 listener maps
/// them to S3 codes itself, `wire::s3::store_error`).
impl From<objstore::Error> for Error {
    fn from(e: objstore::Error) -> Self {
        use objstore::ErrorKind as K;
        let kind = match e.kind {
            K::NotFound => Kind::NotFound,
            K::InvalidKey | K::KeyTooLong | K::InvalidPart | K::InvalidPartOrder | K::EntityTooSmall => Kind::Invalid,
            K::Conflict | K::PreconditionFailed => Kind::Conflict,
            K::Quota | K::NoSpace => Kind::NoSpace,
            K::Io => Kind::Internal,
        };
        Error::new(kind, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_the_member_once() {
        let e = Error::invalid("size", "must be above 0");
        assert_eq!(
            (e.kind, e.message.as_str(), e.field.as_deref()),
            (Kind::Invalid, "size: must be above 0", Some("size"))
        );
        assert_eq!(Error::invalid("size", "size: already named").message, "size: already named");
    }
}
