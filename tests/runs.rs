//! The run engine end to end through the generated client: scripted runs (text, tool calls, approval
//! with edited arguments, rejection), stream resume from every after_seq, cancel while streaming,
//! idempotent retries, input validation and many concurrent runs. Both backends.

mod common;

use std::time::{Duration, Instant};

use agentry::pb::{
    Agent, CancelRunRequest, CreateAgentRequest, GetRunRequest, ListPendingApprovalsRequest,
    ListRunEventsRequest, ListRunsRequest, RunEvent, RunStatus, StartRunRequest,
    SubmitToolDecisionsRequest, ToolBinding, ToolDecision, WatchRunRequest, run_event::Event,
};
use common::{Backend, TestServer, expect_code};
use futures_util::StreamExt;
use serde_json::json;
use tonic::Code;

fn to_struct(v: serde_json::Value) -> pbjson_types::Struct {
    serde_json::from_value(v).unwrap()
}

fn scripted(id: &str, script: serde_json::Value, tools: Vec<ToolBinding>) -> Agent {
    Agent {
        id: id.into(),
        name: id.into(),
        model: "scripted/script".into(),
        metadata: Some(to_struct(json!({ "script": script }))),
        tools,
        ..Default::default()
    }
}

fn echo(id: &str) -> Agent {
    Agent {
        id: id.into(),
        name: id.into(),
        model: "scripted/echo".into(),
        ..Default::default()
    }
}

fn start(agent_id: &str, message: &str) -> StartRunRequest {
    StartRunRequest {
        agent_id: agent_id.into(),
        message: message.into(),
        ..Default::default()
    }
}

fn kind(e: &RunEvent) -> &'static str {
    agentry::runs::events::kind(e.event.as_ref().unwrap())
}

/// Every event of the run from `after_seq` until the stream ends.
async fn watch_all(srv: &TestServer, run_id: &str, after_seq: i64) -> Vec<RunEvent> {
    let mut c = srv.runs(&srv.admin_key).await;
    let mut s = c
        .watch_run(WatchRunRequest {
            run_id: run_id.into(),
            after_seq,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("stream stalls")
    {
        out.push(e.unwrap());
    }
    out
}

async fn echo_run_streams_and_completes(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(echo("echo")),
        })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let run = runs
        .start_run(start("echo", "hello brave new world"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.status, RunStatus::Queued as i32);
    assert_eq!(run.trace_id.len(), 32);
    let events = watch_all(&srv, &run.id, 0).await;
    let kinds: Vec<_> = events.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "run_queued",
            "run_started",
            "message_delta",
            "message_delta",
            "message_delta",
            "message_delta",
            "message",
            "usage",
            "run_completed"
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>(),
        "gapless from 1"
    );
    let text: String = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::MessageDelta(d)) => Some(d.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "hello brave new world");
    let done = runs
        .get_run(GetRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, RunStatus::Completed as i32);
    assert_eq!(done.output.unwrap().content, "hello brave new world");
    let usage = done.usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (4, 4, 8)
    );
    assert!(done.start_time.is_some() && done.end_time.is_some());

    // Resume from every possible after_seq: exactly the rest, nothing twice.
    for k in 0..=9 {
        let rest = watch_all(&srv, &run.id, k).await;
        assert_eq!(
            rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            ((k + 1)..=9).collect::<Vec<_>>(),
            "after_seq {k}"
        );
    }
    let listed = runs
        .list_run_events(ListRunEventsRequest {
            run_id: run.id.clone(),
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 4);
    assert_eq!(listed.events, events[..4].to_vec());
    srv.finish().await;
}

async fn tool_calls_approval_with_edited_arguments(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let script = json!([
        {"tool_calls": [{"name": "http_request", "arguments": {"method": "GET", "url": "https://example.com/a"}}]},
        {"text": "done"}
    ]);
    let tools = vec![ToolBinding {
        name: "http_request".into(),
        requires_confirmation: true,
        config: None,
    }];
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(scripted("asker", script, tools)),
        })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let run = runs
        .start_run(start("asker", "go"))
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&srv, &run.id, 0).await;
    let last = events.last().unwrap();
    let Some(Event::ApprovalRequired(req)) = &last.event else {
        panic!("expected approval_required, got {last:?}")
    };
    assert_eq!(req.tool_calls.len(), 1);
    let call_id = req.tool_calls[0].id.clone();
    let paused = runs
        .get_run(GetRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.status, RunStatus::RequiresAction as i32);
    assert_eq!(paused.pending_tool_calls[0].id, call_id);
    let inbox = runs
        .list_pending_approvals(ListPendingApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inbox.tool_calls.len(), 1);
    assert_eq!(inbox.tool_calls[0].run_id, run.id);

    // Unknown call: FAILED_PRECONDITION, nothing changes.
    let bogus = ToolDecision {
        tool_call_id: "nope".into(),
        approved: true,
        ..Default::default()
    };
    expect_code(
        runs.submit_tool_decisions(SubmitToolDecisionsRequest {
            run_id: run.id.clone(),
            decisions: vec![bogus],
        })
        .await,
        Code::FailedPrecondition,
    );
    let edited = to_struct(json!({"method": "GET", "url": "https://example.com/edited"}));
    let approve = ToolDecision {
        tool_call_id: call_id.clone(),
        approved: true,
        arguments: Some(edited),
        reason: String::new(),
    };
    runs.submit_tool_decisions(SubmitToolDecisionsRequest {
        run_id: run.id.clone(),
        decisions: vec![approve.clone()],
    })
    .await
    .unwrap();
    // Deciding again: FAILED_PRECONDITION.
    expect_code(
        runs.submit_tool_decisions(SubmitToolDecisionsRequest {
            run_id: run.id.clone(),
            decisions: vec![approve],
        })
        .await,
        Code::FailedPrecondition,
    );
    let rest = watch_all(&srv, &run.id, last.seq).await;
    let started = rest
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::ToolCallStarted(s)) => s.tool_call.clone(),
            _ => None,
        })
        .expect("tool_call_started");
    let url = serde_json::to_value(started.arguments.unwrap()).unwrap()["url"].clone();
    assert_eq!(
        url, "https://example.com/edited",
        "the edited arguments are the ones executed"
    );
    assert!(rest.iter().any(|e| kind(e) == "tool_call_completed"));
    assert_eq!(kind(rest.last().unwrap()), "run_completed");
    let done = runs
        .get_run(GetRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, RunStatus::Completed as i32);
    assert_eq!(done.output.unwrap().content, "done");
    assert!(
        runs.list_pending_approvals(ListPendingApprovalsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .tool_calls
            .is_empty()
    );
    srv.finish().await;
}

async fn rejecting_every_call_cancels(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let script = json!([{"tool_calls": [{"name": "http_request", "arguments": {"url": "https://example.com"}}]}, {"text": "never"}]);
    let tools = vec![ToolBinding {
        name: "http_request".into(),
        requires_confirmation: true,
        config: None,
    }];
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(scripted("asker", script, tools)),
        })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let run = runs
        .start_run(start("asker", "go"))
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&srv, &run.id, 0).await;
    let Some(Event::ApprovalRequired(req)) = &events.last().unwrap().event else {
        panic!("no approval")
    };
    let reject = ToolDecision {
        tool_call_id: req.tool_calls[0].id.clone(),
        approved: false,
        reason: "no".into(),
        ..Default::default()
    };
    let r = runs
        .submit_tool_decisions(SubmitToolDecisionsRequest {
            run_id: run.id.clone(),
            decisions: vec![reject],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, RunStatus::Cancelled as i32);
    assert_eq!(
        r.output.unwrap().content,
        "Tool execution cancelled by user."
    );
    let tail = watch_all(&srv, &run.id, events.last().unwrap().seq).await;
    assert_eq!(tail.iter().map(kind).collect::<Vec<_>>(), ["run_cancelled"]);
    srv.finish().await;
}

async fn cancel_while_streaming(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let script = json!([{"text": "slow answer", "delay_ms": 30000}]);
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(scripted("slow", script, vec![])),
        })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let run = runs
        .start_run(start("slow", "go"))
        .await
        .unwrap()
        .into_inner();
    let mut s = runs
        .watch_run(WatchRunRequest {
            run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until the worker has it.
    loop {
        let e = s.next().await.unwrap().unwrap();
        if kind(&e) == "run_started" {
            break;
        }
    }
    let t = Instant::now();
    let cancelled = runs
        .cancel_run(CancelRunRequest {
            run_id: run.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, RunStatus::Cancelled as i32);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the model call in flight is aborted"
    );
    let mut rest = Vec::new();
    while let Some(e) = s.next().await {
        rest.push(e.unwrap());
    }
    assert_eq!(rest.iter().map(kind).collect::<Vec<_>>(), ["run_cancelled"]);
    expect_code(
        runs.cancel_run(CancelRunRequest {
            run_id: run.id.clone(),
            reason: String::new(),
        })
        .await,
        Code::FailedPrecondition,
    );
    // A queued run can be cancelled too (before any worker takes it, or after: either way it ends CANCELLED).
    srv.finish().await;
}

async fn idempotent_start(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(echo("echo")),
        })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let req = StartRunRequest {
        idempotency_key: "order-42".into(),
        ..start("echo", "hi")
    };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut runs = runs.clone();
            let req = req.clone();
            tokio::spawn(async move { runs.start_run(req).await.unwrap().into_inner().id })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one run for one key: {ids:?}");
    let listed = runs
        .list_runs(ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.runs.len(), 1);
    srv.finish().await;
}

async fn input_is_validated_against_the_schema(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut a = echo("typed");
    a.input_schema = Some(to_struct(json!({
        "type": "object",
        "properties": {"company": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["company"]
    })));
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest { agent: Some(a) })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let bad = StartRunRequest {
        input: Some(to_struct(json!({"company": "acme", "tags": ["a", 3]}))),
        ..start("typed", "")
    };
    let st = expect_code(runs.start_run(bad).await, Code::InvalidArgument);
    assert!(st.message().contains("input.tags[1]"), "{}", st.message());
    expect_code(
        runs.start_run(start("typed", "no input")).await,
        Code::InvalidArgument,
    );
    let good = StartRunRequest {
        input: Some(to_struct(json!({"company": "acme"}))),
        ..start("typed", "")
    };
    runs.start_run(good).await.unwrap();
    expect_code(runs.start_run(start("missing", "x")).await, Code::NotFound);
    expect_code(
        runs.get_run(GetRunRequest {
            run_id: "not-a-uuid".into(),
        })
        .await,
        Code::NotFound,
    );

    // Images: a base64 payload with an image type, or an http(s) URL; the failing one is named.
    let image = |data: &str, mime: &str, url: &str| agentry::pb::Image {
        data: data.into(),
        mime_type: mime.into(),
        url: url.into(),
    };
    let ok = image("iVBORw0KGgo=", "image/png", "");
    for (bad, field) in [
        (image("", "", ""), "images[1]"),
        (
            image("iVBORw0KGgo=", "image/png", "https://x.test/a.png"),
            "images[1]",
        ),
        (
            image("iVBORw0KGgo=", "text/html", ""),
            "images[1].mime_type",
        ),
        (image("not base64!", "image/png", ""), "images[1].data"),
        (image("", "", "file:///etc/passwd"), "images[1].url"),
    ] {
        let req = StartRunRequest {
            images: vec![ok.clone(), bad],
            input: Some(to_struct(json!({"company": "acme"}))),
            ..start("typed", "")
        };
        let st = expect_code(runs.start_run(req).await, Code::InvalidArgument);
        let details =
            tonic_types::StatusExt::get_details_bad_request(&st).expect("a BadRequest detail");
        assert_eq!(details.field_violations[0].field, field, "{st:?}");
    }
    let with_images = StartRunRequest {
        images: vec![ok, image("", "", "https://x.test/a.png")],
        input: Some(to_struct(json!({"company": "acme"}))),
        ..start("typed", "")
    };
    runs.start_run(with_images).await.unwrap();
    srv.finish().await;
}

async fn reasoning_steps_are_reported(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let script = json!([
        {"tool_calls": [{"name": "current_time", "arguments": {}}]},
        {"text": "It is late"}
    ]);
    let tools = vec![ToolBinding {
        name: "current_time".into(),
        ..Default::default()
    }];
    for (id, max) in [("thinker", None), ("hasty", Some(1))] {
        let mut a = scripted(id, script.clone(), tools.clone());
        a.config = Some(agentry::pb::AgentConfig {
            enable_reasoning: Some(true),
            reasoning_max_steps: max,
            ..Default::default()
        });
        srv.agents(&srv.admin_key)
            .await
            .create_agent(CreateAgentRequest { agent: Some(a) })
            .await
            .unwrap();
    }
    let mut runs = srv.runs(&srv.admin_key).await;
    let run = runs
        .start_run(start("thinker", "what time is it?"))
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&srv, &run.id, 0).await;
    let steps: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ReasoningStep(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps[0].action.starts_with("current_time("), "{steps:?}");
    assert!(steps[0].result.starts_with("current_time: {"), "{steps:?}");
    assert_eq!(steps[0].next_action, "continue");
    assert_eq!(
        (steps[1].reasoning.as_str(), steps[1].next_action.as_str()),
        ("It is late", "final_answer")
    );
    assert_eq!(kind(events.last().unwrap()), "run_completed");

    // reasoning_max_steps bounds the model turns.
    let run = runs
        .start_run(start("hasty", "what time is it?"))
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&srv, &run.id, 0).await;
    match &events.last().unwrap().event {
        Some(Event::RunFailed(f)) => {
            assert_eq!(f.error.as_ref().unwrap().code, "max_steps_exceeded")
        }
        other => panic!("expected run_failed, got {other:?}"),
    }
    srv.finish().await;
}

async fn two_hundred_concurrent_runs(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(echo("echo")),
        })
        .await
        .unwrap();
    let runs = srv.runs(&srv.admin_key).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut runs = runs.clone();
            tokio::spawn(async move {
                let run = runs
                    .start_run(start("echo", &format!("run number {i}")))
                    .await
                    .unwrap()
                    .into_inner();
                let mut s = runs
                    .watch_run(WatchRunRequest {
                        run_id: run.id.clone(),
                        after_seq: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let mut last = None;
                while let Some(e) = s.next().await {
                    last = Some(e.unwrap());
                }
                (run.id, last.map(|e| kind(&e)))
            })
        })
        .collect();
    for t in tasks {
        let (_, last) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(last, Some("run_completed"));
    }
    srv.finish().await;
}

on_both_backends!(
    echo_run_streams_and_completes,
    tool_calls_approval_with_edited_arguments,
    rejecting_every_call_cancels,
    cancel_while_streaming,
    idempotent_start,
    input_is_validated_against_the_schema,
    reasoning_steps_are_reported,
    two_hundred_concurrent_runs,
);
