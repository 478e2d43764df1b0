//! API token check. With a token configured, every mutating request (anything but GET,
//! HEAD, OPTIONS) must carry `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api_error::ApiError;

/// Compare secrets without an early exit, so the time taken does not reveal how much of
/// a guess was right. Lengths are not secret (tokens have a fixed length in practice).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

#[derive(Clone)]
pub struct Token(pub Option<Arc<str>>);

impl Token {
    pub fn admits(&self, req: &Request) -> bool {
        let Some(expected) = &self.0 else { return true };
        bearer(req.headers()).is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
    }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Layer for the whole app: mutating methods need the token.
pub async fn require_token_to_mutate(State(token): State<Token>, req: Request, next: Next) -> Response {
    if is_read(req.method()) || token.admits(&req) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(constant_time_eq(b"", b""));
    }

    fn app(token: Option<&str>) -> Router {
        let token = Token(token.map(Arc::from));
        Router::new()
            .route("/thing", get(|| async { "read" }).post(|| async { "wrote" }))
            .layer(axum::middleware::from_fn_with_state(token, require_token_to_mutate))
    }

    async fn status(app: Router, method: &str, auth: Option<&str>) -> u16 {
        let mut req = Request::builder().method(method).uri("/thing");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn mutations_need_the_token_when_one_is_set() {
        let t = "0123456789abcdef";
        assert_eq!(status(app(Some(t)), "GET", None).await, 200);
        assert_eq!(status(app(Some(t)), "POST", None).await, 401);
        assert_eq!(status(app(Some(t)), "POST", Some("Bearer wrong-wrong-wrong!")).await, 401);
        assert_eq!(status(app(Some(t)), "POST", Some(t)).await, 401, "the Bearer scheme is required");
        assert_eq!(status(app(Some(t)), "POST", Some(&format!("Bearer {t}"))).await, 200);
        assert_eq!(status(app(None), "POST", None).await, 200, "no token configured: open");
    }
}
