//! `POST /rpc`: JSON-RPC 2.0 (jsonrpsee) with the same `ImageStore.*` methods. Params
//! may be the request object itself (named) or a one-element array (positional, as the
//! legacy codec); batches work; errors carry a code and `data: {kind, field}`.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use jsonrpsee::server::{RpcModule, ServerHandle};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde_json::Value;
use tower::ServiceExt;

use super::{CallError, Store, call};
use crate::error::{Error, Kind};

fn params_object(params: &Params<'_>) -> Result<Value, ErrorObjectOwned> {
    let Some(raw) = params.as_str() else {
        return Ok(Value::Object(Default::default()));
    };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(mut a)) if a.len() <= 1 => Ok(a.pop().unwrap_or(Value::Object(Default::default()))),
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ErrorObjectOwned::owned(
            -32602,
            "params must be the request object or an array holding it",
            Some(serde_json::json!({"kind": "invalid", "field": "params"})),
        )),
        Err(e) => Err(ErrorObjectOwned::owned(-32700, e.to_string(), None::<()>)),
    }
}

/// JSON-RPC 2.0 error code of a kind: -32602 for bad params, application codes otherwise.
fn code(kind: Kind) -> i32 {
    match kind {
        Kind::Invalid => -32602,
        Kind::NotFound => -32001,
        Kind::Exists => -32002,
        Kind::Busy | Kind::TooManyRequests => -32003,
        Kind::NoSpace => -32004,
        Kind::Conflict => -32005,
        Kind::Timeout => -32006,
        Kind::Unauthorized | Kind::Forbidden => -32007,
        Kind::Unavailable => -32008,
        Kind::Internal => -32000,
    }
}

/// The error's `data`: its kind and the refused member.
fn data(e: &Error) -> Value {
    let mut data = serde_json::json!({ "kind": e.kind });
    if let Some(f) = &e.field {
        data["field"] = Value::String(f.clone());
    }
    data
}

fn to_error(err: CallError) -> ErrorObjectOwned {
    match err {
        CallError::UnknownMethod(m) => ErrorObjectOwned::owned(-32601, format!("unknown method {m}"), None::<()>),
        CallError::BadParams(e) | CallError::Failed(e) => {
            ErrorObjectOwned::owned(code(e.kind), e.message.clone(), Some(data(&e)))
        }
    }
}

/// Every method and alias, bound to `store`.
pub fn module(store: Store) -> RpcModule<Store> {
    let mut module = RpcModule::new(store);
    let names = rpc_schema::imagestore::METHODS
        .iter()
        .chain(rpc_schema::imagestore::ALIASES.iter().map(|(alias, _)| alias))
        .map(|m| &*Box::leak(format!("ImageStore.{m}").into_boxed_str()));
    for name in names {
        module
            .register_async_method(name, move |params, store, _| async move {
                let params = params_object(&params)?;
                call(&store, name, params).await.map_err(to_error)
            })
            .expect("method names are unique");
    }
    module
}

/// Calls in one batch: each may run ZFS commands, so a batch is bounded like a body.
pub const MAX_BATCH: u32 = 64;

/// The tower service jsonrpsee builds, driven from an axum handler.
#[derive(Clone)]
pub struct Endpoint {
    service: jsonrpsee::server::TowerService<tower::layer::util::Identity, tower::layer::util::Identity>,
    /// Dropping the handle would stop the service.
    _handle: std::sync::Arc<ServerHandle>,
}

impl Endpoint {
    pub fn new(store: Store) -> Self {
        let (stop, handle) = jsonrpsee::server::stop_channel();
        let config = jsonrpsee::server::ServerConfig::builder()
            .max_request_body_size(crate::server::MAX_JSON_BODY as u32)
            .set_batch_request_config(jsonrpsee::server::BatchRequestConfig::Limit(MAX_BATCH))
            .build();
        let service =
            jsonrpsee::server::Server::builder().set_config(config).to_service_builder().build(module(store), stop);
        Endpoint { service, _handle: std::sync::Arc::new(handle) }
    }

    pub async fn handle(self, req: Request) -> Response {
        // Read whole here, bounded: jsonrpsee answers an oversized body with a bare 500.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, crate::server::MAX_JSON_BODY).await else {
            let message = format!("request body over {} bytes", crate::server::MAX_JSON_BODY);
            let error = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32007, "message": message,
                "data": {"kind": "invalid", "field": "body"}}});
            return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, axum::Json(error)).into_response();
        };
        let req = Request::from_parts(parts, Body::from(bytes));
        match self.service.oneshot(req).await {
            Ok(resp) => resp.map(Body::new).into_response(),
            Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint whose store never runs a command: these requests are refused first.
    fn endpoint() -> Endpoint {
        Endpoint::new(super::super::fuzz::test_store("/bin/false"))
    }

    async fn post(body: String) -> (u16, Value) {
        let req = Request::builder()
            .method("POST")
            .uri("/rpc")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = endpoint().handle(req).await;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn batches_and_bodies_are_bounded() {
        let call = |id: u32| serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "ImageStore.Nope", "params": {}});
        let (status, v) = post(Value::Array((0..MAX_BATCH).map(call).collect()).to_string()).await;
        assert_eq!((status, v.as_array().map(Vec::len)), (200, Some(MAX_BATCH as usize)), "a full batch is served");
        let (_, v) = post(Value::Array((0..=MAX_BATCH).map(call).collect()).to_string()).await;
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("atch")), "one call too many: {v}");
        let huge = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ImageStore.Nope\",\"params\":{{\"x\":\"{}\"}}}}",
            "a".repeat(crate::server::MAX_JSON_BODY)
        );
        let (status, v) = post(huge).await;
        assert_eq!((status, &v["error"]["code"]), (413, &serde_json::json!(-32007)), "a body over the limit: {v}");
    }
}
