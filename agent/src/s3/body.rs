//! A request body into a temp file of the bucket: MD5 (for the ETag, kept by the temp
//! file) and the checksums the client asked for are computed in the same pass, on a
//! blocking thread, while this task keeps reading the socket (and `s3s` checks the
//! payload signature), so the two use both cores. The body is bounded (`max` bytes)
//! and must not stall for longer than `idle`.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, StreamingBlob};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use crate::wire::s3::io_error;

/// Chunks in flight between the socket and the writer: back pressure beyond this.
const QUEUE: usize = 8;

pub struct Written {
    pub temp: objstore::Temp,
    pub checksum: Checksum,
    pub md5: [u8; 16],
}

/// Which checksums a request asks to be computed: those it sent (header or announced
/// trailer) and the algorithm it names.
pub fn hasher_for(sent: &Checksum, algorithm: Option<&str>, trailer_names: Option<&str>) -> S3Result<ChecksumHasher> {
    let mut h = ChecksumHasher::default();
    let mut want = |name: &str| -> S3Result<()> {
        match name.to_ascii_lowercase().trim() {
            "crc32" | "x-amz-checksum-crc32" => h.crc32 = Some(Default::default()),
            "crc32c" | "x-amz-checksum-crc32c" => h.crc32c = Some(Default::default()),
            "sha1" | "x-amz-checksum-sha1" => h.sha1 = Some(Default::default()),
            "sha256" | "x-amz-checksum-sha256" => h.sha256 = Some(Default::default()),
            "crc64nvme" | "x-amz-checksum-crc64nvme" => h.crc64nvme = Some(Default::default()),
            other => return Err(s3_error!(InvalidRequest, "checksum algorithm {other:?} is not supported")),
        }
        Ok(())
    };
    for (name, present) in [
        ("crc32", sent.checksum_crc32.is_some()),
        ("crc32c", sent.checksum_crc32c.is_some()),
        ("sha1", sent.checksum_sha1.is_some()),
        ("sha256", sent.checksum_sha256.is_some()),
        ("crc64nvme", sent.checksum_crc64nvme.is_some()),
    ] {
        if present {
            want(name)?;
        }
    }
    if let Some(a) = algorithm {
        want(a)?;
    }
    for name in trailer_names.into_iter().flat_map(|t| t.split(',')) {
        if !name.trim().is_empty() {
            want(name)?;
        }
    }
    Ok(h)
}

/// Streams `body` into `temp`. Any failure drops the temp file (it unlinks itself).
pub async fn receive(
    body: StreamingBlob,
    temp: objstore::Temp,
    hasher: ChecksumHasher,
    max: u64,
    idle: Duration,
) -> S3Result<Written> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let (mut temp, mut hasher) = (temp, hasher);
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            temp.write_all(&chunk).map_err(|e| io_error("writing the object", e))?;
        }
        let md5 = temp.md5();
        Ok::<_, S3Error>(Written { temp, checksum: hasher.finalize(), md5 })
    });
    let mut body = body;
    let mut total = 0u64;
    let read = async {
        loop {
            let next = match tokio::time::timeout(idle, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::RequestTimeout,
                        format!("the body sent nothing for {} s", idle.as_secs()),
                    ));
                }
            };
            let Some(chunk) = next else { return Ok(()) };
            let chunk = chunk.map_err(body_error)?;
            total += chunk.len() as u64;
            if total > max {
                return Err(s3_error!(EntityTooLarge, "the body is larger than the {max} bytes this node takes"));
            }
            if tx.send(chunk).await.is_err() {
                // The writer stopped (its own error says why, e.g. the quota): read the
                // rest and drop it, so the client is answered rather than cut off.
                while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, body.next()).await {
                    total += chunk.len() as u64;
                    if total > max {
                        break;
                    }
                }
                return Ok(());
            }
        }
    };
    let read_result = read.await;
    drop(tx);
    let written = writer.await.map_err(S3Error::internal_error)?;
    read_result?;
    written
}

/// The body stream's own failures (`s3s`' chunk signature, checksum trailer and framing
/// checks): their types are private in `s3s`, so they are told apart by their text.
fn body_error(e: s3s::StdError) -> S3Error {
    let text = e.to_string();
    let code = if text.contains("SignatureMismatch") {
        S3ErrorCode::SignatureDoesNotMatch
    } else if text.contains("Checksum") || text.contains("checksum") {
        S3ErrorCode::BadDigest
    } else if text.contains("Incomplete") || text.contains("incomplete") {
        S3ErrorCode::IncompleteBody
    } else if text.contains("XAmzContentSHA256Mismatch") || text.contains("sha256") {
        S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into())
    } else {
        S3ErrorCode::IncompleteBody
    };
    tracing::info!(error = %text, code = code.as_str(), "request body refused");
    let custom = matches!(code, S3ErrorCode::Custom(_));
    let mut e = S3Error::with_message(code, format!("the request body was refused: {text}"));
    if custom {
        e.set_status_code(http::StatusCode::BAD_REQUEST);
    }
    e
}

/// Compares what the client sent (header, or the verified trailer) with what was
/// computed; every mismatch is `BadDigest` naming the algorithm.
pub fn verify(sent: &Checksum, computed: &Checksum, content_md5: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    let pairs = [
        ("CRC32", &sent.checksum_crc32, &computed.checksum_crc32),
        ("CRC32C", &sent.checksum_crc32c, &computed.checksum_crc32c),
        ("SHA1", &sent.checksum_sha1, &computed.checksum_sha1),
        ("SHA256", &sent.checksum_sha256, &computed.checksum_sha256),
        ("CRC64NVME", &sent.checksum_crc64nvme, &computed.checksum_crc64nvme),
    ];
    for (name, want, got) in pairs {
        if let Some(want) = want
            && Some(want) != got.as_ref()
        {
            return Err(s3_error!(BadDigest, "the {name} checksum sent does not match the body received"));
        }
    }
    if let Some(b64) = content_md5 {
        use base64::Engine;
        let given = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        if given.as_slice() != md5 {
            return Err(s3_error!(BadDigest, "Content-MD5 does not match the body received"));
        }
    }
    Ok(())
}

/// A checksum header (or trailer) set: the ones given, with trailer values filling in.
pub fn with_trailers(mut sent: Checksum, trailers: Option<&http::HeaderMap>) -> S3Result<Checksum> {
    let Some(t) = trailers else { return Ok(sent) };
    let get = |name: &str| -> S3Result<Option<String>> {
        t.get(name)
            .map(|v| v.to_str().map(str::to_owned).map_err(|_| s3_error!(InvalidArgument, "{name} is not text")))
            .transpose()
    };
    sent.checksum_crc32 = get("x-amz-checksum-crc32")?.or(sent.checksum_crc32);
    sent.checksum_crc32c = get("x-amz-checksum-crc32c")?.or(sent.checksum_crc32c);
    sent.checksum_sha1 = get("x-amz-checksum-sha1")?.or(sent.checksum_sha1);
    sent.checksum_sha256 = get("x-amz-checksum-sha256")?.or(sent.checksum_sha256);
    sent.checksum_crc64nvme = get("x-amz-checksum-crc64nvme")?.or(sent.checksum_crc64nvme);
    Ok(sent)
}

/// The checksums as stored in an object's metadata (`crc32` → base64).
pub fn to_meta(c: &Checksum) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    for (name, v) in [
        ("crc32", &c.checksum_crc32),
        ("crc32c", &c.checksum_crc32c),
        ("sha1", &c.checksum_sha1),
        ("sha256", &c.checksum_sha256),
        ("crc64nvme", &c.checksum_crc64nvme),
    ] {
        if let Some(v) = v {
            m.insert(name.to_owned(), v.clone());
        }
    }
    m
}

pub fn from_meta(m: &std::collections::BTreeMap<String, String>) -> Checksum {
    Checksum {
        checksum_crc32: m.get("crc32").cloned(),
        checksum_crc32c: m.get("crc32c").cloned(),
        checksum_sha1: m.get("sha1").cloned(),
        checksum_sha256: m.get("sha256").cloned(),
        checksum_crc64nvme: m.get("crc64nvme").cloned(),
        ..Default::default()
    }
}
