//! imageapi's adapter: the kind's status, and upstream's `{code, message}` body (plus
//! the refused `field`), as the attach, mount and container routes answer.

use axum::Json;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

#[derive(Debug)]
pub struct ImageApiError(pub Error);

impl From<Error> for ImageApiError {
    fn from(e: Error) -> Self {
        ImageApiError(e)
    }
}

impl From<zfs_sys_shim::Error> for ImageApiError {
    fn from(e: zfs_sys_shim::Error) -> Self {
        ImageApiError(e.into())
    }
}

impl IntoResponse for ImageApiError {
    fn into_response(self) -> Response {
        super::log_answer(&self.0);
        let Error { kind, message, field } = self.0;
        let status = super::status(kind);
        (status, Json(rpc_schema::imageapi::ApiError { code: status.as_u16(), message, field })).into_response()
    }
}
