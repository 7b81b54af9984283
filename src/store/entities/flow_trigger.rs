use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "flow_triggers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub workspace_id: String,
    pub flow_id: String,
    /// The event type of an event trigger; empty for a schedule.
    pub event_type: String,
    pub enabled: bool,
    /// The encoded `agentry.v1.Trigger`.
    pub spec: Vec<u8>,
    /// The next fire time of an enabled schedule (microseconds); NULL otherwise.
    pub next_fire: Option<i64>,
    pub create_time: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
