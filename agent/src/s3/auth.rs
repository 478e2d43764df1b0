//! Who may do what on the S3 listener. `s3s` verifies every signature (header, presigned
//! URL, each chunk and the trailer of an `aws-chunked` body) with the secret
//! [`Keys::get_secret_key`] returns; [`Access::check`] then decides whether the signer
//! may reach the bucket the request names (and, for copies, the source's bucket).

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{Credentials, S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};

use super::{S3, Tenant};
use crate::wire::s3::s3_error;

pub struct Keys(pub S3);

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.secret_key(access_key) {
            Some((_, secret)) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(InvalidAccessKeyId, "the access key id is not one this node handed out")),
        }
    }
}

pub struct Access(pub S3);

/// Who signed a request: s3s has checked the signature of `credentials` (it is `None`
/// for an unsigned request). The one place an access key becomes a tenant.
pub fn signer(s3: &S3, credentials: Option<&Credentials>) -> S3Result<Tenant> {
    let key = credentials.ok_or_else(|| s3_error!(AccessDenied, "requests must be signed (AWS Signature V4)"))?;
    s3.tenant(&key.access_key)
        .ok_or_else(|| s3_error!(InvalidAccessKeyId, "the access key id is not one this node handed out"))
}

impl Access {
    fn copy_source(&self, credentials: Option<&Credentials>, source: &CopySource) -> S3Result<()> {
        let tenant = signer(&self.0, credentials)?;
        match source {
            CopySource::Bucket { bucket, .. } => self.0.bucket(&tenant, bucket).map(drop).map_err(s3_error),
            _ => Err(s3_error!(NotImplemented, "access points and outposts are not supported")),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // s3s also verifies Signature Version 2 (which boto3 still uses for presigned URLs
        // unless told `signature_version="s3v4"`): HMAC-SHA1 over far less of the request,
        // so tankd takes Version 4 only.
        let v2_header = cx
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("AWS "));
        let v2_query = cx.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("AWSAccessKeyId=")));
        if v2_header || v2_query {
            return Err(s3_error!(
                AccessDenied,
                "AWS Signature Version 2 is not accepted; sign with Version 4 (boto3: Config(signature_version=\"s3v4\"))"
            ));
        }
        let tenant = signer(&self.0, cx.credentials())?;
        // The slot rides in the request's extensions, so it is given back when the
        // request is done with.
        let slot = self.0.tenant_slot(&tenant).ok_or_else(|| {
            tracing::info!(?tenant, "S3 request shed: the tenant has all its slots in use");
            s3_error!(SlowDown, "too many requests of this tenant at once; retry with back-off")
        })?;
        cx.extensions_mut().insert(Arc::new(slot));
        match cx.s3_path() {
            // ListBuckets: answered with the caller's own buckets only.
            S3Path::Root => Ok(()),
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => {
                // CreateBucket of a name the tenant does not own is refused in the
                // service (it says BucketAlreadyOwnedByYou for its own).
                if cx.s3_op().name() == "CreateBucket" {
                    return Ok(());
                }
                self.0.bucket(&tenant, bucket).map(drop).map_err(s3_error)
            }
        }
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        self.copy_source(req.credentials.as_ref(), &req.input.copy_source)
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        self.copy_source(req.credentials.as_ref(), &req.input.copy_source)
    }
}
