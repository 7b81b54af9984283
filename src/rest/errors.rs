//! Errors of the REST shim: a gRPC status (from the service, or made by the shim itself for bad JSON,
//! unknown paths and the like) becomes an HTTP status the grpc-gateway way and a JSON body
//! `{"code": <gRPC code>, "message": "...", "details": [...]}`, where `details` are the status's
//! google.rpc details (BadRequest field violations...) as proto3 JSON objects with an `@type`.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost::Message as _;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::Value as J;
use tonic::{Code, Status};

use crate::error::Error;

/// An error answer of the shim.
#[derive(Debug)]
pub(crate) struct RestError {
    pub code: Code,
    pub message: String,
    pub details: Vec<J>,
    /// Overrides the HTTP status derived from `code` (404 for an unknown path, 405, 413).
    pub http: Option<StatusCode>,
    /// The `Allow` header of a 405.
    pub allow: Option<HeaderValue>,
}

/// google.rpc.Status, as carried (protobuf, base64) in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<pbjson_types::Any>,
}

/// The HTTP status for a gRPC code (grpc-gateway's mapping).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl RestError {
    /// From a status, decoding its details through the descriptor pool.
    pub fn from_status(s: &Status) -> RestError {
        RestError {
            code: s.code(),
            message: s.message().to_owned(),
            details: details(s.details()),
            http: None,
            allow: None,
        }
    }

    /// INVALID_ARGUMENT naming `field`, with a BadRequest detail exactly like the services' own.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> RestError {
        Self::from(Error::invalid(field, message))
    }

    pub fn not_found_path(path: &str) -> RestError {
        let mut e = Self::from(Error::not_found(format!("no route for {path}")));
        e.http = Some(StatusCode::NOT_FOUND);
        e
    }

    pub fn method_not_allowed(method: &http::Method, allowed: &[http::Method]) -> RestError {
        let mut names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        names.sort_unstable();
        let list = names.join(", ");
        let mut e = Self::from(Error::Unimplemented(format!(
            "method {method} is not allowed on this path; allowed: {list}"
        )));
        e.http = Some(StatusCode::METHOD_NOT_ALLOWED);
        e.allow = HeaderValue::from_str(&list).ok();
        e
    }

    pub fn too_large(limit: usize) -> RestError {
        let mut e = Self::from(Error::ResourceExhausted(format!(
            "the request body exceeds the limit of {limit} bytes"
        )));
        e.http = Some(StatusCode::PAYLOAD_TOO_LARGE);
        e
    }

    /// A fault of the shim: logged with its detail, answered as a generic INTERNAL.
    pub fn internal(detail: impl std::fmt::Display) -> RestError {
        Self::from(Error::internal(format!("REST shim: {detail}")))
    }

    pub fn status(&self) -> StatusCode {
        self.http.unwrap_or_else(|| http_status(self.code))
    }

    /// The JSON body (also the `data:` of an SSE `error` event).
    pub fn body(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            code: i32,
            message: &'a str,
            details: &'a [J],
        }
        let body = Body {
            code: self.code as i32,
            message: &self.message,
            details: &self.details,
        };
        serde_json::to_vec(&body)
            .unwrap_or_else(|_| br#"{"code":13,"message":"internal error","details":[]}"#.to_vec())
    }
}

impl From<Error> for RestError {
    fn from(e: Error) -> Self {
        RestError::from_status(&Status::from(e))
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), self.body()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(allow) = self.allow {
            h.insert(header::ALLOW, allow);
        }
        resp
    }
}

/// The error a gRPC response's headers (trailers-only) or trailers carry; `None` when OK or absent.
pub(crate) fn from_metadata(h: &HeaderMap) -> Option<RestError> {
    match Status::from_header_map(h) {
        Some(s) if s.code() != Code::Ok => Some(RestError::from_status(&s)),
        _ => None,
    }
}

/// The details of an encoded google.rpc.Status as JSON objects; a type the pool does not know keeps its
/// bytes in base64 under `value`, as the proto3 JSON mapping of `Any` does.
fn details(bin: &[u8]) -> Vec<J> {
    if bin.is_empty() {
        return Vec::new();
    }
    let Ok(status) = RpcStatus::decode(bin) else {
        return Vec::new();
    };
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    status
        .details
        .iter()
        .map(|any| {
            let name = any.type_url.rsplit('/').next().unwrap_or_default();
            let decoded = super::transcode::pool()
                .get_message_by_name(name)
                .and_then(|d| DynamicMessage::decode(d, any.value.as_ref()).ok())
                .and_then(|m| {
                    m.serialize_with_options(serde_json::value::Serializer, &opts)
                        .ok()
                });
            let mut obj = match decoded {
                Some(J::Object(o)) => o,
                _ => {
                    use base64::Engine as _;
                    let mut o = serde_json::Map::new();
                    o.insert(
                        "value".into(),
                        J::String(base64::engine::general_purpose::STANDARD.encode(&any.value)),
                    );
                    o
                }
            };
            obj.insert("@type".into(), J::String(any.type_url.clone()));
            J::Object(obj)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_mapping() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::FailedPrecondition, 400),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::Unimplemented, 501),
            (Code::OutOfRange, 400),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Cancelled, 499),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
            let e = RestError::from_status(&Status::new(code, "m"));
            assert_eq!(e.status().as_u16(), http);
            let body: J = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"code": code as i32, "message": "m", "details": []})
            );
        }
    }

    #[test]
    fn bad_request_details_decode() {
        let e = RestError::invalid("agent.name", "is required");
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(e.message, "invalid agent.name: is required");
        assert_eq!(
            e.details,
            vec![serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": "agent.name", "description": "is required", "reason": ""}]
            })]
        );
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let e = RestError::internal("secret detail");
        assert_eq!(e.status().as_u16(), 500);
        assert_eq!(e.message, "internal error");
    }
}
