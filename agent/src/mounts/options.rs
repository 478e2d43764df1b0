//! Mount options from requests, checked and split into mount(2) flags and the
//! filesystem's data string. Every mount is `nosuid,nodev` unless the config allows
//! `suid`/`dev` and the request asks for them.

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

/// Parse a request's option list. `Err` names the offending option.
pub fn parse(options: &[String], read_only: bool, allow_suid_dev: bool) -> Result<Parsed, String> {
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
            None => data.push(opt.clone()),
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
    fn defaults_are_nosuid_nodev_and_fs_options_pass_through() {
        let p = parse(&v(&["noatime", "errors=remount-ro", "discard"]), true, false).unwrap();
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
        assert_eq!(p.data, "errors=remount-ro,discard");
    }

    #[test]
    fn smuggling_and_privilege_are_refused() {
        for bad in ["ro,suid", "upperdir=/etc", "a b", "", "x=\"y\"", "Noatime", "lowerdir=/"] {
            assert!(parse(&v(&[bad]), false, false).is_err(), "{bad} accepted");
        }
        assert!(parse(&v(&["suid"]), false, false).unwrap_err().contains("allow_suid_dev"));
        assert!(parse(&v(&["rw"]), true, false).is_err());
        let p = parse(&v(&["suid", "dev"]), false, true).unwrap();
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
