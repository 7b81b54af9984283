use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "flow_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub workspace_id: String,
    pub flow_id: String,
    pub flow_version: i64,
    /// `agentry.v1.FlowRunStatus` number.
    pub status: i32,
    /// `agentry.v1.FlowTriggerSource` number.
    pub trigger_source: i32,
    pub idempotency_key: Option<String>,
    /// The encoded `agentry.v1.FlowRun`, steps included: the run's checkpoint.
    pub spec: Vec<u8>,
    /// JSON object: node id -> when its wait or retry backoff ends (microseconds).
    pub timers: String,
    /// The process executing the run; `due_at` is then its lease expiry.
    pub owner: Option<String>,
    /// When the run needs a worker: claimable once `due_at <= now`. NULL: nothing to do until a
    /// human acts (an approval, a resume) or never again (terminal).
    pub due_at: Option<i64>,
    pub last_seq: i64,
    pub create_time: i64,
    pub update_time: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
