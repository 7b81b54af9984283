//! RunService over gRPC: thin adapters over `runs::Runs`. Chat and CommitChat answer seed 002's
//! ChatResponse shape; ApproveAction/RejectAction are seed 004's one-action decisions.

use std::sync::Arc;

use futures_util::StreamExt;
use tonic::{Request, Status};

use super::{AppState, Reply, ok};
use crate::{
    auth::{Scope, caller},
    error::Error,
    pb::{
        ApproveActionRequest, CancelRunRequest, ChatRequest, ChatResponse, ChatTool,
        CommitChatRequest, DeleteMemoryRequest, DeleteMemoryResponse, DeleteSessionRequest,
        DeleteSessionResponse, ExecuteToolRequest, ExecuteToolResponse, GetRunRequest,
        GetSessionRequest, GetUsageRequest, GetUsageResponse, ListMemoriesRequest,
        ListMemoriesResponse, ListPendingApprovalsRequest, ListPendingApprovalsResponse,
        ListRunEventsRequest, ListRunEventsResponse, ListRunsRequest, ListRunsResponse,
        ListSessionsRequest, ListSessionsResponse, ModelSettings, RejectActionRequest, Run,
        RunStatus, RunTrigger, Session, StartRunRequest, SubmitToolDecisionsRequest, ToolDecision,
        TriggerAgentRequest, TriggerAgentResponse, WatchRunRequest, run_service_server::RunService,
    },
    runs::struct_json,
    tools::ToolContext,
};

pub struct RunApi {
    state: Arc<AppState>,
}

impl RunApi {
    pub fn new(state: Arc<AppState>) -> Self {
        RunApi { state }
    }

    /// Waits until the run ends or needs a human, and returns it.
    async fn settle(&self, ws: &str, run_id: &str) -> Result<Run, Error> {
        let mut s = self.state.runs.watch(ws, run_id, 0).await?;
        while let Some(ev) = s.next().await {
            ev.map_err(|st| Error::Unavailable(st.message().to_owned()))?;
        }
        self.state.runs.get(ws, run_id).await
    }
}

fn chat_start(req: &ChatRequest) -> StartRunRequest {
    StartRunRequest {
        agent_id: req.agent_id.clone(),
        message: req.message.clone(),
        session_id: req.session_id.clone(),
        user_id: req.user_id.clone(),
        idempotency_key: req.idempotency_key.clone(),
        model: req.model.clone(),
        system_prompt: req.system_prompt.clone(),
        model_settings: (req.temperature.is_some() || req.max_tokens.is_some()).then_some(
            ModelSettings {
                temperature: req.temperature,
                max_tokens: req.max_tokens,
                top_p: None,
            },
        ),
        user_profile: req.user_profile.clone(),
        tenant_profile: req.tenant_profile.clone(),
        timezone: req.timezone.clone(),
        locale: req.locale.clone(),
        images: req.images.clone(),
        ..Default::default()
    }
}

/// Seed 002's ChatResponse of a settled run.
fn chat_response(run: Run) -> ChatResponse {
    let status = match RunStatus::try_from(run.status) {
        Ok(RunStatus::Completed) => "completed",
        Ok(RunStatus::RequiresAction) => "paused",
        Ok(RunStatus::Cancelled) => "cancelled",
        Ok(RunStatus::Failed) => "failed",
        _ => "running",
    };
    ChatResponse {
        content: run.output.map(|o| o.content).unwrap_or_default(),
        agent_id: run.agent_id,
        session_id: run.session_id,
        model: run.model,
        token_usage: run.usage,
        status: status.to_owned(),
        run_id: run.id,
        tools: run
            .pending_tool_calls
            .into_iter()
            .map(|c| ChatTool {
                tool_call_id: c.id,
                tool_name: c.name,
                requires_confirmation: c.requires_confirmation,
                tool_args: c.arguments,
                result: None,
            })
            .collect(),
        error: run.error,
    }
}

#[tonic::async_trait]
impl RunService for RunApi {
    async fn start_run(&self, req: Request<StartRunRequest>) -> Reply<Run> {
        let c = caller(&req)?;
        c.require(Scope::AgentsTrigger)?;
        let run = self
            .state
            .runs
            .start(
                &self.state.agents,
                &c.workspace_id,
                req.into_inner(),
                RunTrigger::default(),
            )
            .await?;
        ok(run)
    }

    async fn watch_run(&self, req: Request<WatchRunRequest>) -> Reply<crate::runs::WatchStream> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        ok(self
            .state
            .runs
            .watch(&c.workspace_id, &r.run_id, r.after_seq)
            .await?)
    }

    async fn chat(&self, req: Request<ChatRequest>) -> Reply<ChatResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsTrigger)?;
        let start = chat_start(req.get_ref());
        let run = self
            .state
            .runs
            .start(
                &self.state.agents,
                &c.workspace_id,
                start,
                RunTrigger::default(),
            )
            .await?;
        ok(chat_response(self.settle(&c.workspace_id, &run.id).await?))
    }

    async fn chat_stream(&self, req: Request<ChatRequest>) -> Reply<crate::runs::WatchStream> {
        let c = caller(&req)?;
        c.require(Scope::AgentsTrigger)?;
        let start = chat_start(req.get_ref());
        let run = self
            .state
            .runs
            .start(
                &self.state.agents,
                &c.workspace_id,
                start,
                RunTrigger::default(),
            )
            .await?;
        ok(self.state.runs.watch(&c.workspace_id, &run.id, 0).await?)
    }

    async fn commit_chat(&self, req: Request<CommitChatRequest>) -> Reply<ChatResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsApprove)?;
        let r = req.into_inner();
        let decisions: Vec<ToolDecision> = r
            .updated_tools
            .into_iter()
            .map(|t| ToolDecision {
                tool_call_id: t.tool_call_id,
                approved: t.confirmed,
                arguments: t.tool_args,
                reason: String::new(),
            })
            .collect();
        let run = self.state.runs.get(&c.workspace_id, &r.run_id).await?;
        if !r.agent_id.is_empty() && run.agent_id != r.agent_id {
            return Err(Error::not_found(format!("run {:?} not found", r.run_id)).into());
        }
        self.state
            .runs
            .decide(&c.workspace_id, &r.run_id, &decisions)
            .await?;
        ok(chat_response(
            self.settle(&c.workspace_id, &r.run_id).await?,
        ))
    }

    async fn submit_tool_decisions(&self, req: Request<SubmitToolDecisionsRequest>) -> Reply<Run> {
        let c = caller(&req)?;
        c.require(Scope::AgentsApprove)?;
        let r = req.get_ref();
        ok(self
            .state
            .runs
            .decide(&c.workspace_id, &r.run_id, &r.decisions)
            .await?)
    }

    async fn approve_action(&self, req: Request<ApproveActionRequest>) -> Reply<Run> {
        let c = caller(&req)?;
        c.require(Scope::AgentsApprove)?;
        let r = req.into_inner();
        let id = self
            .action_call_id(&c.workspace_id, &r.run_id, &r.contact_id, r.action_index)
            .await?;
        let d = ToolDecision {
            tool_call_id: id,
            approved: true,
            arguments: r.arguments,
            reason: r.reason,
        };
        ok(self
            .state
            .runs
            .decide(&c.workspace_id, &r.run_id, &[d])
            .await?)
    }

    async fn reject_action(&self, req: Request<RejectActionRequest>) -> Reply<Run> {
        let c = caller(&req)?;
        c.require(Scope::AgentsApprove)?;
        let r = req.into_inner();
        let id = self
            .action_call_id(&c.workspace_id, &r.run_id, &r.contact_id, r.action_index)
            .await?;
        let d = ToolDecision {
            tool_call_id: id,
            approved: false,
            arguments: None,
            reason: r.reason,
        };
        ok(self
            .state
            .runs
            .decide(&c.workspace_id, &r.run_id, &[d])
            .await?)
    }

    async fn get_run(&self, req: Request<GetRunRequest>) -> Reply<Run> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        ok(self
            .state
            .runs
            .get(&c.workspace_id, &req.get_ref().run_id)
            .await?)
    }

    async fn list_runs(&self, req: Request<ListRunsRequest>) -> Reply<ListRunsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let (runs, next_cursor) = self.state.runs.list(&c.workspace_id, req.get_ref()).await?;
        ok(ListRunsResponse { runs, next_cursor })
    }

    async fn list_run_events(
        &self,
        req: Request<ListRunEventsRequest>,
    ) -> Reply<ListRunEventsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        let (events, next_cursor) = self
            .state
            .runs
            .list_events(&c.workspace_id, &r.run_id, r.after_seq, r.limit, &r.cursor)
            .await?;
        ok(ListRunEventsResponse {
            events,
            next_cursor,
        })
    }

    async fn cancel_run(&self, req: Request<CancelRunRequest>) -> Reply<Run> {
        let c = caller(&req)?;
        c.require(Scope::AgentsTrigger)?;
        let r = req.get_ref();
        ok(self
            .state
            .runs
            .cancel(&c.workspace_id, &r.run_id, &r.reason)
            .await?)
    }

    async fn list_pending_approvals(
        &self,
        req: Request<ListPendingApprovalsRequest>,
    ) -> Reply<ListPendingApprovalsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        let (tool_calls, next_cursor) = self
            .state
            .runs
            .pending_approvals(&c.workspace_id, r.limit, &r.cursor)
            .await?;
        ok(ListPendingApprovalsResponse {
            tool_calls,
            next_cursor,
        })
    }
    async fn execute_tool(&self, req: Request<ExecuteToolRequest>) -> Reply<ExecuteToolResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsTrigger)?;
        let r = req.into_inner();
        // Seed 002 names the tool as toolkit method.
        let name = if r.tool_name.is_empty() {
            r.method_name.clone()
        } else {
            r.tool_name.clone()
        };
        if name.is_empty() {
            return Err(Error::invalid("tool_name", "is required").into());
        }
        crate::agents::validate::check_slug("agent_id", &r.agent_id)?;
        let agent = self.state.agents.get(&c.workspace_id, &r.agent_id).await?;
        let binding = agent.tools.iter().find(|b| b.name == name).ok_or_else(|| {
            Error::not_found(format!("agent {:?} has no tool {name:?}", agent.id))
        })?;
        let tool = self.state.tools.get(&name).ok_or_else(|| {
            Error::FailedPrecondition(format!("tool {name:?} is not available on this server"))
        })?;
        let ctx = ToolContext {
            workspace_id: c.workspace_id.clone(),
            user_id: r.user_id.clone(),
            session_id: r.session_id.clone(),
            run_id: String::new(),
            config: struct_json(binding.config.as_ref()),
        };
        let args = match struct_json(r.arguments.as_ref()) {
            serde_json::Value::Null => serde_json::json!({}),
            v => v,
        };
        match tool.call(&ctx, args).await {
            Ok(v) => ok(ExecuteToolResponse {
                status: "success".into(),
                message: "Toolkit method executed successfully".into(),
                result: serde_json::from_value(v).ok(),
            }),
            Err(e) if e.code == "invalid_arguments" => {
                Err(Error::invalid("arguments", e.message).into())
            }
            Err(e) => ok(ExecuteToolResponse {
                status: "error".into(),
                message: format!("{}: {}", e.code, e.message),
                result: None,
            }),
        }
    }

    async fn trigger_agent(
        &self,
        req: Request<TriggerAgentRequest>,
    ) -> Reply<TriggerAgentResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsTrigger)?;
        ok(self
            .state
            .runs
            .trigger(&self.state.agents, &c.workspace_id, req.into_inner())
            .await?)
    }

    async fn get_usage(&self, req: Request<GetUsageRequest>) -> Reply<GetUsageResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        ok(self
            .state
            .runs
            .usage(&c.workspace_id, req.get_ref())
            .await?)
    }

    async fn get_session(&self, req: Request<GetSessionRequest>) -> Reply<Session> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        ok(self
            .state
            .runs
            .session(&c.workspace_id, &req.get_ref().session_id)
            .await?)
    }

    async fn list_sessions(
        &self,
        req: Request<ListSessionsRequest>,
    ) -> Reply<ListSessionsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        let (sessions, next_cursor) = self
            .state
            .runs
            .sessions(&c.workspace_id, &r.agent_id, &r.user_id, r.limit, &r.cursor)
            .await?;
        ok(ListSessionsResponse {
            sessions,
            next_cursor,
        })
    }

    async fn delete_session(
        &self,
        req: Request<DeleteSessionRequest>,
    ) -> Reply<DeleteSessionResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsWrite)?;
        let session_id = req.into_inner().session_id;
        self.state
            .runs
            .delete_session(&c.workspace_id, &session_id)
            .await?;
        ok(DeleteSessionResponse { session_id })
    }

    async fn list_memories(
        &self,
        req: Request<ListMemoriesRequest>,
    ) -> Reply<ListMemoriesResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        let (memories, next_cursor) = self
            .state
            .runs
            .memories(&c.workspace_id, &r.user_id, r.limit, &r.cursor)
            .await?;
        ok(ListMemoriesResponse {
            memories,
            next_cursor,
        })
    }

    async fn delete_memory(
        &self,
        req: Request<DeleteMemoryRequest>,
    ) -> Reply<DeleteMemoryResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsWrite)?;
        let id = req.into_inner().id;
        self.state.runs.delete_memory(&c.workspace_id, &id).await?;
        ok(DeleteMemoryResponse { id })
    }
}

impl RunApi {
    /// Seed 004's action address: `contact_id` is the run's target ("-" for a run without one) and
    /// `action_index` indexes its pending tool calls.
    async fn action_call_id(
        &self,
        ws: &str,
        run_id: &str,
        contact_id: &str,
        index: i32,
    ) -> Result<String, Status> {
        let run = self.state.runs.get(ws, run_id).await?;
        let target = run
            .trigger
            .as_ref()
            .and_then(|t| t.target.as_ref())
            .map(|t| t.id.as_str())
            .unwrap_or("-");
        let target = if target.is_empty() { "-" } else { target };
        if contact_id != target {
            return Err(
                Error::not_found(format!("run {run_id:?} has no contact {contact_id:?}")).into(),
            );
        }
        let call = usize::try_from(index)
            .ok()
            .and_then(|i| run.pending_tool_calls.get(i))
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("run {run_id:?} has no pending action {index}"))
            })?;
        Ok(call.id.clone())
    }
}
