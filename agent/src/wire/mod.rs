//! From request bytes to typed requests, and from domain errors to responses: the one
//! JSON decoder and the one query decoder (both name the refused member), the one
//! kind → HTTP status table, and an adapter per wire format that answers with an
//! [`Error`](crate::error::Error): REST JSON ([`rest`]), imageapi's `{code, message}`
//! ([`imageapi`]), Docker's `{"Err"}` ([`docker`]). The mistify codecs
//! (`imagestore::legacy`, `imagestore::jsonrpc2`) use the same table and decoder.

pub mod docker;
pub mod imageapi;
pub mod rest;
pub mod s3;

use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{Error, Kind, Result};

pub use rest::ApiError;

/// The HTTP status of each kind, for every wire format that has one.
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Exists | Kind::Busy | Kind::Conflict => StatusCode::CONFLICT,
        Kind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The log line of an error answered on any wire: tankd's own failures are errors in
/// its log; the rest (a refusal, something missing) are answers. The request's span
/// says which listener and route.
fn log_answer(e: &Error) {
    if e.kind == Kind::Internal {
        tracing::error!(kind = ?e.kind, message = %e.message, "request failed");
    } else {
        tracing::info!(kind = ?e.kind, message = %e.message, "request refused");
    }
}

/// Whether a body is a JSON object (its first non-blank byte is `{`). Request bodies
/// must be: serde also takes a positional array as a struct (`["svc-1"]` as
/// `{"serviceId": "svc-1"}`), which no client of these APIs sends.
pub fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The member a serde error refused: its path, or for an unknown or missing member at the
/// top (path `.`), the name serde quotes in its message; `whole` when there is neither.
pub fn refused_field(path: &str, message: &str, whole: &str) -> String {
    if !matches!(path, "." | "?" | "") {
        return path.to_owned();
    }
    message.split('`').nth(1).unwrap_or(whole).to_owned()
}

/// A JSON request body into `T`; a refusal names the member that did not fit
/// (`guest.disks[0].size`), or `body`.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if !is_json_object(body) {
        return Err(Error::invalid("body", "the request body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        Error::invalid(&refused_field(&path, &message, "body"), format!("the request body: {message}"))
    })
}

/// Already-parsed JSON (a JSON-RPC call's params) into `T`, naming the member.
pub fn value<T: DeserializeOwned>(v: serde_json::Value, whole: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        Error::invalid(&refused_field(&path, &message, whole), message)
    })
}

/// A query string into `T`; a refusal names the parameter, or `query`.
pub fn query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.unwrap_or("").as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        Error::invalid(&refused_field(&path, &message, "query"), format!("query: {message}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        name: String,
        size: Option<u64>,
    }

    #[test]
    fn every_kind_has_a_status() {
        assert_eq!(status(Kind::Invalid), StatusCode::BAD_REQUEST);
        assert_eq!(status(Kind::Busy), StatusCode::CONFLICT);
        assert_eq!(status(Kind::TooManyRequests), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(Kind::Internal), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn decoders_name_the_refused_member() {
        let field = |r: Result<Req>| r.unwrap_err().field.unwrap();
        assert_eq!(field(json(br#"{"name": "a", "size": "big"}"#)), "size");
        assert_eq!(field(json(br#"{"size": 1}"#)), "name");
        assert_eq!(field(json(br#"{"name": "a", "nmae": 1}"#)), "nmae");
        assert_eq!(field(json(br#"["a"]"#)), "body");
        assert_eq!(field(json(b"{")), "body");
        assert_eq!(field(value(serde_json::json!({"name": 5}), "params")), "name");
        assert_eq!(field(query(Some("name=a&size=x"))), "size");
        assert_eq!(field(query(Some("size=1"))), "name");
        assert_eq!(query::<Req>(Some("name=a&size=2")).unwrap().size, Some(2));
    }
}
