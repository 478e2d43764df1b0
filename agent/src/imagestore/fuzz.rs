//! Random bodies through both ImageStore codecs (proptest): nothing panics, and a body
//! that does not decode into a call is a client error. ZFS is `/bin/false` here: a body
//! that happens to decode into a valid call reaches it and fails as a server error, which
//! is the one non-4xx answer allowed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::Store;
use crate::images::{FetchConfig, Fetcher};

/// A store on `tank/tankd` whose `zfs` and `zpool` are `zfs_bin` (nothing real runs),
/// for the codecs' unit tests.
pub(super) fn test_store(zfs_bin: &str) -> Store {
    let root: zfs_sys_shim::DatasetName = "tank/tankd".parse().unwrap();
    let zfs =
        zfs_sys_shim::Zfs::with_binaries(zfs_sys_shim::Roots::new(vec![root.clone()]), zfs_bin.into(), zfs_bin.into());
    let config = FetchConfig {
        image_server: None,
        image_sources: vec![],
        timeout: std::time::Duration::from_secs(1),
        max_size: 1,
        num_fetchers: 1,
        max_pending: 1,
    };
    Store { zfs, root, images: Arc::new(Fetcher::new(config, std::env::temp_dir().join("tankd-fuzz-spool"))) }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        prop::sample::select(vec!["", "-x", "../..", "a@b", "tank/tankd/x", "ImageStore.ListImages"])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["id", "params", "method", "size", "guest", "disks", "dest", "source", "x"])
                    .prop_map(str::to_owned),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body: JSON shaped like a call (a real method name, random params), any
/// JSON value, or bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let methods = rpc_schema::imagestore::METHODS.iter().map(|m| format!("ImageStore.{m}")).collect::<Vec<_>>();
    prop_oneof![
        (prop::sample::select(methods), json_value(), json_value()).prop_map(|(m, p, id)| {
            json!({"jsonrpc": "2.0", "method": m, "params": p, "id": id}).to_string().into_bytes()
        }),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn answer(app: axum::Router, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let req = Request::builder().method("POST").uri(path).body(Body::from(body)).unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn both_codecs_answer_any_body_without_panicking(body in body()) {
        let rt = runtime();
        let store = test_store("/bin/false");
        let calls = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned))
            .is_some_and(|m| super::method_name(&m).is_some());
        // The legacy codec: 400 (plain text) for what does not decode into a call.
        let (s, _) = rt.block_on(answer(super::routes(store.clone()), "/_mistify_RPC_", body.clone()));
        prop_assert!((400..500).contains(&s) || (calls && (s == 200 || s == 500)), "legacy: {s}");
        // JSON-RPC 2.0 carries errors in a 200's body, as the protocol says: the body is
        // then a response object (or a batch of them), never a bare server error.
        let (s, out) = rt.block_on(answer(super::routes(store.clone()), "/rpc", body.clone()));
        prop_assert!(s == 200 || (400..500).contains(&s), "rpc: {s}");
        if s == 200 && !out.is_empty() {
            let v: Value = serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(format!("rpc body: {e}")))?;
            let one = |r: &Value| r.get("result").is_some() || r.get("error").is_some_and(|e| e["code"].is_i64());
            prop_assert!(v.as_array().map_or(one(&v), |a| a.iter().all(one)), "rpc: {v}");
        }
    }
}
