//! Model providers and the http_request tool against local HTTP servers started by the tests
//! (127.0.0.1 only; the fake model endpoints are in `providers_support`). Nothing reaches the
//! internet.

mod providers_support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentry::{
    models::{
        Message, ModelError, ModelEvent, ModelProvider, ModelRequest, Role, ToolCallRequest,
        ToolSpec, http::CallSettings, openai::OpenAiCompatible,
    },
    tools::{Tool, ToolContext, http_request::HttpRequest},
};
use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};
use futures_util::StreamExt;
use providers_support::{endpoints, serve};
use serde_json::{Value, json};

fn request(model: &str) -> ModelRequest {
    ModelRequest {
        model: model.into(),
        messages: vec![
            Message::new(Role::System, "You are terse."),
            Message::new(Role::User, "What time is it?"),
        ],
        tools: vec![ToolSpec {
            name: "current_time".into(),
            description: "now".into(),
            parameters: json!({"type": "object", "properties": {"timezone": {"type": "string"}}}),
        }],
        max_tokens: Some(64),
        ..Default::default()
    }
}

/// Events until the end or the first error.
async fn run(
    models: &agentry::models::Models,
    model: &str,
) -> (Vec<ModelEvent>, Option<ModelError>) {
    let (provider, name) = models.resolve(model).unwrap();
    let mut stream = match provider.stream(request(name)).await {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

fn text(events: &[ModelEvent]) -> String {
    events
        .iter()
        .filter_map(|e| {
            if let ModelEvent::Delta(t) = e {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test]
async fn openai_streams_tokens_and_usage() {
    let ep = endpoints().await;
    let (events, err) = run(&ep.models, "local/tokens").await;
    assert_eq!(err, None);
    assert_eq!(text(&events), "Hello world");
    assert_eq!(
        events.last(),
        Some(&ModelEvent::Usage {
            input_tokens: 12,
            output_tokens: 3
        })
    );
    let (headers, body) = ep.seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["model"], "tokens");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(body["tools"][0]["function"]["name"], "current_time");
    assert!(
        headers.get("authorization").is_none(),
        "no key configured: no auth header"
    );
}

#[tokio::test]
async fn openai_streams_a_tool_call_split_over_chunks() {
    let ep = endpoints().await;
    let (events, err) = run(&ep.models, "local/tool").await;
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            ModelEvent::ToolCall(ToolCallRequest {
                id: "call_1".into(),
                name: "current_time".into(),
                arguments: json!({"timezone": "+02:00"})
            }),
            ModelEvent::Usage {
                input_tokens: 20,
                output_tokens: 9
            },
        ]
    );
}

#[tokio::test]
async fn openai_sends_the_key_as_a_bearer_token() {
    let ep = endpoints().await;
    let settings = CallSettings {
        provider: "keyed".into(),
        ..Default::default()
    };
    let p = OpenAiCompatible::new(
        settings,
        &format!("http://{}/v1/", ep.addr),
        Some("sk-test".into()),
    )
    .unwrap();
    let mut s = p.stream(request("tokens")).await.unwrap();
    while s.next().await.is_some() {}
    let (headers, _) = ep.seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(headers["authorization"], "Bearer sk-test");
}

#[tokio::test]
async fn openai_retries_a_429_then_succeeds() {
    let ep = endpoints().await;
    let (events, err) = run(&ep.models, "local/flaky").await;
    assert_eq!(err, None);
    assert_eq!(text(&events), "Hello world");
    assert_eq!(ep.seen.hits("flaky"), 2);
}

#[tokio::test]
async fn openai_5xx_forever_fails_after_the_retries() {
    let ep = endpoints().await;
    let (events, err) = run(&ep.models, "local/down").await;
    let err = err.unwrap();
    assert!(events.is_empty());
    assert_eq!((err.code, err.retryable), ("model_unavailable", true));
    assert!(
        err.message.contains("HTTP 500") && err.message.contains("upstream exploded"),
        "{err}"
    );
    assert!(
        err.message.starts_with("local: ") && err.message.contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(ep.seen.hits("down"), 3, "1 + max_retries");
}

#[tokio::test]
async fn openai_4xx_is_not_retried() {
    let ep = endpoints().await;
    let err = run(&ep.models, "local/badreq").await.1.unwrap();
    assert_eq!((err.code, err.retryable), ("model_rejected", false));
    assert!(err.message.contains("max_tokens is too large"), "{err}");
    assert_eq!(ep.seen.hits("badreq"), 1);
}

#[tokio::test]
async fn openai_garbage_is_a_bad_response() {
    let ep = endpoints().await;
    let err = run(&ep.models, "local/garbage").await.1.unwrap();
    assert_eq!(err.code, "model_bad_response");
    assert!(err.message.contains("<html>oops</html>"), "{err}");
}

#[tokio::test]
async fn openai_stream_cut_short_after_output_is_not_replayed() {
    let ep = endpoints().await;
    let (events, err) = run(&ep.models, "local/truncated").await;
    assert_eq!(text(&events), "partial");
    let err = err.unwrap();
    assert_eq!(err.code, "model_bad_response");
    assert!(err.message.contains("[DONE]"), "{err}");
    assert_eq!(ep.seen.hits("truncated"), 1, "output had started: no retry");
}

#[tokio::test]
async fn openai_slow_endpoint_times_out_after_retries() {
    let ep = endpoints().await;
    let started = Instant::now();
    let err = run(&ep.models, "local/slow").await.1.unwrap();
    assert_eq!((err.code, err.retryable), ("model_timeout", true), "{err}");
    assert!(
        err.message.contains("no response from http://127.0.0.1:")
            && err.message.contains("within 1s"),
        "{err}"
    );
    assert_eq!(ep.seen.hits("slow"), 3);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn openai_stalled_stream_times_out_without_replay() {
    let ep = endpoints().await;
    let (events, err) = run(&ep.models, "local/stall").await;
    assert_eq!(text(&events), "first");
    let err = err.unwrap();
    assert!(
        err.code == "model_timeout" && err.message.contains("stalled"),
        "{err}"
    );
    assert_eq!(ep.seen.hits("stall"), 1);
}

#[tokio::test]
async fn openai_overall_timeout_bounds_a_dripping_stream() {
    let ep = endpoints().await;
    let started = Instant::now();
    let err = run(&ep.models, "brief/drip").await.1.unwrap();
    assert_eq!(err.code, "model_timeout");
    assert!(err.message.contains("within 0.4s"), "{err}");
    assert_eq!(ep.seen.hits("drip"), 2);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn openai_unreachable_endpoint() {
    // A port that was just free: connection refused, retried, then a clear error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = CallSettings {
        provider: "gone".into(),
        max_retries: 1,
        backoff_initial: Duration::from_millis(10),
        ..Default::default()
    };
    let p = OpenAiCompatible::new(settings, &format!("http://127.0.0.1:{port}/v1"), None).unwrap();
    let mut s = p.stream(request("x")).await.unwrap();
    let err = s.next().await.unwrap().unwrap_err();
    assert_eq!((err.code, err.retryable), ("model_unavailable", true));
    assert!(
        err.message.contains(&format!("127.0.0.1:{port}")) && err.message.contains("2 attempts"),
        "{err}"
    );
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn anthropic_streams_text_and_a_tool_use() {
    let ep = endpoints().await;
    let (events, err) = run(&ep.models, "claude/answer").await;
    assert_eq!(err, None);
    assert_eq!(text(&events), "Checking now.");
    assert_eq!(
        events[2..],
        [
            ModelEvent::ToolCall(ToolCallRequest {
                id: "toolu_9".into(),
                name: "memory".into(),
                arguments: json!({"action": "search", "query": "tea"})
            }),
            ModelEvent::Usage {
                input_tokens: 30,
                output_tokens: 41
            },
        ]
    );
    let (headers, body) = ep.seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(headers.get("x-api-key").is_none());
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "What time is it?"}]}])
    );
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
}

#[tokio::test]
async fn anthropic_retries_429_and_an_early_overloaded_event() {
    let ep = endpoints().await;
    for model in ["flaky", "overloaded"] {
        let (events, err) = run(&ep.models, &format!("claude/{model}")).await;
        assert_eq!(err, None, "{model}");
        assert_eq!(text(&events), "Checking now.");
        assert_eq!(ep.seen.hits(model), 2, "{model}");
    }
}

#[tokio::test]
async fn anthropic_failures() {
    let ep = endpoints().await;
    let err = run(&ep.models, "claude/down").await.1.unwrap();
    assert_eq!((err.code, err.retryable), ("model_unavailable", true));
    assert!(
        err.message.contains("HTTP 529")
            && err.message.contains("Overloaded")
            && err.message.contains("3 attempts"),
        "{err}"
    );
    assert_eq!(ep.seen.hits("down"), 3);

    let err = run(&ep.models, "claude/garbage").await.1.unwrap();
    assert_eq!(err.code, "model_bad_response");
    assert_eq!(ep.seen.hits("garbage"), 1);

    let (events, err) = run(&ep.models, "claude/truncated").await;
    assert_eq!(text(&events), "Checking now.");
    let err = err.unwrap();
    assert!(
        err.code == "model_bad_response" && err.message.contains("message_stop"),
        "{err}"
    );
    assert_eq!(ep.seen.hits("truncated"), 1);

    let err = run(&ep.models, "claude/slow").await.1.unwrap();
    assert_eq!(err.code, "model_timeout");
    assert_eq!(ep.seen.hits("slow"), 3);
}

// --- http_request ---

async fn echo(
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: String,
) -> Response {
    match uri.path() {
        "/json" => axum::Json(json!({"method": method.as_str(), "x": headers.get("x-test").map(|v| v.to_str().unwrap()), "body": body}))
            .into_response(),
        "/big" => "a".repeat(5000).into_response(),
        "/redirect" => (StatusCode::FOUND, [(header::LOCATION, "http://169.254.169.254/latest/meta-data")]).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test]
async fn http_request_against_a_local_server_when_private_is_allowed() {
    let hits = Arc::new(Mutex::new(0u32));
    let h = hits.clone();
    let app = Router::new().fallback(any(
        move |headers: HeaderMap,
              method: axum::http::Method,
              uri: axum::http::Uri,
              body: String| {
            *h.lock().unwrap() += 1;
            echo(headers, method, uri, body)
        },
    ));
    let addr = serve(app).await;
    let ctx = |config: Value| ToolContext {
        config,
        ..Default::default()
    };
    let allowed = ctx(
        json!({"allowed_hosts": ["127.0.0.1", "localhost"], "allow_private": true, "max_response_bytes": 1000}),
    );

    let args = json!({"method": "post", "url": format!("http://{addr}/json"), "headers": {"x-test": "yes"}, "body": {"a": 1}});
    let out = HttpRequest.call(&allowed, args).await.unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(
        out["body"],
        json!({"method": "POST", "x": "yes", "body": "{\"a\":1}"})
    );
    assert!(
        out["headers"]["content-type"]
            .as_str()
            .unwrap()
            .contains("json")
    );

    let out = HttpRequest
        .call(
            &allowed,
            json!({"url": format!("http://localhost:{}/big", addr.port())}),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            out["body"].as_str().unwrap().len(),
            out["truncated"].clone()
        ),
        (1000, json!(true))
    );

    let out = HttpRequest
        .call(&allowed, json!({"url": format!("http://{addr}/redirect")}))
        .await
        .unwrap();
    assert_eq!(out["status"], 302, "redirects are returned, not followed");
    assert_eq!(
        out["headers"]["location"],
        "http://169.254.169.254/latest/meta-data"
    );
    assert_eq!(*hits.lock().unwrap(), 3);

    // The same server is refused without allow_private, before any connection.
    let strict = ctx(json!({"allowed_hosts": ["127.0.0.1", "localhost"]}));
    for url in [
        format!("http://{addr}/json"),
        format!("http://localhost:{}/json", addr.port()),
    ] {
        let e = HttpRequest
            .call(&strict, json!({"url": url}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "forbidden", "{url}: {e:?}");
    }
    let e = HttpRequest
        .call(
            &allowed,
            json!({"url": format!("http://{addr}/json"), "headers": {"Host": "internal"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "forbidden");
    assert_eq!(
        *hits.lock().unwrap(),
        3,
        "refused requests never reached the server"
    );
}
