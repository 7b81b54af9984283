use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub webhook_id: String,
    pub workspace_id: String,
    pub event_type: String,
    pub event_id: String,
    pub payload: String,
    /// `agentry.v1.DeliveryStatus` number.
    pub status: i32,
    pub attempts: i32,
    pub last_status_code: i32,
    pub last_error: String,
    pub next_attempt_time: i64,
    pub create_time: i64,
    pub deliver_time: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
