//! Workspaces, API keys, agents with their immutable versions, hires, runs, and webhooks.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_init"
    }
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    CreateTime,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    WorkspaceId,
    Name,
    Prefix,
    KeyHash,
    Scopes,
    CreateTime,
    RevokeTime,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    WorkspaceId,
    Id,
    Name,
    Description,
    Version,
    Enabled,
    Visibility,
    Category,
    Tags,
    Capabilities,
    PlaybookTemplate,
    Hired,
    Spec,
    CreateTime,
    UpdateTime,
    DeleteTime,
}

#[derive(DeriveIden)]
enum AgentVersions {
    Table,
    WorkspaceId,
    AgentId,
    Version,
    Spec,
    CreateTime,
}

#[derive(DeriveIden)]
enum Hires {
    Table,
    WorkspaceId,
    AgentId,
    SourceSlug,
    SourceVersion,
    Bindings,
    CreateTime,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    WorkspaceId,
    AgentId,
    AgentVersion,
    SessionId,
    UserId,
    Status,
    TriggerSource,
    IdempotencyKey,
    LeaseOwner,
    LeaseExpireTime,
    Spec,
    CreateTime,
    StartTime,
    EndTime,
}

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    WorkspaceId,
    Url,
    EventTypes,
    Secret,
    CreateTime,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    WorkspaceId,
    EventType,
    EventId,
    Payload,
    Status,
    Attempts,
    LastStatusCode,
    LastError,
    NextAttemptTime,
    CreateTime,
    DeliverTime,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(64).not_null().to_owned()
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().default("").to_owned()
}

fn time(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn time_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().to_owned()
}

fn fk_workspace(from: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from_col(from)
        .to(Workspaces::Table, Workspaces::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Workspaces::Table)
                .col(id(Workspaces::Id).primary_key())
                .col(
                    ColumnDef::new(Workspaces::Name)
                        .string_len(255)
                        .not_null()
                        .unique_key(),
                )
                .col(time(Workspaces::CreateTime))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .col(id(ApiKeys::Id).primary_key())
                .col(id(ApiKeys::WorkspaceId))
                .col(text(ApiKeys::Name))
                .col(
                    ColumnDef::new(ApiKeys::Prefix)
                        .string_len(64)
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new(ApiKeys::KeyHash).string_len(128).not_null())
                .col(text(ApiKeys::Scopes))
                .col(time(ApiKeys::CreateTime))
                .col(time_null(ApiKeys::RevokeTime))
                .foreign_key(
                    &mut fk_workspace(ApiKeys::WorkspaceId)
                        .from_tbl(ApiKeys::Table)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("api_keys_by_workspace")
                .table(ApiKeys::Table)
                .col(ApiKeys::WorkspaceId)
                .col(ApiKeys::CreateTime)
                .col(ApiKeys::Id)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Agents::Table)
                .col(id(Agents::WorkspaceId))
                .col(ColumnDef::new(Agents::Id).string_len(255).not_null())
                .col(ColumnDef::new(Agents::Name).string_len(255).not_null())
                .col(text(Agents::Description))
                .col(ColumnDef::new(Agents::Version).big_integer().not_null())
                .col(ColumnDef::new(Agents::Enabled).boolean().not_null())
                .col(ColumnDef::new(Agents::Visibility).integer().not_null())
                .col(text(Agents::Category))
                .col(text(Agents::Tags))
                .col(text(Agents::Capabilities))
                .col(text(Agents::PlaybookTemplate))
                .col(
                    ColumnDef::new(Agents::Hired)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(ColumnDef::new(Agents::Spec).blob().not_null())
                .col(time(Agents::CreateTime))
                .col(time(Agents::UpdateTime))
                .col(time_null(Agents::DeleteTime))
                .primary_key(Index::create().col(Agents::WorkspaceId).col(Agents::Id))
                .foreign_key(
                    &mut fk_workspace(Agents::WorkspaceId)
                        .from_tbl(Agents::Table)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("agents_by_create_time")
                .table(Agents::Table)
                .col(Agents::WorkspaceId)
                .col(Agents::CreateTime)
                .col(Agents::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("agents_public")
                .table(Agents::Table)
                .col(Agents::Visibility)
                .col(Agents::WorkspaceId)
                .col(Agents::Id)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AgentVersions::Table)
                .col(id(AgentVersions::WorkspaceId))
                .col(
                    ColumnDef::new(AgentVersions::AgentId)
                        .string_len(255)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AgentVersions::Version)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(AgentVersions::Spec).blob().not_null())
                .col(time(AgentVersions::CreateTime))
                .primary_key(
                    Index::create()
                        .col(AgentVersions::WorkspaceId)
                        .col(AgentVersions::AgentId)
                        .col(AgentVersions::Version),
                )
                .foreign_key(
                    &mut fk_workspace(AgentVersions::WorkspaceId)
                        .from_tbl(AgentVersions::Table)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Hires::Table)
                .col(id(Hires::WorkspaceId))
                .col(ColumnDef::new(Hires::AgentId).string_len(255).not_null())
                .col(ColumnDef::new(Hires::SourceSlug).string_len(512).not_null())
                .col(
                    ColumnDef::new(Hires::SourceVersion)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(Hires::Bindings).blob().not_null())
                .col(time(Hires::CreateTime))
                .primary_key(Index::create().col(Hires::WorkspaceId).col(Hires::AgentId))
                .foreign_key(
                    &mut fk_workspace(Hires::WorkspaceId)
                        .from_tbl(Hires::Table)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Runs::Table)
                .col(id(Runs::Id).primary_key())
                .col(id(Runs::WorkspaceId))
                .col(ColumnDef::new(Runs::AgentId).string_len(255).not_null())
                .col(ColumnDef::new(Runs::AgentVersion).big_integer().not_null())
                .col(text(Runs::SessionId))
                .col(text(Runs::UserId))
                .col(ColumnDef::new(Runs::Status).integer().not_null())
                .col(ColumnDef::new(Runs::TriggerSource).integer().not_null())
                .col(ColumnDef::new(Runs::IdempotencyKey).string_len(255).null())
                .col(ColumnDef::new(Runs::LeaseOwner).string_len(64).null())
                .col(time_null(Runs::LeaseExpireTime))
                .col(ColumnDef::new(Runs::Spec).blob().not_null())
                .col(time(Runs::CreateTime))
                .col(time_null(Runs::StartTime))
                .col(time_null(Runs::EndTime))
                .foreign_key(
                    &mut fk_workspace(Runs::WorkspaceId)
                        .from_tbl(Runs::Table)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("runs_by_agent")
                .table(Runs::Table)
                .col(Runs::WorkspaceId)
                .col(Runs::AgentId)
                .col(Runs::CreateTime)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("runs_by_idempotency_key")
                .table(Runs::Table)
                .col(Runs::WorkspaceId)
                .col(Runs::IdempotencyKey)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("runs_claimable")
                .table(Runs::Table)
                .col(Runs::Status)
                .col(Runs::LeaseExpireTime)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Webhooks::Table)
                .col(id(Webhooks::Id).primary_key())
                .col(id(Webhooks::WorkspaceId))
                .col(ColumnDef::new(Webhooks::Url).string_len(2048).not_null())
                .col(text(Webhooks::EventTypes))
                .col(ColumnDef::new(Webhooks::Secret).string_len(255).not_null())
                .col(time(Webhooks::CreateTime))
                .foreign_key(
                    &mut fk_workspace(Webhooks::WorkspaceId)
                        .from_tbl(Webhooks::Table)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("webhooks_by_workspace")
                .table(Webhooks::Table)
                .col(Webhooks::WorkspaceId)
                .col(Webhooks::CreateTime)
                .col(Webhooks::Id)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(WebhookDeliveries::Table)
                .col(id(WebhookDeliveries::Id).primary_key())
                .col(id(WebhookDeliveries::WebhookId))
                .col(id(WebhookDeliveries::WorkspaceId))
                .col(
                    ColumnDef::new(WebhookDeliveries::EventType)
                        .string_len(64)
                        .not_null(),
                )
                .col(id(WebhookDeliveries::EventId))
                .col(text(WebhookDeliveries::Payload))
                .col(
                    ColumnDef::new(WebhookDeliveries::Status)
                        .integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(WebhookDeliveries::Attempts)
                        .integer()
                        .not_null()
                        .default(0),
                )
                .col(
                    ColumnDef::new(WebhookDeliveries::LastStatusCode)
                        .integer()
                        .not_null()
                        .default(0),
                )
                .col(text(WebhookDeliveries::LastError))
                .col(time(WebhookDeliveries::NextAttemptTime))
                .col(time(WebhookDeliveries::CreateTime))
                .col(time_null(WebhookDeliveries::DeliverTime))
                .foreign_key(
                    ForeignKey::create()
                        .from(WebhookDeliveries::Table, WebhookDeliveries::WebhookId)
                        .to(Webhooks::Table, Webhooks::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("webhook_deliveries_by_webhook")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::WebhookId)
                .col(WebhookDeliveries::CreateTime)
                .col(WebhookDeliveries::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("webhook_deliveries_due")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::Status)
                .col(WebhookDeliveries::NextAttemptTime)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
