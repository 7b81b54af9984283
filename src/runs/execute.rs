//! The agent loop of one claimed run: build the conversation (template, history, the user's message),
//! then alternate model turns and tool calls until the model answers without tools, a tool needs a
//! human, `max_steps` is reached, or the run is stopped. Each commit writes the events and the
//! checkpoint together, conditional on still holding the lease.
//!
//! Commits are as few as the guarantees allow. Events that need not be durable yet (run_started,
//! deltas, a turn's usage) are deferred and ride on the next commit, which happens when the model
//! makes us wait (so watchers see progress as soon as there is a pause), before a tool executes (so
//! its call is recorded first), and when the run ends or pauses. A model that answers at once costs
//! a single commit for the whole run.

use futures_util::{FutureExt, StreamExt};
use prost::Message as _;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;
use tracing::Instrument;

use super::{
    RunRequestExtras,
    checkpoint::{Checkpoint, Overrides, PendingCall},
    decode_run,
    engine::{Claimed, Engine, LocalRun, StopReason},
    json_struct, struct_json, template,
    writer::{Guard, RunChange},
};
use crate::{
    error::Result,
    models::{Message, ModelError, ModelEvent, ModelRequest, Role, ToolCallRequest, ToolSpec},
    pb::{
        Agent, ApprovalRequired, ChatMessage, ErrorInfo, MessageDelta, ReasoningStep, Run,
        RunCancelled, RunCompleted, RunFailed, RunOutput, RunStarted, RunStatus, ToolCall,
        ToolCallCompleted, ToolCallStarted, Usage, run_event::Event, tool_call_completed::Outcome,
    },
    store::{
        entities::run,
        time::{from_timestamp, now_micros, to_timestamp},
    },
    tools::ToolContext,
};

/// Most deltas written in one transaction while a model streams.
const DELTA_BATCH: usize = 64;

/// What became of the run when a commit was refused.
struct LeaseLost;

/// Runs a run this engine claimed until it finishes, pauses, or is stopped.
pub(super) async fn run(engine: &Engine, claimed: Claimed, local: &LocalRun) -> Result<()> {
    let mut r = Runner {
        engine,
        ws: &claimed.workspace_id,
        run: decode_run(&claimed.spec)?,
        local,
        deferred: Vec::new(),
    };
    tracing::Span::current().record("trace_id", r.run.trace_id.as_str());
    tracing::debug!(agent_id = %r.run.agent_id, "run claimed");
    let agent = match engine
        .agent_version(r.ws, &r.run.agent_id, r.run.agent_version)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            return r
                .fail(&Checkpoint::default(), "agent_unavailable", &e.to_string())
                .await;
        }
    };
    let mut cp = match RunRequestExtras::decode(claimed.checkpoint.as_deref()) {
        Some(extras) => match initial_conversation(engine, r.ws, &r.run, &agent, &extras).await {
            Ok(messages) => Checkpoint {
                messages,
                overrides: Overrides {
                    temperature: extras.temperature,
                    max_tokens: extras.max_tokens,
                    top_p: extras.top_p,
                },
                ..Default::default()
            },
            Err(e) => {
                return r
                    .fail(&Checkpoint::default(), "template_error", &e.to_string())
                    .await;
            }
        },
        None => Checkpoint::decode(claimed.checkpoint.as_deref()),
    };
    if claimed.cancel_requested {
        return r.stop(&cp, StopReason::Cancel).await;
    }
    // Every claim starts (or resumes) the run: first start, after a decision, after a takeover.
    if r.run.start_time.is_none() {
        r.run.start_time = Some(to_timestamp(now_micros()));
    }
    r.deferred.push(Event::RunStarted(RunStarted {}));
    r.run.status = RunStatus::Running as i32;
    r.run.pending_tool_calls.clear();
    let settings = agent.model_settings.unwrap_or_default();
    let config = agent.config.clone().unwrap_or_default();
    // With reasoning on, every model turn is a reasoning step (a `reasoning_step` event tells what
    // the model thought, did and got), and `reasoning_max_steps` bounds the turns.
    let reasoning = config.enable_reasoning.unwrap_or(false);
    let max_steps = if reasoning {
        config.reasoning_max_steps.unwrap_or(10)
    } else {
        config.max_steps.unwrap_or(10)
    }
    .max(1) as u32;
    loop {
        if let Some(reason) = local.reason() {
            return r.stop(&cp, reason).await;
        }
        // 1. The tool calls of the last turn: wait for humans, then run each once.
        if !cp.pending.is_empty() {
            if cp.pending.iter().any(PendingCall::awaits_decision) {
                return r.require_action(&cp).await;
            }
            for i in 0..cp.pending.len() {
                if cp.pending[i].outcome.is_some() {
                    continue;
                }
                let span = tracing::info_span!("tool_call", name = %cp.pending[i].name, id = %cp.pending[i].id);
                match r.run_tool(&mut cp, i, &agent).instrument(span).await {
                    Ok(()) => {}
                    Err(LeaseLost) => return Ok(()),
                }
                if let Some(reason) = local.reason() {
                    return r.stop(&cp, reason).await;
                }
            }
            let (mut actions, mut results) = (Vec::new(), Vec::new());
            for call in std::mem::take(&mut cp.pending) {
                let content = match &call.outcome {
                    Some(Ok(v)) => v.to_string(),
                    Some(Err((code, msg))) => {
                        serde_json::json!({"error": code, "message": msg}).to_string()
                    }
                    None => String::new(),
                };
                if reasoning {
                    actions.push(format!("{}({})", call.name, call.arguments));
                    results.push(format!("{}: {content}", call.name));
                }
                cp.messages.push(Message {
                    tool_call_id: Some(call.id),
                    ..Message::new(Role::Tool, content)
                });
            }
            if reasoning {
                let thought = cp
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::Assistant)
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                r.deferred.push(Event::ReasoningStep(ReasoningStep {
                    title: format!("Step {}", cp.steps),
                    reasoning: thought,
                    action: actions.join("; "),
                    result: results.join("\n"),
                    next_action: "continue".into(),
                    confidence: None,
                }));
            }
        }
        if cp.steps >= max_steps {
            return r
                .fail(
                    &cp,
                    "max_steps_exceeded",
                    &format!("the agent took {max_steps} model turns without finishing"),
                )
                .await;
        }
        // 2. A model turn, streamed into message_delta events.
        let (provider, model_name) = match engine.models.resolve(&r.run.model) {
            Ok(p) => p,
            Err(e) => return r.fail(&cp, e.code, &e.message).await,
        };
        let request = ModelRequest {
            model: model_name.to_owned(),
            messages: cp.messages.clone(),
            tools: tool_specs(engine, &agent, &r.run),
            temperature: cp.overrides.temperature.or(settings.temperature),
            max_tokens: cp.overrides.max_tokens.or(settings.max_tokens),
            top_p: cp.overrides.top_p.or(settings.top_p),
            metadata: struct_json(agent.metadata.as_ref()),
        };
        let step = tracing::info_span!("model_turn", step = cp.steps + 1, model = %r.run.model);
        let turn = tokio::select! {
            t = r.model_turn(provider.stream(request)).instrument(step) => t,
            _ = local.token.cancelled() => return r.stop(&cp, local.reason().unwrap_or(StopReason::Shutdown)).await,
        };
        let (text, calls, input_tokens, output_tokens) = match turn {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return r.fail(&cp, e.code, &e.message).await,
            Err(LeaseLost) => return Ok(()),
        };
        cp.steps += 1;
        cp.input_tokens += input_tokens;
        cp.output_tokens += output_tokens;
        cp.cost_usd += engine
            .models
            .cost(&r.run.model, input_tokens, output_tokens);
        cp.messages.push(Message {
            tool_calls: calls.clone(),
            ..Message::new(Role::Assistant, text.clone())
        });
        if calls.is_empty() {
            if reasoning {
                r.deferred.push(Event::ReasoningStep(ReasoningStep {
                    title: format!("Step {}", cp.steps),
                    reasoning: text.clone(),
                    next_action: "final_answer".into(),
                    ..Default::default()
                }));
            }
            return r.complete(&cp, &agent, text).await;
        }
        cp.pending = calls
            .into_iter()
            .map(|c| PendingCall {
                requires_confirmation: agent
                    .tools
                    .iter()
                    .any(|b| b.name == c.name && b.requires_confirmation),
                id: c.id,
                name: c.name,
                arguments: c.arguments,
                decision: None,
                outcome: None,
            })
            .collect();
        // Committed with the first tool call's start, or with the approval request.
        let usage = Event::Usage(r.usage(&cp));
        r.deferred.push(usage);
    }
}

struct Runner<'a> {
    engine: &'a Engine,
    ws: &'a str,
    run: Run,
    local: &'a LocalRun,
    /// Events produced but not committed yet; the next commit carries them first.
    deferred: Vec<Event>,
}

type Turn = (String, Vec<ToolCallRequest>, i64, i64);

impl Runner<'_> {
    /// Streams one model call into deferred message_delta events. Whenever the model makes us wait,
    /// what was deferred is committed meanwhile, so watchers see progress without a commit per token.
    async fn model_turn(
        &mut self,
        stream: impl Future<Output = Result<crate::models::ModelStream, ModelError>>,
    ) -> Result<Result<Turn, ModelError>, LeaseLost> {
        let mut opening = std::pin::pin!(stream);
        let opened = match opening.as_mut().now_or_never() {
            Some(s) => s,
            None => {
                let (flushed, s) = tokio::join!(self.flush(), opening);
                flushed?;
                s
            }
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let (mut text, mut calls, mut tin, mut tout) = (String::new(), Vec::new(), 0, 0);
        loop {
            let item = match stream.next().now_or_never() {
                Some(item) => item,
                None if self.deferred.is_empty() => stream.next().await,
                None => {
                    let (flushed, item) = tokio::join!(self.flush(), stream.next());
                    flushed?;
                    item
                }
            };
            let Some(item) = item else { break };
            match item {
                Ok(ModelEvent::Delta(d)) => {
                    text.push_str(&d);
                    self.deferred
                        .push(Event::MessageDelta(MessageDelta { text: d }));
                    if self.deferred.len() >= DELTA_BATCH {
                        self.flush().await?;
                    }
                }
                Ok(ModelEvent::ToolCall(c)) => calls.push(c),
                Ok(ModelEvent::Usage {
                    input_tokens,
                    output_tokens,
                }) => {
                    tin += input_tokens;
                    tout += output_tokens;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok((text, calls, tin, tout)))
    }

    /// Commits the deferred events with the run's spec (the checkpoint does not change mid-turn).
    async fn flush(&mut self) -> Result<(), LeaseLost> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.deferred);
        let change = self.change(RunStatus::Running);
        self.send(change, events).await
    }

    /// Runs pending call `i` (or records its rejection) and commits its result with the checkpoint.
    async fn run_tool(
        &mut self,
        cp: &mut Checkpoint,
        i: usize,
        agent: &Agent,
    ) -> Result<(), LeaseLost> {
        let call = cp.pending[i].clone();
        let arguments = call
            .decision
            .as_ref()
            .and_then(|d| d.arguments.clone())
            .unwrap_or(call.arguments.clone());
        let outcome = match &call.decision {
            Some(d) if !d.approved => Err((
                "rejected".to_owned(),
                format!("the user rejected this call{}", reason_suffix(&d.reason)),
            )),
            _ => {
                let started = ToolCallStarted {
                    tool_call: Some(tool_call_pb(&call, Some(&arguments))),
                };
                self.commit(
                    cp,
                    vec![Event::ToolCallStarted(started)],
                    RunStatus::Running,
                )
                .await?;
                match self
                    .engine
                    .tools
                    .get(&call.name)
                    .filter(|_| may_call(agent, &self.run, &call.name))
                {
                    None => Err((
                        "unknown_tool".to_owned(),
                        format!("the agent has no tool {:?}", call.name),
                    )),
                    Some(tool) => {
                        let ctx = ToolContext {
                            workspace_id: self.ws.to_owned(),
                            user_id: self.run.user_id.clone(),
                            session_id: self.run.session_id.clone(),
                            run_id: self.run.id.clone(),
                            config: agent
                                .tools
                                .iter()
                                .find(|b| b.name == call.name)
                                .map(|b| struct_json(b.config.as_ref()))
                                .unwrap_or(Value::Null),
                        };
                        tool.call(&ctx, arguments)
                            .await
                            .map_err(|e| (e.code.to_owned(), e.message))
                    }
                }
            }
        };
        let completed = ToolCallCompleted {
            tool_call_id: call.id.clone(),
            name: call.name.clone(),
            outcome: Some(match &outcome {
                Ok(v) => Outcome::Result(serde_json::from_value(v.clone()).unwrap_or_default()),
                Err((code, message)) => Outcome::Error(ErrorInfo {
                    code: code.clone(),
                    message: message.clone(),
                }),
            }),
        };
        cp.pending[i].outcome = Some(outcome);
        self.commit(
            cp,
            vec![Event::ToolCallCompleted(completed)],
            RunStatus::Running,
        )
        .await?;
        Ok(())
    }

    fn usage(&self, cp: &Checkpoint) -> Usage {
        Usage {
            input_tokens: cp.input_tokens,
            output_tokens: cp.output_tokens,
            total_tokens: cp.input_tokens + cp.output_tokens,
            cost_usd: cp.cost_usd,
        }
    }

    async fn complete(&mut self, cp: &Checkpoint, agent: &Agent, text: String) -> Result<()> {
        let structured = agent
            .output_schema
            .as_ref()
            .and_then(|_| serde_json::from_str::<Value>(text.trim()).ok())
            .and_then(|v| json_struct(&v));
        let output = RunOutput {
            content: text.clone(),
            structured,
            artifacts: Vec::new(),
        };
        let usage = self.usage(cp);
        self.run.output = Some(output.clone());
        self.run.usage = Some(usage);
        self.run.end_time = Some(to_timestamp(now_micros()));
        let evs = vec![
            Event::Message(ChatMessage {
                role: "assistant".into(),
                content: text,
            }),
            Event::Usage(usage),
            Event::RunCompleted(RunCompleted {
                output: Some(output),
                usage: Some(usage),
            }),
        ];
        let _ = self.commit(cp, evs, RunStatus::Completed).await;
        Ok(())
    }

    async fn fail(&mut self, cp: &Checkpoint, code: &str, message: &str) -> Result<()> {
        let error = ErrorInfo {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        self.run.error = Some(error.clone());
        self.run.usage = Some(self.usage(cp));
        self.run.end_time = Some(to_timestamp(now_micros()));
        let _ = self
            .commit(
                cp,
                vec![Event::RunFailed(RunFailed { error: Some(error) })],
                RunStatus::Failed,
            )
            .await;
        Ok(())
    }

    async fn require_action(&mut self, cp: &Checkpoint) -> Result<()> {
        let calls: Vec<ToolCall> = cp
            .pending
            .iter()
            .filter(|c| c.awaits_decision())
            .map(|c| tool_call_pb(c, None))
            .collect();
        self.run.pending_tool_calls = calls.clone();
        let ev = Event::ApprovalRequired(ApprovalRequired { tool_calls: calls });
        let _ = self.commit(cp, vec![ev], RunStatus::RequiresAction).await;
        Ok(())
    }

    /// Ends the run as `reason` asks: cancelled, handed back to the queue, or left to its new owner.
    async fn stop(&mut self, cp: &Checkpoint, reason: StopReason) -> Result<()> {
        match reason {
            StopReason::LeaseLost => Ok(()),
            StopReason::Shutdown => {
                // Back to the queue with the checkpoint of the last finished step; whoever claims the
                // run next continues from it.
                let _ = self.commit(cp, Vec::new(), RunStatus::Queued).await;
                Ok(())
            }
            StopReason::Cancel => {
                self.run.end_time = Some(to_timestamp(now_micros()));
                self.run.usage = Some(self.usage(cp));
                let ev = Event::RunCancelled(RunCancelled {
                    reason: "cancelled by request".into(),
                });
                let _ = self.commit(cp, vec![ev], RunStatus::Cancelled).await;
                Ok(())
            }
        }
    }

    /// Writes the run (spec, checkpoint, status, usage) and appends the deferred events and `evs`, if
    /// this engine still holds the lease; the writer then publishes the events. A status other than
    /// RUNNING releases the lease.
    async fn commit(
        &mut self,
        cp: &Checkpoint,
        evs: Vec<Event>,
        status: RunStatus,
    ) -> Result<(), LeaseLost> {
        self.run.status = status as i32;
        let mut events = std::mem::take(&mut self.deferred);
        events.extend(evs);
        let change = RunChange {
            checkpoint: Some(cp.encode()),
            usage: Some((cp.input_tokens, cp.output_tokens, cp.cost_usd)),
            ..self.change(status)
        };
        self.send(change, events).await
    }

    /// The run's full state, as a change guarded by this engine's lease.
    fn change(&self, status: RunStatus) -> RunChange {
        RunChange {
            run_id: self.run.id.clone(),
            workspace_id: self.ws.to_owned(),
            guard: Guard::Lease(self.engine.owner.clone()),
            spec: Some(self.run.encode_to_vec()),
            status,
            checkpoint: None,
            usage: None,
            start_time: self.run.start_time.as_ref().and_then(from_timestamp),
            end: matches!(
                status,
                RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
            ),
            release_lease: status != RunStatus::Running,
        }
    }

    async fn send(&mut self, change: RunChange, events: Vec<Event>) -> Result<(), LeaseLost> {
        match self.engine.writer.change(change, events).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.local.stop(StopReason::LeaseLost);
                Err(LeaseLost)
            }
            Err(e) => {
                tracing::warn!(run_id = %self.run.id, error = %e, "run commit failed; the lease will expire and the run resume");
                self.local.stop(StopReason::LeaseLost);
                Err(LeaseLost)
            }
        }
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

pub(super) fn tool_call_pb(c: &PendingCall, arguments: Option<&Value>) -> ToolCall {
    ToolCall {
        id: c.id.clone(),
        name: c.name.clone(),
        arguments: json_struct(arguments.unwrap_or(&c.arguments)),
        requires_confirmation: c.requires_confirmation,
        decision: c.decision.as_ref().map(|d| crate::pb::ToolDecision {
            tool_call_id: c.id.clone(),
            approved: d.approved,
            arguments: d.arguments.as_ref().and_then(json_struct),
            reason: d.reason.clone(),
        }),
    }
}

/// The built-in tool that `config.enable_memory` gives every run with a user.
const MEMORY_TOOL: &str = "memory";
/// Memories put in the system prompt at the start of a run, newest first.
const MEMORIES_IN_PROMPT: u64 = 20;

/// Whether the run has the user's memories: `config.enable_memory` (default on) and a user.
fn memory_enabled(agent: &Agent, run: &Run) -> bool {
    !run.user_id.is_empty()
        && agent
            .config
            .as_ref()
            .and_then(|c| c.enable_memory)
            .unwrap_or(true)
}

/// Whether the run may call `name`: the agent binds it, or it is the memory tool and memory is on.
fn may_call(agent: &Agent, run: &Run, name: &str) -> bool {
    agent.tools.iter().any(|b| b.name == name)
        || (name == MEMORY_TOOL && memory_enabled(agent, run))
}

/// The tools the run may call that this server provides.
fn tool_specs(engine: &Engine, agent: &Agent, run: &Run) -> Vec<ToolSpec> {
    let bound = agent.tools.iter().map(|b| b.name.as_str());
    let memory = (memory_enabled(agent, run) && !agent.tools.iter().any(|b| b.name == MEMORY_TOOL))
        .then_some(MEMORY_TOOL);
    bound
        .chain(memory)
        .filter_map(|name| engine.tools.get(name))
        .map(|t| ToolSpec {
            name: t.name().to_owned(),
            description: t.description().to_owned(),
            parameters: t.parameters(),
        })
        .collect()
}

/// System prompt (the rendered template, or the request's override), the session's recent history,
/// and the user's message.
async fn initial_conversation(
    engine: &Engine,
    ws: &str,
    run: &Run,
    agent: &Agent,
    extras: &RunRequestExtras,
) -> Result<Vec<Message>> {
    let mut messages = Vec::new();
    let mut system = if extras.system_prompt.is_empty() {
        template::render(&agent.template, run, extras)?
    } else {
        extras.system_prompt.clone()
    };
    if memory_enabled(agent, run) {
        let remembered =
            crate::tools::memory::recent(&engine.db, ws, &run.user_id, MEMORIES_IN_PROMPT).await?;
        if !remembered.is_empty() {
            if !system.trim().is_empty() {
                system.push_str("\n\n");
            }
            system.push_str("What you remember about the user (saved with the memory tool):");
            for m in remembered {
                system.push_str("\n- ");
                system.push_str(&m.content);
            }
        }
    }
    if !system.trim().is_empty() {
        messages.push(Message::new(Role::System, system));
    }
    let config = agent.config.clone().unwrap_or_default();
    let history = config.num_history_runs.unwrap_or(3).max(0) as u64;
    if config.enable_history.unwrap_or(true) && !run.session_id.is_empty() && history > 0 {
        let rows = run::Entity::find()
            .filter(run::Column::WorkspaceId.eq(ws))
            .filter(run::Column::SessionId.eq(run.session_id.as_str()))
            .filter(run::Column::Status.eq(RunStatus::Completed as i32))
            .filter(run::Column::Id.ne(run.id.as_str()))
            .order_by_desc(run::Column::CreateTime)
            .limit(history)
            .all(engine.db.reader())
            .await?;
        for r in rows.iter().rev() {
            let Ok(past) = decode_run(&r.spec) else {
                continue;
            };
            messages.push(Message::new(Role::User, user_text(&past)));
            messages.push(Message::new(
                Role::Assistant,
                past.output.map(|o| o.content).unwrap_or_default(),
            ));
        }
    }
    messages.push(Message {
        images: extras.images.clone(),
        ..Message::new(Role::User, user_text(run))
    });
    Ok(messages)
}

/// The run's message, or its input as JSON when it has no message.
fn user_text(run: &Run) -> String {
    if !run.message.is_empty() {
        return run.message.clone();
    }
    match struct_json(run.input.as_ref()) {
        Value::Null => String::new(),
        v => v.to_string(),
    }
}
