//! One error type for every REST handler: a status code and the JSON body from
//! `rpc_schema::ErrorBody`, built from shim errors so the kind and the message (which
//! dataset, which command, ZFS's words) reach the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rpc_schema::{ErrorBody, ErrorDetail, ErrorKind};

/// Whether a body is a JSON object (its first non-blank byte is `{`). Request bodies
/// must be: serde also takes a positional array as a struct (`["svc-1"]` as
/// `{"serviceId": "svc-1"}`), which no client of these APIs sends.
pub fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { status, detail: ErrorDetail { kind, message: message.into(), field: None } }
    }

    /// 400 `invalid`, naming the refused request field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, ErrorKind::Invalid, message);
        e.detail.field = Some(field.to_owned());
        e
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Unauthorized,
            "missing or wrong API token (Authorization: Bearer <token>)",
        )
    }
}

/// The member a serde error refused: its path, or for an unknown or missing member at the
/// top (path `.`), the name serde quotes in its message; `whole` when there is neither.
pub fn refused_field(path: &str, message: &str, whole: &str) -> String {
    if path != "." && !path.is_empty() {
        return path.to_owned();
    }
    message.split('`').nth(1).unwrap_or(whole).to_owned()
}

/// How a shim error kind maps onto HTTP and the wire kind.
pub fn classify(kind: zfs_sys_shim::ErrorKind) -> (StatusCode, ErrorKind) {
    use zfs_sys_shim::ErrorKind as K;
    match kind {
        K::NotFound => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
        K::AlreadyExists => (StatusCode::CONFLICT, ErrorKind::Exists),
        K::Busy => (StatusCode::CONFLICT, ErrorKind::Busy),
        K::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, ErrorKind::NoSpace),
        K::PermissionDenied => (StatusCode::FORBIDDEN, ErrorKind::Forbidden),
        K::InvalidName | K::InvalidStream => (StatusCode::BAD_REQUEST, ErrorKind::Invalid),
        K::Conflict | K::Interrupted => (StatusCode::CONFLICT, ErrorKind::Conflict),
        K::Timeout => (StatusCode::GATEWAY_TIMEOUT, ErrorKind::Timeout),
        K::Failed => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
    }
}

impl From<zfs_sys_shim::Error> for ApiError {
    fn from(err: zfs_sys_shim::Error) -> Self {
        let (status, kind) = classify(err.kind());
        let mut e = ApiError::new(status, kind, err.to_string());
        if let zfs_sys_shim::Error::InvalidArgument { field, .. } = &err {
            e.detail.field = Some((*field).to_owned());
        }
        e
    }
}

impl From<crate::imagestore::error::StoreError> for ApiError {
    fn from(err: crate::imagestore::error::StoreError) -> Self {
        let status = match err.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Exists | ErrorKind::Busy | ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, detail: ErrorDetail { kind: err.kind, message: err.message, field: err.field } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(kind = ?self.detail.kind, message = %self.detail.message, "request failed");
        } else {
            tracing::info!(kind = ?self.detail.kind, message = %self.detail.message, "request refused");
        }
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}
