//! The run engine's tables: the event log of every run, the run's checkpoint and cancel request, its
//! model and usage as columns (GetUsage aggregates them in SQL), and per-user memories.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_run_engine"
    }
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Checkpoint,
    CancelRequested,
    UpdateTime,
    Model,
    InputTokens,
    OutputTokens,
    CostUsd,
}

#[derive(DeriveIden)]
enum RunEvents {
    Table,
    RunId,
    Seq,
    WorkspaceId,
    Kind,
    Data,
    Time,
}

#[derive(DeriveIden)]
enum Memories {
    Table,
    Id,
    WorkspaceId,
    UserId,
    Content,
    Metadata,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One ALTER per column: SQLite cannot add several in one statement.
        m.alter_table(
            Table::alter()
                .table(Runs::Table)
                .add_column(ColumnDef::new(Runs::Checkpoint).text().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Runs::Table)
                .add_column(
                    ColumnDef::new(Runs::CancelRequested)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Runs::Table)
                .add_column(
                    ColumnDef::new(Runs::UpdateTime)
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .to_owned(),
        )
        .await?;

        for col in [
            ColumnDef::new(Runs::Model)
                .string_len(255)
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(Runs::InputTokens)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Runs::OutputTokens)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Runs::CostUsd)
                .double()
                .not_null()
                .default(0.0)
                .to_owned(),
        ] {
            m.alter_table(Table::alter().table(Runs::Table).add_column(col).to_owned())
                .await?;
        }

        m.create_table(
            Table::create()
                .table(RunEvents::Table)
                .col(ColumnDef::new(RunEvents::RunId).string_len(64).not_null())
                .col(ColumnDef::new(RunEvents::Seq).big_integer().not_null())
                .col(
                    ColumnDef::new(RunEvents::WorkspaceId)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(RunEvents::Kind).string_len(32).not_null())
                .col(ColumnDef::new(RunEvents::Data).blob().not_null())
                .col(ColumnDef::new(RunEvents::Time).big_integer().not_null())
                .primary_key(Index::create().col(RunEvents::RunId).col(RunEvents::Seq))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Memories::Table)
                .col(
                    ColumnDef::new(Memories::Id)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(Memories::WorkspaceId)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(Memories::UserId).string_len(255).not_null())
                .col(ColumnDef::new(Memories::Content).text().not_null())
                .col(
                    ColumnDef::new(Memories::Metadata)
                        .text()
                        .not_null()
                        .default("{}"),
                )
                .col(
                    ColumnDef::new(Memories::CreateTime)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("memories_by_user")
                .table(Memories::Table)
                .col(Memories::WorkspaceId)
                .col(Memories::UserId)
                .col(Memories::CreateTime)
                .col(Memories::Id)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
