//! The flow tables: flows and their immutable versions (like agents), durable flow runs with their
//! event logs, triggers, and the published events (one row per event id, so an event starts its runs
//! once). A flow run is one row: the encoded `FlowRun` (its steps are the checkpoint), the pending
//! timers of its waits and retries, and a lease (`owner`, `due_at`) the executor claims it with.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_flows"
    }
}

#[derive(DeriveIden)]
enum Flows {
    Table,
    WorkspaceId,
    Id,
    Name,
    Version,
    Spec,
    CreateTime,
    UpdateTime,
    DeleteTime,
}

#[derive(DeriveIden)]
enum FlowVersions {
    Table,
    WorkspaceId,
    FlowId,
    Version,
    Spec,
    Archived,
    CreateTime,
}

#[derive(DeriveIden)]
enum FlowRuns {
    Table,
    Id,
    WorkspaceId,
    FlowId,
    FlowVersion,
    Status,
    TriggerSource,
    IdempotencyKey,
    Spec,
    Timers,
    Owner,
    DueAt,
    LastSeq,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum FlowRunEvents {
    Table,
    FlowRunId,
    Seq,
    WorkspaceId,
    Data,
    Time,
}

#[derive(DeriveIden)]
enum FlowTriggers {
    Table,
    Id,
    WorkspaceId,
    FlowId,
    EventType,
    Enabled,
    Spec,
    NextFire,
    CreateTime,
}

#[derive(DeriveIden)]
enum FlowEvents {
    Table,
    WorkspaceId,
    EventId,
    EventType,
    FlowRunIds,
    CreateTime,
}

fn id(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).string_len(255).not_null().to_owned()
}

fn micros(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).big_integer().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Flows::Table)
                .col(id(Flows::WorkspaceId))
                .col(id(Flows::Id))
                .col(ColumnDef::new(Flows::Name).string_len(255).not_null())
                .col(ColumnDef::new(Flows::Version).big_integer().not_null())
                .col(ColumnDef::new(Flows::Spec).blob().not_null())
                .col(micros(Flows::CreateTime))
                .col(micros(Flows::UpdateTime))
                .col(ColumnDef::new(Flows::DeleteTime).big_integer().null())
                .primary_key(Index::create().col(Flows::WorkspaceId).col(Flows::Id))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("flows_by_time")
                .table(Flows::Table)
                .col(Flows::WorkspaceId)
                .col(Flows::CreateTime)
                .col(Flows::Id)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(FlowVersions::Table)
                .col(id(FlowVersions::WorkspaceId))
                .col(id(FlowVersions::FlowId))
                .col(
                    ColumnDef::new(FlowVersions::Version)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(FlowVersions::Spec).blob().not_null())
                .col(
                    ColumnDef::new(FlowVersions::Archived)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(micros(FlowVersions::CreateTime))
                .primary_key(
                    Index::create()
                        .col(FlowVersions::WorkspaceId)
                        .col(FlowVersions::FlowId)
                        .col(FlowVersions::Version),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(FlowRuns::Table)
                .col(id(FlowRuns::Id).primary_key())
                .col(id(FlowRuns::WorkspaceId))
                .col(id(FlowRuns::FlowId))
                .col(
                    ColumnDef::new(FlowRuns::FlowVersion)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(FlowRuns::Status).integer().not_null())
                .col(ColumnDef::new(FlowRuns::TriggerSource).integer().not_null())
                .col(
                    ColumnDef::new(FlowRuns::IdempotencyKey)
                        .string_len(255)
                        .null(),
                )
                .col(ColumnDef::new(FlowRuns::Spec).blob().not_null())
                .col(
                    ColumnDef::new(FlowRuns::Timers)
                        .text()
                        .not_null()
                        .default("{}"),
                )
                .col(ColumnDef::new(FlowRuns::Owner).string_len(64).null())
                .col(ColumnDef::new(FlowRuns::DueAt).big_integer().null())
                .col(
                    ColumnDef::new(FlowRuns::LastSeq)
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(micros(FlowRuns::CreateTime))
                .col(micros(FlowRuns::UpdateTime))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("flow_runs_by_time")
                .table(FlowRuns::Table)
                .col(FlowRuns::WorkspaceId)
                .col(FlowRuns::CreateTime)
                .col(FlowRuns::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("flow_runs_due")
                .table(FlowRuns::Table)
                .col(FlowRuns::DueAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("flow_runs_idempotency")
                .table(FlowRuns::Table)
                .col(FlowRuns::WorkspaceId)
                .col(FlowRuns::IdempotencyKey)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(FlowRunEvents::Table)
                .col(id(FlowRunEvents::FlowRunId))
                .col(ColumnDef::new(FlowRunEvents::Seq).big_integer().not_null())
                .col(id(FlowRunEvents::WorkspaceId))
                .col(ColumnDef::new(FlowRunEvents::Data).blob().not_null())
                .col(micros(FlowRunEvents::Time))
                .primary_key(
                    Index::create()
                        .col(FlowRunEvents::FlowRunId)
                        .col(FlowRunEvents::Seq),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(FlowTriggers::Table)
                .col(id(FlowTriggers::Id).primary_key())
                .col(id(FlowTriggers::WorkspaceId))
                .col(id(FlowTriggers::FlowId))
                .col(
                    ColumnDef::new(FlowTriggers::EventType)
                        .string_len(255)
                        .not_null(),
                )
                .col(ColumnDef::new(FlowTriggers::Enabled).boolean().not_null())
                .col(ColumnDef::new(FlowTriggers::Spec).blob().not_null())
                .col(ColumnDef::new(FlowTriggers::NextFire).big_integer().null())
                .col(micros(FlowTriggers::CreateTime))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("flow_triggers_by_type")
                .table(FlowTriggers::Table)
                .col(FlowTriggers::WorkspaceId)
                .col(FlowTriggers::EventType)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("flow_triggers_due")
                .table(FlowTriggers::Table)
                .col(FlowTriggers::NextFire)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(FlowEvents::Table)
                .col(id(FlowEvents::WorkspaceId))
                .col(id(FlowEvents::EventId))
                .col(
                    ColumnDef::new(FlowEvents::EventType)
                        .string_len(255)
                        .not_null(),
                )
                .col(ColumnDef::new(FlowEvents::FlowRunIds).text().not_null())
                .col(micros(FlowEvents::CreateTime))
                .primary_key(
                    Index::create()
                        .col(FlowEvents::WorkspaceId)
                        .col(FlowEvents::EventId),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
