//! `runs.last_seq`: the sequence number of the run's newest event. The group-commit writer numbers a
//! step's events from it (`UPDATE runs SET last_seq = last_seq + n ... RETURNING last_seq`) in the same
//! statement that checks the writer may change the run, instead of a `SELECT MAX(seq)` per step.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_run_last_seq"
    }
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    LastSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Runs::Table)
                .add_column(
                    ColumnDef::new(Runs::LastSeq)
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .to_owned(),
        )
        .await?;
        // Runs written before this migration: number from their stored events.
        m.get_connection()
            .execute_unprepared(
                "UPDATE runs SET last_seq = COALESCE((SELECT MAX(seq) FROM run_events \
                 WHERE run_events.run_id = runs.id), 0)",
            )
            .await?;
        Ok(())
    }
}
