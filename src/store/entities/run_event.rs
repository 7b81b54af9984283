use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "run_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    /// 1, 2, 3... gapless per run.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub workspace_id: String,
    /// The name of the event's oneof field (`message_delta`, `run_completed`...).
    pub kind: String,
    /// The encoded `agentry.v1.RunEvent`.
    pub data: Vec<u8>,
    pub time: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
