//! Errors on the S3 listener: the one table from tankd's domain errors, and from the
//! object store's, to S3 error codes. `s3s` renders them as S3's XML
//! (`<Error><Code/><Message/><Resource/><RequestId/></Error>`); codes S3 has that `s3s`
//! does not name are `Custom` with their HTTP status set here.

use axum::http::StatusCode;
use s3s::{S3Error, S3ErrorCode};

use crate::error::{Error, Kind};

fn coded(code: S3ErrorCode, message: String) -> S3Error {
    S3Error::with_message(code, message)
}

fn custom(code: &'static str, status: StatusCode, message: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    e.set_status_code(status);
    e
}

/// A domain error as S3 reports it.
pub fn s3_error(e: Error) -> S3Error {
    super::log_answer(&e);
    let field = e.field.as_deref().unwrap_or("");
    let m = e.message;
    match (e.kind, field) {
        (Kind::NotFound, "bucket") => coded(S3ErrorCode::NoSuchBucket, m),
        (Kind::NotFound, "uploadId") => coded(S3ErrorCode::NoSuchUpload, m),
        (Kind::NotFound, _) => coded(S3ErrorCode::NoSuchKey, m),
        (Kind::Forbidden | Kind::Unauthorized, _) => coded(S3ErrorCode::AccessDenied, m),
        (Kind::Invalid, "bucket") => coded(S3ErrorCode::InvalidBucketName, m),
        (Kind::Invalid, "Range") => coded(S3ErrorCode::InvalidRange, m),
        (Kind::Invalid, "Content-Length") => coded(S3ErrorCode::EntityTooLarge, m),
        (Kind::Invalid, "x-amz-meta") => custom("MetadataTooLarge", StatusCode::BAD_REQUEST, m),
        (Kind::Invalid, f) if f.starts_with("x-amz-checksum") || f == "Content-MD5" => coded(S3ErrorCode::BadDigest, m),
        (Kind::Invalid, _) => coded(S3ErrorCode::InvalidArgument, m),
        (Kind::Conflict, "If-Match") => coded(S3ErrorCode::PreconditionFailed, m),
        (Kind::Conflict, "bucket.empty") => coded(S3ErrorCode::BucketNotEmpty, m),
        (Kind::Conflict, "bucket.own") => coded(S3ErrorCode::BucketAlreadyOwnedByYou, m),
        (Kind::Exists | Kind::Conflict | Kind::Busy, _) => coded(S3ErrorCode::OperationAborted, m),
        (Kind::NoSpace, _) => custom("InsufficientStorage", StatusCode::INSUFFICIENT_STORAGE, m),
        (Kind::TooManyRequests | Kind::Unavailable, _) => coded(S3ErrorCode::SlowDown, m),
        (Kind::Timeout, _) => coded(S3ErrorCode::RequestTimeout, m),
        (Kind::Internal, _) => coded(S3ErrorCode::InternalError, m),
    }
}

/// An object store error as S3 reports it.
pub fn store_error(e: objstore::Error) -> S3Error {
    use objstore::ErrorKind as K;
    let m = e.message;
    let answer = match e.kind {
        K::NotFound => coded(S3ErrorCode::NoSuchKey, m),
        K::InvalidKey => coded(S3ErrorCode::InvalidArgument, m),
        K::KeyTooLong => coded(S3ErrorCode::KeyTooLongError, m),
        // A key that is a prefix of others, or under an object: a path cannot hold both.
        K::Conflict => coded(S3ErrorCode::InvalidArgument, m),
        K::PreconditionFailed => coded(S3ErrorCode::PreconditionFailed, m),
        K::InvalidPart => coded(S3ErrorCode::InvalidPart, m),
        K::InvalidPartOrder => coded(S3ErrorCode::InvalidPartOrder, m),
        K::EntityTooSmall => coded(S3ErrorCode::EntityTooSmall, m),
        K::Quota => custom("QuotaExceeded", StatusCode::INSUFFICIENT_STORAGE, m),
        K::NoSpace => custom("InsufficientStorage", StatusCode::INSUFFICIENT_STORAGE, m),
        K::Io => {
            tracing::error!(message = %m, "object store failed");
            coded(S3ErrorCode::InternalError, m)
        }
    };
    if answer.code() != &S3ErrorCode::InternalError {
        tracing::info!(code = answer.code().as_str(), message = answer.message().unwrap_or(""), "request refused");
    }
    answer
}

/// A failed read or write of object data through `std::io`, classified by the object
/// store's own errno table: a full quota or pool is the client's answer (507), not a 500.
pub fn io_error(doing: &str, e: std::io::Error) -> S3Error {
    let mut err = objstore::Error::from(e);
    err.message = format!("{doing}: {}", err.message);
    store_error(err)
}

/// A multipart upload's store error: a missing upload is `NoSuchUpload`, not `NoSuchKey`.
pub fn upload_error(e: objstore::Error) -> S3Error {
    if e.kind == objstore::ErrorKind::NotFound {
        tracing::info!(message = %e.message, "request refused");
        return coded(S3ErrorCode::NoSuchUpload, e.message);
    }
    store_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let cases = [
            (Error::forbidden("x").with_field("bucket"), "AccessDenied", 403),
            (Error::not_found("x").with_field("bucket"), "NoSuchBucket", 404),
            (Error::not_found("x").with_field("key"), "NoSuchKey", 404),
            (Error::invalid("Content-Length", "x"), "EntityTooLarge", 400),
            (Error::invalid("x-amz-checksum-crc32", "x"), "BadDigest", 400),
            (Error::conflict("x").with_field("bucket.empty"), "BucketNotEmpty", 409),
            (Error::new(Kind::NoSpace, "x"), "InsufficientStorage", 507),
        ];
        for (e, code, status) in cases {
            let s = s3_error(e);
            assert_eq!(s.code().as_str(), code);
            let status_of = s.status_code().or_else(|| s.code().status_code()).unwrap();
            assert_eq!(status_of.as_u16(), status, "{code}");
        }
        let q = store_error(objstore::Error { kind: objstore::ErrorKind::Quota, message: "full".into() });
        assert_eq!((q.code().as_str(), q.status_code().map(|s| s.as_u16())), ("QuotaExceeded", Some(507)));
    }
}
