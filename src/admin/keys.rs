//! API keys: created with a secret shown once, listed, revoked.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::{
    agents::{Page, after, page},
    auth::{Scopes, keys},
    error::{Error, Result},
    pb::ApiKey,
    store::{
        cursor,
        entities::api_key,
        time::{now_micros, to_timestamp},
    },
};

pub fn to_pb(m: &api_key::Model) -> ApiKey {
    ApiKey {
        id: m.id.clone(),
        name: m.name.clone(),
        prefix: m.prefix.clone(),
        scopes: m.scopes.parse::<Scopes>().unwrap_or_default().names(),
        create_time: Some(to_timestamp(m.create_time)),
        revoke_time: m.revoke_time.map(to_timestamp),
    }
}

/// Creates a key in workspace `ws`; returns it and its secret. `secret` presets the key (bootstrap).
pub async fn create(
    db: &impl ConnectionTrait,
    ws: &str,
    name: &str,
    scopes: Scopes,
    secret: Option<String>,
) -> Result<(ApiKey, String)> {
    if name.chars().count() > 255 {
        return Err(Error::invalid("name", "at most 255 characters"));
    }
    if scopes.is_empty() {
        return Err(Error::invalid("scopes", "give at least one scope"));
    }
    let secret = secret.unwrap_or_else(keys::generate);
    let model = api_key::Model {
        id: uuid::Uuid::now_v7().to_string(),
        workspace_id: ws.to_owned(),
        name: name.to_owned(),
        prefix: keys::public_prefix(&secret).to_owned(),
        key_hash: keys::hash_hex(&secret),
        scopes: scopes.to_string(),
        create_time: now_micros(),
        revoke_time: None,
    };
    api_key::Entity::insert(api_key::ActiveModel {
        id: Set(model.id.clone()),
        workspace_id: Set(model.workspace_id.clone()),
        name: Set(model.name.clone()),
        prefix: Set(model.prefix.clone()),
        key_hash: Set(model.key_hash.clone()),
        scopes: Set(model.scopes.clone()),
        create_time: Set(model.create_time),
        revoke_time: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok((to_pb(&model), secret))
}

pub async fn list(
    db: &impl ConnectionTrait,
    ws: &str,
    limit: i32,
    cur: &str,
    include_revoked: bool,
) -> Result<Page<ApiKey>> {
    let limit = cursor::page_limit(limit)?;
    let mut q = api_key::Entity::find().filter(api_key::Column::WorkspaceId.eq(ws));
    if !include_revoked {
        q = q.filter(api_key::Column::RevokeTime.is_null());
    }
    if !cur.is_empty() {
        let (t, id) = cursor::decode_time_id("keys", cur)?;
        q = q.filter(after(
            api_key::Column::CreateTime,
            api_key::Column::Id,
            t,
            id,
        ));
    }
    let rows = q
        .order_by_asc(api_key::Column::CreateTime)
        .order_by_asc(api_key::Column::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    page(
        rows,
        limit,
        |r| cursor::encode_time_id("keys", r.create_time, &r.id),
        |r| Ok(to_pb(r)),
    )
}

/// Revokes key `id` of workspace `ws` (idempotent) and returns it.
pub async fn revoke(db: &impl ConnectionTrait, ws: &str, id: &str) -> Result<ApiKey> {
    let missing = || Error::not_found(format!("API key {id:?} not found"));
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(missing());
    }
    api_key::Entity::update_many()
        .col_expr(
            api_key::Column::RevokeTime,
            sea_orm::sea_query::Expr::value(now_micros()),
        )
        .filter(api_key::Column::WorkspaceId.eq(ws))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokeTime.is_null())
        .exec(db)
        .await?;
    let row = api_key::Entity::find_by_id(id.to_owned())
        .filter(api_key::Column::WorkspaceId.eq(ws))
        .one(db)
        .await?
        .ok_or_else(missing)?;
    Ok(to_pb(&row))
}

pub async fn get(db: &impl ConnectionTrait, ws: &str, id: &str) -> Result<ApiKey> {
    let row = api_key::Entity::find_by_id(id.to_owned())
        .filter(api_key::Column::WorkspaceId.eq(ws))
        .one(db)
        .await?
        .ok_or_else(|| Error::not_found("API key not found"))?;
    Ok(to_pb(&row))
}
