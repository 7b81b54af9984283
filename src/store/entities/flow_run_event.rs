use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "flow_run_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub flow_run_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub workspace_id: String,
    /// The encoded `agentry.v1.FlowRunEvent`.
    pub data: Vec<u8>,
    pub time: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
