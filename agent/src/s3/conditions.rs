//! Conditional requests (RFC 9110 §13.2.2 order, as S3 applies it): `If-Match`, else
//! `If-Unmodified-Since`; then `If-None-Match`, else `If-Modified-Since`. ETags compare
//! strongly without their quotes; dates at one-second resolution.

use std::time::{SystemTime, UNIX_EPOCH};

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

pub enum Outcome {
    Proceed,
    NotModified,
}

pub struct Given<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

fn matches(c: &ETagCondition, etag: &str) -> bool {
    match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

fn seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn ts_seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

impl Given<'_> {
    pub fn evaluate(&self, info: &objstore::ObjectInfo) -> S3Result<Outcome> {
        let modified = seconds(info.modified);
        match (self.if_match, self.if_unmodified_since) {
            (Some(c), _) if !matches(c, &info.meta.etag) => {
                return Err(s3_error!(PreconditionFailed, "If-Match: the object's ETag differs"));
            }
            (None, Some(t)) if modified > ts_seconds(t) => {
                return Err(s3_error!(PreconditionFailed, "If-Unmodified-Since: the object changed after"));
            }
            _ => {}
        }
        match (self.if_none_match, self.if_modified_since) {
            (Some(c), _) if matches(c, &info.meta.etag) => Ok(Outcome::NotModified),
            (None, Some(t)) if modified <= ts_seconds(t) => Ok(Outcome::NotModified),
            _ => Ok(Outcome::Proceed),
        }
    }
}

impl Given<'_> {
    /// For a GET or HEAD: a failed precondition is 412, a cache hit 304 (both errors, so
    /// nothing of the object is sent).
    pub fn read(&self, info: &objstore::ObjectInfo) -> S3Result<()> {
        match self.evaluate(info)? {
            Outcome::Proceed => Ok(()),
            Outcome::NotModified => Err(not_modified(info)),
        }
    }
}

/// 304: S3 sends it as an error response with no body; `s3s` writes the status.
pub fn not_modified(info: &objstore::ObjectInfo) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::NotModified, "not modified");
    e.set_status_code(http::StatusCode::NOT_MODIFIED);
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", info.meta.etag)) {
        h.insert(http::header::ETAG, v);
    }
    e.set_headers(h);
    e
}

/// `x-amz-copy-source-if-*`: every failed condition is 412.
pub fn copy_source(
    info: &objstore::ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let given = Given { if_match, if_none_match, if_modified_since, if_unmodified_since };
    match given.evaluate(info)? {
        Outcome::Proceed => Ok(()),
        Outcome::NotModified => Err(s3_error!(PreconditionFailed, "a copy-source condition failed")),
    }
}
