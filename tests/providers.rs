//! Model providers and the http_request tool against local HTTP servers started by the tests
//! (127.0.0.1 only; the fake model endpoints are in `providers_support`). Nothing reaches the
//! internet.
//!
//! Most tests call a provider in isolation; `openai_compatible_provider_drives_a_whole_run` runs the
//! real server with an OpenAI-compatible provider from a config file, pointed at a fake endpoint, and
//! proves a whole run works through it: the streamed tool call is executed, its result goes back to
//! the model as a `tool` message, the streamed answer arrives as deltas, and the usage the endpoint
//! reported (and its cost at the configured price) is what the run records.

mod common;
mod providers_support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentry::{
    config::FileConfig,
    models::{
        Message, ModelError, ModelEvent, ModelProvider, ModelRequest, Role, ToolCallRequest,
        ToolSpec, http::CallSettings, openai::OpenAiCompatible,
    },
    pb::{
        Agent, CreateAgentRequest, GetRunRequest, GetUsageRequest, RunStatus, StartRunRequest,
        ToolBinding, Usage, WatchRunRequest, run_event::Event, tool_call_completed::Outcome,
    },
    tools::{Tool, ToolContext, http_request::HttpRequest},
};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use common::{Backend, TestServer};
use futures_util::StreamExt;
use providers_support::{data, endpoints, serve, sse};
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

// --- A whole run through the server, on an OpenAI-compatible provider ---

/// The requests the fake chat-completions endpoint received, in order.
#[derive(Default)]
struct ChatLog {
    requests: Mutex<Vec<(HeaderMap, Value)>>,
}

/// The tool call the fake model makes, and what it reports using.
const CALL_ID: &str = "call_7";
const TURN_1_USAGE: (i64, i64) = (20, 9);
const TURN_2_USAGE: (i64, i64) = (12, 3);

/// A fake OpenAI chat-completions endpoint for one run. The first call streams a `current_time`
/// tool call whose arguments are split over several chunks; the second must end with that call's
/// result as a `tool` message (otherwise it is refused with a 400 naming what was wrong) and streams
/// "Hello", " world". Each answer ends with a usage chunk and `[DONE]`, as OpenAI streams them.
async fn fake_chat(State(log): State<Arc<ChatLog>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap();
    let n = {
        let mut requests = log.requests.lock().unwrap();
        requests.push((headers, body.clone()));
        requests.len()
    };
    let chunk = |delta: Value, finish: Value| {
        data(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-test",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let call = |fragment: Value| chunk(json!({"tool_calls": [fragment]}), Value::Null);
    let usage = |(prompt, completion): (i64, i64)| {
        data(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}}),
        )
    };
    let done = "data: [DONE]\n\n".to_owned();
    let refuse = |why: String| {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": {"message": why}}).to_string(),
        )
            .into_response()
    };
    match n {
        1 => sse(
            vec![
                chunk(json!({"role": "assistant", "content": null}), Value::Null),
                call(json!({"index": 0, "id": CALL_ID, "type": "function",
                            "function": {"name": "current_time", "arguments": ""}})),
                call(json!({"index": 0, "function": {"arguments": "{\"time"}})),
                call(json!({"index": 0, "function": {"arguments": "zone\": \"+0"}})),
                call(json!({"index": 0, "function": {"arguments": "2:00\"}"}})),
                chunk(json!({}), json!("tool_calls")),
                usage(TURN_1_USAGE),
                done,
            ],
            false,
        ),
        2 => {
            let last = body["messages"].as_array().and_then(|m| m.last());
            let result = last
                .filter(|m| m["role"] == "tool" && m["tool_call_id"] == CALL_ID)
                .and_then(|m| serde_json::from_str::<Value>(m["content"].as_str()?).ok());
            match result {
                Some(r) if r["timezone"] == "+02:00" => sse(
                    vec![
                        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                        chunk(json!({"content": "Hello"}), Value::Null),
                        chunk(json!({"content": " world"}), Value::Null),
                        chunk(json!({}), json!("stop")),
                        usage(TURN_2_USAGE),
                        done,
                    ],
                    false,
                ),
                _ => refuse(format!(
                    "the second request does not end with the current_time result for {CALL_ID} \
                     as a tool message; it ends with {}",
                    last.map(Value::to_string).unwrap_or_default()
                )),
            }
        }
        n => refuse(format!("unexpected request #{n}")),
    }
}

async fn openai_compatible_provider_drives_a_whole_run(backend: Backend) {
    let log = Arc::new(ChatLog::default());
    let addr = serve(
        Router::new()
            .route("/v1/chat/completions", post(fake_chat))
            .with_state(log.clone()),
    )
    .await;
    // The `--config` file, loaded as `agentry serve` loads it. The key variable is unset: no key sent.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentry.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            [providers.openai]
            base_url = "http://{addr}/v1"
            api_key_env = "AGENTRY_TEST_UNSET_OPENAI_KEY"
            timeout_secs = 10
            max_retries = 0

            [prices."openai/gpt-test"]
            input_per_mtok = 2.0
            output_per_mtok = 8.0
            "#
        ),
    )
    .unwrap();
    let config = FileConfig::load(Some(&path)).expect("config file");
    let server = TestServer::start_with_config(&backend, &config).await;
    let key = server.admin_key.clone();

    server
        .agents(&key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(Agent {
                id: "clock".into(),
                name: "Clock".into(),
                template: "You tell the time.".into(),
                model: "openai/gpt-test".into(),
                tools: vec![ToolBinding {
                    name: "current_time".into(),
                    requires_confirmation: false,
                    config: None,
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // Something the user asked to be remembered earlier: it is in the system prompt of the run.
    let workspace = server
        .admin(&key)
        .await
        .get_workspace(agentry::pb::GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    let db = agentry::store::Db::connect(&server.db.url).await.unwrap();
    use agentry::tools::Tool as _;
    agentry::tools::memory::MemoryTool::new(db)
        .call(
            &agentry::tools::ToolContext {
                workspace_id: workspace.workspace.unwrap().id,
                user_id: "ann".into(),
                session_id: String::new(),
                run_id: String::new(),
                config: Value::Null,
            },
            json!({"action": "save", "content": "prefers 24-hour time"}),
        )
        .await
        .unwrap();
    let mut runs = server.runs(&key).await;
    let run = runs
        .start_run(StartRunRequest {
            agent_id: "clock".into(),
            message: "What time is it at +02:00?".into(),
            user_id: "ann".into(),
            images: vec![
                agentry::pb::Image {
                    url: "https://example.com/clock.png".into(),
                    ..Default::default()
                },
                agentry::pb::Image {
                    data: "iVBORw0KGgo=".into(),
                    mime_type: "image/png".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut watch = runs
        .watch_run(WatchRunRequest {
            run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = watch.next().await {
            events.push(e.unwrap());
        }
    })
    .await
    .expect("the run ends within 30 s");

    // The event log, as the watcher saw it.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| agentry::runs::events::kind(e.event.as_ref().unwrap()))
        .collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let Some(Event::RunCompleted(completed)) = events.last().and_then(|e| e.event.clone()) else {
        panic!("the run did not complete: {:?}", events.last());
    };
    let deltas: String = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::MessageDelta(d)) => Some(d.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "Hello world", "{kinds:?}");
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ToolCallStarted(s)) => s.tool_call.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{kinds:?}");
    assert_eq!(
        (started[0].id.as_str(), started[0].name.as_str()),
        (CALL_ID, "current_time")
    );
    assert_eq!(
        serde_json::to_value(&started[0].arguments).unwrap(),
        json!({"timezone": "+02:00"}),
        "the arguments streamed in fragments, reassembled"
    );
    let results: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ToolCallCompleted(c)) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 1, "{kinds:?}");
    assert_eq!(
        (results[0].tool_call_id.as_str(), results[0].name.as_str()),
        (CALL_ID, "current_time")
    );
    let Some(Outcome::Result(result)) = &results[0].outcome else {
        panic!("current_time failed: {:?}", results[0].outcome);
    };
    let result = serde_json::to_value(result).unwrap();
    assert_eq!(result["timezone"], "+02:00");

    // Usage: the sum of what the endpoint reported, priced at the configured rates.
    let input = TURN_1_USAGE.0 + TURN_2_USAGE.0;
    let output = TURN_1_USAGE.1 + TURN_2_USAGE.1;
    let cost = (input as f64 * 2.0 + output as f64 * 8.0) / 1e6;
    let check = |u: &Usage, what: &str| {
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (input, output, input + output),
            "{what}"
        );
        assert!(
            (u.cost_usd - cost).abs() < 1e-12,
            "{what}: cost {} != {cost}",
            u.cost_usd
        );
    };
    assert_eq!(completed.output.as_ref().unwrap().content, "Hello world");
    check(completed.usage.as_ref().unwrap(), "run_completed");
    let got = runs
        .get_run(GetRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, RunStatus::Completed as i32);
    assert_eq!(got.model, "openai/gpt-test");
    check(got.usage.as_ref().unwrap(), "GetRun");
    let usage = runs
        .get_usage(GetUsageRequest {
            model: "openai/gpt-test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    check(usage.total.as_ref().unwrap(), "GetUsage");

    // What the endpoint was sent: the model name without its provider, the tool, then the tool's
    // result after the assistant's call.
    let requests = log.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one request per model turn");
    for (headers, body) in &requests {
        assert_eq!(body["model"], "gpt-test");
        assert_eq!(body["stream"], true);
        assert_eq!(body["tools"][0]["function"]["name"], "current_time");
        assert!(headers.get("authorization").is_none(), "no key configured");
    }
    assert_eq!(
        requests[0].1["messages"],
        json!([
            {"role": "system", "content": "You tell the time.\n\nWhat you remember about the user (saved with the memory tool):\n- prefers 24-hour time"},
            {"role": "user", "content": [
                {"type": "text", "text": "What time is it at +02:00?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/clock.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]}
        ]),
        "the run's images ride on the user's message"
    );
    let second = requests[1].1["messages"].as_array().unwrap();
    assert_eq!(second.len(), 4, "{second:?}");
    assert_eq!(
        second[..2],
        requests[0].1["messages"].as_array().unwrap()[..]
    );
    let assistant = &second[2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["id"], CALL_ID);
    assert_eq!(
        assistant["tool_calls"][0]["function"]["name"],
        "current_time"
    );
    assert_eq!(
        serde_json::from_str::<Value>(
            assistant["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"timezone": "+02:00"})
    );
    let tool = &second[3];
    assert_eq!(
        (tool["role"].as_str(), tool["tool_call_id"].as_str()),
        (Some("tool"), Some(CALL_ID))
    );
    let sent: Value = serde_json::from_str(tool["content"].as_str().unwrap()).unwrap();
    // The result the run recorded is the one the model was given (the event carries numbers as f64).
    assert_eq!(
        (&sent["iso"], &sent["timezone"]),
        (&result["iso"], &result["timezone"])
    );
    assert_eq!(sent["unix"].as_f64(), result["unix"].as_f64());

    server.finish().await;
}

on_both_backends!(openai_compatible_provider_drives_a_whole_run);
