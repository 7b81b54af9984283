//! HTTP middleware of the HTTP port: request ids, CORS and gzip.
//!
//! Every request gets an `x-request-id` (the caller's, if it sent a sane one, else a new UUIDv7), echoed
//! on the response and recorded on the request's tracing span, so that every log line of the request
//! (including the gRPC layer's `rpc` span inside it) carries it.

use std::time::Instant;

use axum::{extract::Request, middleware::Next, response::Response};
use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::error::{Error, Result};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A UUIDv7 from the thread's RNG (`Uuid::now_v7` asks the OS for randomness on every call, a
/// syscall per request).
fn new_request_id() -> HeaderValue {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let id = uuid::Builder::from_unix_timestamp_millis(ms, &rand::random()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// A caller's request id is kept if it is 1 to 128 visible ASCII characters.
fn usable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(&REQUEST_ID) {
        Some(v) if usable(v) => v.clone(),
        _ => {
            let v = new_request_id();
            req.headers_mut().insert(REQUEST_ID, v.clone());
            v
        }
    };
    let span = tracing::info_span!(
        "http",
        request_id = id.to_str().unwrap_or("-"),
        method = %req.method(),
        path = req.uri().path(),
        operation = tracing::field::Empty,
    );
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.in_scope(|| {
        let latency_us = start.elapsed().as_micros() as u64;
        if status >= 500 {
            tracing::warn!(status, latency_us, "http request failed");
        } else {
            tracing::debug!(status, latency_us, "http request");
        }
    });
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}

/// The CORS layer for `--cors-origins`: `*`, or exact origins. `None` (no CORS headers at all) when empty.
pub(crate) fn cors(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o).map_err(|_| {
                    Error::invalid("cors_origins", format!("{o:?} is not a valid origin"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("last-event-id"),
                REQUEST_ID,
            ])
            .expose_headers([REQUEST_ID])
            .max_age(std::time::Duration::from_secs(3600)),
    ))
}
