use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
