//! The flow workload: TriggerFlow, then WatchFlowRun until `flow_run_completed`, on a three-node flow:
//! an agent node (`scripted/echo`, a child run), a branch (CEL over the agent's output) and a wait of 0 s.
//! It measures what a flow adds around the agent run: claiming, one checkpoint per step, the events.

use std::time::Instant;

use agentry::pb::{
    CreateFlowRequest, Flow, TriggerFlowRequest, WatchFlowRunRequest, flow_run_event::Event,
};
use tonic::Code;

use crate::{
    Res,
    grpc::{FlowClient, status_text},
    load::{self, Sample},
    runs::RUN_AGENT,
};

pub const FLOW: &str = "bench-flow";

/// Creates the flow (after the agents); a flow left by an earlier run is fine.
pub async fn setup(c: &mut FlowClient, hint: &str) -> Res<()> {
    let flow: Flow = serde_json::from_value(serde_json::json!({
        "id": FLOW, "name": "Bench flow",
        "graph": {
            "nodes": [
                {"id": "ask", "agent": {"agent_id": RUN_AGENT, "message": "hello {{ input.n }}"}},
                {"id": "route", "branch": {"cases": [
                    {"condition": "nodes.ask.content.startsWith('hello')", "target_node_id": "done"}]}},
                {"id": "done", "wait": {"duration": "0s"}}
            ],
            "edges": [
                {"from_node_id": "ask", "to_node_id": "route"},
                {"from_node_id": "route", "to_node_id": "done"}
            ]
        }
    }))
    .map_err(|e| e.to_string())?;
    match c.create_flow(CreateFlowRequest { flow: Some(flow) }).await {
        Err(s) if s.code() != Code::AlreadyExists => {
            Err(format!("creating flow {FLOW}: {}{hint}", status_text(&s)))
        }
        _ => Ok(()),
    }
}

/// TriggerFlow, then WatchFlowRun until the stream ends; Ok when the last event is
/// `flow_run_completed`. The latency runs from TriggerFlow's call to that event, the first event's
/// from TriggerFlow's answer to `flow_run_started`.
pub async fn run(c: &mut FlowClient) -> Res<Sample> {
    let t0 = Instant::now();
    let req = TriggerFlowRequest {
        flow_id: FLOW.to_owned(),
        input: serde_json::from_value(serde_json::json!({"n": 1})).ok(),
        idempotency_key: String::new(),
    };
    let run = c
        .trigger_flow(req)
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    let started = Instant::now();
    let watch = WatchFlowRunRequest {
        flow_run_id: run.id,
        after_seq: 0,
    };
    let stream = c
        .watch_flow_run(watch)
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    load::follow(stream, t0, started, |e| {
        matches!(e.event, Some(Event::FlowRunCompleted(_)))
    })
    .await
}
