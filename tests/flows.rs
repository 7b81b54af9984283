//! FlowService end to end, on SQLite and PostgreSQL: flows and versions, runs through agent, branch,
//! HTTP, wait and approval nodes, retries, pause/resume/cancel, events and triggers, templates, and a
//! wait that outlives its server.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentry::pb::{
    ApprovalDecision, ArchiveFlowVersionRequest, CancelFlowRunRequest, CreateAgentRequest,
    CreateApiKeyRequest, CreateFlowFromTemplateRequest, CreateFlowRequest, CreateTriggerRequest,
    CreateWebhookRequest, DeleteFlowRequest, DeleteTriggerRequest, Flow, FlowRun, FlowRunStatus,
    FlowTriggerSource, GetFlowRequest, GetFlowRunRequest, GetFlowTemplateRequest, GetRunRequest,
    ListFlowRunsRequest, ListFlowTemplatesRequest, ListFlowVersionsRequest, ListFlowsRequest,
    ListTriggersRequest, PauseFlowRunRequest, PublishEventRequest, ResumeFlowRunRequest, RunStatus,
    StepStatus, Trigger, TriggerFlowRequest, TriggerSource, UpdateFlowRequest, WatchFlowRunRequest,
    flow_run_event::Event, flow_service_client::FlowServiceClient,
};
use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use common::{Auth, Backend, TestServer, expect_code};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tonic::{Code, Response, Status, codegen::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

type Flows = FlowServiceClient<InterceptedService<Channel, Auth>>;
type Log = Arc<Mutex<Vec<(String, Value)>>>;
type Keys = Arc<Mutex<Vec<String>>>;

fn flow(v: Value) -> Flow {
    serde_json::from_value(v).expect("flow JSON")
}

fn st(v: Value) -> Option<pbjson_types::Struct> {
    Some(serde_json::from_value(v).unwrap())
}

#[track_caller]
fn bad_field<T: std::fmt::Debug>(res: Result<Response<T>, Status>, field: &str) {
    let s = expect_code(res, Code::InvalidArgument);
    let br = s.get_details_bad_request().expect("BadRequest detail");
    assert_eq!(br.field_violations[0].field, field, "{s:?}");
}

/// A local HTTP endpoint: `/ok` answers 200 with `{"ok": true}`; `/flaky` fails with 503 twice, then
/// answers 200; `/down` always answers 500. Every request is logged.
async fn endpoint() -> (String, Log, Keys) {
    let log: Log = Arc::default();
    let keys: Keys = Arc::default();
    async fn record(log: &Log, path: &str, body: Value) -> usize {
        let mut l = log.lock().unwrap();
        l.push((path.to_owned(), body));
        l.iter().filter(|(p, _)| p == path).count()
    }
    let app = Router::new()
        .route(
            "/ok",
            post(
                |State((log, _)): State<(Log, Keys)>, Json(b): Json<Value>| async move {
                    record(&log, "ok", b).await;
                    Json(json!({"ok": true}))
                },
            ),
        )
        .route(
            "/flaky",
            post(
                |State((log, keys)): State<(Log, Keys)>,
                 headers: axum::http::HeaderMap,
                 Json(b): Json<Value>| async move {
                    let key = headers
                        .get("idempotency-key")
                        .map(|v| v.to_str().unwrap().to_owned());
                    keys.lock().unwrap().push(key.unwrap_or_default());
                    if record(&log, "flaky", b).await <= 2 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .route(
            "/down",
            post(
                |State((log, _)): State<(Log, Keys)>, Json(b): Json<Value>| async move {
                    record(&log, "down", b).await;
                    StatusCode::INTERNAL_SERVER_ERROR
                },
            ),
        )
        .with_state((log.clone(), keys.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), log, keys)
}

async fn create(flows: &mut Flows, f: Flow) -> Flow {
    flows
        .create_flow(CreateFlowRequest { flow: Some(f) })
        .await
        .expect("flow created")
        .into_inner()
}

async fn trigger(flows: &mut Flows, id: &str, input: Value) -> FlowRun {
    flows
        .trigger_flow(TriggerFlowRequest {
            flow_id: id.into(),
            input: st(input),
            idempotency_key: String::new(),
        })
        .await
        .expect("triggered")
        .into_inner()
}

async fn get(flows: &mut Flows, id: &str) -> FlowRun {
    flows
        .get_flow_run(GetFlowRunRequest {
            flow_run_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Polls the run until `done` holds (10 s at most).
async fn until(flows: &mut Flows, id: &str, done: impl Fn(&FlowRun) -> bool) -> FlowRun {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = get(flows, id).await;
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "flow run never got there: {run:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status(s: FlowRunStatus) -> impl Fn(&FlowRun) -> bool {
    move |r| r.status == s as i32
}

fn step<'a>(run: &'a FlowRun, node: &str) -> &'a agentry::pb::FlowStep {
    run.steps
        .iter()
        .find(|s| s.node_id == node)
        .unwrap_or_else(|| panic!("no step {node}: {run:#?}"))
}

fn output(run: &FlowRun) -> Value {
    serde_json::to_value(run.output.clone().unwrap_or_default()).unwrap()
}

async fn echo_agent(srv: &TestServer) {
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(common::agent("echo")),
        })
        .await
        .unwrap();
}

async fn flows_and_versions(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut flows = srv.flows(&srv.admin_key).await;
    let f = create(
        &mut flows,
        flow(json!({"name": "Lead Intake", "graph": {"nodes": [{"id": "w", "wait": {"duration": "0s"}}]}})),
    )
    .await;
    assert_eq!((f.id.as_str(), f.version), ("lead-intake", 1));
    let updated = flows
        .update_flow(UpdateFlowRequest {
            flow: Some(flow(json!({"id": "lead-intake", "description": "v2",
                "graph": {"nodes": [{"id": "a", "wait": {"duration": "0s"}}, {"id": "b", "wait": {"duration": "0s"}}],
                          "edges": [{"from_node_id": "a", "to_node_id": "b"}]}}))),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((updated.version, updated.name.as_str()), (2, "Lead Intake"));
    let v1 = flows
        .get_flow(GetFlowRequest {
            id: f.id.clone(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        v1.graph.unwrap().nodes.len(),
        1,
        "version 1 is kept as it was"
    );
    expect_code(
        flows
            .archive_flow_version(ArchiveFlowVersionRequest {
                flow_id: f.id.clone(),
                version: 2,
            })
            .await,
        Code::FailedPrecondition,
    );
    let archived = flows
        .archive_flow_version(ArchiveFlowVersionRequest {
            flow_id: f.id.clone(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(archived.archived_versions, vec![1]);
    let versions = |include_archived| ListFlowVersionsRequest {
        id: "lead-intake".into(),
        include_archived,
        ..Default::default()
    };
    let listed = flows
        .list_flow_versions(versions(false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        vec![2]
    );
    let listed = flows
        .list_flow_versions(versions(true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        vec![2, 1]
    );
    let all = flows
        .list_flows(ListFlowsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.flows.len(), 1);

    // The graph is checked when written, naming the field.
    let bad = |g: Value| CreateFlowRequest {
        flow: Some(flow(json!({"id": "bad", "name": "bad", "graph": g}))),
    };
    let w = json!({"duration": "0s"});
    bad_field(
        flows.create_flow(bad(json!({"nodes": [{"id": "a", "wait": w}, {"id": "b", "wait": w}],
            "edges": [{"from_node_id": "a", "to_node_id": "b"}, {"from_node_id": "b", "to_node_id": "a"}]}))).await,
        "flow.graph.edges",
    );
    bad_field(
        flows
            .create_flow(bad(json!({"nodes": [{"id": "a", "wait": w}],
            "edges": [{"from_node_id": "a", "to_node_id": "zz"}]})))
            .await,
        "flow.graph.edges[0].to_node_id",
    );
    bad_field(
        flows
            .create_flow(bad(
                json!({"nodes": [{"id": "a", "wait": w}, {"id": "b", "wait": w}],
            "edges": [{"from_node_id": "a", "to_node_id": "b", "condition": "input.x >"}]}),
            ))
            .await,
        "flow.graph.edges[0].condition",
    );
    bad_field(
        flows.create_flow(bad(json!({"nodes": [{"id": "a", "branch": {"cases": [{"condition": "true", "target_node_id": "b"}]}},
            {"id": "b", "wait": w}]}))).await,
        "flow.graph.nodes[0].branch.cases[0].target_node_id",
    );
    bad_field(
        flows.create_flow(bad(json!({"nodes": [{"id": "a", "tool": {"http": {"method": "GET", "url": "{{ input. }}"}}}]}))).await,
        "flow.graph.nodes[0].tool.http.url",
    );
    bad_field(
        flows
            .create_flow(bad(json!({"nodes": [{"id": "A", "wait": w}]})))
            .await,
        "flow.graph.nodes[0].id",
    );

    flows
        .delete_flow(DeleteFlowRequest { id: f.id.clone() })
        .await
        .unwrap();
    expect_code(
        flows
            .get_flow(GetFlowRequest {
                id: f.id,
                version: 0,
            })
            .await,
        Code::NotFound,
    );
    srv.finish().await;
}

async fn agent_branch_and_http_run_to_completion(backend: Backend) {
    let (base, log, _) = endpoint().await;
    let srv = TestServer::start(&backend).await;
    echo_agent(&srv).await;
    let mut admin = srv.admin(&srv.admin_key).await;
    admin
        .create_webhook(CreateWebhookRequest {
            url: format!("{base}/ok"),
            event_types: vec!["flow_run.completed".into()],
            secret: String::new(),
        })
        .await
        .unwrap();
    let mut flows = srv.flows(&srv.admin_key).await;
    create(&mut flows, flow(json!({
        "id": "intake", "name": "intake",
        "input_schema": {"type": "object", "required": ["lead"], "properties": {"lead": {"type": "string"}, "score": {"type": "number"}}},
        "graph": {
            "nodes": [
                {"id": "enrich", "agent": {"agent_id": "echo", "message": "score {{ input.score }} for {{ input.lead }}"}},
                {"id": "route", "branch": {"cases": [{"condition": "input.score >= 50", "target_node_id": "notify"}],
                                           "default_target_node_id": "ignore"}},
                {"id": "notify", "tool": {"http": {"method": "POST", "url": format!("{base}/ok"),
                    "body": {"lead": "{{ input.lead }}", "said": "{{ nodes.enrich.content }}", "n": 3}}}},
                {"id": "ignore", "tool": {"http": {"method": "POST", "url": format!("{base}/down"), "body": {}}}},
                {"id": "after_ignore", "wait": {"duration": "0s"}}
            ],
            "edges": [
                {"from_node_id": "enrich", "to_node_id": "route"},
                {"from_node_id": "route", "to_node_id": "notify"},
                {"from_node_id": "route", "to_node_id": "ignore"},
                {"from_node_id": "ignore", "to_node_id": "after_ignore"}
            ]
        }
    }))).await;
    bad_field(
        flows
            .trigger_flow(TriggerFlowRequest {
                flow_id: "intake".into(),
                input: st(json!({"score": 3})),
                ..Default::default()
            })
            .await,
        "input",
    );
    let req = TriggerFlowRequest {
        flow_id: "intake".into(),
        input: st(json!({"lead": "ada", "score": 72})),
        idempotency_key: "k1".into(),
    };
    let run = flows.trigger_flow(req.clone()).await.unwrap().into_inner();
    assert_eq!(run.status, FlowRunStatus::Queued as i32);
    assert_eq!(run.flow_version, 1);
    let again = flows.trigger_flow(req).await.unwrap().into_inner();
    assert_eq!(
        again.id, run.id,
        "the same idempotency key returns the first run"
    );

    let mut events = flows
        .watch_flow_run(WatchFlowRunRequest {
            flow_run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("events")
    {
        seen.push(e.unwrap());
    }
    let seqs: Vec<i64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
    assert!(matches!(seen[0].event, Some(Event::FlowRunStarted(_))));
    assert!(
        matches!(seen.last().unwrap().event, Some(Event::FlowRunCompleted(_))),
        "{seen:#?}"
    );
    let skipped: Vec<&str> = seen
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StepCompleted(c))
                if c.step.as_ref().unwrap().status == StepStatus::Skipped as i32 =>
            {
                Some(c.step.as_ref().unwrap().node_id.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        vec!["ignore", "after_ignore"],
        "the branch routed around both"
    );

    let done = get(&mut flows, &run.id).await;
    assert_eq!(done.status, FlowRunStatus::Completed as i32);
    let enrich = step(&done, "enrich");
    assert_eq!(
        serde_json::to_value(&enrich.output).unwrap(),
        json!({"content": "score 72 for ada"})
    );
    let child = srv
        .runs(&srv.admin_key)
        .await
        .get_run(GetRunRequest {
            run_id: enrich.child_run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let t = child.trigger.unwrap();
    assert_eq!(
        (t.source, t.flow_run_id.as_str()),
        (TriggerSource::Flow as i32, run.id.as_str())
    );
    assert_eq!(child.status, RunStatus::Completed as i32);
    // The HTTP node sent its rendered body, and only the chosen branch ran.
    let sent: Vec<(String, Value)> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, b)| p == "ok" && b.get("lead").is_some())
        .cloned()
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1,
        json!({"lead": "ada", "said": "score 72 for ada", "n": 3.0})
    );
    assert!(!log.lock().unwrap().iter().any(|(p, _)| p == "down"));
    let out = output(&done);
    assert_eq!(out["notify"]["status"], json!(200.0), "{out}");
    assert_eq!(out["notify"]["body"], json!({"ok": true}));
    assert!(
        out.get("after_ignore").is_none(),
        "a skipped sink is not in the output"
    );

    // Resuming after seq 3 replays from 4.
    let mut tail = flows
        .watch_flow_run(WatchFlowRunRequest {
            flow_run_id: run.id.clone(),
            after_seq: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tail.next().await.unwrap().unwrap().seq, 4);

    // The flow_run.completed webhook arrives with the run as data.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hooks: Vec<Value> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, b)| p == "ok" && b.get("type").is_some())
            .map(|(_, b)| b.clone())
            .collect();
        if let Some(h) = hooks.first() {
            assert_eq!(h["type"], "flow_run.completed");
            assert_eq!(h["data"]["id"], json!(run.id));
            assert_eq!(h["data"]["status"], "FLOW_RUN_STATUS_COMPLETED");
            break;
        }
        assert!(Instant::now() < deadline, "no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    srv.finish().await;
}

async fn retries_waits_and_failures(backend: Backend) {
    let (base, log, keys) = endpoint().await;
    let srv = TestServer::start(&backend).await;
    let mut flows = srv.flows(&srv.admin_key).await;
    create(&mut flows, flow(json!({"id": "flaky", "name": "flaky", "graph": {"nodes": [
        {"id": "pause", "wait": {"duration": "0.3s"}},
        {"id": "call", "tool": {"http": {"method": "POST", "url": format!("{base}/flaky"), "body": {}}},
         "retry": {"max_attempts": 3, "initial_backoff": "0.05s"}}],
        "edges": [{"from_node_id": "pause", "to_node_id": "call"}]}}))).await;
    let run = trigger(&mut flows, "flaky", json!({})).await;
    let waiting = until(&mut flows, &run.id, |r| {
        r.status == FlowRunStatus::Waiting as i32 || r.end_time.is_some()
    })
    .await;
    assert_eq!(
        waiting.status,
        FlowRunStatus::Waiting as i32,
        "the wait makes the run WAITING"
    );
    let done = until(&mut flows, &run.id, |r| r.end_time.is_some()).await;
    assert_eq!(done.status, FlowRunStatus::Completed as i32, "{done:#?}");
    let call = step(&done, "call");
    assert_eq!(
        (call.attempt, call.status),
        (3, StepStatus::Completed as i32)
    );
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "flaky")
            .count(),
        3
    );
    let expected: Vec<String> = (1..=3).map(|a| format!("{}:call:{a}", run.id)).collect();
    assert_eq!(
        *keys.lock().unwrap(),
        expected,
        "one idempotency key per attempt"
    );
    let mut events = flows
        .watch_flow_run(WatchFlowRunRequest {
            flow_run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut retries = 0;
    let mut waited = false;
    while let Some(e) = events.next().await {
        match e.unwrap().event {
            Some(Event::StepFailed(f)) => {
                assert!(f.will_retry);
                retries += 1;
            }
            Some(Event::FlowRunWaiting(w)) => {
                waited |= w.until.is_some() && w.steps.iter().any(|s| s.node_id == "pause");
            }
            _ => {}
        }
    }
    assert_eq!(retries, 2);
    assert!(waited);

    create(&mut flows, flow(json!({"id": "down", "name": "down", "graph": {"nodes": [
        {"id": "call", "tool": {"http": {"method": "POST", "url": format!("{base}/down"), "body": {}}},
         "retry": {"max_attempts": 2, "initial_backoff": "0.01s"}},
        {"id": "never", "wait": {"duration": "0s"}}],
        "edges": [{"from_node_id": "call", "to_node_id": "never"}]}}))).await;
    let run = trigger(&mut flows, "down", json!({})).await;
    let failed = until(&mut flows, &run.id, |r| r.end_time.is_some()).await;
    assert_eq!(failed.status, FlowRunStatus::Failed as i32);
    let err = failed.error.clone().unwrap();
    assert_eq!(err.code, "step_failed");
    assert!(
        err.message.contains("call") && err.message.contains("500"),
        "{err:?}"
    );
    assert_eq!(step(&failed, "call").attempt, 2);
    assert!(
        failed.steps.iter().all(|s| s.node_id != "never"),
        "nothing starts after a failure"
    );
    srv.finish().await;
}

async fn approvals_pause_resume_and_cancel(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut flows = srv.flows(&srv.admin_key).await;
    create(
        &mut flows,
        flow(json!({"id": "gate", "name": "gate", "graph": {"nodes": [
        {"id": "ok", "approval": {"message": "ship {{ input.what }}?", "approvers": ["boss"]}},
        {"id": "after", "wait": {"duration": "0s"}}],
        "edges": [{"from_node_id": "ok", "to_node_id": "after"}]}})),
    )
    .await;
    let boss = srv
        .admin(&srv.admin_key)
        .await
        .create_api_key(CreateApiKeyRequest {
            name: "boss".into(),
            scopes: vec!["flows:trigger".into(), "flows:read".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let run = trigger(&mut flows, "gate", json!({"what": "v2"})).await;
    let waiting = until(&mut flows, &run.id, status(FlowRunStatus::Waiting)).await;
    let s = step(&waiting, "ok");
    assert_eq!(s.status, StepStatus::Waiting as i32);
    assert_eq!(
        serde_json::to_value(&s.input).unwrap()["message"],
        "ship v2?"
    );
    let decide = |approved| ResumeFlowRunRequest {
        flow_run_id: run.id.clone(),
        approval: Some(ApprovalDecision {
            node_id: "ok".into(),
            approved,
            reason: "fine".into(),
        }),
    };
    expect_code(
        flows.resume_flow_run(decide(true)).await,
        Code::PermissionDenied,
    );
    let mut boss_flows = srv.flows(&boss).await;
    boss_flows.resume_flow_run(decide(true)).await.unwrap();
    let done = until(&mut flows, &run.id, |r| r.end_time.is_some()).await;
    assert_eq!(done.status, FlowRunStatus::Completed as i32);
    assert_eq!(
        serde_json::to_value(&step(&done, "ok").output).unwrap(),
        json!({"approved": true, "reason": "fine"})
    );
    expect_code(
        boss_flows.resume_flow_run(decide(true)).await,
        Code::FailedPrecondition,
    );
    // The run was let go while it waited and picked up again after the decision: one start, no more.
    let mut events = flows
        .watch_flow_run(WatchFlowRunRequest {
            flow_run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut starts = 0;
    while let Some(e) = events.next().await {
        starts += usize::from(matches!(e.unwrap().event, Some(Event::FlowRunStarted(_))));
    }
    assert_eq!(starts, 1);

    let run2 = trigger(&mut flows, "gate", json!({"what": "v3"})).await;
    until(&mut flows, &run2.id, status(FlowRunStatus::Waiting)).await;
    boss_flows
        .resume_flow_run(ResumeFlowRunRequest {
            flow_run_id: run2.id.clone(),
            approval: Some(ApprovalDecision {
                node_id: "ok".into(),
                approved: false,
                reason: "not now".into(),
            }),
        })
        .await
        .unwrap();
    let rejected = until(&mut flows, &run2.id, |r| r.end_time.is_some()).await;
    assert_eq!(rejected.status, FlowRunStatus::Failed as i32);
    assert_eq!(
        step(&rejected, "ok").error.clone().unwrap().code,
        "rejected"
    );

    // Pause holds a run: its wait does not end while paused; resume lets it finish.
    create(
        &mut flows,
        flow(json!({"id": "slow", "name": "slow", "graph": {"nodes": [
        {"id": "w", "wait": {"duration": "0.4s"}}, {"id": "x", "wait": {"duration": "0s"}}],
        "edges": [{"from_node_id": "w", "to_node_id": "x"}]}})),
    )
    .await;
    let run3 = trigger(&mut flows, "slow", json!({})).await;
    until(&mut flows, &run3.id, status(FlowRunStatus::Waiting)).await;
    let paused = flows
        .pause_flow_run(PauseFlowRunRequest {
            flow_run_id: run3.id.clone(),
            reason: "hold".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.status, FlowRunStatus::Paused as i32);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let still = get(&mut flows, &run3.id).await;
    assert_eq!(still.status, FlowRunStatus::Paused as i32);
    assert_eq!(step(&still, "w").status, StepStatus::Waiting as i32);
    flows
        .resume_flow_run(ResumeFlowRunRequest {
            flow_run_id: run3.id.clone(),
            approval: None,
        })
        .await
        .unwrap();
    let resumed = until(&mut flows, &run3.id, |r| r.end_time.is_some()).await;
    assert_eq!(resumed.status, FlowRunStatus::Completed as i32);

    // Cancel ends the run and its running agent run.
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(agentry::pb::Agent {
                model: "scripted/script".into(),
                metadata: st(json!({"script": [{"text": "slow", "delay_ms": 30000}]})),
                ..common::agent("sleepy")
            }),
        })
        .await
        .unwrap();
    create(
        &mut flows,
        flow(json!({"id": "long", "name": "long", "graph": {"nodes": [
        {"id": "think", "agent": {"agent_id": "sleepy", "message": "go"}}]}})),
    )
    .await;
    let run4 = trigger(&mut flows, "long", json!({})).await;
    let running = until(&mut flows, &run4.id, |r| {
        r.steps.iter().any(|s| !s.child_run_id.is_empty())
    })
    .await;
    let child = step(&running, "think").child_run_id.clone();
    let cancelled = flows
        .cancel_flow_run(CancelFlowRunRequest {
            flow_run_id: run4.id.clone(),
            reason: "enough".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, FlowRunStatus::Cancelled as i32);
    assert_eq!(
        step(&cancelled, "think").status,
        StepStatus::Cancelled as i32
    );
    let mut runs = srv.runs(&srv.admin_key).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = runs
            .get_run(GetRunRequest {
                run_id: child.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if c.status == RunStatus::Cancelled as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child run was not cancelled: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let again = flows
        .cancel_flow_run(CancelFlowRunRequest {
            flow_run_id: run4.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.status,
        FlowRunStatus::Cancelled as i32,
        "cancel is idempotent"
    );
    expect_code(
        flows
            .pause_flow_run(PauseFlowRunRequest {
                flow_run_id: run4.id.clone(),
                reason: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        flows
            .cancel_flow_run(CancelFlowRunRequest {
                flow_run_id: run.id.clone(),
                reason: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    srv.finish().await;
}

async fn events_start_runs_once(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut flows = srv.flows(&srv.admin_key).await;
    let nop = |id: &str| {
        flow(
            json!({"id": id, "name": id, "graph": {"nodes": [{"id": "w", "wait": {"duration": "0s"}}]}}),
        )
    };
    create(&mut flows, nop("hot")).await;
    create(&mut flows, nop("all")).await;
    let event_trigger = |flow_id: &str, filter: &str, mapping: Value| CreateTriggerRequest {
        trigger: Some(
            serde_json::from_value::<Trigger>(json!({"flow_id": flow_id,
            "event": {"event_type": "lead.created", "filter": filter, "input_mapping": mapping}}))
            .unwrap(),
        ),
    };
    let hot = flows
        .create_trigger(event_trigger(
            "hot",
            "event.payload.score > 50",
            json!({"lead": "{{ event.payload.name }}", "via": "{{ event.type }}"}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hot.enabled, Some(true));
    flows
        .create_trigger(event_trigger("all", "", json!({})))
        .await
        .unwrap();
    bad_field(
        flows
            .create_trigger(event_trigger("hot", "event.payload.score >", json!({})))
            .await,
        "trigger.event.filter",
    );
    bad_field(
        flows
            .create_trigger(event_trigger("nope", "", json!({})))
            .await,
        "trigger.flow_id",
    );
    let schedule = |cron: &str| CreateTriggerRequest {
        trigger: Some(
            serde_json::from_value::<Trigger>(
                json!({"flow_id": "all", "schedule": {"cron": cron, "timezone": "Europe/Paris"}}),
            )
            .unwrap(),
        ),
    };
    flows
        .create_trigger(schedule("0 9 * * MON-FRI"))
        .await
        .unwrap();
    bad_field(
        flows.create_trigger(schedule("0 9 * *")).await,
        "trigger.schedule.cron",
    );

    let publish = |id: &str, score: i32| PublishEventRequest {
        r#type: "lead.created".into(),
        payload: st(json!({"name": "ada", "score": score})),
        event_id: id.into(),
    };
    let first = flows
        .publish_event(publish("e1", 70))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.flow_runs.len(), 2);
    let hot_run = first.flow_runs.iter().find(|r| r.flow_id == "hot").unwrap();
    assert_eq!(
        serde_json::to_value(&hot_run.input).unwrap(),
        json!({"lead": "ada", "via": "lead.created"})
    );
    let t = hot_run.trigger.clone().unwrap();
    assert_eq!(
        (t.source, t.trigger_id.as_str(), t.event_id.as_str()),
        (FlowTriggerSource::Event as i32, hot.id.as_str(), "e1")
    );
    let dup = flows
        .publish_event(publish("e1", 70))
        .await
        .unwrap()
        .into_inner();
    assert!(dup.duplicate);
    let mut a: Vec<String> = first.flow_runs.iter().map(|r| r.id.clone()).collect();
    let mut b: Vec<String> = dup.flow_runs.iter().map(|r| r.id.clone()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "a duplicate returns the first runs");
    let cold = flows
        .publish_event(publish("e2", 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cold.flow_runs
            .iter()
            .map(|r| r.flow_id.as_str())
            .collect::<Vec<_>>(),
        vec!["all"]
    );
    for r in first.flow_runs.iter().chain(&cold.flow_runs) {
        until(&mut flows, &r.id, status(FlowRunStatus::Completed)).await;
    }
    let by_event = flows
        .list_flow_runs(ListFlowRunsRequest {
            trigger_source: FlowTriggerSource::Event as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_event.flow_runs.len(), 3);
    let hot_runs = flows
        .list_flow_runs(ListFlowRunsRequest {
            flow_id: "hot".into(),
            status: FlowRunStatus::Completed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hot_runs.flow_runs.len(), 1);

    let listed = flows
        .list_triggers(ListTriggersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.triggers.len(), 3);
    flows
        .delete_trigger(DeleteTriggerRequest { id: hot.id.clone() })
        .await
        .unwrap();
    let after = flows
        .publish_event(publish("e3", 90))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.flow_runs.len(),
        1,
        "a deleted trigger no longer fires"
    );
    // Deleting a flow disables its triggers.
    flows
        .delete_flow(DeleteFlowRequest { id: "all".into() })
        .await
        .unwrap();
    let none = flows
        .publish_event(publish("e4", 90))
        .await
        .unwrap()
        .into_inner();
    assert!(none.flow_runs.is_empty());
    srv.finish().await;
}

async fn templates_and_isolation(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut flows = srv.flows(&srv.admin_key).await;
    let list = flows
        .list_flow_templates(ListFlowTemplatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.templates.len(), 3);
    let page = flows
        .list_flow_templates(ListFlowTemplatesRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = flows
        .list_flow_templates(ListFlowTemplatesRequest {
            limit: 2,
            cursor: page.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.templates.len() + rest.templates.len(), 3);
    let t = flows
        .get_flow_template(GetFlowTemplateRequest {
            slug: "lead-to-sequence".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.category, "sales");
    expect_code(
        flows
            .get_flow_template(GetFlowTemplateRequest {
                slug: "nope".into(),
            })
            .await,
        Code::NotFound,
    );
    let from = |inputs: Value| CreateFlowFromTemplateRequest {
        template_slug: "lead-to-sequence".into(),
        inputs: st(inputs),
        ..Default::default()
    };
    bad_field(
        flows
            .create_flow_from_template(from(json!({"enrich_agent_id": "x"})))
            .await,
        "inputs",
    );
    let f = flows
        .create_flow_from_template(from(
            json!({"enrich_agent_id": "enricher", "sequence_url": "https://crm.example/seq"}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((f.id.as_str(), f.version), ("lead-to-sequence", 1));
    let g = serde_json::to_value(f.graph.unwrap()).unwrap();
    assert_eq!(g["nodes"][0]["agent"]["agent_id"], "enricher", "{g}");
    assert_eq!(
        g["nodes"][1]["tool"]["http"]["body"]["lead_id"],
        "{{ input.lead_id }}"
    );

    // Another workspace sees none of it.
    let other = srv
        .workspace_key("other", "flows:read,flows:write,flows:trigger")
        .await;
    let mut theirs = srv.flows(&other).await;
    expect_code(
        theirs
            .get_flow(GetFlowRequest {
                id: "lead-to-sequence".into(),
                version: 0,
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        theirs
            .trigger_flow(TriggerFlowRequest {
                flow_id: "lead-to-sequence".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    let run = trigger(&mut flows, "lead-to-sequence", json!({"lead_id": "l1"})).await;
    expect_code(
        theirs
            .get_flow_run(GetFlowRunRequest {
                flow_run_id: run.id.clone(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        theirs
            .cancel_flow_run(CancelFlowRunRequest {
                flow_run_id: run.id.clone(),
                reason: String::new(),
            })
            .await,
        Code::NotFound,
    );
    assert!(
        theirs
            .list_flow_runs(ListFlowRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .flow_runs
            .is_empty()
    );
    // The agent does not exist: the run fails on that step, saying so.
    let failed = until(&mut flows, &run.id, |r| r.end_time.is_some()).await;
    assert_eq!(failed.status, FlowRunStatus::Failed as i32);
    assert!(
        step(&failed, "enrich")
            .error
            .clone()
            .unwrap()
            .message
            .contains("enricher"),
        "{failed:#?}"
    );
    srv.finish().await;
}

async fn a_wait_outlives_its_server(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let key = srv.admin_key.clone();
    let mut flows = srv.flows(&key).await;
    create(
        &mut flows,
        flow(json!({"id": "nap", "name": "nap", "graph": {"nodes": [
        {"id": "w", "wait": {"duration": "1.5s"}}, {"id": "x", "wait": {"duration": "0s"}}],
        "edges": [{"from_node_id": "w", "to_node_id": "x"}]}})),
    )
    .await;
    let run = trigger(&mut flows, "nap", json!({})).await;
    until(&mut flows, &run.id, status(FlowRunStatus::Waiting)).await;
    let db = srv.stop().await;
    let srv = TestServer::start_on(db, key.clone()).await;
    let mut flows = srv.flows(&key).await;
    let done = until(&mut flows, &run.id, |r| r.end_time.is_some()).await;
    assert_eq!(done.status, FlowRunStatus::Completed as i32, "{done:#?}");
    let w = step(&done, "w");
    let waited = w.end_time.unwrap().seconds * 1000
        + i64::from(w.end_time.unwrap().nanos) / 1_000_000
        - (w.start_time.unwrap().seconds * 1000
            + i64::from(w.start_time.unwrap().nanos) / 1_000_000);
    assert!(
        waited >= 1500,
        "the wait kept its deadline across the restart: {waited} ms"
    );
    srv.finish().await;
}

/// A minimal MCP server (streamable HTTP, JSON responses): `add` returns the sum as structured content,
/// `boom` returns an error result. Records the authorization header of every call.
async fn mcp_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let auth: Arc<Mutex<Vec<String>>> = Arc::default();
    async fn rpc(
        State(auth): State<Arc<Mutex<Vec<String>>>>,
        headers: axum::http::HeaderMap,
        Json(req): Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let Some(id) = req.get("id").cloned() else {
            return StatusCode::ACCEPTED.into_response(); // a notification
        };
        let result = match req["method"].as_str().unwrap_or_default() {
            "initialize" => json!({
                "protocolVersion": req["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake", "version": "1"}
            }),
            "tools/call" => {
                let h = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                auth.lock().unwrap().push(h.unwrap_or_default());
                let a = &req["params"]["arguments"];
                match req["params"]["name"].as_str() {
                    Some("add") => json!({
                        "content": [{"type": "text", "text": "done"}],
                        "structuredContent": {"sum": a["a"].as_f64().unwrap() + a["b"].as_f64().unwrap()}
                    }),
                    _ => {
                        json!({"content": [{"type": "text", "text": "it broke"}], "isError": true})
                    }
                }
            }
            _ => return (
                StatusCode::OK,
                Json(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}}),
                ),
            )
                .into_response(),
        };
        (
            [("mcp-session-id", "s1")],
            Json(json!({"jsonrpc": "2.0", "id": id, "result": result})),
        )
            .into_response()
    }
    let app = Router::new()
        .route(
            "/mcp",
            post(rpc)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { StatusCode::OK }),
        )
        .with_state(auth.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/mcp"), auth)
}

async fn mcp_tool_nodes(backend: Backend) {
    let (url, auth) = mcp_server().await;
    let srv = TestServer::start(&backend).await;
    let mut flows = srv.flows(&srv.admin_key).await;
    create(&mut flows, flow(json!({"id": "mcp", "name": "mcp", "graph": {"nodes": [
        {"id": "sum", "tool": {"mcp": {"server": url, "tool": "add",
            "arguments": {"a": "{{ input.a }}", "b": 2}, "headers": {"authorization": "Bearer s3cret"}}}}]}}))).await;
    let run = trigger(&mut flows, "mcp", json!({"a": 40})).await;
    let done = until(&mut flows, &run.id, |r| r.end_time.is_some()).await;
    assert_eq!(done.status, FlowRunStatus::Completed as i32, "{done:#?}");
    assert_eq!(
        serde_json::to_value(&step(&done, "sum").output).unwrap(),
        json!({"sum": 42.0})
    );
    assert_eq!(auth.lock().unwrap().as_slice(), ["Bearer s3cret"]);
    let input = serde_json::to_value(&step(&done, "sum").input).unwrap();
    assert!(
        !input.to_string().contains("s3cret"),
        "headers stay out of the step: {input}"
    );

    create(
        &mut flows,
        flow(json!({"id": "boom", "name": "boom", "graph": {"nodes": [
        {"id": "b", "tool": {"mcp": {"server": url, "tool": "boom"}}}]}})),
    )
    .await;
    let run = trigger(&mut flows, "boom", json!({})).await;
    let failed = until(&mut flows, &run.id, |r| r.end_time.is_some()).await;
    assert_eq!(failed.status, FlowRunStatus::Failed as i32);
    let e = step(&failed, "b").error.clone().unwrap();
    assert_eq!(e.code, "tool_error");
    assert!(e.message.contains("it broke"), "{e:?}");
    srv.finish().await;
}

on_both_backends!(
    mcp_tool_nodes,
    flows_and_versions,
    agent_branch_and_http_run_to_completion,
    retries_waits_and_failures,
    approvals_pause_resume_and_cancel,
    events_start_runs_once,
    templates_and_isolation,
    a_wait_outlives_its_server,
);
