//! What `s3s` leaves to the server: how many requests run at once (more are shed with
//! S3's `SlowDown`, which SDKs retry with back-off) and the XML body cap. Body sizes are
//! bounded per operation in `service.rs` (`s3_max_object_size`), and a stalled body is
//! cut after a while (`body.rs`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// The largest XML body (CompleteMultipartUpload with 10,000 parts is about 1 MiB).
pub const MAX_XML_BODY: usize = 2 << 20;

fn slow_down() -> Response {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>too many requests at once on this node; retry with back-off</Message></Error>";
    (http::StatusCode::SERVICE_UNAVAILABLE, [(http::header::CONTENT_TYPE, "application/xml")], body).into_response()
}

pub async fn in_flight(State(slots): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    match slots.try_acquire_owned() {
        Ok(permit) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        Err(_) => {
            tracing::info!("S3 request shed: too many at once");
            slow_down()
        }
    }
}

/// `s3s`' service as an axum fallback: every path is S3's.
pub fn s3s_router(service: s3s::service::S3Service, max_requests: usize) -> axum::Router {
    let s3s = tower::service_fn(move |req: Request| {
        let service = service.clone();
        async move {
            let resp = match service.call(req.map(s3s::Body::http_body_unsync)).await {
                Ok(r) => r.map(Body::new),
                Err(e) => {
                    tracing::error!(error = ?e, "S3 request failed inside s3s");
                    (http::StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
                }
            };
            Ok::<_, Infallible>(resp)
        }
    });
    axum::Router::new()
        .fallback_service(s3s)
        .layer(axum::middleware::from_fn_with_state(Arc::new(Semaphore::new(max_requests)), in_flight))
}
