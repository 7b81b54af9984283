//! In-process gRPC: a REST call becomes an `http::Request` for `/agentry.v1.<Service>/<Method>` with one
//! gRPC frame as its body and the caller's API key headers, handed to the same tower service (auth layer
//! and tonic services) the gRPC listener serves, with no network hop; the answer's frames and
//! `grpc-status` are read back. REST therefore behaves exactly as gRPC does, by construction.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Version, header};
use http_body_util::{BodyExt, Full};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use tower::ServiceExt;

use super::errors::{RestError, from_metadata};

/// The services as the gRPC listener serves them: authentication first, then the tonic router.
pub type Grpc = crate::auth::AuthService<tonic::service::Routes>;

/// Request headers passed on to the services: the three API key styles.
const FORWARDED: &[&str] = &["authorization", "x-api-key"];

/// Calls `path` with `message`. A status the services answer before any message (trailers-only, the
/// usual shape of an error) is returned as the error.
pub(crate) async fn call(
    grpc: &Grpc,
    path: &'static str,
    headers: &HeaderMap,
    message: &DynamicMessage,
) -> Result<http::Response<tonic::body::Body>, RestError> {
    let len = message.encoded_len();
    let prefix = u32::try_from(len)
        .map_err(|_| RestError::invalid("", "the request message is too large"))?;
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&prefix.to_be_bytes());
    message.encode(&mut buf).map_err(RestError::internal)?;
    let mut req = http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .version(Version::HTTP_2)
        .body(Full::new(Bytes::from(buf)))
        .map_err(RestError::internal)?;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    for name in FORWARDED {
        for v in headers.get_all(*name) {
            h.append(*name, v.clone());
        }
    }
    let resp = match grpc.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if let Some(e) = from_metadata(resp.headers()) {
        return Err(e);
    }
    Ok(resp)
}

/// The one message of a unary answer.
pub(crate) async fn unary(resp: http::Response<tonic::body::Body>) -> Result<Bytes, RestError> {
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|s| RestError::from_status(&s))?;
    if let Some(e) = collected.trailers().and_then(from_metadata) {
        return Err(e);
    }
    let mut frames = Frames::default();
    frames.push(&collected.to_bytes());
    frames
        .next()?
        .ok_or_else(|| RestError::internal("a unary answer without a message"))
}

/// Splits the bytes of a gRPC body into messages.
#[derive(Default)]
pub(crate) struct Frames {
    buf: BytesMut,
}

impl Frames {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if one is buffered.
    pub fn next(&mut self) -> Result<Option<Bytes>, RestError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(RestError::internal("a compressed gRPC frame"));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}
