//! The JSON error body of every REST endpoint: `{"error": {"kind", "message", "field"}}`.

use serde::{Deserialize, Serialize};

/// Machine-readable error class; the JSON-RPC endpoint puts the same value in `data.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Exists,
    Busy,
    NoSpace,
    Invalid,
    Conflict,
    Unauthorized,
    Forbidden,
    TooManyRequests,
    Timeout,
    /// The capability is switched off on this node (`zfs = false`).
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field that was refused, for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_wire_shape() {
        let body = ErrorBody {
            error: ErrorDetail { kind: ErrorKind::NotFound, message: "tank/x does not exist".into(), field: None },
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"error": {"kind": "not_found", "message": "tank/x does not exist"}})
        );
        let back: ErrorBody =
            serde_json::from_str(r#"{"error":{"kind":"invalid","message":"m","field":"id"}}"#).unwrap();
        assert_eq!(back.error.field.as_deref(), Some("id"));
    }
}
