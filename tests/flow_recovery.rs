//! A flow run survives `kill -9` of the process driving it: after a restart on the same database the
//! run is taken over once its lease expires, its agent step re-attaches to the child run it had
//! started (no second agent run), and it completes with a gapless event log.

mod common;
mod proc_support;

use std::time::{Duration, Instant};

use agentry::pb::{
    Agent, CreateAgentRequest, CreateFlowRequest, Flow, FlowRunStatus, GetFlowRunRequest,
    ListRunsRequest, StepStatus, TriggerFlowRequest, WatchFlowRunRequest,
    agent_service_client::AgentServiceClient, flow_run_event::Event,
    flow_service_client::FlowServiceClient, run_service_client::RunServiceClient,
};
use common::{Auth, Backend, TestDb};
use futures_util::StreamExt;
use proc_support::{connect, spawn};
use serde_json::json;

async fn kill_9_mid_flow_then_restart_completes(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let key = agentry::auth::keys::generate();
    let mut first = spawn(&db.url, &key);
    let channel = connect(&first).await;
    let mut agents = AgentServiceClient::with_interceptor(channel.clone(), Auth::bearer(&key));
    agents
        .create_agent(CreateAgentRequest {
            agent: Some(Agent {
                id: "slow".into(),
                name: "slow".into(),
                model: "scripted/script".into(),
                metadata: Some(
                    serde_json::from_value(
                        json!({"script": [{"text": "done at last", "delay_ms": 2000}]}),
                    )
                    .unwrap(),
                ),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut flows = FlowServiceClient::with_interceptor(channel, Auth::bearer(&key));
    let flow: Flow = serde_json::from_value(json!({"id": "crash", "name": "crash", "graph": {
        "nodes": [{"id": "think", "agent": {"agent_id": "slow", "message": "go"}},
                  {"id": "after", "wait": {"duration": "0s"}}],
        "edges": [{"from_node_id": "think", "to_node_id": "after"}]}}))
    .unwrap();
    flows
        .create_flow(CreateFlowRequest { flow: Some(flow) })
        .await
        .unwrap();
    let run = flows
        .trigger_flow(TriggerFlowRequest {
            flow_id: "crash".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until the agent step has its child run, then kill the process driving both.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = flows
            .get_flow_run(GetFlowRunRequest {
                flow_run_id: run.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.steps.iter().any(|s| !s.child_run_id.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent step never started: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().unwrap(); // SIGKILL: no lease is released
    first.child.wait().unwrap();

    let second = spawn(&db.url, &key);
    let channel = connect(&second).await;
    let mut flows = FlowServiceClient::with_interceptor(channel.clone(), Auth::bearer(&key));
    let mut events = flows
        .watch_flow_run(WatchFlowRunRequest {
            flow_run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    // The dead process's leases (15 s, runs and flow runs) expire before the survivor takes over.
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("the flow run ends after the takeover")
    {
        seen.push(e.unwrap());
    }
    let seqs: Vec<i64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
    let starts = seen
        .iter()
        .filter(|e| matches!(e.event, Some(Event::FlowRunStarted(_))))
        .count();
    assert_eq!(starts, 2, "started, then taken over: {seen:#?}");
    assert!(matches!(
        seen.last().unwrap().event,
        Some(Event::FlowRunCompleted(_))
    ));
    let done = flows
        .get_flow_run(GetFlowRunRequest {
            flow_run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, FlowRunStatus::Completed as i32);
    let think = done.steps.iter().find(|s| s.node_id == "think").unwrap();
    assert_eq!(
        (think.status, think.attempt),
        (StepStatus::Completed as i32, 1)
    );
    assert_eq!(
        serde_json::to_value(&think.output).unwrap(),
        json!({"content": "done at last"})
    );
    let mut runs = RunServiceClient::with_interceptor(channel, Auth::bearer(&key));
    let children = runs
        .list_runs(ListRunsRequest {
            agent_id: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(
        children.len(),
        1,
        "the agent step re-attached to its child run: {children:#?}"
    );
    assert_eq!(children[0].id, think.child_run_id);
}

on_both_backends!(kill_9_mid_flow_then_restart_completes);
