//! Fake model endpoints for tests/providers.rs, served on 127.0.0.1 by the test itself: an
//! OpenAI-compatible `/v1/chat/completions` and an Anthropic-style `/v1/messages` that stream
//! tokens and tool calls, fail, stall or talk garbage on demand, selected by the model name.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use agentry::{config::FileConfig, models::config::build_models};
use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Seen {
    pub hits: Mutex<HashMap<String, u32>>,
    pub last: Mutex<Option<(HeaderMap, Value)>>,
}

impl Seen {
    pub fn hits(&self, model: &str) -> u32 {
        self.hits.lock().unwrap().get(model).copied().unwrap_or(0)
    }
}

pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// An event-stream response sending `chunks` 5 ms apart, then (if `stall`) never ending.
pub fn sse(chunks: Vec<String>, stall: bool) -> Response {
    let s = futures_util::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, Infallible>(c)
    });
    let body = if stall {
        Body::from_stream(s.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(s)
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// Keep-alive comments every 50 ms, forever: never silent, never done.
fn drip() -> Response {
    let s = futures_util::stream::unfold((), |_| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, Infallible>(": ping\n\n".to_owned()), ()))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(s),
    )
        .into_response()
}

/// One server-sent event carrying `v`.
pub fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

fn json_error(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"message": msg}}).to_string(),
    )
        .into_response()
}

/// Counts the call and records it; returns the model name and the call number (1-based).
fn record(seen: &Seen, headers: HeaderMap, body: &Value) -> (String, u32) {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let mut hits = seen.hits.lock().unwrap();
    let n = hits.entry(model.clone()).or_default();
    *n += 1;
    *seen.last.lock().unwrap() = Some((headers, body.clone()));
    (model, *n)
}

async fn openai(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap();
    let (model, n) = record(&seen, headers, &body);
    let chunk = |delta: Value| {
        data(
            json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}),
        )
    };
    let tokens = || {
        vec![
            chunk(json!({"role": "assistant", "content": ""})),
            chunk(json!({"content": "Hel"})),
            chunk(json!({"content": "lo"})),
            chunk(json!({"content": " world"})),
            data(json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}})),
            "data: [DONE]\n\n".to_owned(),
        ]
    };
    match model.as_str() {
        "tokens" => sse(tokens(), false),
        "tool" => {
            let call = |v: Value| chunk(json!({"tool_calls": [v]}));
            let mut chunks = vec![
                call(
                    json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "current_time", "arguments": ""}}),
                ),
                call(json!({"index": 0, "function": {"arguments": "{\"time"}})),
                call(json!({"index": 0, "function": {"arguments": "zone\": \"+0"}})),
                call(json!({"index": 0, "function": {"arguments": "2:00\"}"}})),
                data(
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                ),
                data(
                    json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}}),
                ),
                "data: [DONE]\n\n".to_owned(),
            ];
            // Split one event across two writes as well.
            let last = chunks.pop().unwrap();
            chunks.extend([last[..7].to_owned(), last[7..].to_owned()]);
            sse(chunks, false)
        }
        "flaky" if n == 1 => {
            let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut().insert("retry-after", "0".parse().unwrap());
            r
        }
        "flaky" => sse(tokens(), false),
        "down" => json_error(StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded"),
        "badreq" => json_error(StatusCode::BAD_REQUEST, "max_tokens is too large"),
        "garbage" => sse(vec!["data: <html>oops</html>\n\n".into()], false),
        "truncated" => sse(vec![chunk(json!({"content": "partial"}))], false),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            sse(tokens(), false)
        }
        "stall" => sse(vec![chunk(json!({"content": "first"}))], true),
        "drip" => drip(),
        other => panic!("unknown test model {other}"),
    }
}

async fn anthropic(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap();
    let (model, n) = record(&seen, headers, &body);
    let ev = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
    let answer = || {
        vec![
            ev(
                json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 30, "output_tokens": 1}}}),
            ),
            ev(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev(json!({"type": "ping"})),
            ev(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " now."}}),
            ),
            ev(json!({"type": "content_block_stop", "index": 0})),
            ev(
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "memory", "input": {}}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"action\": "}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"search\", \"query\""}}),
            ),
            ev(
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ": \"tea\"}"}}),
            ),
            ev(json!({"type": "content_block_stop", "index": 1})),
            ev(
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 41}}),
            ),
            ev(json!({"type": "message_stop"})),
        ]
    };
    match model.as_str() {
        "answer" => sse(answer(), false),
        "flaky" if n == 1 => {
            let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            r.headers_mut().insert("retry-after", "0".parse().unwrap());
            r
        }
        "flaky" => sse(answer(), false),
        // Overloaded mid-stream before any output: retried like a 5xx.
        "overloaded" if n == 1 => {
            sse(vec![ev(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))], false)
        }
        "overloaded" => sse(answer(), false),
        "down" => (StatusCode::from_u16(529).unwrap(), json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string())
            .into_response(),
        "garbage" => sse(vec!["event: message_start\ndata: {{{\n\n".into()], false),
        "truncated" => sse(answer()[..5].to_vec(), false),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            sse(answer(), false)
        }
        other => panic!("unknown test model {other}"),
    }
}

pub struct Endpoints {
    pub seen: Arc<Seen>,
    pub addr: SocketAddr,
    pub models: agentry::models::Models,
}

pub async fn endpoints() -> Endpoints {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .with_state(seen.clone());
    let addr = serve(app).await;
    let file: FileConfig = toml::from_str(&format!(
        r#"
        [providers.local]
        kind = "openai"
        base_url = "http://{addr}/v1"
        timeout_secs = 5
        read_timeout_secs = 1
        max_retries = 2
        backoff_initial_ms = 10

        [providers.brief]
        kind = "openai"
        base_url = "http://{addr}/v1"
        timeout_secs = 0.4
        max_retries = 1
        backoff_initial_ms = 10

        [providers.claude]
        kind = "anthropic"
        base_url = "http://{addr}"
        api_key_env = "AGENTRY_TEST_UNSET_ANTHROPIC_KEY"
        timeout_secs = 5
        read_timeout_secs = 1
        max_retries = 2
        backoff_initial_ms = 10
        "#
    ))
    .unwrap();
    let models = build_models(&file).unwrap();
    Endpoints { seen, addr, models }
}
