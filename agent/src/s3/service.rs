//! The S3 operations: each turns its DTO into calls on the bucket's object store (on a
//! blocking thread: the store is plain file system calls) and the result back into a
//! DTO. Tenancy was decided before (`auth.rs`); bodies stream through `body.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::body::{self, Written};
use super::conditions;
use super::{BucketEntry, S3, Tenant};
use crate::wire::s3::{s3_error, store_error, upload_error};

/// How long a request body may send nothing before it is cut.
const BODY_IDLE: Duration = Duration::from_secs(120);
/// The largest user metadata S3 takes (names and values together).
const MAX_USER_METADATA: usize = 2048;
const MAX_KEYS: i32 = 1000;

pub struct Service(pub S3);

impl Service {
    fn tenant<T>(&self, req: &S3Request<T>) -> S3Result<Tenant> {
        super::auth::signer(&self.0, req.credentials.as_ref())
    }

    fn bucket<T>(&self, req: &S3Request<T>, name: &str) -> S3Result<Arc<BucketEntry>> {
        let tenant = self.tenant(req)?;
        self.0.bucket(&tenant, name).map_err(s3_error)
    }
}

/// Runs store calls off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> S3Result<T> + Send + 'static) -> S3Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(S3Error::internal_error)?
}

fn etag(meta: &objstore::Meta) -> ETag {
    ETag::Strong(meta.etag.clone())
}

fn user_metadata(m: Option<Metadata>) -> S3Result<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = m.unwrap_or_default().into_iter().collect();
    let size: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("MetadataTooLarge".into()),
            format!("user metadata is {size} bytes; at most {MAX_USER_METADATA}"),
        );
        e.set_status_code(http::StatusCode::BAD_REQUEST);
        return Err(e);
    }
    Ok(m)
}

fn timestamp_text(t: Option<Timestamp>) -> S3Result<Option<String>> {
    let Some(t) = t else { return Ok(None) };
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out).map_err(S3Error::internal_error)?;
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

fn parse_timestamp(text: Option<&String>) -> Option<Timestamp> {
    text.and_then(|t| Timestamp::parse(TimestampFormat::HttpDate, t).ok())
}

/// Content headers and user metadata of a new object.
struct Headers {
    content_type: Option<String>,
    content_encoding: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
}

impl Headers {
    fn into_meta(self) -> S3Result<objstore::Meta> {
        // `aws-chunked` describes how this request was sent, not the object.
        let content_encoding = self
            .content_encoding
            .map(|e| e.split(',').map(str::trim).filter(|p| *p != "aws-chunked").collect::<Vec<_>>().join(","))
            .filter(|e| !e.is_empty());
        Ok(objstore::Meta {
            content_type: self.content_type,
            content_encoding,
            cache_control: self.cache_control,
            content_disposition: self.content_disposition,
            content_language: self.content_language,
            expires: timestamp_text(self.expires)?,
            user: user_metadata(self.metadata)?,
            ..Default::default()
        })
    }
}

fn to_size(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

/// Keys and prefixes in a listing, URL-encoded when the client asked (`EncodingType=url`),
/// as S3 does: everything but unreserved characters and `/`.
fn encoder(encoding: Option<&EncodingType>) -> impl Fn(&str) -> String + Copy + Send + use<> {
    let url = encoding.is_some_and(|e| e.as_str() == EncodingType::URL);
    move |s: &str| {
        if !url {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}

fn token_encode(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn token_decode(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not one this endpoint gave out"))
}

fn max_keys(n: Option<i32>) -> S3Result<usize> {
    match n {
        None => Ok(MAX_KEYS as usize),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
    }
}

fn object_of(info: &objstore::ObjectInfo, enc: &impl Fn(&str) -> String) -> Object {
    Object {
        key: Some(enc(&info.key)),
        size: Some(info.size as i64),
        last_modified: Some(Timestamp::from(info.modified)),
        e_tag: Some(etag(&info.meta)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

struct Listed {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    truncated: bool,
    last: Option<String>,
}

async fn list(
    b: Arc<BucketEntry>,
    prefix: String,
    delimiter: Option<String>,
    after: Option<String>,
    max: usize,
    enc: impl Fn(&str) -> String + Send + 'static,
) -> S3Result<Listed> {
    blocking(move || {
        let page = b.store.list(&prefix, delimiter.as_deref(), after.as_deref(), max).map_err(store_error)?;
        let mut out = Listed { contents: Vec::new(), prefixes: Vec::new(), truncated: page.truncated, last: None };
        for e in &page.entries {
            match e {
                objstore::Entry::Object(info) => {
                    out.last = Some(info.key.clone());
                    out.contents.push(object_of(info, &enc));
                }
                objstore::Entry::Prefix(p) => {
                    out.last = Some(p.clone());
                    out.prefixes.push(CommonPrefix { prefix: Some(enc(p)) });
                }
            }
        }
        Ok(out)
    })
    .await
}

/// The store's part of a PUT, upload part or copy: a temp file, committed under `cond`.
async fn commit(
    b: Arc<BucketEntry>,
    written: Written,
    key: String,
    meta: objstore::Meta,
    cond: Cond,
) -> S3Result<objstore::ObjectInfo> {
    blocking(move || b.store.commit(written.temp, &key, &meta, cond.as_commit()).map_err(store_error)).await
}

enum Cond {
    Replace,
    IfAbsent,
    IfMatch(String),
}

impl Cond {
    fn as_commit(&self) -> objstore::Commit<'_> {
        match self {
            Cond::Replace => objstore::Commit::Replace,
            Cond::IfAbsent => objstore::Commit::IfAbsent,
            Cond::IfMatch(e) => objstore::Commit::IfMatch(e),
        }
    }
}

fn put_condition(if_match: Option<&ETagCondition>, if_none_match: Option<&ETagCondition>) -> S3Result<Cond> {
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(s3_error!(NotImplemented, "If-Match and If-None-Match together are not supported")),
        (Some(ETagCondition::Any), None) => Ok(Cond::IfMatch("*".to_owned())),
        (Some(ETagCondition::ETag(e)), None) => Ok(Cond::IfMatch(e.value().to_owned())),
        (None, Some(ETagCondition::Any)) => Ok(Cond::IfAbsent),
        (None, Some(_)) => Err(s3_error!(NotImplemented, "If-None-Match on PUT takes only *")),
        (None, None) => Ok(Cond::Replace),
    }
}

/// The part of a source object a copy reads (`x-amz-copy-source-range: bytes=a-b`).
fn copy_range(range: Option<&str>, size: u64) -> S3Result<(u64, u64)> {
    let Some(r) = range else { return Ok((0, size)) };
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last within the source");
    let (a, b) = r.strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(bad());
    }
    Ok((a, b - a + 1))
}

/// A whole object copied into a new temp file: `copy_file_range`, so ZFS clones the
/// blocks where the pool can and nothing passes through user space. The copy's ETag is
/// the source's (same bytes), so nothing is read to hash it.
fn clone_into_temp(dst: &BucketEntry, src: &std::fs::File, len: u64) -> S3Result<objstore::Temp> {
    let mut temp = dst.store.temp().map_err(store_error)?;
    temp.append_from(src, 0, len).map_err(store_error)?;
    Ok(temp)
}

/// `len` bytes from `offset` of a source object into a new temp file through `Write`, so
/// the temp file's MD5 (a part's ETag) covers them.
fn read_into_temp(dst: &BucketEntry, src: &std::fs::File, offset: u64, len: u64) -> S3Result<objstore::Temp> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let failed = |e: std::io::Error| crate::wire::s3::io_error("copying the source range", e);
    let mut temp = dst.store.temp().map_err(store_error)?;
    let mut f = src.try_clone().map_err(failed)?;
    f.seek(SeekFrom::Start(offset)).map_err(failed)?;
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = f.read(&mut buf[..left.min(1 << 20) as usize]).map_err(failed)?;
        if n == 0 {
            return Err(s3_error!(InvalidRange, "the copy source is shorter than the range"));
        }
        temp.write_all(&buf[..n]).map_err(failed)?;
        left -= n as u64;
    }
    Ok(temp)
}

/// The checksum stored with an object, when the client asked for it
/// (`x-amz-checksum-mode: ENABLED`) and gets the whole of a single-part object (S3 sends
/// none for a range, and a multipart object's would be a checksum of checksums).
fn stored_checksum(mode: Option<&ChecksumMode>, meta: &objstore::Meta, whole: bool) -> Checksum {
    let asked = mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
    if asked && whole && meta.parts.is_none() { body::from_meta(&meta.checksums) } else { Checksum::default() }
}

/// What a PUT or an UploadPart sent to check its body against.
struct Claimed<'a> {
    checksum: Checksum,
    algorithm: Option<&'a ChecksumAlgorithm>,
    content_md5: Option<&'a str>,
}

/// A PUT's or a part's body into a temp file of the bucket, checked against every
/// checksum the request sent (header or trailer) and its Content-MD5 before anything
/// is committed.
async fn receive_checked(
    b: &Arc<BucketEntry>,
    body: Option<StreamingBlob>,
    claimed: Claimed<'_>,
    headers: &http::HeaderMap,
    trailing: Option<s3s::TrailingHeaders>,
    max: u64,
) -> S3Result<Written> {
    let trailer = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok());
    let hasher = body::hasher_for(&claimed.checksum, claimed.algorithm.map(|a| a.as_str()), trailer)?;
    let store = b.clone();
    let temp = blocking(move || store.store.temp().map_err(store_error)).await?;
    let body = body
        .unwrap_or_else(|| StreamingBlob::wrap(futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>()));
    let written = body::receive(body, temp, hasher, max, BODY_IDLE).await?;
    let trailers = trailing.and_then(|t| t.take());
    if trailer.is_some() && trailers.is_none() {
        return Err(s3_error!(InvalidRequest, "the announced checksum trailer did not arrive"));
    }
    let sent = body::with_trailers(claimed.checksum, trailers.as_ref())?;
    body::verify(&sent, &written.checksum, claimed.content_md5, &written.md5)?;
    Ok(written)
}

#[async_trait::async_trait]
impl s3s::S3 for Service {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let tenant = self.tenant(&req)?;
        let buckets = self
            .0
            .buckets_of(&tenant)
            .iter()
            .map(|b| Bucket {
                name: Some(b.name.clone()),
                creation_date: std::fs::metadata(b.store.root()).and_then(|m| m.modified()).ok().map(Timestamp::from),
                ..Default::default()
            })
            .collect();
        let owner = Owner { id: Some(format!("{tenant:?}")), display_name: None };
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), owner: Some(owner), ..Default::default() }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let tenant = self.tenant(&req)?;
        match self.0.bucket(&tenant, &req.input.bucket) {
            Ok(_) => Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {} is already yours", req.input.bucket)),
            Err(_) => Err(s3_error!(
                AccessDenied,
                "buckets are made by provisioning objectstorage for a service (POST /resources/provision)"
            )),
        }
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let empty = blocking(move || b.store.is_empty().map_err(store_error)).await?;
        if !empty {
            return Err(s3_error!(BucketNotEmpty, "bucket {} is not empty", req.input.bucket));
        }
        Err(s3_error!(AccessDenied, "a service's bucket is removed by deprovisioning it (POST /resources/deprovision)"))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket(&req, &req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(self.0.region().to_owned()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req, &req.input.bucket)?;
        // S3 reports us-east-1 as no constraint at all.
        let region = self.0.region();
        let location = (region != "us-east-1").then(|| BucketLocationConstraint::from(region.to_owned()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint: location }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let limits = self.0.limits().clone();
        let input = req.input;
        objstore::check_key(&input.key).map_err(store_error)?;
        if to_size(input.content_length).is_some_and(|n| n > limits.max_object_size) {
            return Err(s3_error!(EntityTooLarge, "objects on this node are at most {} bytes", limits.max_object_size));
        }
        let cond = put_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let claimed = Claimed {
            checksum: Checksum {
                checksum_crc32: input.checksum_crc32.clone(),
                checksum_crc32c: input.checksum_crc32c.clone(),
                checksum_sha1: input.checksum_sha1.clone(),
                checksum_sha256: input.checksum_sha256.clone(),
                checksum_crc64nvme: input.checksum_crc64nvme.clone(),
                ..Default::default()
            },
            algorithm: input.checksum_algorithm.as_ref(),
            content_md5: input.content_md5.as_deref(),
        };
        let meta = Headers {
            content_type: input.content_type.clone(),
            content_encoding: input.content_encoding.clone(),
            cache_control: input.cache_control.clone(),
            content_disposition: input.content_disposition.clone(),
            content_language: input.content_language.clone(),
            expires: input.expires.clone(),
            metadata: input.metadata.clone(),
        }
        .into_meta()?;
        let written =
            receive_checked(&b, input.body, claimed, &req.headers, req.trailing_headers, limits.max_object_size)
                .await?;
        let mut meta = meta;
        meta.etag = hex::encode(written.md5);
        meta.checksums = body::to_meta(&written.checksum);
        let checksum = written.checksum.clone();
        let info = commit(b, written, input.key, meta, cond).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&info.meta)),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let input = req.input;
        let key = input.key.clone();
        let (file, info) = blocking(move || b.store.open_object(&key).map_err(store_error)).await?;
        conditions::Given {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .read(&info)?;
        let size = info.size;
        let (start, len, content_range) = match &input.range {
            None => (0, size, None),
            Some(r) => {
                let span = r.check(size).map_err(|_| unsatisfiable(size))?;
                (span.start, span.end - span.start, Some(format!("bytes {}-{}/{size}", span.start, span.end - 1)))
            }
        };
        let whole = len == size;
        let checksum = stored_checksum(input.checksum_mode.as_ref(), &info.meta, whole);
        let stream = read_stream(file, start, len).map_err(|e| crate::wire::s3::io_error("reading the object", e))?;
        let m = info.meta.clone();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            last_modified: Some(Timestamp::from(info.modified)),
            e_tag: Some(etag(&m)),
            metadata: (!m.user.is_empty()).then(|| m.user.clone().into_iter().collect()),
            content_type: input.response_content_type.or(m.content_type.clone()),
            content_encoding: input.response_content_encoding.or(m.content_encoding.clone()),
            cache_control: input.response_cache_control.or(m.cache_control.clone()),
            content_disposition: input.response_content_disposition.or(m.content_disposition.clone()),
            content_language: input.response_content_language.or(m.content_language.clone()),
            expires: input.response_expires.or_else(|| parse_timestamp(m.expires.as_ref())),
            parts_count: m.parts.map(|n| n as i32),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let input = req.input;
        let key = input.key.clone();
        let info = blocking(move || b.store.stat(&key).map_err(store_error)).await?;
        conditions::Given {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .read(&info)?;
        let m = &info.meta;
        let checksum = stored_checksum(input.checksum_mode.as_ref(), m, true);
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(info.size as i64),
            accept_ranges: Some("bytes".to_owned()),
            last_modified: Some(Timestamp::from(info.modified)),
            e_tag: Some(etag(m)),
            metadata: (!m.user.is_empty()).then(|| m.user.clone().into_iter().collect()),
            content_type: m.content_type.clone(),
            content_encoding: m.content_encoding.clone(),
            cache_control: m.cache_control.clone(),
            content_disposition: m.content_disposition.clone(),
            content_language: m.content_language.clone(),
            expires: parse_timestamp(m.expires.as_ref()),
            parts_count: m.parts.map(|n| n as i32),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let key = req.input.key;
        objstore::check_key(&key).map_err(store_error)?;
        blocking(move || b.store.delete(&key).map_err(store_error)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let delete = req.input.delete;
        if delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per DeleteObjects"));
        }
        let quiet = delete.quiet.unwrap_or(false);
        let (deleted, errors) = blocking(move || {
            let (mut deleted, mut errors) = (Vec::new(), Vec::new());
            for o in delete.objects {
                let outcome = objstore::check_key(&o.key).and_then(|()| b.store.delete(&o.key));
                match outcome {
                    Ok(_) => deleted.push(DeletedObject { key: Some(o.key), ..Default::default() }),
                    Err(e) => {
                        let s = store_error(e);
                        errors.push(Error {
                            key: Some(o.key),
                            code: Some(s.code().as_str().to_owned()),
                            message: s.message().map(str::to_owned),
                            ..Default::default()
                        });
                    }
                }
            }
            Ok((deleted, errors))
        })
        .await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let dst = self.bucket(&req, &req.input.bucket)?;
        let input = req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "access points are not supported"));
        };
        let src =
            self.0.bucket(&super::auth::signer(&self.0, req.credentials.as_ref())?, src_bucket).map_err(s3_error)?;
        objstore::check_key(&input.key).map_err(store_error)?;
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if src_bucket.as_ref() == input.bucket && src_key.as_ref() == input.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs x-amz-metadata-directive: REPLACE"
            ));
        }
        let key = src_key.to_string();
        let (file, info) = blocking(move || src.store.open_object(&key).map_err(store_error)).await?;
        conditions::copy_source(
            &info,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )?;
        if info.size > self.0.limits().max_object_size {
            return Err(s3_error!(EntityTooLarge, "the copy source is larger than this node's object limit"));
        }
        let mut meta = if replace {
            Headers {
                content_type: input.content_type,
                content_encoding: input.content_encoding,
                cache_control: input.cache_control,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                expires: input.expires,
                metadata: input.metadata,
            }
            .into_meta()?
        } else {
            info.meta.clone()
        };
        let d = dst.clone();
        let size = info.size;
        let temp = blocking(move || clone_into_temp(&d, &file, size)).await?;
        let written = Written { temp, checksum: Checksum::default(), md5: [0; 16] };
        meta.etag = info.meta.etag.clone();
        meta.parts = info.meta.parts;
        meta.checksums = info.meta.checksums.clone();
        let info = commit(dst, written, input.key, meta, Cond::Replace).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&info.meta)),
                last_modified: Some(Timestamp::from(info.modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let i = req.input;
        let max = max_keys(i.max_keys)?;
        let enc = encoder(i.encoding_type.as_ref());
        let prefix = i.prefix.clone().unwrap_or_default();
        let l = list(b, prefix, i.delimiter.clone(), i.marker.clone(), max, enc).await?;
        let next_marker = (l.truncated && i.delimiter.is_some()).then(|| l.last.as_deref().map(&enc)).flatten();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.as_deref().unwrap_or(""))),
            delimiter: i.delimiter.as_deref().map(&enc),
            marker: i.marker.as_deref().map(&enc),
            max_keys: Some(max as i32),
            is_truncated: Some(l.truncated),
            next_marker,
            contents: Some(l.contents),
            common_prefixes: Some(l.prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let i = req.input;
        let max = max_keys(i.max_keys)?;
        let enc = encoder(i.encoding_type.as_ref());
        let after = match &i.continuation_token {
            Some(t) => Some(token_decode(t)?),
            None => i.start_after.clone(),
        };
        let prefix = i.prefix.clone().unwrap_or_default();
        let l = list(b, prefix, i.delimiter.clone(), after, max, enc).await?;
        let count = (l.contents.len() + l.prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.as_deref().unwrap_or(""))),
            delimiter: i.delimiter.as_deref().map(&enc),
            start_after: i.start_after.as_deref().map(&enc),
            continuation_token: i.continuation_token,
            next_continuation_token: if l.truncated { l.last.as_deref().map(token_encode) } else { None },
            max_keys: Some(max as i32),
            key_count: Some(count),
            is_truncated: Some(l.truncated),
            contents: Some(l.contents),
            common_prefixes: Some(l.prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let i = req.input;
        let meta = Headers {
            content_type: i.content_type,
            content_encoding: i.content_encoding,
            cache_control: i.cache_control,
            content_disposition: i.content_disposition,
            content_language: i.content_language,
            expires: i.expires,
            metadata: i.metadata,
        }
        .into_meta()?;
        let key = i.key.clone();
        let id = blocking(move || b.store.create_upload(&key, &meta).map_err(store_error)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let limits = self.0.limits().clone();
        let i = req.input;
        let number = part_number(i.part_number)?;
        let upload = i.upload_id.clone();
        let (store, key) = (b.clone(), i.key.clone());
        blocking(move || {
            let u = store.store.upload(&upload).map_err(upload_error)?;
            if u.key != key {
                return Err(s3_error!(NoSuchUpload, "upload {upload} is not for key {key:?}"));
            }
            Ok(())
        })
        .await?;
        let max = limits.max_object_size.min(5 << 30);
        if to_size(i.content_length).is_some_and(|n| n > max) {
            return Err(s3_error!(EntityTooLarge, "a part is at most {max} bytes here"));
        }
        let claimed = Claimed {
            checksum: Checksum {
                checksum_crc32: i.checksum_crc32.clone(),
                checksum_crc32c: i.checksum_crc32c.clone(),
                checksum_sha1: i.checksum_sha1.clone(),
                checksum_sha256: i.checksum_sha256.clone(),
                checksum_crc64nvme: i.checksum_crc64nvme.clone(),
                ..Default::default()
            },
            algorithm: i.checksum_algorithm.as_ref(),
            content_md5: i.content_md5.as_deref(),
        };
        let written = receive_checked(&b, i.body, claimed, &req.headers, req.trailing_headers, max).await?;
        let checksum = written.checksum.clone();
        let checksums = body::to_meta(&checksum);
        let upload = i.upload_id;
        let part =
            blocking(move || b.store.put_part(&upload, number, written.temp, checksums).map_err(upload_error)).await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let dst = self.bucket(&req, &req.input.bucket)?;
        let i = req.input;
        let number = part_number(i.part_number)?;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &i.copy_source else {
            return Err(s3_error!(NotImplemented, "access points are not supported"));
        };
        let src =
            self.0.bucket(&super::auth::signer(&self.0, req.credentials.as_ref())?, src_bucket).map_err(s3_error)?;
        let (upload, key) = (i.upload_id.clone(), src_key.to_string());
        let d = dst.clone();
        let (file, info) = blocking(move || {
            d.store.upload(&upload).map_err(upload_error)?;
            src.store.open_object(&key).map_err(store_error)
        })
        .await?;
        conditions::copy_source(
            &info,
            i.copy_source_if_match.as_ref(),
            i.copy_source_if_none_match.as_ref(),
            i.copy_source_if_modified_since.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
        )?;
        let (offset, len) = copy_range(i.copy_source_range.as_deref(), info.size)?;
        let upload = i.upload_id;
        let part = blocking(move || {
            let temp = read_into_temp(&dst, &file, offset, len)?;
            dst.store.put_part(&upload, number, temp, BTreeMap::new()).map_err(upload_error)
        })
        .await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(Timestamp::from(SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let i = req.input;
        let cond = put_condition(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        let parts: Vec<(u32, String)> = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let n = part_number(p.part_number.unwrap_or(0))?;
                let tag = p.e_tag.map(|e| e.value().to_owned()).unwrap_or_default();
                Ok((n, tag))
            })
            .collect::<S3Result<_>>()?;
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "CompleteMultipartUpload lists no parts"));
        }
        let limits = self.0.limits().clone();
        let (upload, key) = (i.upload_id.clone(), i.key.clone());
        let info = blocking(move || {
            let u = b.store.upload(&upload).map_err(upload_error)?;
            if u.key != key {
                return Err(s3_error!(NoSuchUpload, "upload {upload} is not for key {key:?}"));
            }
            let (all, _) = b.store.parts(&upload, 0, 10_000).map_err(upload_error)?;
            let total: u64 = all.iter().filter(|p| parts.iter().any(|(n, _)| *n == p.number)).map(|p| p.size).sum();
            if total > limits.max_object_size {
                return Err(s3_error!(EntityTooLarge, "the object would be larger than this node's limit"));
            }
            b.store.complete(&upload, &parts, limits.min_part_size, u.meta, cond.as_commit()).map_err(upload_error)
        })
        .await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(etag(&info.meta)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let upload = req.input.upload_id;
        blocking(move || b.store.abort(&upload).map_err(upload_error)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let i = req.input;
        let max = max_keys(i.max_parts)?;
        let after = u32::try_from(i.part_number_marker.unwrap_or(0)).unwrap_or(0);
        let upload = i.upload_id.clone();
        let (parts, truncated) = blocking(move || {
            b.store.upload(&upload).map_err(upload_error)?;
            b.store.parts(&upload, after, max).map_err(upload_error)
        })
        .await?;
        let next = parts.last().map(|p| p.number as i32);
        let parts = parts
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.number as i32),
                size: Some(p.size as i64),
                e_tag: Some(ETag::Strong(p.meta.etag.clone())),
                last_modified: Some(Timestamp::from(p.modified)),
                checksum_crc32: p.meta.checksums.get("crc32").cloned(),
                checksum_crc32c: p.meta.checksums.get("crc32c").cloned(),
                checksum_sha256: p.meta.checksums.get("sha256").cloned(),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            parts: Some(parts),
            is_truncated: Some(truncated),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let b = self.bucket(&req, &req.input.bucket)?;
        let i = req.input;
        let max = max_keys(i.max_uploads)?;
        let enc = encoder(i.encoding_type.as_ref());
        let (prefix, km, im) = (i.prefix.clone().unwrap_or_default(), i.key_marker.clone(), i.upload_id_marker.clone());
        let (uploads, truncated) =
            blocking(move || b.store.list_uploads(&prefix, km.as_deref(), im.as_deref(), max).map_err(store_error))
                .await?;
        let (next_key, next_id) = match uploads.last() {
            Some(u) if truncated => (Some(enc(&u.key)), Some(u.id.clone())),
            _ => (None, None),
        };
        let uploads = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(enc(&u.key)),
                upload_id: Some(u.id),
                initiated: Some(Timestamp::from(u.initiated)),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix.as_deref().map(&enc),
            key_marker: i.key_marker.as_deref().map(&enc),
            upload_id_marker: i.upload_id_marker,
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(uploads),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }
}

/// 416 with `Content-Range: bytes */<size>`, so the client learns the length.
fn unsatisfiable(size: u64) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::InvalidRange, "the range is not within the object");
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{size}")) {
        h.insert(http::header::CONTENT_RANGE, v);
    }
    e.set_headers(h);
    e
}

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| s3_error!(InvalidArgument, "partNumber must be 1 to 10000"))
}

/// An object's bytes `[start, start+len)`, read in 1 MiB blocks (the seek is one
/// `lseek`, cheap enough to do here).
fn read_stream(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> std::io::Result<impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Sync + 'static> {
    use std::io::Seek;
    let mut file = file;
    file.seek(std::io::SeekFrom::Start(start))?;
    let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
    Ok(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))
}

/// The S3 listener's router: `s3s` with tankd's keys, tenancy and limits.
pub fn router(s3: S3) -> axum::Router {
    let mut b = s3s::service::S3ServiceBuilder::new(Service(s3.clone()));
    b.set_auth(super::auth::Keys(s3.clone()));
    b.set_access(super::auth::Access(s3.clone()));
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = super::limits::MAX_XML_BODY;
    b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(config))));
    super::limits::s3s_router(b.build(), s3.limits().max_requests)
}
