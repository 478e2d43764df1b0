//! Talking to tankd's imageapi and container routes in tests: an agent on a host
//! without ZFS (`zfs = false`) with an API token, and calls that check upstream's
//! `{code, message}` error shape.

use serde_json::Value;

use super::{Agent, Response};

pub const TOKEN: &str = "imageapi-test-token-0123456789";

/// A tankd with `zfs = false` and [`TOKEN`], started.
pub fn host_agent(tag: &str) -> Agent {
    let mut a = Agent::new(tag);
    a.extra_env.push(("TANKD_ZFS".into(), "false".into()));
    a.extra_env.push(("TANKD_API_TOKEN".into(), TOKEN.into()));
    a.start();
    a
}

pub fn call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Response {
    let auth = format!("Bearer {TOKEN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    agent.tcp(method, path, &[("Authorization", &auth), ("Content-Type", "application/json")], body.as_bytes())
}

/// A call that must answer 200 or 201; its JSON.
pub fn ok(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = call(agent, method, path, body);
    assert!(r.status == 200 || r.status == 201, "{method} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    r.json()
}

/// A call that must be refused with `status` in upstream's `{code, message}`.
pub fn refused(agent: &Agent, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
    let r = call(agent, method, path, body);
    assert_eq!(r.status, status, "{method} {path}: {}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["code"], status, "upstream's {{code, message}}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    v
}
