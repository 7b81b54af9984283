//! The flow run's state machine, without I/O: given a run's checkpoint (its steps and timers), the graph
//! and the time, what happens next. Every function appends the events it causes; the store commits the
//! new state and those events together, so the log and the checkpoint never disagree.
//!
//! A node starts once every incoming edge is resolved (its source finished) and at least one was
//! taken; when none was, it is SKIPPED and so are the edges leaving it. Branch, wait and approval nodes
//! are decided here; agent and tool nodes are RUNNING until the executor reports their result.
//! A failed step (after its retries) fails the run: the other active steps are cancelled.

use std::collections::BTreeMap;

use chrono::DateTime;
use pbjson_types::Value as PbValue;
use serde_json::{Value, json};

use super::{
    expr::{self, Vars},
    graph::Shape,
};
use crate::{
    error::{Error, Result},
    pb::{
        ErrorInfo, FlowGraph, FlowNode, FlowRun, FlowRunCancelled, FlowRunCompleted, FlowRunFailed,
        FlowRunPaused, FlowRunResumed, FlowRunStarted, FlowRunStatus, FlowRunWaiting, FlowStep,
        StepCompleted, StepFailed, StepStarted, StepStatus, flow_node::Kind, flow_run_event::Event,
        tool_node::Action, wait_node::Wait,
    },
    runs::{json_struct, struct_json},
    store::time::to_timestamp,
};

/// A flow run as the state machine sees it.
#[derive(Debug, Default)]
pub struct State {
    pub run: FlowRun,
    /// Node id -> when its wait or retry backoff ends (microseconds).
    pub timers: BTreeMap<String, i64>,
    /// Events caused by the changes so far, in order.
    pub events: Vec<Event>,
    /// Child runs to cancel once the change is committed.
    pub cancel_children: Vec<String>,
}

/// The graph of the run's flow version.
pub struct Plan<'a> {
    pub graph: &'a FlowGraph,
    pub shape: &'a Shape,
}

pub fn is_terminal(status: i32) -> bool {
    matches!(
        FlowRunStatus::try_from(status),
        Ok(FlowRunStatus::Completed | FlowRunStatus::Failed | FlowRunStatus::Cancelled)
    )
}

fn step_terminal(s: &FlowStep) -> bool {
    matches!(
        StepStatus::try_from(s.status),
        Ok(StepStatus::Completed
            | StepStatus::Failed
            | StepStatus::Skipped
            | StepStatus::Cancelled)
    )
}

fn step_active(s: &FlowStep) -> bool {
    matches!(
        StepStatus::try_from(s.status),
        Ok(StepStatus::Pending | StepStatus::Running | StepStatus::Waiting)
    )
}

pub fn error(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        code: code.to_owned(),
        message: message.into(),
    }
}

pub fn pb_value(v: Value) -> Option<PbValue> {
    Some(crate::runs::pb_from_json(&v))
}

pub fn json_value(v: Option<&PbValue>) -> Value {
    v.and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null)
}

/// Whether the node's work happens outside the state machine (the executor runs it).
pub fn is_effect(n: &FlowNode) -> bool {
    matches!(n.kind, Some(Kind::Agent(_) | Kind::Tool(_)))
}

impl State {
    pub fn step(&self, node: &str) -> Option<&FlowStep> {
        self.run.steps.iter().find(|s| s.node_id == node)
    }

    fn step_mut(&mut self, node: &str) -> Option<&mut FlowStep> {
        self.run.steps.iter_mut().find(|s| s.node_id == node)
    }

    fn status(&self) -> FlowRunStatus {
        FlowRunStatus::try_from(self.run.status).unwrap_or(FlowRunStatus::Unspecified)
    }

    /// The context templates and conditions see: `input` and `nodes` (outputs of completed steps).
    pub fn context(&self) -> (Value, Value) {
        let input = match struct_json(self.run.input.as_ref()) {
            Value::Null => json!({}),
            v => v,
        };
        let nodes: serde_json::Map<String, Value> = self
            .run
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Completed as i32)
            .map(|s| (s.node_id.clone(), json_value(s.output.as_ref())))
            .collect();
        (input, Value::Object(nodes))
    }

    fn step_event(&mut self, node: &str, make: impl FnOnce(FlowStep) -> Event) {
        if let Some(s) = self.step(node) {
            let e = make(s.clone());
            self.events.push(e);
        }
    }

    /// A worker took the run: it starts, or is taken over from a worker that stopped renewing its
    /// lease (both say flow_run_started). A run picked up again after a wait or a resume says nothing.
    pub fn claimed(&mut self, now: i64, takeover: bool) {
        if is_terminal(self.run.status) || self.status() == FlowRunStatus::Paused {
            return;
        }
        let starts = self.status() == FlowRunStatus::Queued;
        if starts {
            self.run.status = FlowRunStatus::Running as i32;
            self.run.start_time = Some(to_timestamp(now));
        }
        if starts || takeover {
            self.events.push(Event::FlowRunStarted(FlowRunStarted {}));
        }
    }

    pub fn pause(&mut self, reason: &str) -> Result<()> {
        match self.status() {
            FlowRunStatus::Paused => Ok(()),
            FlowRunStatus::Queued | FlowRunStatus::Running | FlowRunStatus::Waiting => {
                self.run.status = FlowRunStatus::Paused as i32;
                self.events.push(Event::FlowRunPaused(FlowRunPaused {
                    reason: reason.to_owned(),
                }));
                Ok(())
            }
            _ => Err(Error::FailedPrecondition(format!(
                "flow run {:?} has ended",
                self.run.id
            ))),
        }
    }

    pub fn resume(&mut self) -> Result<()> {
        if self.status() != FlowRunStatus::Paused {
            return Err(Error::FailedPrecondition(format!(
                "flow run {:?} is not paused",
                self.run.id
            )));
        }
        self.run.status = if self.run.start_time.is_none() {
            FlowRunStatus::Queued
        } else {
            FlowRunStatus::Running
        } as i32;
        self.events.push(Event::FlowRunResumed(FlowRunResumed {}));
        Ok(())
    }

    /// Ends the run CANCELLED. Returns false when it was already.
    pub fn cancel(&mut self, reason: &str, now: i64) -> Result<bool> {
        match self.status() {
            FlowRunStatus::Cancelled => return Ok(false),
            FlowRunStatus::Completed | FlowRunStatus::Failed => {
                return Err(Error::FailedPrecondition(format!(
                    "flow run {:?} has ended",
                    self.run.id
                )));
            }
            _ => {}
        }
        self.stop_active(now);
        self.run.status = FlowRunStatus::Cancelled as i32;
        self.run.end_time = Some(to_timestamp(now));
        self.events.push(Event::FlowRunCancelled(FlowRunCancelled {
            reason: reason.to_owned(),
        }));
        Ok(true)
    }

    /// Cancels every active step (and asks for their child runs to be cancelled).
    fn stop_active(&mut self, now: i64) {
        self.timers.clear();
        for s in self.run.steps.iter_mut().filter(|s| step_active(s)) {
            if s.status == StepStatus::Running as i32 && !s.child_run_id.is_empty() {
                self.cancel_children.push(s.child_run_id.clone());
            }
            s.status = StepStatus::Cancelled as i32;
            s.end_time = Some(to_timestamp(now));
        }
    }

    /// Records a human decision on the approval step of `node`.
    pub fn decide(
        &mut self,
        plan: &Plan<'_>,
        node: &str,
        approved: bool,
        reason: &str,
        key_name: &str,
        now: i64,
    ) -> Result<()> {
        if is_terminal(self.run.status) {
            return Err(Error::FailedPrecondition(format!(
                "flow run {:?} has ended",
                self.run.id
            )));
        }
        let approvers = match plan
            .shape
            .index
            .get(node)
            .map(|&i| &plan.graph.nodes[i].kind)
        {
            Some(Some(Kind::Approval(a))) => &a.approvers,
            Some(_) => {
                return Err(Error::invalid(
                    "approval.node_id",
                    format!("node {node:?} is not an approval node"),
                ));
            }
            None => {
                return Err(Error::invalid(
                    "approval.node_id",
                    format!("the flow has no node {node:?}"),
                ));
            }
        };
        if !approvers.is_empty() && !approvers.iter().any(|a| a == key_name) {
            return Err(Error::PermissionDenied(format!(
                "only {} may decide the approval {node:?}",
                approvers.join(", ")
            )));
        }
        let step = self
            .step_mut(node)
            .filter(|s| s.status == StepStatus::Waiting as i32)
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "the approval {node:?} is not awaiting a decision"
                ))
            })?;
        step.end_time = Some(to_timestamp(now));
        if approved {
            step.status = StepStatus::Completed as i32;
            step.output = pb_value(json!({"approved": true, "reason": reason}));
            self.step_event(node, |s| {
                Event::StepCompleted(StepCompleted { step: Some(s) })
            });
        } else {
            step.status = StepStatus::Failed as i32;
            step.error = Some(error(
                "rejected",
                if reason.is_empty() {
                    "rejected"
                } else {
                    reason
                },
            ));
            self.step_event(node, |s| {
                Event::StepFailed(StepFailed {
                    step: Some(s),
                    will_retry: false,
                })
            });
        }
        Ok(())
    }

    /// Records the result of attempt `attempt` of the agent or tool step `node`. False when the step
    /// no longer waits for that attempt (cancelled, or another worker's).
    pub fn finish(
        &mut self,
        plan: &Plan<'_>,
        node: &str,
        attempt: i32,
        result: std::result::Result<Value, ErrorInfo>,
        now: i64,
    ) -> bool {
        let retry = plan
            .shape
            .index
            .get(node)
            .and_then(|&i| plan.graph.nodes[i].retry)
            .unwrap_or_default();
        let Some(step) = self
            .step_mut(node)
            .filter(|s| s.status == StepStatus::Running as i32 && s.attempt == attempt)
        else {
            return false;
        };
        match result {
            Ok(v) => {
                step.status = StepStatus::Completed as i32;
                step.output = pb_value(v);
                step.error = None;
                step.end_time = Some(to_timestamp(now));
                self.step_event(node, |s| {
                    Event::StepCompleted(StepCompleted { step: Some(s) })
                });
            }
            Err(err) => {
                let will_retry = attempt < retry.max_attempts.max(1);
                step.error = Some(err);
                if will_retry {
                    step.status = StepStatus::Waiting as i32;
                    self.timers
                        .insert(node.to_owned(), now + backoff_micros(&retry, attempt));
                } else {
                    step.status = StepStatus::Failed as i32;
                    step.end_time = Some(to_timestamp(now));
                }
                self.step_event(node, |s| {
                    Event::StepFailed(StepFailed {
                        step: Some(s),
                        will_retry,
                    })
                });
            }
        }
        true
    }

    /// Moves the run forward as far as it can go now; returns the agent and tool steps that should be
    /// executing.
    pub fn advance(&mut self, plan: &Plan<'_>, now: i64) -> Vec<String> {
        if is_terminal(self.run.status) {
            return Vec::new();
        }
        let paused = self.status() == FlowRunStatus::Paused;
        // A failed step fails the run before anything downstream of it is started or skipped.
        if self.fail_on_failed_step(now) {
            return Vec::new();
        }
        if !paused && self.status() != FlowRunStatus::Queued {
            self.fire_timers(plan, now);
            while self.start_ready(plan, now) {}
        }
        if self.fail_on_failed_step(now) {
            return Vec::new();
        }
        let done = plan.graph.nodes.iter().all(|n| {
            self.step(&n.id).is_some_and(|s| {
                s.status == StepStatus::Completed as i32 || s.status == StepStatus::Skipped as i32
            })
        });
        if done {
            self.complete(plan, now);
            return Vec::new();
        }
        if paused || self.status() == FlowRunStatus::Queued {
            return Vec::new();
        }
        let running: Vec<String> = self
            .run
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Running as i32)
            .map(|s| s.node_id.clone())
            .collect();
        if !running.is_empty() {
            self.run.status = FlowRunStatus::Running as i32;
        } else if self.status() != FlowRunStatus::Waiting {
            self.run.status = FlowRunStatus::Waiting as i32;
            let steps: Vec<FlowStep> = self
                .run
                .steps
                .iter()
                .filter(|s| s.status == StepStatus::Waiting as i32)
                .cloned()
                .collect();
            self.events.push(Event::FlowRunWaiting(FlowRunWaiting {
                until: self.timers.values().min().map(|&t| to_timestamp(t)),
                steps,
            }));
        }
        running
    }

    fn fail_on_failed_step(&mut self, now: i64) -> bool {
        let Some(failed) = self
            .run
            .steps
            .iter()
            .find(|s| s.status == StepStatus::Failed as i32)
        else {
            return false;
        };
        let e = failed.error.clone().unwrap_or_default();
        let message = format!(
            "step {:?} failed: {}: {}",
            failed.node_id, e.code, e.message
        );
        self.fail(error("step_failed", message), now);
        true
    }

    pub fn fail(&mut self, err: ErrorInfo, now: i64) {
        self.stop_active(now);
        self.run.status = FlowRunStatus::Failed as i32;
        self.run.end_time = Some(to_timestamp(now));
        self.run.error = Some(err.clone());
        self.events
            .push(Event::FlowRunFailed(FlowRunFailed { error: Some(err) }));
    }

    fn complete(&mut self, plan: &Plan<'_>, now: i64) {
        let mut out = serde_json::Map::new();
        for (i, n) in plan.graph.nodes.iter().enumerate() {
            if plan.shape.outgoing[i].is_empty()
                && let Some(s) = self.step(&n.id)
                && s.status == StepStatus::Completed as i32
            {
                out.insert(n.id.clone(), json_value(s.output.as_ref()));
            }
        }
        let output = json_struct(&Value::Object(out)).unwrap_or_default();
        self.timers.clear();
        self.run.status = FlowRunStatus::Completed as i32;
        self.run.end_time = Some(to_timestamp(now));
        self.run.output = Some(output.clone());
        self.events.push(Event::FlowRunCompleted(FlowRunCompleted {
            output: Some(output),
        }));
    }

    fn fire_timers(&mut self, plan: &Plan<'_>, now: i64) {
        let due: Vec<String> = self
            .timers
            .iter()
            .filter(|&(_, &t)| t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            self.timers.remove(&node);
            let effect = plan
                .shape
                .index
                .get(&node)
                .is_some_and(|&i| is_effect(&plan.graph.nodes[i]));
            let Some(step) = self
                .step_mut(&node)
                .filter(|s| s.status == StepStatus::Waiting as i32)
            else {
                continue;
            };
            if effect {
                // A retry's backoff is over: the next attempt.
                step.attempt += 1;
                step.status = StepStatus::Running as i32;
                step.start_time = Some(to_timestamp(now));
                step.end_time = None;
                step.output = None;
                self.step_event(&node, |s| Event::StepStarted(StepStarted { step: Some(s) }));
            } else {
                step.status = StepStatus::Completed as i32;
                step.output = pb_value(Value::Null);
                step.end_time = Some(to_timestamp(now));
                self.step_event(&node, |s| {
                    Event::StepCompleted(StepCompleted { step: Some(s) })
                });
            }
        }
    }

    /// Starts or skips every node whose incoming edges are all resolved. True when something changed.
    fn start_ready(&mut self, plan: &Plan<'_>, now: i64) -> bool {
        let mut changed = false;
        for (i, n) in plan.graph.nodes.iter().enumerate() {
            if self.step(&n.id).is_some() {
                continue;
            }
            let mut taken = false;
            let mut resolved = true;
            for &e in &plan.shape.incoming[i] {
                match self.edge(plan, e) {
                    Ok(Some(t)) => taken |= t,
                    Ok(None) => resolved = false,
                    Err(msg) => {
                        // A condition that cannot be evaluated fails the node it guards.
                        self.add_step(n, now, json!({}));
                        self.fail_step(&n.id, error("condition_failed", msg), now);
                        return true;
                    }
                }
            }
            if !resolved {
                continue;
            }
            changed = true;
            if !taken && !plan.shape.incoming[i].is_empty() {
                self.add_step(n, now, json!({}));
                let s = self.step_mut(&n.id).expect("just added");
                s.status = StepStatus::Skipped as i32;
                s.attempt = 0;
                s.start_time = None;
                self.step_event(&n.id, |s| {
                    Event::StepCompleted(StepCompleted { step: Some(s) })
                });
                continue;
            }
            self.start(n, now);
        }
        changed
    }

    /// Whether edge `e` is taken: None while its source has not finished.
    fn edge(&self, plan: &Plan<'_>, e: usize) -> std::result::Result<Option<bool>, String> {
        let (from, to) = plan.shape.ends[e];
        let src = &plan.graph.nodes[from];
        let Some(s) = self.step(&src.id) else {
            return Ok(None);
        };
        if !step_terminal(s) {
            return Ok(None);
        }
        if s.status != StepStatus::Completed as i32 {
            return Ok(Some(false));
        }
        if matches!(src.kind, Some(Kind::Branch(_))) {
            let target = json_value(s.output.as_ref());
            if target.get("target").and_then(Value::as_str)
                != Some(plan.graph.nodes[to].id.as_str())
            {
                return Ok(Some(false));
            }
        }
        let cond = &plan.graph.edges[e].condition;
        if cond.is_empty() {
            return Ok(Some(true));
        }
        let (input, nodes) = self.context();
        expr::eval_bool(cond, &Vars(&[("input", &input), ("nodes", &nodes)])).map(Some)
    }

    fn add_step(&mut self, n: &FlowNode, now: i64, input: Value) {
        self.run.steps.push(FlowStep {
            node_id: n.id.clone(),
            status: StepStatus::Running as i32,
            attempt: 1,
            input: json_struct(&input),
            start_time: Some(to_timestamp(now)),
            ..Default::default()
        });
    }

    fn fail_step(&mut self, node: &str, err: ErrorInfo, now: i64) {
        if let Some(s) = self.step_mut(node) {
            s.status = StepStatus::Failed as i32;
            s.error = Some(err);
            s.end_time = Some(to_timestamp(now));
        }
        self.step_event(node, |s| {
            Event::StepFailed(StepFailed {
                step: Some(s),
                will_retry: false,
            })
        });
    }

    /// Starts node `n`: decides branch, wait and approval nodes, renders the input of the others.
    fn start(&mut self, n: &FlowNode, now: i64) {
        let (input, nodes) = self.context();
        let vars = Vars(&[("input", &input), ("nodes", &nodes)]);
        let rendered = render_input(n, &vars, &input, now);
        let (step_input, outcome) = match rendered {
            Ok(v) => v,
            Err(msg) => {
                self.add_step(n, now, json!({}));
                self.step_event(&n.id, |s| Event::StepStarted(StepStarted { step: Some(s) }));
                self.fail_step(&n.id, error("template_failed", msg), now);
                return;
            }
        };
        self.add_step(n, now, step_input);
        self.step_event(&n.id, |s| Event::StepStarted(StepStarted { step: Some(s) }));
        match outcome {
            Start::Run => {}
            Start::Done(out) => {
                let s = self.step_mut(&n.id).expect("just added");
                s.status = StepStatus::Completed as i32;
                s.output = pb_value(out);
                s.end_time = Some(to_timestamp(now));
                self.step_event(&n.id, |s| {
                    Event::StepCompleted(StepCompleted { step: Some(s) })
                });
            }
            Start::Wait(until) => {
                let s = self.step_mut(&n.id).expect("just added");
                s.status = StepStatus::Waiting as i32;
                if let Some(t) = until {
                    self.timers.insert(n.id.clone(), t);
                }
            }
        }
    }
}

enum Start {
    /// The executor runs it.
    Run,
    /// Decided at once, with this output.
    Done(Value),
    /// Waits until a time, or (None) for a human.
    Wait(Option<i64>),
}

fn rfc3339(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The step input of node `n` and what starting it does.
fn render_input(
    n: &FlowNode,
    vars: &Vars<'_>,
    run_input: &Value,
    now: i64,
) -> std::result::Result<(Value, Start), String> {
    Ok(match n.kind.as_ref() {
        None => return Err("the node has no kind".into()),
        Some(Kind::Agent(a)) => {
            let mapping = struct_json(a.input_mapping.as_ref());
            let input = if mapping.as_object().is_none_or(|m| m.is_empty()) {
                run_input.clone()
            } else {
                expr::render(&mapping, vars)?
            };
            let mut v = json!({"agent_id": a.agent_id, "input": input});
            if !a.message.is_empty() {
                v["message"] = Value::String(expr::render_text(&a.message, vars)?);
            }
            (v, Start::Run)
        }
        Some(Kind::Tool(t)) => match t.action.as_ref() {
            None => return Err("the tool node has no action".into()),
            Some(Action::Http(h)) => {
                let mut headers = serde_json::Map::new();
                for (k, v) in &h.headers {
                    headers.insert(k.clone(), Value::String(expr::render_text(v, vars)?));
                }
                let body = match &h.body {
                    Some(b) => expr::render(&serde_json::to_value(b).unwrap_or(Value::Null), vars)?,
                    None => Value::Null,
                };
                (
                    json!({"method": h.method, "url": expr::render_text(&h.url, vars)?,
                           "headers": headers, "body": body}),
                    Start::Run,
                )
            }
            Some(Action::Mcp(m)) => {
                let args = expr::render(&struct_json(m.arguments.as_ref()), vars)?;
                (
                    json!({"server": m.server, "tool": m.tool, "arguments": args}),
                    Start::Run,
                )
            }
        },
        Some(Kind::Wait(w)) => {
            let until = match w.wait.as_ref() {
                None => now,
                Some(Wait::Duration(d)) => now.saturating_add(
                    d.seconds.saturating_mul(1_000_000) + i64::from(d.nanos) / 1000,
                ),
                Some(Wait::Until(t)) => crate::store::time::from_timestamp(t).unwrap_or(now),
                Some(Wait::UntilExpression(e)) => match expr::eval(e, vars)? {
                    cel::Value::Timestamp(t) => t.timestamp_micros(),
                    cel::Value::String(s) => DateTime::parse_from_rfc3339(&s)
                        .map_err(|err| format!("until_expression gave {s:?}: {err}"))?
                        .timestamp_micros(),
                    other => {
                        return Err(format!(
                            "until_expression must give a timestamp or an RFC 3339 string, got {}",
                            other.type_of()
                        ));
                    }
                },
            };
            let v = json!({"until": rfc3339(until)});
            if until <= now {
                (v, Start::Done(Value::Null))
            } else {
                (v, Start::Wait(Some(until)))
            }
        }
        Some(Kind::Branch(b)) => {
            let mut chosen = None;
            for c in &b.cases {
                if expr::eval_bool(&c.condition, vars)? {
                    chosen = Some(c.target_node_id.clone());
                    break;
                }
            }
            if chosen.is_none() && !b.default_target_node_id.is_empty() {
                chosen = Some(b.default_target_node_id.clone());
            }
            (json!({}), Start::Done(json!({"target": chosen})))
        }
        Some(Kind::Approval(a)) => (
            json!({"message": expr::render_text(&a.message, vars)?, "approvers": a.approvers}),
            Start::Wait(None),
        ),
    })
}

/// The delay before attempt `attempt + 1`.
pub fn backoff_micros(r: &crate::pb::RetryPolicy, attempt: i32) -> i64 {
    let micros = |d: &Option<pbjson_types::Duration>, default: i64| {
        d.as_ref()
            .map(|d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
            .unwrap_or(default)
    };
    let initial = micros(&r.initial_backoff, 1_000_000) as f64;
    let max = micros(&r.max_backoff, 60_000_000) as f64;
    let mult = if r.backoff_multiplier == 0.0 {
        2.0
    } else {
        r.backoff_multiplier
    };
    (initial * mult.powi((attempt - 1).max(0))).min(max) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_are_explicit_null_values() {
        let v = pb_value(json!({"target": null, "list": [null, 1]})).unwrap();
        let s = match v.kind {
            Some(pbjson_types::value::Kind::StructValue(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            s.fields["target"].kind,
            Some(pbjson_types::value::Kind::NullValue(0))
        );
        assert_eq!(
            json_value(Some(&pb_value(Value::Null).unwrap())),
            Value::Null
        );
    }
}
