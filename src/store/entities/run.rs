use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub workspace_id: String,
    pub agent_id: String,
    pub agent_version: i64,
    pub session_id: String,
    pub user_id: String,
    /// `agentry.v1.RunStatus` number.
    pub status: i32,
    /// `agentry.v1.TriggerSource` number.
    pub trigger_source: i32,
    pub idempotency_key: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expire_time: Option<i64>,
    /// The encoded `agentry.v1.Run`.
    pub spec: Vec<u8>,
    pub create_time: i64,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    /// The serialised conversation and progress of the run (see `runs::checkpoint`).
    pub checkpoint: Option<String>,
    /// Set by CancelRun; the worker holding the lease sees it when it renews.
    pub cancel_requested: bool,
    pub update_time: i64,
    /// `provider/model` the run uses.
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    #[sea_orm(column_type = "Double")]
    pub cost_usd: f64,
    /// Sequence number of the run's newest event (the next one is `last_seq + 1`).
    pub last_seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
