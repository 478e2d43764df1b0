//! Validated ZFS names.
//!
//! Every name that reaches a `zfs`/`zpool` argument vector is one of these types, so a
//! name that could be read as an option (`-R`), climb out of a root (`..`), or smuggle
//! whitespace into a log line never gets that far. The rules are OpenZFS's
//! `zfs_namecheck.c`, tightened where tankd wants less than ZFS allows.

use std::fmt;
use std::str::FromStr;

/// ZFS_MAX_DATASET_NAME_LEN is 256 including the terminating NUL.
pub const MAX_NAME_LEN: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: String,
}

fn refuse(name: &str, reason: impl Into<String>) -> NameError {
    NameError { name: name.to_owned(), reason: reason.into() }
}

/// Check one path component (between `/`, or after `@`/`#`).
///
/// ZFS allows `[A-Za-z0-9_.:-]` and space; tankd refuses space (and all whitespace) and a
/// leading `-`, and refuses `.`/`..` as ZFS does.
pub fn check_component(whole: &str, component: &str) -> Result<(), NameError> {
    if component.is_empty() {
        return Err(refuse(whole, "empty component"));
    }
    if component == "." || component == ".." {
        return Err(refuse(whole, "'.' and '..' are not allowed"));
    }
    if component.starts_with('-') {
        return Err(refuse(whole, "a component may not start with '-'"));
    }
    if let Some(c) = component.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))) {
        let reason = if c.is_whitespace() || c.is_control() {
            "whitespace and control characters are not allowed".to_owned()
        } else {
            format!("character {c:?} is not allowed")
        };
        return Err(refuse(whole, reason));
    }
    Ok(())
}

fn check_length(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(refuse(name, "empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(refuse(name, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if name.contains("..") {
        return Err(refuse(name, "'..' is not allowed"));
    }
    Ok(())
}

/// A pool name: starts with a letter, no `/`, not a vdev keyword.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(String);

impl PoolName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PoolName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        check_length(s)?;
        check_component(s, s)?;
        if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(refuse(s, "a pool name must start with a letter"));
        }
        const RESERVED: [&str; 6] = ["mirror", "raidz", "draid", "spare", "log", "cache"];
        if RESERVED.iter().any(|r| s.starts_with(r)) {
            return Err(refuse(s, "a pool name may not start with a vdev keyword"));
        }
        Ok(PoolName(s.to_owned()))
    }
}

/// A filesystem or volume: `pool/a/b`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatasetName(String);

impl DatasetName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn pool(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// `self` or a descendant of `root`.
    pub fn is_within(&self, root: &DatasetName) -> bool {
        self.0 == root.0
            || (self.0.len() > root.0.len() && self.0.starts_with(&root.0) && self.0.as_bytes()[root.0.len()] == b'/')
    }

    /// Append a relative path (`a/b`), validating each component.
    pub fn join(&self, relative: &str) -> Result<DatasetName, NameError> {
        if relative.is_empty() {
            return Err(refuse(relative, "empty"));
        }
        if relative.starts_with('/') || relative.ends_with('/') {
            return Err(refuse(relative, "a relative name may not start or end with '/'"));
        }
        format!("{}/{}", self.0, relative).parse()
    }

    /// The parent dataset, if this is not a pool's root dataset.
    pub fn parent(&self) -> Option<DatasetName> {
        self.0.rsplit_once('/').map(|(p, _)| DatasetName(p.to_owned()))
    }

    /// The name relative to `root`, if it lies under it.
    pub fn relative_to(&self, root: &DatasetName) -> Option<&str> {
        if self.0 == root.0 {
            Some("")
        } else if self.is_within(root) {
            Some(&self.0[root.0.len() + 1..])
        } else {
            None
        }
    }

    pub fn snapshot(&self, snap: &str) -> Result<SnapshotName, NameError> {
        format!("{}@{}", self.0, snap).parse()
    }

    pub fn bookmark(&self, mark: &str) -> Result<BookmarkName, NameError> {
        format!("{}#{}", self.0, mark).parse()
    }
}

impl FromStr for DatasetName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        check_length(s)?;
        if s.contains('@') || s.contains('#') {
            return Err(refuse(s, "a dataset name may not contain '@' or '#'"));
        }
        if s.contains('%') {
            return Err(refuse(s, "'%' is reserved for ZFS's own use"));
        }
        let mut parts = s.split('/');
        let pool = parts.next().unwrap_or_default();
        pool.parse::<PoolName>().map_err(|e| refuse(s, e.reason))?;
        for part in parts {
            check_component(s, part)?;
        }
        Ok(DatasetName(s.to_owned()))
    }
}

/// `dataset@snap`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName {
    full: String,
    at: usize,
}

impl SnapshotName {
    pub fn as_str(&self) -> &str {
        &self.full
    }
    pub fn dataset(&self) -> DatasetName {
        DatasetName(self.full[..self.at].to_owned())
    }
    /// The part after `@`.
    pub fn short(&self) -> &str {
        &self.full[self.at + 1..]
    }
}

impl FromStr for SnapshotName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        split_suffixed(s, '@').map(|at| SnapshotName { full: s.to_owned(), at })
    }
}

/// `dataset#mark`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BookmarkName {
    full: String,
    hash: usize,
}

impl BookmarkName {
    pub fn as_str(&self) -> &str {
        &self.full
    }
    pub fn dataset(&self) -> DatasetName {
        DatasetName(self.full[..self.hash].to_owned())
    }
}

impl FromStr for BookmarkName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        split_suffixed(s, '#').map(|hash| BookmarkName { full: s.to_owned(), hash })
    }
}

/// Validate `dataset<sep>short` and return the separator's index.
fn split_suffixed(s: &str, sep: char) -> Result<usize, NameError> {
    check_length(s)?;
    let Some(idx) = s.find(sep) else {
        return Err(refuse(s, format!("missing '{sep}'")));
    };
    let (ds, short) = (&s[..idx], &s[idx + 1..]);
    if short.contains(['@', '#', '/']) {
        return Err(refuse(s, format!("nothing after '{sep}' may contain '@', '#' or '/'")));
    }
    ds.parse::<DatasetName>().map_err(|e| refuse(s, e.reason))?;
    check_component(s, short)?;
    Ok(idx)
}

/// Anything that can be the target of a command: its text and the dataset it lives in,
/// which is what the root check looks at.
pub trait ZfsName: fmt::Display + Send + Sync {
    fn as_str(&self) -> &str;
    fn owning_dataset(&self) -> DatasetName;
}

macro_rules! impl_name {
    ($t:ty, $owner:expr) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ZfsName for $t {
            fn as_str(&self) -> &str {
                <$t>::as_str(self)
            }
            fn owning_dataset(&self) -> DatasetName {
                let owner: fn(&$t) -> DatasetName = $owner;
                owner(self)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

impl_name!(DatasetName, |d| d.clone());
impl_name!(SnapshotName, |s| s.dataset());
impl_name!(BookmarkName, |b| b.dataset());

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The datasets tankd may touch. Every mutating call and every listing is checked against
/// them before a command runs.
#[derive(Debug, Clone, Default)]
pub struct Roots(Vec<DatasetName>);

impl Roots {
    pub fn new(roots: Vec<DatasetName>) -> Self {
        Roots(roots)
    }

    pub fn contains(&self, name: &DatasetName) -> bool {
        self.0.iter().any(|r| name.is_within(r))
    }

    pub fn describe(&self) -> String {
        self.0.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// A user property name in tankd's namespace or another module's (`module:prop`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserProp(String);

impl UserProp {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserProp {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        // zfs_prop.c: user properties need a ':', are at most 256 bytes, and use
        // lowercase letters, digits, ':', '-', '.', '_'.
        if !s.contains(':') {
            return Err(refuse(s, "a user property needs a ':'"));
        }
        if s.len() > 256 {
            return Err(refuse(s, "longer than 256 bytes"));
        }
        if s.starts_with('-') {
            return Err(refuse(s, "may not start with '-'"));
        }
        if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ':' | '-' | '.' | '_')) {
            return Err(refuse(s, "only lowercase letters, digits, ':', '-', '.', '_' are allowed"));
        }
        Ok(UserProp(s.to_owned()))
    }
}

impl fmt::Display for UserProp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hold tag owned by tankd: `tankd_<purpose>`. Built and parsed here only, so tankd
/// never releases a hold it did not place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HoldTag(String);

impl HoldTag {
    pub const PREFIX: &'static str = "tankd_";

    pub fn new(purpose: &str) -> Result<HoldTag, NameError> {
        let tag = format!("{}{purpose}", Self::PREFIX);
        check_component(&tag, &tag)?;
        if tag.len() > MAX_NAME_LEN {
            return Err(refuse(&tag, "too long"));
        }
        Ok(HoldTag(tag))
    }

    /// The purpose of a tag tankd placed, or `None` for someone else's tag.
    pub fn parse(tag: &str) -> Option<&str> {
        tag.strip_prefix(Self::PREFIX).filter(|p| !p.is_empty())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(s: &str) -> DatasetName {
        s.parse().unwrap()
    }

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["tank", "tank/a", "tank/a-b/c_d.e:f", "t1/x/y/z"] {
            assert_eq!(ok.parse::<DatasetName>().unwrap().as_str(), ok);
        }
        let s: SnapshotName = "tank/a@snap-1".parse().unwrap();
        assert_eq!(s.dataset(), ds("tank/a"));
        assert_eq!(s.short(), "snap-1");
        let b: BookmarkName = "tank/a#m".parse().unwrap();
        assert_eq!(b.dataset(), ds("tank/a"));
    }

    #[test]
    fn refuses_dangerous_names() {
        let bad = [
            "",
            "-R",
            "tank/-x",
            "tank/../etc",
            "tank/a/..",
            "tank/./a",
            "tank//a",
            "tank/a/",
            "/tank",
            "tank/a b",
            "tank/a\tb",
            "tank/a\nb",
            "tank/a@b",
            "tank/a#b",
            "tank/a%b",
            "1tank",
            "mirror0/a",
            "tank/a$b",
            "tank/é",
        ];
        for name in bad {
            assert!(name.parse::<DatasetName>().is_err(), "{name:?} should be refused");
        }
        let long = format!("tank/{}", "a".repeat(MAX_NAME_LEN));
        assert!(long.parse::<DatasetName>().is_err());
        for snap in ["tank/a@", "tank/a@-x", "tank/a@b@c", "tank/a@b/c", "@x", "tank/a", "tank/a@.."] {
            assert!(snap.parse::<SnapshotName>().is_err(), "{snap:?} should be refused");
        }
    }

    #[test]
    fn refusal_says_why() {
        let err = "tank/-rf".parse::<DatasetName>().unwrap_err();
        assert_eq!(err.name, "tank/-rf");
        assert!(err.reason.contains("'-'"), "{}", err.reason);
    }

    #[test]
    fn within_and_relative() {
        let root = ds("tank/tankd");
        assert!(ds("tank/tankd").is_within(&root));
        assert!(ds("tank/tankd/a/b").is_within(&root));
        assert!(!ds("tank/tankdx").is_within(&root));
        assert!(!ds("tank").is_within(&root));
        assert_eq!(ds("tank/tankd/a/b").relative_to(&root), Some("a/b"));
        assert_eq!(root.join("a/b").unwrap(), ds("tank/tankd/a/b"));
        for bad in ["", "/a", "a/", "../x", "a/../../b", "-x", "a@b"] {
            assert!(root.join(bad).is_err(), "{bad:?} should be refused");
        }
        let roots = Roots::new(vec![root.clone()]);
        assert!(roots.contains(&ds("tank/tankd/x")));
        assert!(!roots.contains(&ds("tank/other")));
    }

    #[test]
    fn user_props_and_hold_tags() {
        assert!("tankd:status".parse::<UserProp>().is_ok());
        for bad in ["status", "Tankd:x", "-tankd:x", "tankd:a b"] {
            assert!(bad.parse::<UserProp>().is_err(), "{bad:?}");
        }
        let tag = HoldTag::new("send").unwrap();
        assert_eq!(tag.as_str(), "tankd_send");
        assert_eq!(HoldTag::parse("tankd_send"), Some("send"));
        assert_eq!(HoldTag::parse("zrepl_x"), None);
        assert_eq!(HoldTag::parse("tankd_"), None);
    }
}
