//! A small HTTP/1.1 client for the REST shim tests (hyper's, keep-alive): JSON in, status + headers + body
//! out, with one of the three API key header styles.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value as J;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Copy, Debug)]
pub enum Style {
    Bearer,
    Token,
    XApiKey,
}

#[derive(Clone)]
pub struct Http {
    pub base: String,
    client: Client<HttpConnector, Body>,
    auth: Option<(&'static str, String)>,
}

/// A request being built.
pub struct Req {
    builder: http::request::Builder,
    body: Body,
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn json(self, v: &J) -> Req {
        self.header("content-type", "application/json")
            .bytes(serde_json::to_vec(v).unwrap())
    }

    pub fn bytes(mut self, b: impl Into<Bytes>) -> Req {
        self.body = Full::new(b.into()).map_err(|e| match e {}).boxed();
        self
    }

    /// A body without a content-length (chunked).
    pub fn stream(mut self, body: Body) -> Req {
        self.body = body;
        self
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> J {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> J {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        if self.body.is_empty() {
            J::Null
        } else {
            self.json()
        }
    }

    /// Asserts an error answer: HTTP status, gRPC code, and the `{code, message, details}` shape.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: i32) -> J {
        let j = self.expect(status);
        assert_eq!(self.header("content-type"), Some("application/json"), "{j}");
        assert_eq!(j["code"], code, "{j}");
        assert!(j["message"].is_string(), "{j}");
        assert!(j["details"].is_array(), "{j}");
        assert_eq!(j.as_object().unwrap().len(), 3, "{j}");
        j
    }
}

impl Http {
    pub fn new(addr: std::net::SocketAddr, key: &str) -> Http {
        Http::with_style(addr, Style::Bearer, key)
    }

    pub fn with_style(addr: std::net::SocketAddr, style: Style, key: &str) -> Http {
        let auth = match style {
            Style::Bearer => ("authorization", format!("Bearer {key}")),
            Style::Token => ("authorization", format!("Token {key}")),
            Style::XApiKey => ("x-api-key", key.to_owned()),
        };
        Http {
            auth: Some(auth),
            ..Http::anonymous(addr)
        }
    }

    pub fn anonymous(addr: std::net::SocketAddr) -> Http {
        Http {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            auth: None,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> Req {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some((h, v)) = &self.auth {
            builder = builder.header(*h, v);
        }
        Req {
            builder,
            body: Full::new(Bytes::new()).map_err(|e| match e {}).boxed(),
        }
    }

    /// Sends and reads the whole answer (at most 30 s).
    pub async fn send(&self, r: Req) -> Resp {
        let req = r.builder.body(r.body).expect("a valid request");
        let resp = tokio::time::timeout(Duration::from_secs(30), async {
            let resp = self.client.request(req).await.expect("HTTP request");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("HTTP body").to_bytes();
            (parts, body)
        })
        .await
        .expect("an answer within 30 s");
        Resp {
            status: resp.0.status.as_u16(),
            headers: resp.0.headers,
            body: resp.1,
        }
    }

    /// Sends and returns the status and headers only, without reading the body (for endless streams).
    pub async fn head_of(&self, r: Req) -> (u16, HeaderMap) {
        let req = r.builder.body(r.body).expect("a valid request");
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("headers within 30 s")
            .expect("HTTP request");
        (resp.status().as_u16(), resp.headers().clone())
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: J) -> Resp {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: J) -> Resp {
        self.send(self.request(Method::PATCH, path).json(&body))
            .await
    }

    /// A body sent as is (malformed JSON and the like).
    pub async fn raw(&self, method: Method, path: &str, body: &'static str) -> Resp {
        self.send(
            self.request(method, path)
                .header("content-type", "application/json")
                .bytes(body),
        )
        .await
    }
}

pub fn header_name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

/// Seed 002's create body for `id`.
pub fn seed_agent(id: &str) -> J {
    serde_json::json!({
        "id": id,
        "name": format!("Agent {id}"),
        "template": "You are an expert code reviewer. Review code for bugs, security issues, and best practices.",
        "description": "Reviews pull requests and code changes",
        "model": "scripted/echo",
        "tags": ["engineering", "code-review"],
        "config": {
            "enable_memory": true,
            "enable_history": true,
            "num_history_runs": 5,
            "enable_reasoning": true,
            "reasoning_min_steps": 2,
            "reasoning_max_steps": 8
        }
    })
}

/// Parses an SSE body into (event, id, data) triples; comments are skipped.
pub fn sse_events(text: &str) -> Vec<(String, Option<String>, J)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut event, mut id, mut data) = (String::from("message"), None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("SSE data is JSON"));
            }
        }
        if let Some(d) = data {
            out.push((event, id, d));
        }
    }
    out
}
