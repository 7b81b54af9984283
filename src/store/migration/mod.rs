//! Schema migrations, applied by `agentry migrate` and at the start of `agentry serve`.
//! Migrations are append-only: a released one is never edited, a change is a new file.
//!
//! Times are stored as BIGINT microseconds since the Unix epoch: exact, portable between SQLite and
//! PostgreSQL, and totally ordered with the id as the tiebreaker of keyset cursors.

use sea_orm_migration::prelude::*;

mod m0001_init;
mod m0002_run_engine;
mod m0003_run_last_seq;
mod m0004_flows;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_run_engine::Migration),
            Box::new(m0003_run_last_seq::Migration),
            Box::new(m0004_flows::Migration),
        ]
    }
}
