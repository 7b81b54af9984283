//! FlowService over gRPC: thin adapters over `flows::Flows`.

use std::sync::Arc;

use tonic::Request;

use super::{AppState, Reply, ok};
use crate::{
    auth::{Scope, caller},
    error::Error,
    flows::FlowWatchStream,
    pb::{
        ArchiveFlowVersionRequest, CancelFlowRunRequest, CreateFlowFromTemplateRequest,
        CreateFlowRequest, CreateTriggerRequest, DeleteFlowRequest, DeleteFlowResponse,
        DeleteTriggerRequest, DeleteTriggerResponse, Flow, FlowRun, FlowTemplate, GetFlowRequest,
        GetFlowRunRequest, GetFlowTemplateRequest, ListFlowRunsRequest, ListFlowRunsResponse,
        ListFlowTemplatesRequest, ListFlowTemplatesResponse, ListFlowVersionsRequest,
        ListFlowVersionsResponse, ListFlowsRequest, ListFlowsResponse, ListTriggersRequest,
        ListTriggersResponse, PauseFlowRunRequest, PublishEventRequest, PublishEventResponse,
        ResumeFlowRunRequest, Trigger, TriggerFlowRequest, UpdateFlowRequest, WatchFlowRunRequest,
        flow_service_server::FlowService,
    },
};

pub struct FlowApi {
    state: Arc<AppState>,
}

impl FlowApi {
    pub fn new(state: Arc<AppState>) -> Self {
        FlowApi { state }
    }
}

#[tonic::async_trait]
impl FlowService for FlowApi {
    async fn create_flow(&self, req: Request<CreateFlowRequest>) -> Reply<Flow> {
        let c = caller(&req)?;
        c.require(Scope::FlowsWrite)?;
        let flow = req
            .into_inner()
            .flow
            .ok_or_else(|| Error::invalid("flow", "is required"))?;
        ok(self.state.flows.create(&c.workspace_id, flow).await?)
    }

    async fn get_flow(&self, req: Request<GetFlowRequest>) -> Reply<Flow> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        let r = req.get_ref();
        ok(self
            .state
            .flows
            .get(&c.workspace_id, &r.id, r.version)
            .await?)
    }

    async fn list_flows(&self, req: Request<ListFlowsRequest>) -> Reply<ListFlowsResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        let r = req.get_ref();
        let (flows, next_cursor) = self
            .state
            .flows
            .list(&c.workspace_id, r.limit, &r.cursor)
            .await?;
        ok(ListFlowsResponse { flows, next_cursor })
    }

    async fn update_flow(&self, req: Request<UpdateFlowRequest>) -> Reply<Flow> {
        let c = caller(&req)?;
        c.require(Scope::FlowsWrite)?;
        ok(self
            .state
            .flows
            .update(&c.workspace_id, req.get_ref())
            .await?)
    }

    async fn delete_flow(&self, req: Request<DeleteFlowRequest>) -> Reply<DeleteFlowResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsWrite)?;
        let id = req.into_inner().id;
        self.state.flows.delete(&c.workspace_id, &id).await?;
        ok(DeleteFlowResponse { id })
    }

    async fn list_flow_versions(
        &self,
        req: Request<ListFlowVersionsRequest>,
    ) -> Reply<ListFlowVersionsResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        let r = req.get_ref();
        let (versions, next_cursor) = self
            .state
            .flows
            .list_versions(
                &c.workspace_id,
                &r.id,
                r.limit,
                &r.cursor,
                r.include_archived,
            )
            .await?;
        ok(ListFlowVersionsResponse {
            versions,
            next_cursor,
        })
    }

    async fn archive_flow_version(&self, req: Request<ArchiveFlowVersionRequest>) -> Reply<Flow> {
        let c = caller(&req)?;
        c.require(Scope::FlowsWrite)?;
        let r = req.get_ref();
        ok(self
            .state
            .flows
            .archive_version(&c.workspace_id, &r.flow_id, r.version)
            .await?)
    }

    async fn list_flow_templates(
        &self,
        req: Request<ListFlowTemplatesRequest>,
    ) -> Reply<ListFlowTemplatesResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        let (templates, next_cursor) = self.state.flows.list_templates(req.get_ref())?;
        ok(ListFlowTemplatesResponse {
            templates,
            next_cursor,
        })
    }

    async fn get_flow_template(&self, req: Request<GetFlowTemplateRequest>) -> Reply<FlowTemplate> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        ok(self.state.flows.template(&req.get_ref().slug)?)
    }

    async fn create_flow_from_template(
        &self,
        req: Request<CreateFlowFromTemplateRequest>,
    ) -> Reply<Flow> {
        let c = caller(&req)?;
        c.require(Scope::FlowsWrite)?;
        ok(self
            .state
            .flows
            .create_from_template(&c.workspace_id, req.get_ref())
            .await?)
    }

    async fn trigger_flow(&self, req: Request<TriggerFlowRequest>) -> Reply<FlowRun> {
        let c = caller(&req)?;
        c.require(Scope::FlowsTrigger)?;
        ok(self
            .state
            .flows
            .trigger(&c.workspace_id, req.into_inner())
            .await?)
    }

    async fn watch_flow_run(&self, req: Request<WatchFlowRunRequest>) -> Reply<FlowWatchStream> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        let r = req.get_ref();
        ok(self
            .state
            .flows
            .watch(&c.workspace_id, &r.flow_run_id, r.after_seq)
            .await?)
    }

    async fn get_flow_run(&self, req: Request<GetFlowRunRequest>) -> Reply<FlowRun> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        ok(self
            .state
            .flows
            .get_run(&c.workspace_id, &req.get_ref().flow_run_id)
            .await?)
    }

    async fn list_flow_runs(
        &self,
        req: Request<ListFlowRunsRequest>,
    ) -> Reply<ListFlowRunsResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        let (flow_runs, next_cursor) = self
            .state
            .flows
            .list_runs(&c.workspace_id, req.get_ref())
            .await?;
        ok(ListFlowRunsResponse {
            flow_runs,
            next_cursor,
        })
    }

    async fn pause_flow_run(&self, req: Request<PauseFlowRunRequest>) -> Reply<FlowRun> {
        let c = caller(&req)?;
        c.require(Scope::FlowsTrigger)?;
        let r = req.get_ref();
        ok(self
            .state
            .flows
            .pause(&c.workspace_id, &r.flow_run_id, &r.reason)
            .await?)
    }

    async fn resume_flow_run(&self, req: Request<ResumeFlowRunRequest>) -> Reply<FlowRun> {
        let c = caller(&req)?;
        c.require(Scope::FlowsTrigger)?;
        let r = req.get_ref();
        ok(self
            .state
            .flows
            .resume(
                &c.workspace_id,
                &r.flow_run_id,
                r.approval.as_ref(),
                &c.key_id,
            )
            .await?)
    }

    async fn cancel_flow_run(&self, req: Request<CancelFlowRunRequest>) -> Reply<FlowRun> {
        let c = caller(&req)?;
        c.require(Scope::FlowsTrigger)?;
        let r = req.get_ref();
        ok(self
            .state
            .flows
            .cancel(&self.state.runs, &c.workspace_id, &r.flow_run_id, &r.reason)
            .await?)
    }

    async fn create_trigger(&self, req: Request<CreateTriggerRequest>) -> Reply<Trigger> {
        let c = caller(&req)?;
        c.require(Scope::FlowsWrite)?;
        let t = req
            .into_inner()
            .trigger
            .ok_or_else(|| Error::invalid("trigger", "is required"))?;
        ok(self.state.flows.create_trigger(&c.workspace_id, t).await?)
    }

    async fn list_triggers(
        &self,
        req: Request<ListTriggersRequest>,
    ) -> Reply<ListTriggersResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsRead)?;
        let r = req.get_ref();
        let (triggers, next_cursor) = self
            .state
            .flows
            .list_triggers(&c.workspace_id, &r.flow_id, r.limit, &r.cursor)
            .await?;
        ok(ListTriggersResponse {
            triggers,
            next_cursor,
        })
    }

    async fn delete_trigger(
        &self,
        req: Request<DeleteTriggerRequest>,
    ) -> Reply<DeleteTriggerResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsWrite)?;
        let id = req.into_inner().id;
        self.state
            .flows
            .delete_trigger(&c.workspace_id, &id)
            .await?;
        ok(DeleteTriggerResponse { id })
    }

    async fn publish_event(
        &self,
        req: Request<PublishEventRequest>,
    ) -> Reply<PublishEventResponse> {
        let c = caller(&req)?;
        c.require(Scope::FlowsTrigger)?;
        ok(self
            .state
            .flows
            .publish(&c.workspace_id, req.into_inner())
            .await?)
    }
}
