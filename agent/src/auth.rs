//! Who may use the main API over TCP.
//!
//! - `auth = "token"` (the default): every request but `GET /health` and `GET /metrics`
//!   carries `Authorization: Bearer <token>`, reads included (container detail, logs and
//!   snapshot streams reveal data). With no token configured tankd makes one on first start
//!   in `<data_dir>/api-token` (0600) and keeps using it.
//! - `auth = "none"`: the explicit opt-out for a legacy network of mistify clients that
//!   send no token. tankd says so at every start, and refuses what only a browser tricked
//!   by another site would send (a foreign `Origin`, a cross-site fetch, a form body).
//!
//! The unix socket needs no token: its file mode (root and an optional group) is the
//! authorization, as for Docker's socket.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::{AuthMode, Config};
use crate::crypto;
use crate::error::{Error, Result};
use crate::secrets::{self, SecretFileError};
use crate::wire::ApiError;

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// The node's API token, which [`require_token`] asks for (under `auth = "none"` there is
/// none, and that layer is not used).
#[derive(Clone)]
pub struct Token(pub Arc<str>);

impl Token {
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|given| crypto::constant_time_eq(given.as_bytes(), self.0.as_bytes()))
    }
}

/// Where tankd keeps the token it made itself.
pub fn generated_token_path(config: &Config) -> PathBuf {
    config.data_dir.join("api-token")
}

/// The token the TCP listeners require: the configured one, else the one tankd made on
/// an earlier start, else a new one. `None` under `auth = "none"`, said loudly.
pub fn node_token(config: &Config) -> Result<Option<String>, SecretFileError> {
    if config.auth == AuthMode::None {
        tracing::warn!(
            listen = ?config.listen,
            "auth = \"none\": the TCP API serves anyone who can reach it, without a token \
             (only cross-site browser requests are refused); use it only on a closed network"
        );
        return Ok(None);
    }
    if let Some(t) = &config.api_token {
        return Ok(Some(t.clone()));
    }
    let path = generated_token_path(config);
    let (token, made) = secrets::load_or_create(&path, crypto::random_token)?;
    if made {
        tracing::info!(path = %path.display(), "no API token configured: generated one (clients send it as Authorization: Bearer)");
    } else {
        tracing::info!(path = %path.display(), "using the API token generated on an earlier start");
    }
    Ok(Some(token))
}

/// Layer for every route but `/health` and `/metrics`: the token, whatever the method.
pub async fn require_token(State(token): State<Token>, req: Request, next: Next) -> Response {
    if token.admits(req.headers()) { next.run(req).await } else { ApiError(Error::unauthorized()).into_response() }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request looks forged by a web page, if it does. Browsers set `Sec-Fetch-Site`
/// and `Origin` themselves (a page cannot), and a form can only send the three
/// "simple" content types without a CORS preflight, which tankd never grants.
fn forgery(req: &Request) -> Option<(&'static str, String)> {
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Some(("Sec-Fetch-Site", format!("a {site} request from a web page")));
    }
    if is_read(req.method()) {
        return None;
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or_default();
        let own = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if own != Some(host.as_str()) {
            return Some(("Origin", format!("a request from the web page {origin}")));
        }
    }
    if let Some(ct) = text("content-type") {
        let essence = ct.split(';').next().unwrap_or_default().trim().to_owned();
        if matches!(essence.as_str(), "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain") {
            return Some(("Content-Type", format!("a form body ({essence})")));
        }
    }
    None
}

/// Layer for the main API under `auth = "none"`: refuse what a web page could forge.
pub async fn refuse_forgery(req: Request, next: Next) -> Response {
    match forgery(&req) {
        None => next.run(req).await,
        Some((field, what)) => {
            let e = Error::forbidden(format!(
                "refused {what}: with auth = \"none\" tankd serves only programs, not browsers"
            ));
            ApiError(e.with_field(field)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(token: &str) -> Router {
        let token = Token(Arc::from(token));
        Router::new()
            .route("/thing", get(|| async { "read" }).post(|| async { "wrote" }))
            .layer(axum::middleware::from_fn_with_state(token, require_token))
    }

    async fn status(app: Router, method: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = Request::builder().method(method).uri("/thing").header("host", "127.0.0.1:7070");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn every_method_needs_the_token() {
        let t = "0123456789abcdef";
        let good = format!("Bearer {t}");
        for method in ["GET", "HEAD", "POST"] {
            assert_eq!(status(app(t), method, &[]).await, 401, "{method} without the token");
            assert_eq!(status(app(t), method, &[("authorization", "Bearer wrong-wrong-wrong!")]).await, 401);
            assert_eq!(status(app(t), method, &[("authorization", t)]).await, 401, "Bearer is required");
            assert_eq!(status(app(t), method, &[("authorization", &good)]).await, 200, "{method}");
        }
    }

    fn open_app() -> Router {
        Router::new()
            .route("/thing", get(|| async { "read" }).post(|| async { "wrote" }))
            .layer(axum::middleware::from_fn(refuse_forgery))
    }

    #[tokio::test]
    async fn the_opt_out_refuses_what_a_web_page_sends_and_serves_programs() {
        // What mistify clients and curl send.
        assert_eq!(status(open_app(), "POST", &[]).await, 200);
        assert_eq!(status(open_app(), "POST", &[("content-type", "application/json")]).await, 200);
        assert_eq!(status(open_app(), "POST", &[("origin", "http://127.0.0.1:7070")]).await, 200, "own origin");
        assert_eq!(status(open_app(), "GET", &[("sec-fetch-site", "same-origin")]).await, 200);
        assert_eq!(status(open_app(), "GET", &[("sec-fetch-site", "none")]).await, 200, "typed in the address bar");
        // What a foreign page makes a browser send.
        for forged in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("content-type", "text/plain"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-type", "multipart/form-data; boundary=x"),
            ("sec-fetch-site", "cross-site"),
        ] {
            assert_eq!(status(open_app(), "POST", &[forged]).await, 403, "{forged:?}");
        }
        assert_eq!(status(open_app(), "GET", &[("sec-fetch-site", "cross-site")]).await, 403, "a GET can start things");
    }
}
