//! Mount options from requests, checked and split into mount(2) flags and the
//! filesystem's data string. Every mount is `nosuid,nodev` unless the config allows
//! `suid`/`dev` and the request asks for them.
//!
//! A filesystem's own options reach the kernel only from an allowlist per type
//! ([`fs_option_allowed`]): options that panic the host (`errors=panic`), open other
//! devices or files (xfs `logdev=`/`rtdev=`, ext4 `journal_path=`, btrfs `device=`), or
//! change who owns what (`resuid=`) are refused with the option named.

use nix::mount::MsFlags;

/// Filesystems an attachment may be mounted as.
pub const FS_TYPES: &[&str] = &["ext4", "xfs", "squashfs", "erofs", "btrfs", "vfat", "zfs"];

/// Options the overlay builder sets itself; a request may not smuggle its own.
const RESERVED: &[&str] = &["lowerdir", "upperdir", "workdir", "loop", "offset", "sizelimit"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub flags: MsFlags,
    /// Filesystem-specific options, comma-joined for the data argument.
    pub data: String,
}

pub fn check_fs_type(fs_type: &str) -> Result<(), String> {
    if FS_TYPES.contains(&fs_type) { Ok(()) } else { Err(format!("{fs_type:?} is not one of {}", FS_TYPES.join(", "))) }
}

/// What a value may be in an allowlisted option.
#[derive(Clone, Copy)]
enum Value {
    /// A bare option, `discard`.
    None,
    /// A decimal number, `commit=30`.
    Number,
    /// A size in bytes with an optional k/m/g suffix, `allocsize=64k`.
    Size,
    /// An octal mode, `umask=022`.
    Octal,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// The filesystem options a request may pass for `fs_type`, with the values each takes.
fn fs_options(fs_type: &str) -> &'static [(&'static str, Value)] {
    use Value::*;
    const ERRORS_SAFE: Value = OneOf(&["remount-ro", "continue"]);
    match fs_type {
        "ext4" => &[
            ("errors", ERRORS_SAFE),
            ("discard", None),
            ("nodiscard", None),
            ("data", OneOf(&["ordered", "writeback", "journal"])),
            ("commit", Number),
            ("barrier", None),
            ("nobarrier", None),
            ("noload", None),
            ("norecovery", None),
            ("user_xattr", None),
            ("nouser_xattr", None),
            ("acl", None),
            ("noacl", None),
            ("delalloc", None),
            ("nodelalloc", None),
            ("auto_da_alloc", None),
            ("noauto_da_alloc", None),
            ("journal_checksum", None),
            ("nojournal_checksum", None),
            ("stripe", Number),
            ("grpid", None),
            ("nogrpid", None),
        ],
        "xfs" => &[
            ("discard", None),
            ("nodiscard", None),
            ("noquota", None),
            ("inode64", None),
            ("inode32", None),
            ("largeio", None),
            ("nolargeio", None),
            ("allocsize", Size),
            ("logbufs", Number),
            ("logbsize", Size),
            ("norecovery", None),
            ("nouuid", None),
            ("wsync", None),
            ("filestreams", None),
            ("swalloc", None),
        ],
        "squashfs" => &[("errors", OneOf(&["continue"]))],
        "erofs" => &[
            ("user_xattr", None),
            ("nouser_xattr", None),
            ("acl", None),
            ("noacl", None),
            ("cache_strategy", OneOf(&["disabled", "readahead", "readaround"])),
        ],
        "btrfs" => &[
            ("compress", OneOf(&["zstd", "lzo", "zlib", "no"])),
            ("compress-force", OneOf(&["zstd", "lzo", "zlib"])),
            ("space_cache", OneOf(&["v2"])),
            ("discard", None),
            ("nodiscard", None),
            ("ssd", None),
            ("nossd", None),
            ("autodefrag", None),
            ("noautodefrag", None),
            ("commit", Number),
            ("subvolid", Number),
            ("acl", None),
            ("noacl", None),
        ],
        "vfat" => &[
            ("uid", Number),
            ("gid", Number),
            ("umask", Octal),
            ("dmask", Octal),
            ("fmask", Octal),
            ("utf8", None),
            ("shortname", OneOf(&["lower", "win95", "winnt", "mixed"])),
            ("errors", ERRORS_SAFE),
            ("quiet", None),
            ("flush", None),
            ("tz", OneOf(&["UTC"])),
        ],
        _ => &[],
    }
}

/// Whether `key[=value]` is a filesystem option requests may pass for `fs_type`.
pub fn fs_option_allowed(fs_type: &str, key: &str, value: Option<&str>) -> bool {
    let Some((_, kind)) = fs_options(fs_type).iter().find(|(k, _)| *k == key) else { return false };
    let digits = |v: &str| !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit());
    match (kind, value) {
        (Value::None, None) => true,
        (Value::Number, Some(v)) => digits(v),
        (Value::Size, Some(v)) => digits(v.strip_suffix(['k', 'm', 'g']).unwrap_or(v)),
        (Value::Octal, Some(v)) => v.len() <= 4 && !v.is_empty() && v.bytes().all(|b| (b'0'..=b'7').contains(&b)),
        (Value::OneOf(words), Some(v)) => words.contains(&v),
        _ => false,
    }
}

/// Parse a request's option list for a filesystem of `fs_type`. `Err` names the
/// offending option.
pub fn parse(options: &[String], fs_type: &str, read_only: bool, allow_suid_dev: bool) -> Result<Parsed, String> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut data = Vec::new();
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    for opt in options {
        let (key, value) = opt.split_once('=').map_or((opt.as_str(), None), |(k, v)| (k, Some(v)));
        let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let value_ok = value.is_none_or(|v| {
            v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '+'))
        });
        if !key_ok || !value_ok {
            return Err(format!("{opt:?}: one option per entry, as key or key=value (no commas, spaces or quotes)"));
        }
        if RESERVED.contains(&key) {
            return Err(format!("{opt:?}: tankd sets {key} itself"));
        }
        let flag = match (key, value) {
            ("ro", None) => Some((MsFlags::MS_RDONLY, true)),
            ("rw", None) if read_only => return Err(format!("{opt:?} contradicts read_only")),
            ("rw", None) => Some((MsFlags::MS_RDONLY, false)),
            ("noatime", None) => Some((MsFlags::MS_NOATIME, true)),
            ("nodiratime", None) => Some((MsFlags::MS_NODIRATIME, true)),
            ("relatime", None) => Some((MsFlags::MS_RELATIME, true)),
            ("strictatime", None) => Some((MsFlags::MS_STRICTATIME, true)),
            ("lazytime", None) => Some((MsFlags::MS_LAZYTIME, true)),
            ("noexec", None) => Some((MsFlags::MS_NOEXEC, true)),
            ("exec", None) => Some((MsFlags::MS_NOEXEC, false)),
            ("sync", None) => Some((MsFlags::MS_SYNCHRONOUS, true)),
            ("dirsync", None) => Some((MsFlags::MS_DIRSYNC, true)),
            ("nosuid", None) => Some((MsFlags::MS_NOSUID, true)),
            ("nodev", None) => Some((MsFlags::MS_NODEV, true)),
            ("suid" | "dev", None) if !allow_suid_dev => {
                return Err(format!("{opt:?} is refused: the config does not set allow_suid_dev"));
            }
            ("suid", None) => Some((MsFlags::MS_NOSUID, false)),
            ("dev", None) => Some((MsFlags::MS_NODEV, false)),
            _ => None,
        };
        match flag {
            Some((f, true)) => flags |= f,
            Some((f, false)) => flags &= !f,
            None if fs_option_allowed(fs_type, key, value) => data.push(opt.clone()),
            None => {
                let allowed: Vec<&str> = fs_options(fs_type).iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "{opt:?} is not a {fs_type} option tankd passes on (allowed: {})",
                    if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
                ));
            }
        }
    }
    Ok(Parsed { flags, data: data.join(",") })
}

/// A path that goes into an overlay option string: `,` `:` `=` and `\` would split it.
pub fn check_layer_path(path: &str) -> Result<(), String> {
    if path.contains([',', ':', '=', '\\']) {
        Err(format!("{path:?} cannot be an overlay layer: it contains , : = or \\"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(opts: &[&str]) -> Vec<String> {
        opts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_are_nosuid_nodev_and_allowed_fs_options_pass_through() {
        let p = parse(&v(&["noatime", "errors=remount-ro", "discard"]), "ext4", true, false).unwrap();
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
        assert_eq!(p.data, "errors=remount-ro,discard");
        let p = parse(&v(&["allocsize=64k", "logbufs=8"]), "xfs", false, false).unwrap();
        assert_eq!(p.data, "allocsize=64k,logbufs=8");
        assert_eq!(
            parse(&v(&["umask=022", "shortname=mixed"]), "vfat", false, false).unwrap().data,
            "umask=022,shortname=mixed"
        );
    }

    #[test]
    fn fs_options_outside_the_allowlist_are_refused_by_name() {
        for (fs, bad) in [
            ("ext4", "errors=panic"),
            ("ext4", "journal_path=/dev/sda"),
            ("ext4", "resuid=1000"),
            ("ext4", "commit=soon"),
            ("xfs", "logdev=/dev/sda"),
            ("xfs", "rtdev=/dev/sdb"),
            ("btrfs", "device=/dev/sda"),
            ("squashfs", "errors=panic"),
            ("squashfs", "discard"),
            ("vfat", "umask=999"),
            ("zfs", "zfsutil"),
        ] {
            let err = parse(&v(&[bad]), fs, false, false).unwrap_err();
            assert!(err.contains(bad) && err.contains(fs), "{fs} {bad}: {err}");
        }
    }

    #[test]
    fn smuggling_and_privilege_are_refused() {
        for bad in ["ro,suid", "upperdir=/etc", "a b", "", "x=\"y\"", "Noatime", "lowerdir=/"] {
            assert!(parse(&v(&[bad]), "ext4", false, false).is_err(), "{bad} accepted");
        }
        assert!(parse(&v(&["suid"]), "ext4", false, false).unwrap_err().contains("allow_suid_dev"));
        assert!(parse(&v(&["rw"]), "ext4", true, false).is_err());
        let p = parse(&v(&["suid", "dev"]), "ext4", false, true).unwrap();
        assert!(!p.flags.contains(MsFlags::MS_NOSUID) && !p.flags.contains(MsFlags::MS_NODEV));
    }

    #[test]
    fn fs_types_come_from_the_allowlist() {
        assert!(check_fs_type("squashfs").is_ok());
        assert!(check_fs_type("nfs").unwrap_err().contains("ext4"));
        assert!(check_layer_path("/a/b:c").is_err());
        assert!(check_layer_path("/var/lib/tankd/mounts/3").is_ok());
    }
}
