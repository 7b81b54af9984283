//! AgentService over gRPC.

use std::sync::Arc;

use tonic::Request;

use super::{AppState, Reply, ok};
use crate::{
    auth::{Scope, caller},
    error::Error,
    pb::{
        Agent, BatchGetAgentsRequest, BatchGetAgentsResponse, CreateAgentRequest,
        DeleteAgentRequest, DeleteAgentResponse, GetAgentRequest, GetAgentVersionRequest,
        GetStoreAgentRequest, HireAgentRequest, ListActiveAgentsRequest, ListActiveAgentsResponse,
        ListAgentVersionsRequest, ListAgentVersionsResponse, ListAgentsRequest, ListAgentsResponse,
        ListStoreAgentsRequest, ListStoreAgentsResponse, StoreAgent, UpdateAgentRequest,
        agent_service_server::AgentService,
    },
};

pub struct AgentApi {
    state: Arc<AppState>,
}

impl AgentApi {
    pub fn new(state: Arc<AppState>) -> Self {
        AgentApi { state }
    }
}

/// An agent id from a request: empty is "required"; anything that is not a slug cannot exist.
fn agent_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    crate::agents::validate::check_slug(field, id)
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn create_agent(&self, req: Request<CreateAgentRequest>) -> Reply<Agent> {
        let c = caller(&req)?;
        c.require(Scope::AgentsWrite)?;
        let agent = req
            .into_inner()
            .agent
            .ok_or_else(|| Error::invalid("agent", "is required"))?;
        if !agent.id.is_empty() {
            agent_id("agent.id", &agent.id)?;
        }
        ok(self.state.agents.create(&c.workspace_id, agent).await?)
    }

    async fn get_agent(&self, req: Request<GetAgentRequest>) -> Reply<Agent> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let id = &req.get_ref().id;
        agent_id("id", id)?;
        ok(Agent::clone(
            &*self.state.agents.get(&c.workspace_id, id).await?,
        ))
    }

    async fn batch_get_agents(
        &self,
        req: Request<BatchGetAgentsRequest>,
    ) -> Reply<BatchGetAgentsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let ids = &req.get_ref().agent_ids;
        for (i, id) in ids.iter().enumerate() {
            agent_id(&format!("agent_ids[{i}]"), id)?;
        }
        let (agents, missing_ids) = self.state.agents.batch_get(&c.workspace_id, ids).await?;
        ok(BatchGetAgentsResponse {
            agents,
            missing_ids,
        })
    }

    async fn list_agents(&self, req: Request<ListAgentsRequest>) -> Reply<ListAgentsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let (agents, next_cursor) = self
            .state
            .agents
            .list(&c.workspace_id, req.get_ref())
            .await?;
        ok(ListAgentsResponse {
            agents,
            next_cursor,
        })
    }

    async fn update_agent(&self, req: Request<UpdateAgentRequest>) -> Reply<Agent> {
        let c = caller(&req)?;
        c.require(Scope::AgentsWrite)?;
        let r = req.into_inner();
        let patch = r
            .agent
            .ok_or_else(|| Error::invalid("agent", "is required"))?;
        agent_id("agent.id", &patch.id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        ok(self
            .state
            .agents
            .update(&c.workspace_id, &patch, &paths)
            .await?)
    }

    async fn delete_agent(&self, req: Request<DeleteAgentRequest>) -> Reply<DeleteAgentResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsWrite)?;
        let id = req.into_inner().id;
        agent_id("id", &id)?;
        self.state.agents.delete(&c.workspace_id, &id).await?;
        ok(DeleteAgentResponse {
            message: format!("Agent {id} deleted successfully"),
            id,
        })
    }

    async fn list_agent_versions(
        &self,
        req: Request<ListAgentVersionsRequest>,
    ) -> Reply<ListAgentVersionsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        agent_id("id", &r.id)?;
        let (versions, next_cursor) = self
            .state
            .agents
            .list_versions(&c.workspace_id, &r.id, r.limit, &r.cursor)
            .await?;
        ok(ListAgentVersionsResponse {
            versions,
            next_cursor,
        })
    }

    async fn get_agent_version(&self, req: Request<GetAgentVersionRequest>) -> Reply<Agent> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        agent_id("id", &r.id)?;
        ok(self
            .state
            .agents
            .get_version(&c.workspace_id, &r.id, r.version)
            .await?)
    }

    async fn list_store_agents(
        &self,
        req: Request<ListStoreAgentsRequest>,
    ) -> Reply<ListStoreAgentsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let (agents, next_cursor) = self.state.agents.list_store(req.get_ref()).await?;
        ok(ListStoreAgentsResponse {
            agents,
            next_cursor,
        })
    }

    async fn get_store_agent(&self, req: Request<GetStoreAgentRequest>) -> Reply<StoreAgent> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        if r.slug.is_empty() {
            return Err(Error::invalid("slug", "is required").into());
        }
        ok(self.state.agents.get_store(&r.slug, r.version).await?)
    }

    async fn hire_agent(&self, req: Request<HireAgentRequest>) -> Reply<Agent> {
        let c = caller(&req)?;
        c.require(Scope::AgentsWrite)?;
        if req.get_ref().slug.is_empty() {
            return Err(Error::invalid("slug", "is required").into());
        }
        ok(self
            .state
            .agents
            .hire(&c.workspace_id, req.get_ref())
            .await?)
    }

    async fn list_active_agents(
        &self,
        req: Request<ListActiveAgentsRequest>,
    ) -> Reply<ListActiveAgentsResponse> {
        let c = caller(&req)?;
        c.require(Scope::AgentsRead)?;
        let r = req.get_ref();
        let (agents, next_cursor) = self
            .state
            .agents
            .list_active(&c.workspace_id, r.limit, &r.cursor)
            .await?;
        ok(ListActiveAgentsResponse {
            agents,
            next_cursor,
        })
    }
}
