//! Typed errors. Every variant names the target (dataset, snapshot or pool) and the
//! command line that failed, so a log line or an API error says what went wrong where.

use crate::name::NameError;

/// Coarse classification for callers that map errors to API codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Busy,
    NoSpace,
    PermissionDenied,
    InvalidName,
    /// The request conflicts with what exists (newer snapshots, dependent clones).
    Conflict,
    /// A stream that is not, or no longer, a valid ZFS stream.
    InvalidStream,
    /// A receive stopped part-way; its state may be resumable.
    Interrupted,
    Timeout,
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidName(#[from] NameError),

    #[error("{target} is outside tankd's dataset roots ({roots})")]
    OutsideRoots { target: String, roots: String },

    #[error("{target} does not exist (`{command}`: {stderr})")]
    NotFound { target: String, command: String, stderr: String },

    #[error("{target} already exists (`{command}`: {stderr})")]
    AlreadyExists { target: String, command: String, stderr: String },

    #[error("{target} is busy (`{command}`: {stderr})")]
    Busy { target: String, command: String, stderr: String },

    #[error("out of space for {target} (`{command}`: {stderr})")]
    NoSpace { target: String, command: String, stderr: String },

    #[error("permission denied on {target} (`{command}`: {stderr})")]
    PermissionDenied { target: String, command: String, stderr: String },

    #[error("{target} has newer snapshots or bookmarks: {} (`{command}`)", newer.join(", "))]
    NewerSnapshots { target: String, command: String, newer: Vec<String> },

    /// The state of the target forbids the operation: dependent clones or children,
    /// or changes since the snapshot an incremental stream starts from.
    #[error("{target} conflicts with the request (`{command}`: {stderr})")]
    Conflict { target: String, command: String, stderr: String },

    #[error("not a valid ZFS stream for {target} (`{command}`: {stderr})")]
    InvalidStream { target: String, command: String, stderr: String },

    #[error("receive into {target} was interrupted{} (`{command}`: {stderr})",
        if resume_token.is_some() { "; it can be resumed" } else { "" })]
    Interrupted { target: String, command: String, stderr: String, resume_token: Option<String> },

    #[error("timed out waiting for {what} of {target}")]
    Timeout { target: String, what: String },

    #[error("`{command}` failed for {target} ({status}): {stderr}")]
    CommandFailed { target: String, command: String, status: String, stderr: String },

    #[error("could not run `{command}` for {target}: {source}")]
    Spawn {
        target: String,
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("unexpected output from `{command}`: {reason}")]
    Parse { command: String, reason: String },

    #[error("invalid argument {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName(_) | Error::OutsideRoots { .. } | Error::InvalidArgument { .. } => {
                ErrorKind::InvalidName
            }
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::NoSpace { .. } => ErrorKind::NoSpace,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::NewerSnapshots { .. } | Error::Conflict { .. } => ErrorKind::Conflict,
            Error::InvalidStream { .. } => ErrorKind::InvalidStream,
            Error::Interrupted { .. } => ErrorKind::Interrupted,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::CommandFailed { .. } | Error::Spawn { .. } | Error::Parse { .. } => ErrorKind::Failed,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// What ZFS wrote, for the errors that come from a command's failure.
    fn stderr(&self) -> Option<&str> {
        match self {
            Error::NotFound { stderr, .. }
            | Error::AlreadyExists { stderr, .. }
            | Error::Busy { stderr, .. }
            | Error::NoSpace { stderr, .. }
            | Error::PermissionDenied { stderr, .. }
            | Error::Conflict { stderr, .. }
            | Error::InvalidStream { stderr, .. }
            | Error::Interrupted { stderr, .. }
            | Error::CommandFailed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// Whether ZFS's words say `detail`, beyond the error's kind.
    pub fn says(&self, detail: Detail) -> bool {
        let Some(text) = self.stderr() else { return false };
        let lower = text.to_ascii_lowercase();
        DETAILS.iter().filter(|(d, _)| *d == detail).any(|(_, needles)| needles.iter().any(|n| lower.contains(n)))
    }
}

/// Facts a caller acts on that a failure's kind does not carry. Read from stderr here,
/// beside [`classify`], so that nothing above the shim matches ZFS's text itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// A destroy refused because clones depend on the dataset's snapshots.
    DependentClones,
    /// A receive refused because the target holds an earlier interrupted receive's state.
    PartialReceiveState,
    /// `zfs mount` of a dataset that is mounted.
    AlreadyMounted,
    /// `zfs unmount` of a dataset that is not mounted.
    NotMounted,
    /// `zfs receive -A` on a dataset with nothing to abort.
    NoResumableState,
    /// `zfs hold` with a tag the snapshot already has.
    TagExists,
    /// `zfs release` of a tag the snapshot does not have.
    NoSuchTag,
}

const DETAILS: &[(Detail, &[&str])] = &[
    (Detail::DependentClones, &["dependent clones", "has dependent"]),
    (Detail::PartialReceiveState, &["partially-complete state"]),
    (Detail::AlreadyMounted, &["already mounted"]),
    (Detail::NotMounted, &["not currently mounted"]),
    (Detail::NoResumableState, &["does not have any resumable receive state"]),
    (Detail::TagExists, &["tag already exists"]),
    (Detail::NoSuchTag, &["no such tag"]),
];

/// Map a failed command's stderr to a typed error. The one place that reads ZFS's words;
/// `LC_ALL=C` is set on every command so these are stable.
pub(crate) fn classify(target: &str, command: &str, status: String, stderr: &str) -> Error {
    let lower = stderr.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let (target, command, stderr) = (target.to_owned(), command.to_owned(), stderr.trim().to_owned());

    if has(&["more recent snapshots or bookmarks exist", "more recent snapshots exist"]) {
        // The names follow the explanation, one per line.
        let newer = stderr
            .lines()
            .map(str::trim)
            .filter(|l| l.contains('@') || l.contains('#'))
            .filter(|l| !l.contains(' '))
            .map(str::to_owned)
            .collect();
        return Error::NewerSnapshots { target, command, newer };
    }
    if has(&["resuming stream can be generated", "partially received snapshot is saved"]) {
        let resume_token = stderr.split_whitespace().skip_while(|w| *w != "-t").nth(1).map(str::to_owned);
        return Error::Interrupted { target, command, stderr, resume_token };
    }
    if has(&[
        "invalid stream",
        "invalid backup stream",
        "bad magic number",
        "stream is not",
        "incomplete stream",
        "checksum mismatch",
        "failed to read from stream",
        "stream has unsupported feature",
        "stream version",
    ]) {
        return Error::InvalidStream { target, command, stderr };
    }
    if has(&["already exists", "bookmark exists"]) {
        return Error::AlreadyExists { target, command, stderr };
    }
    if has(&["does not exist", "no such pool", "no such dataset", "could not find any snapshots"]) {
        return Error::NotFound { target, command, stderr };
    }
    if has(&[
        "has dependent clones",
        "has children",
        "use '-r'",
        "has been modified",
        "being held",
        "destination has snapshots",
    ]) {
        return Error::Conflict { target, command, stderr };
    }
    if has(&["is busy", "device busy", "resource busy"]) {
        return Error::Busy { target, command, stderr };
    }
    if has(&["out of space", "no space left", "not enough space", "exceeds quota"]) {
        return Error::NoSpace { target, command, stderr };
    }
    if has(&["permission denied", "must be superuser", "operation not permitted"]) {
        return Error::PermissionDenied { target, command, stderr };
    }
    if has(&[
        "invalid character",
        "name is too long",
        "invalid dataset name",
        "invalid name",
        "empty component",
        "leading slash",
        "trailing slash",
    ]) {
        return Error::InvalidName(NameError { name: target, reason: stderr });
    }
    Error::CommandFailed { target, command, status, stderr }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(stderr: &str) -> ErrorKind {
        classify("tank/x", "zfs test", "exit status: 1".into(), stderr).kind()
    }

    #[test]
    fn details_are_read_from_the_words_kinds_do_not_carry() {
        let e = |stderr: &str| classify("tank/x", "zfs test", "exit status: 1".into(), stderr);
        let clones = e(
            "cannot destroy 'tank/x': filesystem has dependent clones\nuse '-R' to destroy the following datasets:\n",
        );
        assert!(clones.says(Detail::DependentClones) && !clones.says(Detail::AlreadyMounted));
        assert!(e("cannot mount 'tank/x': filesystem already mounted\n").says(Detail::AlreadyMounted));
        assert!(e("cannot unmount 'tank/x': not currently mounted\n").says(Detail::NotMounted));
        assert!(e("cannot hold snapshot 'tank/x@s': tag already exists on this dataset\n").says(Detail::TagExists));
        assert!(
            e("cannot release hold from snapshot 'tank/x@s': no such tag on this dataset\n").says(Detail::NoSuchTag)
        );
        assert!(e("'tank/x' does not have any resumable receive state to abort\n").says(Detail::NoResumableState));
        let partial = e(
            "cannot receive new filesystem stream: destination tank/x contains partially-complete state from \"zfs receive -s\".\n",
        );
        assert!(partial.says(Detail::PartialReceiveState));
        let name = Error::InvalidArgument { field: "x", reason: "dependent clones".into() };
        assert!(!name.says(Detail::DependentClones), "only ZFS's own words count");
    }

    #[test]
    fn classifies_zfs_messages() {
        assert_eq!(k("cannot open 'tank/x': dataset does not exist\n"), ErrorKind::NotFound);
        assert_eq!(k("cannot open 'nope': no such pool\n"), ErrorKind::NotFound);
        assert_eq!(k("cannot create 'tank/x': dataset already exists\n"), ErrorKind::AlreadyExists);
        assert_eq!(k("cannot destroy 'tank/x': dataset is busy\n"), ErrorKind::Busy);
        assert_eq!(k("cannot create bookmark 'tank/x#m': bookmark exists\n"), ErrorKind::AlreadyExists);
        assert_eq!(k("cannot create 'tank/x': out of space\n"), ErrorKind::NoSpace);
        assert_eq!(k("cannot create 'tank/x': permission denied\n"), ErrorKind::PermissionDenied);
        assert_eq!(
            k(
                "cannot destroy 'tank/x@a': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\ntank/c\n"
            ),
            ErrorKind::Conflict
        );
        assert_eq!(k("cannot receive: invalid stream (bad magic number)\n"), ErrorKind::InvalidStream);
        assert_eq!(
            k("cannot receive incremental stream: destination tank/x has been modified\nsince most recent snapshot\n"),
            ErrorKind::Conflict
        );
        assert_eq!(
            k("cannot receive incremental stream: destination tank/x has been modified\n\
               since most recent snapshot\n"),
            ErrorKind::Conflict
        );
        assert_eq!(
            k("cannot destroy snapshot tank/x@a: it's being held. Run 'zfs holds -r tank/x@a' to see holders.\n"),
            ErrorKind::Conflict
        );
        assert_eq!(k("something else entirely\n"), ErrorKind::Failed);
    }

    #[test]
    fn newer_snapshots_are_listed() {
        let stderr = "cannot rollback to 'tank/x@a': more recent snapshots or bookmarks exist\n\
                      use '-r' to force deletion of the following snapshots and bookmarks:\n\
                      tank/x@b\ntank/x@c\n";
        match classify("tank/x@a", "zfs rollback tank/x@a", "exit status: 1".into(), stderr) {
            Error::NewerSnapshots { newer, .. } => assert_eq!(newer, ["tank/x@b", "tank/x@c"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn resume_token_is_extracted() {
        let stderr = "cannot receive resume stream: checksum mismatch or incomplete stream.\n\
                      Partially received snapshot is saved.\n\
                      A resuming stream can be generated on the sending system by running:\n    \
                      zfs send -t 1-10a7c1d2c6-f0-789c636064000310a50\n";
        match classify("tank/r", "zfs receive -s tank/r", "exit status: 1".into(), stderr) {
            Error::Interrupted { resume_token, .. } => {
                assert_eq!(resume_token.as_deref(), Some("1-10a7c1d2c6-f0-789c636064000310a50"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
