use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub description: String,
    pub version: i64,
    pub enabled: bool,
    pub visibility: i32,
    pub category: String,
    /// `,tag1,tag2,`: delimited so that `LIKE '%,tag,%'` matches one whole tag on both backends.
    pub tags: String,
    /// Same encoding as `tags`.
    pub capabilities: String,
    pub playbook_template: String,
    pub hired: bool,
    /// The encoded `agentry.v1.Agent` at `version`.
    pub spec: Vec<u8>,
    pub create_time: i64,
    pub update_time: i64,
    pub delete_time: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
