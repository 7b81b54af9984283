//! AdminService over gRPC.

use std::sync::Arc;

use tonic::Request;

use super::{AppState, Reply, ok};
use crate::{
    admin::{keys, webhooks},
    auth::{Scope, Scopes, caller},
    pb::{
        ApiKey, CreateApiKeyRequest, CreateApiKeyResponse, CreateWebhookRequest,
        CreateWebhookResponse, DeleteWebhookRequest, DeleteWebhookResponse, GetWorkspaceRequest,
        GetWorkspaceResponse, ListApiKeysRequest, ListApiKeysResponse,
        ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse, ListWebhooksRequest,
        ListWebhooksResponse, RevokeApiKeyRequest, Workspace, admin_service_server::AdminService,
    },
    store::{
        entities::workspace,
        invalidate::{self, Invalidation},
        time::to_timestamp,
    },
};

pub struct AdminApi {
    state: Arc<AppState>,
}

impl AdminApi {
    pub fn new(state: Arc<AppState>) -> Self {
        AdminApi { state }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_api_key(
        &self,
        req: Request<CreateApiKeyRequest>,
    ) -> Reply<CreateApiKeyResponse> {
        let c = caller(&req)?;
        c.require(Scope::Admin)?;
        let r = req.get_ref();
        let scopes = Scopes::parse(&r.scopes, "scopes")?;
        let (api_key, secret) = keys::create(
            self.state.db.writer(),
            &c.workspace_id,
            &r.name,
            scopes,
            None,
        )
        .await?;
        ok(CreateApiKeyResponse {
            api_key: Some(api_key),
            secret,
        })
    }

    async fn list_api_keys(&self, req: Request<ListApiKeysRequest>) -> Reply<ListApiKeysResponse> {
        let c = caller(&req)?;
        c.require(Scope::Admin)?;
        let r = req.get_ref();
        let (api_keys, next_cursor) = keys::list(
            self.state.db.reader(),
            &c.workspace_id,
            r.limit,
            &r.cursor,
            r.include_revoked,
        )
        .await?;
        ok(ListApiKeysResponse {
            api_keys,
            next_cursor,
        })
    }

    async fn revoke_api_key(&self, req: Request<RevokeApiKeyRequest>) -> Reply<ApiKey> {
        let c = caller(&req)?;
        c.require(Scope::Admin)?;
        let key = keys::revoke(self.state.db.writer(), &c.workspace_id, &req.get_ref().id).await?;
        self.state.auth.invalidate_key(&key.id);
        let what = Invalidation::ApiKey {
            key_id: key.id.clone(),
        };
        invalidate::publish(&self.state.db, &what).await?;
        ok(key)
    }

    async fn get_workspace(
        &self,
        req: Request<GetWorkspaceRequest>,
    ) -> Reply<GetWorkspaceResponse> {
        let c = caller(&req)?;
        use sea_orm::EntityTrait;
        let ws = workspace::Entity::find_by_id(c.workspace_id.clone())
            .one(self.state.db.reader())
            .await
            .map_err(crate::error::Error::from)?
            .ok_or_else(|| {
                crate::error::Error::Unauthenticated("the key's workspace no longer exists".into())
            })?;
        let api_key = keys::get(self.state.db.reader(), &c.workspace_id, &c.key_id).await?;
        ok(GetWorkspaceResponse {
            workspace: Some(Workspace {
                id: ws.id,
                name: ws.name,
                create_time: Some(to_timestamp(ws.create_time)),
            }),
            api_key: Some(api_key),
        })
    }

    async fn create_webhook(
        &self,
        req: Request<CreateWebhookRequest>,
    ) -> Reply<CreateWebhookResponse> {
        let c = caller(&req)?;
        c.require(Scope::Admin)?;
        let r = req.get_ref();
        let (webhook, secret) = webhooks::create(
            &self.state.db,
            &c.workspace_id,
            &r.url,
            &r.event_types,
            &r.secret,
        )
        .await?;
        ok(CreateWebhookResponse {
            webhook: Some(webhook),
            secret,
        })
    }

    async fn list_webhooks(
        &self,
        req: Request<ListWebhooksRequest>,
    ) -> Reply<ListWebhooksResponse> {
        let c = caller(&req)?;
        c.require(Scope::Admin)?;
        let r = req.get_ref();
        let (webhooks, next_cursor) =
            webhooks::list(self.state.db.reader(), &c.workspace_id, r.limit, &r.cursor).await?;
        ok(ListWebhooksResponse {
            webhooks,
            next_cursor,
        })
    }

    async fn delete_webhook(
        &self,
        req: Request<DeleteWebhookRequest>,
    ) -> Reply<DeleteWebhookResponse> {
        let c = caller(&req)?;
        c.require(Scope::Admin)?;
        let id = req.into_inner().id;
        webhooks::delete(&self.state.db, &c.workspace_id, &id).await?;
        ok(DeleteWebhookResponse { id })
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<ListWebhookDeliveriesRequest>,
    ) -> Reply<ListWebhookDeliveriesResponse> {
        let c = caller(&req)?;
        c.require(Scope::Admin)?;
        let r = req.get_ref();
        let (deliveries, next_cursor) = webhooks::list_deliveries(
            self.state.db.reader(),
            &c.workspace_id,
            &r.webhook_id,
            r.limit,
            &r.cursor,
        )
        .await?;
        ok(ListWebhookDeliveriesResponse {
            deliveries,
            next_cursor,
        })
    }
}
