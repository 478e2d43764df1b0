//! imageapi's error: an HTTP status and upstream's `{code, message}` body, plus the
//! refused field where there is one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Error { status, message: message.into(), field: None }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error { status: StatusCode::BAD_REQUEST, message: message.into(), field: Some(field.to_owned()) }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// A failed system call or command, with what was being done.
    pub fn os(doing: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::internal(format!("{doing}: {e}"))
    }
}

impl From<zfs_sys_shim::Error> for Error {
    fn from(e: zfs_sys_shim::Error) -> Self {
        let (status, _) = crate::api_error::classify(e.kind());
        let field = match &e {
            zfs_sys_shim::Error::InvalidArgument { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        Error { status, message: e.to_string(), field }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body =
            rpc_schema::imageapi::ApiError { code: self.status.as_u16(), message: self.message, field: self.field };
        (self.status, Json(body)).into_response()
    }
}
