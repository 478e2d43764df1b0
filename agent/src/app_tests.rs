//! The routers driven in-process (`oneshot`, no socket, no VM): which routes are open,
//! who reaches what on the control API, and how each wire format names a refused field
//! and maps a ZFS failure. ZFS is the recording double of `crate::testing`.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::testing::{FakeZfs, rule, state};

const TOKEN: &str = "node-token-for-in-process-tests-0123456789";

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn ask(app: &Router, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec();
    Answer { status, body }
}

/// `zfs list`/`get` of a service dataset that does not exist, in ZFS's words.
fn missing_services() -> crate::testing::Rule {
    rule("*services/*", 1, "cannot open 'tank/tankd/services/x': dataset does not exist\n")
}

async fn node(rules: Vec<crate::testing::Rule>) -> (FakeZfs, tempfile::TempDir, crate::state::AppState) {
    let fake = FakeZfs::new("tank/tankd", rules);
    let data = tempfile::tempdir().unwrap();
    let st = state(&fake, data.path().to_path_buf(), TOKEN).await;
    (fake, data, st)
}

#[tokio::test]
async fn only_health_and_metrics_are_open_on_the_main_api() {
    let pool = rule("\"list -H -p -o name,size,allocated,free,health\"*", 0, "tank\t1000\t100\t900\tONLINE\n");
    let (_fake, _data, st) = node(vec![pool]).await;
    let app = crate::server::app(st);
    assert_eq!(ask(&app, "GET", "/health", None, "").await.status, 200);
    assert_eq!(ask(&app, "GET", "/metrics", None, "").await.status, 200);
    let guarded = [
        ("POST", "/rpc"),
        ("POST", "/_mistify_RPC_"),
        ("GET", "/imageapi/v1/attach"),
        ("POST", "/imageapi/v1/mount"),
        ("GET", "/imageapi/v1/container"),
        ("GET", "/snapshots/resume-token?dest=x"),
        ("GET", "/snapshots/points?dataset=x"),
        ("POST", "/snapshots/download"),
        ("GET", "/no/such/route"),
    ];
    for (method, path) in guarded {
        let a = ask(&app, method, path, None, "{}").await;
        assert_eq!(a.status, 401, "{method} {path} without a token");
        assert_eq!(a.json()["error"]["kind"], "unauthorized", "{method} {path}");
        assert_eq!(ask(&app, method, path, Some("wrong-token"), "{}").await.status, 401, "{method} {path}");
    }
    assert_eq!(ask(&app, "GET", "/imageapi/v1/attach", Some(TOKEN), "").await.status, 200);
}

#[tokio::test]
async fn a_service_token_reaches_its_own_service_only() {
    let (fake, _data, st) = node(vec![missing_services()]).await;
    let control = st.control.clone().unwrap();
    let app = crate::server::control_app(st).unwrap();
    let (a, b) = (control.service_token("svc-a"), control.service_token("svc-b"));
    assert_ne!(a, b);

    // Provisioning is the node's: neither no token nor a service's token will do.
    let body = r#"{"serviceId": "svc-a"}"#;
    assert_eq!(ask(&app, "POST", "/resources/provision", None, body).await.status, 401);
    assert_eq!(ask(&app, "POST", "/resources/provision", Some(&a), body).await.status, 401);
    assert!(fake.calls_of("create").is_empty(), "{:?}", fake.calls());

    // Another service's snapshot: refused before anything is looked up.
    let before = fake.calls().len();
    let snap = r#"{"serviceId": "svc-b", "snapshotName": "s1"}"#;
    for token in [None, Some(a.as_str())] {
        let r = ask(&app, "POST", "/resources/snapshot", token, snap).await;
        assert_eq!((r.status, r.json()["error"]["kind"].as_str()), (401, Some("unauthorized")), "{token:?}");
        let r = ask(&app, "POST", "/resources/snapshot/destroy", token, snap).await;
        assert_eq!(r.status, 401, "{token:?}");
        let restore = r#"{"serviceId": "svc-b", "snapshots": [{"capability": "filesystem", "resourceName": "svc-b", "snapshotId": "tank/tankd/services/svc-b@s1"}]}"#;
        let r = ask(&app, "POST", "/resources/restore", token, restore).await;
        assert_eq!(r.status, 401, "{token:?}");
        // Without a token the body is not even judged.
        assert_eq!(ask(&app, "POST", "/resources/restore", None, "{").await.status, 401);
    }
    assert_eq!(fake.calls().len(), before, "a refused caller ran no zfs command: {:?}", fake.calls());
    // Its own service: past auth, to ZFS (whose "does not exist" is a 404).
    let r = ask(&app, "POST", "/resources/snapshot", Some(&b), snap).await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["kind"], "not_found");
}

/// The archive routes that need ZFS (making an archive of a snapshot, restoring one):
/// another tenant's token gets the 401 no token gets, and a service restores only under
/// its own dataset, all decided before any zfs command runs.
#[tokio::test]
async fn archive_routes_refuse_other_tenants_before_zfs() {
    let (fake, data, st) = node(vec![]).await;
    // Where the double "mounted" the repository's dataset.
    std::fs::create_dir_all(data.path().join("archives")).unwrap();
    let control = st.control.clone().unwrap();
    let new = crate::archives::NewArchive {
        service: Some("svc-a".into()),
        dataset: "services/svc-a".into(),
        snapshot: "s1".into(),
        guid: "77".into(),
        ..Default::default()
    };
    let m = control.archives.archive(new, std::io::Cursor::new(b"a stream".to_vec())).await.unwrap();
    let app = crate::server::control_app(st).unwrap();
    let (a, b) = (control.service_token("svc-a"), control.service_token("svc-b"));
    let before = fake.calls().len();
    let restore = json!({"archiveId": m.id, "into": "services/svc-a/back"}).to_string();
    let create = json!({"snapshotId": "services/svc-a@s1"}).to_string();
    for (path, body) in [("/archives/restore", &restore), ("/archives", &create)] {
        for token in [None, Some("wrong-token"), Some(b.as_str())] {
            let r = ask(&app, "POST", path, token, body).await;
            assert_eq!((r.status, r.json()["error"]["kind"].as_str()), (401, Some("unauthorized")), "{path} {token:?}");
        }
    }
    for into in ["services/svc-b/back", "services/svc-a-x/back", "restored/svc-a", "../x", "-x"] {
        let body = json!({"archiveId": m.id, "into": into}).to_string();
        let r = ask(&app, "POST", "/archives/restore", Some(&a), &body).await;
        assert_eq!((r.status, r.json()["error"]["field"].as_str()), (400, Some("into")), "svc-a restores into {into}");
    }
    assert_eq!(fake.calls().len(), before, "refused callers ran no zfs command: {:?}", fake.calls());
}

/// `GET /snapshots/points`: the node's token only (a service's token is not the API's),
/// names checked before zfs runs, GUIDs as decimal strings.
#[tokio::test]
async fn snapshot_points_answer_the_node_only_with_guids_as_strings() {
    let rows = "tank/tankd/r\tfilesystem\t1\t50\t-\n\
                tank/tankd/r#s0\tbookmark\t10\t40\t-\n\
                tank/tankd/r@s1\tsnapshot\t18446744073709551557\t60\t-\n";
    let (fake, _data, st) = node(vec![rule("list*tank/tankd/r", 0, rows)]).await;
    let service = st.control.clone().unwrap().service_token("svc-a");
    let app = crate::server::app(st);
    assert_eq!(ask(&app, "GET", "/snapshots/points?dataset=r", Some(&service), "").await.status, 401);
    for bad in ["-r", "../r", "r@s1", ""] {
        let r = ask(&app, "GET", &format!("/snapshots/points?dataset={bad}"), Some(TOKEN), "").await;
        assert_eq!((r.status, r.json()["error"]["field"].as_str()), (400, Some("dataset")), "{bad:?}");
    }
    assert!(fake.calls_of("list").iter().all(|c| !c.contains("-t filesystem,volume,snapshot,bookmark")));
    let r = ask(&app, "GET", "/snapshots/points?dataset=r", Some(TOKEN), "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"dataset": "tank/tankd/r", "points": [
            {"name": "s0", "guid": "10", "createtxg": 40, "bookmark": true},
            {"name": "s1", "guid": "18446744073709551557", "createtxg": 60, "bookmark": false},
        ]})
    );
}

#[tokio::test]
async fn every_wire_format_names_the_refused_field() {
    let (fake, _data, st) = node(vec![]).await;
    let api = crate::server::app(st.clone());
    let control = crate::server::control_app(st.clone()).unwrap();
    let docker = crate::server::docker_app(st).unwrap();

    // REST JSON: {"error": {kind, message, field}}.
    let r = ask(&control, "POST", "/resources/provision", Some(TOKEN), r#"{"serviceId": 5}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        (r.json()["error"]["kind"].as_str(), r.json()["error"]["field"].as_str()),
        (Some("invalid"), Some("serviceId"))
    );
    let r = ask(&control, "POST", "/resources/provision", Some(TOKEN), r#"{"serviceId": "-R"}"#).await;
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (400, Some("serviceId")));
    // imageapi: {code, message, field}.
    let r = ask(&api, "POST", "/imageapi/v1/attach", Some(TOKEN), r#"{"kind": 5}"#).await;
    assert_eq!((r.status, r.json()["code"].as_u64(), r.json()["field"].as_str()), (400, Some(400), Some("kind")));
    let r = ask(&api, "GET", "/imageapi/v1/attach?id=x", Some(TOKEN), "").await;
    assert_eq!((r.status, r.json()["field"].as_str()), (400, Some("id")));
    // JSON-RPC 2.0: -32602 with data {kind, field}.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "ImageStore.GetVolume", "params": {"id": 7}}).to_string();
    let r = ask(&api, "POST", "/rpc", Some(TOKEN), &call).await;
    assert_eq!(r.json()["error"]["code"], -32602, "{}", r.json());
    assert_eq!(r.json()["error"]["data"]["field"], "id");
    // mistify v1: a 400 whose text names the member.
    let call = json!({"method": "ImageStore.GetVolume", "params": [{"id": "../etc"}], "id": 1}).to_string();
    let r = ask(&api, "POST", "/_mistify_RPC_", Some(TOKEN), &call).await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains("id"), "{} {text}", r.status);
    // Docker: {"Err"} with a 400 for bad input.
    let r = ask(&docker, "POST", "/VolumeDriver.Create", None, r#"{"Name": "-x"}"#).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["Err"].as_str().unwrap().contains("Name") || r.json()["Err"].as_str().unwrap().contains("name"),
        "{}",
        r.json()
    );
    assert!(fake.calls_of("create").is_empty(), "bad input made nothing: {:?}", fake.calls());
}

#[tokio::test]
async fn a_zfs_failure_maps_onto_each_wire_format() {
    let gone = "cannot open 'tank/tankd/vols/v9': dataset does not exist\n";
    let (_fake, _data, st) = node(vec![rule("*tank/tankd/vols/v9*", 1, gone)]).await;
    let api = crate::server::app(st);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "ImageStore.GetVolume", "params": {"id": "vols/v9"}});
    let r = ask(&api, "POST", "/rpc", Some(TOKEN), &call.to_string()).await;
    assert_eq!(
        (r.json()["error"]["code"].as_i64(), r.json()["error"]["data"]["kind"].as_str()),
        (Some(-32001), Some("not_found"))
    );
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("vols/v9"), "the message names the dataset");
    let call = json!({"method": "ImageStore.GetVolume", "params": [{"id": "vols/v9"}], "id": 1});
    let r = ask(&api, "POST", "/_mistify_RPC_", Some(TOKEN), &call.to_string()).await;
    assert_eq!(r.status, 200, "mistify v1 carries method errors in the body");
    assert!(r.json()["error"].as_str().unwrap().contains("does not exist"), "{}", r.json());
}

/// `zfs get` of the service's dataset: missing until a `create` of it was recorded,
/// then a filesystem mounted at its default place.
const SVC_A_GET: &str = r#"if grep -q '^create .*tank/tankd/services/svc-a$' "$CALLS"; then printf 'type\tfilesystem\nmountpoint\t/tank/tankd/services/svc-a\n'; else echo "cannot open 'tank/tankd/services/svc-a': dataset does not exist" >&2; exit 1; fi"#;

#[tokio::test]
async fn provisioning_is_make_it_so_with_the_same_token() {
    let (fake, _data, st) =
        node(vec![crate::testing::answer("\"get\"*\"tank/tankd/services/svc-a\"", SVC_A_GET)]).await;
    let control = st.control.clone().unwrap();
    let app = crate::server::control_app(st).unwrap();
    let body = r#"{"serviceId": "svc-a", "serviceName": "shop", "quota": "2G"}"#;
    let first = ask(&app, "POST", "/resources/provision", Some(TOKEN), body).await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let first = first.json();
    assert_eq!(
        (first["created"].as_bool(), first["mountpoint"].as_str()),
        (Some(true), Some("/tank/tankd/services/svc-a"))
    );
    assert_eq!(first["env"]["TANKD_SERVICE_TOKEN"], control.service_token("svc-a"));
    let creates = fake.calls_of("create");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(
        creates[0].contains("quota=2147483648") && creates[0].ends_with("tank/tankd/services/svc-a"),
        "{creates:?}"
    );

    let again = ask(&app, "POST", "/resources/provision", Some(TOKEN), body).await.json();
    assert_eq!(again["created"], false);
    assert_eq!(again["env"], first["env"], "re-provisioning hands out the same values");
    assert_eq!(fake.calls_of("create").len(), 1, "nothing made twice");
    assert_eq!(fake.calls_of("set").len(), 1, "the name and quota are applied to what exists");
}

#[tokio::test]
async fn a_service_at_its_snapshot_bound_gets_429_and_nothing_is_taken() {
    // 256 snapshots (the default bound) of the service's dataset already exist.
    let many = r#"for i in $(seq 1 256); do printf 'tank/tankd/services/svc-a@s%s\tsnapshot\n' "$i"; done"#;
    let (fake, _data, st) = node(vec![
        crate::testing::answer("\"get\"*\"tank/tankd/services/svc-a\"", r#"printf 'type\tfilesystem\n'"#),
        crate::testing::answer("\"list\"*\"-t snapshot\"*", many),
    ])
    .await;
    let token = st.control.clone().unwrap().service_token("svc-a");
    let app = crate::server::control_app(st).unwrap();
    let r =
        ask(&app, "POST", "/resources/snapshot", Some(&token), r#"{"serviceId": "svc-a", "snapshotName": "one-more"}"#)
            .await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["kind"], "too_many_requests");
    assert!(fake.calls_of("snapshot").is_empty(), "{:?}", fake.calls());
}
