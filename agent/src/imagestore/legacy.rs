//! `POST /_mistify_RPC_`: gorilla/rpc v1's JSON codec, byte-compatible with what mistify
//! clients send and expect: `{"method","params":[{...}],"id"}` in,
//! `{"result","error","id"}` out with `error` a string; HTTP 400 with a plain-text body
//! for an unknown method or params that do not decode; 405 for anything but POST; no body
//! for a request without id. Any Content-Type is accepted.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallError, Store, call};

#[derive(Deserialize)]
struct LegacyRequest {
    method: String,
    #[serde(default)]
    params: Option<Value>,
    /// A JSON `null` id decodes to `None`, as Go's *json.RawMessage does.
    #[serde(default)]
    id: Option<Value>,
}

fn plain(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text + "\n").into_response()
}

/// Upstream emitted empty lists as `null` (nil Go slices); legacy clients get the same.
fn nil_empty_lists(v: &mut Value) {
    match v {
        Value::Array(a) if a.is_empty() => *v = Value::Null,
        Value::Array(a) => a.iter_mut().for_each(nil_empty_lists),
        Value::Object(o) => o.values_mut().for_each(nil_empty_lists),
        _ => {}
    }
}

pub async fn endpoint(State(store): State<Store>, method: Method, body: Bytes) -> Response {
    if method != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, format!("rpc: POST method required, received {method}"));
    }
    // An object, as Go's encoding/json needs for gorilla's request struct: serde alone
    // would also take a positional array (`["ImageStore.ListImages", []]`) as one.
    let req: LegacyRequest = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("rpc: {e}")),
        },
        Ok(other) => {
            let what = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return plain(StatusCode::BAD_REQUEST, format!("rpc: the request must be a JSON object, not {what}"));
        }
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("rpc: {e}")),
    };
    // gorilla decodes params into a one-element array holding the args struct.
    let params = match req.params {
        Some(Value::Array(mut a)) => {
            if a.is_empty() {
                json!({})
            } else {
                a.swap_remove(0)
            }
        }
        Some(other) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("rpc: params must be an array holding one object, got {other}"),
            );
        }
        None => {
            return plain(StatusCode::BAD_REQUEST, "rpc: method request ill-formed: missing params field".into());
        }
    };
    let outcome = call(&store, &req.method, params).await;
    let (result, error) = match outcome {
        Ok(mut v) => {
            nil_empty_lists(&mut v);
            (v, Value::Null)
        }
        Err(CallError::UnknownMethod(m)) => {
            return plain(StatusCode::BAD_REQUEST, format!("rpc: can't find method \"{m}\""));
        }
        Err(CallError::BadParams(e)) => return plain(StatusCode::BAD_REQUEST, format!("rpc: {e}")),
        Err(CallError::Failed(e)) => (Value::Null, Value::String(e.message)),
    };
    let Some(id) = req.id else {
        // A notification: gorilla writes no body.
        return StatusCode::OK.into_response();
    };
    // encoding/json's Encoder ends each value with a newline; so does this.
    let mut bytes = serde_json::to_vec(&json!({"result": result, "error": error, "id": id})).expect("json");
    bytes.push(b'\n');
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_an_object_is_a_request() {
        let store = super::super::fuzz::test_store("/bin/false");
        for body in [&b"[\"ImageStore.ListImages\",[]]"[..], b"\"x\"", b"7", b"null", b""] {
            let r = endpoint(State(store.clone()), Method::POST, Bytes::from_static(body)).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn empty_lists_become_null() {
        let mut v = json!({"images": [], "guest": {"disks": [{"x": []}]}});
        nil_empty_lists(&mut v);
        assert_eq!(v, json!({"images": null, "guest": {"disks": [{"x": null}]}}));
    }
}
