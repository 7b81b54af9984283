//! Workspaces and what belongs to them administratively: API keys and webhooks.

pub mod delivery;
pub mod keys;
pub mod outbox;
pub mod webhooks;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
};

use crate::{
    agents::validate,
    error::{Error, Result},
    store::{Db, entities::workspace, time::now_micros},
};

/// The workspace named `name`, created if it does not exist.
pub async fn ensure_workspace(db: &impl ConnectionTrait, name: &str) -> Result<workspace::Model> {
    validate::check_slug("workspace", name)?;
    if let Some(ws) = workspace::Entity::find()
        .filter(workspace::Column::Name.eq(name))
        .one(db)
        .await?
    {
        return Ok(ws);
    }
    let ws = workspace::Model {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        create_time: now_micros(),
    };
    workspace::Entity::insert(workspace::ActiveModel {
        id: Set(ws.id.clone()),
        name: Set(ws.name.clone()),
        create_time: Set(ws.create_time),
    })
    .exec_without_returning(db)
    .await?;
    Ok(ws)
}

/// On an empty database: creates workspace `default` and an admin key with every scope. Returns the
/// key's secret when one was created (`preset` is used instead of a random key when given).
pub async fn bootstrap(db: &Db, preset: Option<&str>) -> Result<Option<String>> {
    if workspace::Entity::find().count(db.writer()).await? > 0 {
        return Ok(None);
    }
    if let Some(k) = preset
        && !crate::auth::keys::well_formed(k)
    {
        return Err(Error::invalid(
            "AGENTRY_BOOTSTRAP_KEY",
            "must be \"agk_\" followed by 44 letters or digits (use `agentry keys generate`)",
        ));
    }
    let ws = ensure_workspace(db.writer(), "default").await?;
    let (_, secret) = keys::create(
        db.writer(),
        &ws.id,
        "bootstrap",
        crate::auth::Scopes::all(),
        preset.map(str::to_owned),
    )
    .await?;
    Ok(Some(secret))
}
