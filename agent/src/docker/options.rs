//! What a volume request may say: Docker's `--opt` options, checked into properties,
//! and the name rules for volumes, service ids, snapshots and Docker mount ids. All
//! checked before anything reaches a `zfs` command line.

use std::collections::BTreeMap;

use super::store::{MOUNTS_PROP, OWNER_PROP};
use crate::error::{Error, Result};

/// Options `docker volume create --opt` may pass, already checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeOpts {
    /// `refquota` in bytes: snapshots do not eat into the volume's own size.
    pub size: Option<u64>,
    /// A snapshot of another volume to clone, `<volume>@<snapshot>`.
    pub from_snapshot: Option<(String, String)>,
    pub compression: Option<String>,
    pub recordsize: Option<u64>,
    pub service: Option<String>,
}

const COMPRESSION: &[&str] = &["on", "off", "lz4", "zstd", "zstd-fast", "gzip", "zle", "lzjb"];

impl VolumeOpts {
    /// Parse Docker's `Opts` map; an unknown or bad option names itself (`Opts.<key>`).
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<VolumeOpts> {
        let mut out = VolumeOpts::default();
        for (key, value) in opts {
            let field = format!("Opts.{key}");
            let bad = |why: String| Error::invalid(&field, format!("{key}={value:?}: {why}"));
            match key.as_str() {
                "size" | "quota" => {
                    let bytes = crate::config::parse_size(value)
                        .filter(|b| *b >= 1 << 20)
                        .ok_or_else(|| bad("not a size of at least 1M (e.g. 64M, 10G)".into()))?;
                    out.size = Some(bytes);
                }
                "from_snapshot" => {
                    let id = value.strip_prefix("volumes/").unwrap_or(value);
                    let (vol, snap) = id.split_once('@').ok_or_else(|| bad("not <volume>@<snapshot>".into()))?;
                    check_name(&field, vol)?;
                    check_snapshot_name(&field, snap)?;
                    out.from_snapshot = Some((vol.to_owned(), snap.to_owned()));
                }
                "compression" => {
                    let base = value.split_once('-').map_or(value.as_str(), |(b, level)| {
                        if level.chars().all(|c| c.is_ascii_digit()) { b } else { value.as_str() }
                    });
                    if !COMPRESSION.contains(&base) {
                        return Err(bad(format!("not one of {}", COMPRESSION.join(", "))));
                    }
                    out.compression = Some(value.clone());
                }
                "recordsize" => {
                    let bytes = crate::config::parse_size(value)
                        .filter(|b| b.is_power_of_two() && (512..=16 << 20).contains(b))
                        .ok_or_else(|| bad("not a power of two from 512 to 16M".into()))?;
                    out.recordsize = Some(bytes);
                }
                "service" => {
                    check_name(&field, value)?;
                    out.service = Some(value.clone());
                }
                _ => {
                    return Err(Error::invalid(
                        &field,
                        format!(
                            "unknown option {key:?} (size, quota, from_snapshot, compression, recordsize, service)"
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn props(&self) -> Vec<(String, String)> {
        let mut props = vec![(MOUNTS_PROP.to_owned(), String::new())];
        if let Some(s) = self.size {
            props.push(("refquota".into(), s.to_string()));
        }
        if let Some(c) = &self.compression {
            props.push(("compression".into(), c.clone()));
        }
        if let Some(r) = self.recordsize {
            props.push(("recordsize".into(), r.to_string()));
        }
        if let Some(s) = &self.service {
            props.push((OWNER_PROP.into(), s.clone()));
        }
        props
    }
}

/// Docker's volume name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), which also fits ZFS; also
/// used for service ids.
pub fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{name:?} is not a name: 2-128 of [A-Za-z0-9_.-], starting with a letter or digit"),
        ))
    }
}

/// A snapshot's short name: the same alphabet, may start with `_`, at most 128.
pub fn check_snapshot_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
    if ok { Ok(()) } else { Err(Error::invalid(field, format!("{name:?} is not a snapshot name"))) }
}

/// Docker mount ids come from Docker, but they still end up in a `zfs set` argument.
pub(super) fn check_mount_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok { Ok(()) } else { Err(Error::invalid("ID", format!("{id:?} is not a mount id"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<VolumeOpts> {
        VolumeOpts::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn options_parse_into_properties() {
        let o =
            opts(&[("size", "64M"), ("compression", "zstd-3"), ("recordsize", "16K"), ("service", "svc-1")]).unwrap();
        assert_eq!(o.size, Some(64 << 20));
        let props = o.props();
        assert!(props.contains(&("refquota".into(), (64u64 << 20).to_string())));
        assert!(props.contains(&("compression".into(), "zstd-3".into())));
        assert!(props.contains(&("recordsize".into(), "16384".into())));
        assert!(props.contains(&(OWNER_PROP.into(), "svc-1".into())));
        assert_eq!(opts(&[("quota", "1G")]).unwrap().size, Some(1 << 30));
        assert_eq!(
            opts(&[("from_snapshot", "volumes/v1@s1")]).unwrap().from_snapshot,
            Some(("v1".into(), "s1".into()))
        );
    }

    #[test]
    fn bad_options_name_themselves() {
        for (k, v) in [
            ("size", "lots"),
            ("size", "12"),
            ("compression", "brotli"),
            ("compression", "zstd-x"),
            ("recordsize", "3000"),
            ("from_snapshot", "v1"),
            ("from_snapshot", "../x@s"),
            ("from_snapshot", "v1@-s"),
            ("service", "-svc"),
            ("mountpoint", "/etc"),
        ] {
            let err = opts(&[(k, v)]).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(format!("Opts.{k}").as_str()), "{k}={v}");
        }
    }

    #[test]
    fn names() {
        for good in ["v1", "my.vol_2-x", "A9"] {
            assert!(check_name("Name", good).is_ok(), "{good}");
        }
        for bad in ["", "v", "-v", ".v", "a/b", "a..b/c", "a b", "v@s", &"x".repeat(129)] {
            assert!(check_name("Name", bad).is_err(), "{bad:?}");
        }
        assert!(check_mount_id("0123abcdef").is_ok());
        assert!(check_mount_id("a,b").is_err(), "a comma would corrupt the mount list");
    }
}
