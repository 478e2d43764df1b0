//! ImageStore: the mistify method set over images, snapshots, volumes and guest disks.
//! [`call`] dispatches a method name and its params to the capability modules; the
//! two endpoints in [`legacy`] and [`jsonrpc2`] only translate their wire formats.

#[cfg(test)]
mod fuzz;
pub mod jsonrpc2;
pub mod legacy;

use rpc_schema::imagestore::ALIASES;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
pub use crate::store::Store;

/// `/_mistify_RPC_` (legacy codec, any HTTP method so it can answer 405 itself) and
/// `/rpc` (JSON-RPC 2.0).
pub fn routes(store: Store) -> axum::Router {
    let rpc = jsonrpc2::Endpoint::new(store.clone());
    axum::Router::new()
        .route("/_mistify_RPC_", axum::routing::any(legacy::endpoint))
        .route("/rpc", axum::routing::post(move |req: axum::extract::Request| rpc.clone().handle(req)))
        .with_state(store)
}

/// Why a call did not produce a result.
#[derive(Debug)]
pub enum CallError {
    /// No such method (legacy: HTTP 400; 2.0: -32601).
    UnknownMethod(String),
    /// Params that do not decode into the method's request type (legacy: HTTP 400).
    BadParams(Error),
    /// The method ran and failed.
    Failed(Error),
}

/// Decode params, naming the offending member (`guest.disks[0].size`).
fn decode<T: DeserializeOwned>(params: Value) -> Result<T, CallError> {
    crate::wire::value(params, "params").map_err(CallError::BadParams)
}

fn encode<T: Serialize>(r: Result<T>) -> Result<Value, CallError> {
    match r {
        Ok(v) => Ok(serde_json::to_value(v).expect("wire types serialize")),
        Err(e) => Err(CallError::Failed(e)),
    }
}

/// The method's short name, or `None` when it is not an ImageStore method.
pub fn method_name(full: &str) -> Option<&'static str> {
    let short = full.strip_prefix("ImageStore.")?;
    let short = ALIASES.iter().find(|(alias, _)| *alias == short).map(|(_, m)| *m).unwrap_or(short);
    rpc_schema::imagestore::METHODS.iter().copied().find(|m| *m == short)
}

/// Run one ImageStore method.
pub async fn call(store: &Store, method: &str, params: Value) -> Result<Value, CallError> {
    let name = method_name(method).ok_or_else(|| CallError::UnknownMethod(method.to_owned()))?;
    tracing::debug!(method = name, "ImageStore call");
    use crate::{guests, images, snapshots, volumes};
    match name {
        "RequestImage" => encode(images::request(store, decode(params)?).await),
        "ListImages" => encode(images::list(store, decode(params)?).await),
        "GetImage" => encode(images::get(store, decode(params)?).await),
        "DeleteImage" => encode(images::delete(store, decode(params)?).await),
        "CloneImage" => encode(images::clone(store, decode(params)?).await),
        "CreateSnapshot" => encode(snapshots::create(store, decode(params)?).await),
        "DeleteSnapshot" => encode(snapshots::delete(store, decode(params)?).await),
        "GetSnapshot" => encode(snapshots::get(store, decode(params)?).await),
        "ListSnapshots" => encode(snapshots::list(store, decode(params)?).await),
        "RollbackSnapshot" => encode(snapshots::rollback(store, decode(params)?).await),
        "ListVolumes" => encode(volumes::list(store, decode(params)?).await),
        "CreateVolume" => encode(volumes::create(store, decode(params)?).await),
        "GetVolume" => encode(volumes::get(store, decode(params)?).await),
        "DeleteDataset" => encode(volumes::delete_dataset(store, decode(params)?).await),
        "VerifyDisks" => encode(guests::verify_disks(store, decode(params)?).await),
        "CreateGuestDisks" => encode(guests::create_disks(store, decode(params)?).await),
        "DeleteGuestsDisks" => encode(guests::delete_disks(store, decode(params)?).await),
        other => Err(CallError::UnknownMethod(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_and_aliases() {
        assert_eq!(method_name("ImageStore.ListImages"), Some("ListImages"));
        assert_eq!(method_name("ImageStore.ListSnapshot"), Some("ListSnapshots"));
        assert_eq!(method_name("ImageStore.DeleteGuestDisks"), Some("DeleteGuestsDisks"));
        assert_eq!(method_name("ImageStore.Nope"), None);
        assert_eq!(method_name("ListImages"), None);
    }

    #[test]
    fn decode_names_the_member() {
        use rpc_schema::imagestore::{GuestRequest, SnapshotRequest};
        let err = decode::<SnapshotRequest>(serde_json::json!({"id": 5})).unwrap_err();
        let CallError::BadParams(e) = err else { panic!() };
        assert_eq!(e.field.as_deref(), Some("id"));
        let err =
            decode::<GuestRequest>(serde_json::json!({"guest": {"id": "g", "disks": [{"size": "big"}]}})).unwrap_err();
        let CallError::BadParams(e) = err else { panic!() };
        assert_eq!(e.field.as_deref(), Some("guest.disks[0].size"));
        let err = decode::<SnapshotRequest>(serde_json::json!({"id": "a", "destroyMoreRecnt": true})).unwrap_err();
        let CallError::BadParams(e) = err else { panic!() };
        assert_eq!(e.field.as_deref(), Some("destroyMoreRecnt"));
    }
}
