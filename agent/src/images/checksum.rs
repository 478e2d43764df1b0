//! The SHA-256 an image server vouches for: `Digest: sha-256=<base64>` (RFC 3230),
//! `Repr-Digest: sha-256=:<base64>:` (RFC 9530), `X-Checksum-Sha256: <hex>`, or a
//! `<url>.sha256` sidecar whose first word is the hex digest.

use base64::Engine;

fn valid_hex(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
}

fn from_base64(s: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(s.trim().trim_matches(':')).ok()?;
    (raw.len() == 32).then(|| hex::encode(&raw))
}

/// From response headers, given as (lowercase name, value) pairs.
pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<String> {
    for (name, value) in headers {
        match name {
            "x-checksum-sha256" => {
                if let Some(h) = valid_hex(value) {
                    return Some(h);
                }
            }
            "digest" | "repr-digest" | "content-digest" => {
                for part in value.split(',') {
                    if let Some((alg, v)) = part.trim().split_once('=')
                        && alg.trim().eq_ignore_ascii_case("sha-256")
                        && let Some(h) = from_base64(v)
                    {
                        return Some(h);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// From a `.sha256` sidecar (`<hex>  filename` as sha256sum writes it, or just `<hex>`).
pub fn from_sidecar(text: &str) -> Option<String> {
    valid_hex(text.split_whitespace().next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const B64: &str = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";

    #[test]
    fn reads_every_header_form() {
        assert_eq!(from_headers([("x-checksum-sha256", HEX)]).as_deref(), Some(HEX));
        assert_eq!(from_headers([("digest", &format!("MD5=abc, SHA-256={B64}") as &str)]).as_deref(), Some(HEX));
        assert_eq!(from_headers([("repr-digest", &format!("sha-256=:{B64}:") as &str)]).as_deref(), Some(HEX));
        assert_eq!(from_headers([("digest", "sha-256=short")]), None);
        assert_eq!(from_headers([("x-checksum-sha256", "zz")]), None);
    }

    #[test]
    fn reads_sidecars() {
        assert_eq!(from_sidecar(&format!("{HEX}  image.zfs\n")).as_deref(), Some(HEX));
        assert_eq!(from_sidecar(&HEX.to_uppercase()).as_deref(), Some(HEX));
        assert_eq!(from_sidecar("<html>not found</html>"), None);
    }
}
