//! The REST JSON adapter (control API, streams, auth refusals): the kind's status and
//! `{"error": {"kind", "message", "field"}}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use rpc_schema::{ErrorBody, ErrorDetail};

use crate::error::Error;

/// A domain error on its way out as a REST JSON answer. Handlers return it; `?` on
/// anything that converts into an [`Error`] gets here.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<zfs_sys_shim::Error> for ApiError {
    fn from(e: zfs_sys_shim::Error) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        super::log_answer(&self.0);
        let Error { kind, message, field } = self.0;
        let status = super::status(kind);
        (status, Json(ErrorBody { error: ErrorDetail { kind, message, field } })).into_response()
    }
}
