//! Errors of ImageStore methods, carried to both endpoints: the legacy one shows the
//! message as a string, JSON-RPC 2.0 adds a code and `data: {kind, field}`.

use rpc_schema::ErrorKind;

#[derive(Debug, Clone, PartialEq)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request member that was refused.
    pub field: Option<String>,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError { kind, message: message.into(), field: None }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        StoreError {
            kind: ErrorKind::Invalid,
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_owned()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// JSON-RPC 2.0 error code: -32602 for bad params, application codes otherwise.
    pub fn code(&self) -> i32 {
        match self.kind {
            ErrorKind::Invalid => -32602,
            ErrorKind::NotFound => -32001,
            ErrorKind::Exists => -32002,
            ErrorKind::Busy | ErrorKind::TooManyRequests => -32003,
            ErrorKind::NoSpace => -32004,
            ErrorKind::Conflict => -32005,
            ErrorKind::Timeout => -32006,
            ErrorKind::Unauthorized | ErrorKind::Forbidden => -32007,
            ErrorKind::Unavailable => -32008,
            ErrorKind::Internal => -32000,
        }
    }

    pub fn data(&self) -> serde_json::Value {
        let mut data = serde_json::json!({ "kind": self.kind });
        if let Some(f) = &self.field {
            data["field"] = serde_json::Value::String(f.clone());
        }
        data
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<zfs_sys_shim::Error> for StoreError {
    fn from(err: zfs_sys_shim::Error) -> Self {
        let (_, kind) = crate::api_error::classify(err.kind());
        let field = match &err {
            zfs_sys_shim::Error::InvalidArgument { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        StoreError { kind, message: err.to_string(), field }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

impl std::error::Error for StoreError {}
