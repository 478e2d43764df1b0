//! Docker's VolumeDriver adapter: every answer is JSON with the plugin content type;
//! a failure is `{"Err": "..."}`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use rpc_schema::control::docker::CONTENT_TYPE;

use crate::error::{Error, Kind};

/// What the plugin socket answers with.
pub struct PluginReply(StatusCode, serde_json::Value);

impl IntoResponse for PluginReply {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, CONTENT_TYPE)], self.1.to_string()).into_response()
    }
}

impl PluginReply {
    pub fn ok(v: serde_json::Value) -> Self {
        PluginReply(StatusCode::OK, v)
    }

    /// Docker takes any status but 200 as the call's failure and shows `Err`; bad input
    /// says so with a 400 (its field named in the text), everything else is Docker's
    /// usual 500.
    pub fn err(e: Error) -> Self {
        let message = match &e.field {
            Some(f) if !e.message.contains(f.as_str()) => format!("{f}: {}", e.message),
            _ => e.message.clone(),
        };
        super::log_answer(&e);
        let status = if e.kind == Kind::Invalid { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
        PluginReply(status, serde_json::json!({ "Err": message }))
    }
}
