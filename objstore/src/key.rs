//! Which object keys and bucket names the store accepts. A key becomes a path under
//! `objects/` segment by segment, so it must be a path that names exactly that file:
//! no empty, `.` or `..` segment, nothing the kernel would refuse. Each rule has its
//! own message because users read them in the documentation and in errors.

use crate::error::{Error, ErrorKind, Result};

pub const KEY_MAX: usize = 1024;
/// NAME_MAX of Linux filesystems, ZFS included.
pub const SEGMENT_MAX: usize = 255;

pub fn check_key(key: &str) -> Result<()> {
    let refuse = |rule: &str| Err(Error::new(ErrorKind::InvalidKey, format!("key {key:?}: {rule}")));
    if key.is_empty() {
        return Err(Error::new(ErrorKind::InvalidKey, "key may not be empty"));
    }
    if key.len() > KEY_MAX {
        return Err(Error::new(
            ErrorKind::KeyTooLong,
            format!("key of {} bytes: a key may not be longer than {KEY_MAX} bytes", key.len()),
        ));
    }
    if key.contains('\0') {
        return refuse("a key may not contain NUL");
    }
    if key.starts_with('/') {
        return refuse("a key may not start with \"/\"");
    }
    if key.ends_with('/') {
        return refuse("a key may not end with \"/\"");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return refuse("a key may not contain \"//\"");
        }
        if segment == "." || segment == ".." {
            return refuse("a segment may not be \".\" or \"..\"");
        }
        if segment.len() > SEGMENT_MAX {
            return refuse("a segment (between \"/\") may not be longer than 255 bytes");
        }
    }
    Ok(())
}

/// S3's bucket naming rules (the ones that matter for a name that also becomes a
/// dataset name and a DNS label).
pub fn check_bucket_name(name: &str) -> Result<()> {
    let refuse = |rule: &str| Err(Error::new(ErrorKind::InvalidKey, format!("bucket name {name:?}: {rule}")));
    if name.len() < 3 || name.len() > 63 {
        return refuse("a bucket name must be 3 to 63 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return refuse("a bucket name may hold only lowercase letters, digits, \".\" and \"-\"");
    }
    let letter_or_digit = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !letter_or_digit(bytes[0]) || !letter_or_digit(bytes[bytes.len() - 1]) {
        return refuse("a bucket name must start and end with a letter or digit");
    }
    if name.contains("..") {
        return refuse("a bucket name may not contain \"..\"");
    }
    if looks_like_ipv4(name) {
        return refuse("a bucket name may not be an IP address");
    }
    Ok(())
}

/// Four dot-separated groups of digits: S3 refuses these whether or not each group is
/// a valid octet, so this does too.
fn looks_like_ipv4(name: &str) -> bool {
    let groups: Vec<&str> = name.split('.').collect();
    groups.len() == 4 && groups.iter().all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(key: &str) -> Error {
        match check_key(key) {
            Err(err) => err,
            Ok(()) => panic!("{key:?} was accepted"),
        }
    }

    #[test]
    fn keys_that_name_one_file_are_accepted() {
        for key in [
            "a",
            "a/b/c",
            "photos/2024/x.jpg",
            "a-c",
            "a.b",
            ".hidden",
            "...",
            "a/.b",
            "日本/語",
            "with space",
            "x\\y",
            ".tmp",
            ".uploads",
        ] {
            check_key(key).unwrap_or_else(|e| panic!("{key:?}: {e}"));
        }
        let longest = ["a".repeat(255), "b".repeat(255), "c".repeat(255), "d".repeat(254), "e".into()].join("/");
        assert_eq!(longest.len(), KEY_MAX);
        check_key(&longest).unwrap();
        check_key(&format!("{}/{}", "s".repeat(SEGMENT_MAX), "t".repeat(SEGMENT_MAX))).unwrap();
    }

    #[test]
    fn each_rule_refuses_with_its_own_message() {
        let cases = [
            ("", ErrorKind::InvalidKey, "key may not be empty"),
            ("a\0b", ErrorKind::InvalidKey, "may not contain NUL"),
            ("/a", ErrorKind::InvalidKey, "may not start with \"/\""),
            ("a/", ErrorKind::InvalidKey, "may not end with \"/\""),
            ("a//b", ErrorKind::InvalidKey, "may not contain \"//\""),
            ("a/../b", ErrorKind::InvalidKey, "a segment may not be \".\" or \"..\""),
            ("./a", ErrorKind::InvalidKey, "a segment may not be \".\" or \"..\""),
            ("..", ErrorKind::InvalidKey, "a segment may not be \".\" or \"..\""),
            ("a/.", ErrorKind::InvalidKey, "a segment may not be \".\" or \"..\""),
        ];
        for (key, kind, text) in cases {
            let err = refused(key);
            assert_eq!(err.kind, kind, "{key:?}");
            assert!(err.message.contains(text), "{key:?}: {}", err.message);
        }
        assert_eq!(refused("a/../b").message, "key \"a/../b\": a segment may not be \".\" or \"..\"");

        let long_segment = format!("a/{}", "s".repeat(SEGMENT_MAX + 1));
        let err = refused(&long_segment);
        assert_eq!(err.kind, ErrorKind::InvalidKey);
        assert!(err.message.contains("longer than 255 bytes"), "{}", err.message);

        let too_long = "k".repeat(KEY_MAX + 1);
        let err = refused(&too_long);
        assert_eq!(err.kind, ErrorKind::KeyTooLong);
        assert!(err.message.contains("1025 bytes"), "{}", err.message);
        // Bytes, not characters: 342 three-byte characters are 1026 bytes.
        assert_eq!(refused(&"語".repeat(342)).kind, ErrorKind::KeyTooLong);
    }

    #[test]
    fn bucket_names_follow_the_s3_rules() {
        for name in ["abc", "my-bucket", "my.bucket.1", "0ab", &"a".repeat(63), "1.2.3"] {
            check_bucket_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let cases = [
            ("ab", "3 to 63"),
            (&"a".repeat(64), "3 to 63"),
            ("Abc", "only lowercase"),
            ("a_b", "only lowercase"),
            ("-ab", "start and end"),
            ("ab.", "start and end"),
            ("a..b", "\"..\""),
            ("192.168.5.4", "IP address"),
            ("999.1.1.1", "IP address"),
        ];
        for (name, text) in cases {
            let err = check_bucket_name(name).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidKey);
            assert!(err.message.contains(text), "{name:?}: {}", err.message);
        }
    }
}
