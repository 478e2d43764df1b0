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

fn to_error(err: CallError) -> ErrorObjectOwned {
    match err {
        CallError::UnknownMethod(m) => ErrorObjectOwned::owned(-32601, format!("unknown method {m}"), None::<()>),
        CallError::BadParams(e) | CallError::Failed(e) => {
            ErrorObjectOwned::owned(e.code(), e.message.clone(), Some(e.data()))
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
        let service = jsonrpsee::server::Server::builder().to_service_builder().build(module(store), stop);
        Endpoint { service, _handle: std::sync::Arc::new(handle) }
    }

    pub async fn handle(self, req: Request) -> Response {
        match self.service.oneshot(req).await {
            Ok(resp) => resp.map(Body::new).into_response(),
            Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
}
