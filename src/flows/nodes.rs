//! Executes the nodes whose work happens outside the state machine: agent nodes (a child run, awaited
//! to its end) and tool nodes (an HTTP request, or a call to an MCP server's tool). The input is the step's resolved input, as recorded
//! when the step started, so what a reader sees in the step is exactly what was sent.
//!
//! An agent node's child run is started with the idempotency key `flow:<run>:<node>:<attempt>`: a
//! worker that takes the flow run over after a crash finds the same child run instead of starting a
//! second one. An HTTP request is at least once: one that was in flight when its worker died is sent
//! again by the next worker, and so is an MCP tool call.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::plan::error;
use crate::{
    api::AppState,
    pb::{
        ErrorInfo, FlowNode, FlowStep, RunStatus, RunTrigger, StartRunRequest, TriggerSource,
        flow_node::Kind, tool_node::Action,
    },
    runs::{json_struct, struct_json},
    tools::ToolContext,
};

/// Where a node executes.
pub struct Site<'a> {
    pub state: &'a AppState,
    pub workspace_id: &'a str,
    pub flow_run_id: &'a str,
    /// HTTP nodes may reach private addresses.
    pub allow_private: bool,
}

/// Runs one attempt of `node`; `started` is told the child run of an agent node.
pub async fn execute(
    site: &Site<'_>,
    node: &FlowNode,
    step: &FlowStep,
    started: impl AsyncFnOnce(String),
) -> Result<Value, ErrorInfo> {
    let timeout = node.timeout.as_ref().map(|d| {
        Duration::from_secs(d.seconds.max(0) as u64) + Duration::from_nanos(d.nanos.max(0) as u64)
    });
    let input = struct_json(step.input.as_ref());
    match &node.kind {
        Some(Kind::Agent(_)) => agent(site, &node.id, step.attempt, input, timeout, started).await,
        Some(Kind::Tool(t)) => match &t.action {
            Some(Action::Http(_)) => {
                let key = format!("{}:{}:{}", site.flow_run_id, node.id, step.attempt);
                let work = http(site, input, &key, timeout);
                match timeout {
                    Some(t) => tokio::time::timeout(t, work)
                        .await
                        .unwrap_or_else(|_| Err(error("timeout", "the request timed out"))),
                    None => work.await,
                }
            }
            Some(Action::Mcp(m)) => {
                super::mcp::call(
                    input["server"].as_str().unwrap_or_default(),
                    input["tool"].as_str().unwrap_or_default(),
                    input["arguments"].clone(),
                    &m.headers,
                    site.allow_private,
                    timeout,
                )
                .await
            }
            None => Err(error("internal", "the tool node has no action")),
        },
        _ => Err(error("internal", "not an agent or tool node")),
    }
}

async fn agent(
    site: &Site<'_>,
    node_id: &str,
    attempt: i32,
    input: Value,
    timeout: Option<Duration>,
    started: impl AsyncFnOnce(String),
) -> Result<Value, ErrorInfo> {
    let st = site.state;
    let ws = site.workspace_id;
    let req = StartRunRequest {
        agent_id: input["agent_id"].as_str().unwrap_or_default().to_owned(),
        input: json_struct(&input["input"]),
        message: input["message"].as_str().unwrap_or_default().to_owned(),
        idempotency_key: format!("flow:{}:{node_id}:{attempt}", site.flow_run_id),
        ..Default::default()
    };
    let trigger = RunTrigger {
        source: TriggerSource::Flow as i32,
        flow_run_id: site.flow_run_id.to_owned(),
        ..Default::default()
    };
    let run = st
        .runs
        .start(&st.agents, ws, req, trigger)
        .await
        .map_err(|e| error("agent_failed", e.to_string()))?;
    let child = run.id.clone();
    started(child.clone()).await;
    let wait = async {
        let mut last = 0;
        loop {
            match st.runs.watch(ws, &child, last).await {
                Ok(mut s) => {
                    while let Some(Ok(e)) = s.next().await {
                        last = e.seq;
                    }
                }
                Err(e) => return Err(error("agent_failed", e.to_string())),
            }
            let run = st
                .runs
                .get(ws, &child)
                .await
                .map_err(|e| error("agent_failed", e.to_string()))?;
            match RunStatus::try_from(run.status) {
                Ok(RunStatus::Completed) => {
                    let out = run.output.unwrap_or_default();
                    return Ok(match out.structured {
                        Some(s) => serde_json::to_value(s).unwrap_or(Value::Null),
                        None => json!({"content": out.content}),
                    });
                }
                Ok(RunStatus::Failed) => {
                    let e = run.error.unwrap_or_default();
                    return Err(error(
                        "agent_failed",
                        format!("agent run {child} failed: {}: {}", e.code, e.message),
                    ));
                }
                Ok(RunStatus::Cancelled) => {
                    return Err(error(
                        "cancelled",
                        format!("agent run {child} was cancelled"),
                    ));
                }
                // Waiting for a human (tool approval): look again in a while.
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    };
    match timeout {
        None => wait.await,
        Some(t) => match tokio::time::timeout(t, wait).await {
            Ok(r) => r,
            Err(_) => {
                let _ = st.runs.cancel(ws, &child, "the flow step timed out").await;
                Err(error(
                    "timeout",
                    format!("agent run {child} did not finish in time"),
                ))
            }
        },
    }
}

/// Sends the step's request with an `Idempotency-Key` of its attempt (unless the node sets one), so a
/// request resent by the worker that takes over after a crash can be recognised by its receiver.
async fn http(
    site: &Site<'_>,
    mut input: Value,
    idempotency_key: &str,
    timeout: Option<Duration>,
) -> Result<Value, ErrorInfo> {
    if let Some(headers) = input.get_mut("headers").and_then(Value::as_object_mut)
        && !headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("idempotency-key"))
    {
        headers.insert("Idempotency-Key".into(), idempotency_key.into());
    }
    let tool = site
        .state
        .tools
        .get("http_request")
        .ok_or_else(|| error("internal", "the http_request tool is not registered"))?;
    let ctx = ToolContext {
        workspace_id: site.workspace_id.to_owned(),
        user_id: String::new(),
        session_id: String::new(),
        run_id: site.flow_run_id.to_owned(),
        config: json!({
            "allowed_hosts": ["*"],
            "allow_private": site.allow_private,
            "timeout_secs": timeout.map_or(30.0, |t| t.as_secs_f64().clamp(0.001, 600.0)),
        }),
    };
    let method = input["method"].as_str().unwrap_or("GET").to_owned();
    let url = input["url"].as_str().unwrap_or_default().to_owned();
    let out = tool
        .call(&ctx, input)
        .await
        .map_err(|e| error(e.code, e.message))?;
    let status = out["status"].as_u64().unwrap_or(0);
    if status >= 400 {
        return Err(error(
            "http_status",
            format!("{method} {url} answered {status}"),
        ));
    }
    Ok(out)
}
