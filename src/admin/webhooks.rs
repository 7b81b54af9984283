//! Webhook subscriptions and the record of their deliveries. Deliveries are written to an outbox by the
//! run and flow engines and sent, signed per Standard Webhooks, by the delivery worker.

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

use crate::{
    agents::{Page, page},
    error::{Error, Result},
    pb::{Webhook, WebhookDelivery},
    store::{
        Db, cursor,
        entities::{webhook, webhook_delivery},
        time::{now_micros, to_timestamp},
    },
};

/// Event types a webhook can ask for (`run.*` and `flow_run.*` match a whole family).
pub const EVENT_TYPES: &[&str] = &[
    "run.queued",
    "run.started",
    "run.requires_action",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "flow_run.started",
    "flow_run.paused",
    "flow_run.completed",
    "flow_run.failed",
    "flow_run.cancelled",
];

fn to_pb(m: &webhook::Model) -> Webhook {
    Webhook {
        id: m.id.clone(),
        url: m.url.clone(),
        event_types: m
            .event_types
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        create_time: Some(to_timestamp(m.create_time)),
    }
}

fn check_event_type(i: usize, t: &str) -> Result<()> {
    let ok = EVENT_TYPES.contains(&t) || t == "run.*" || t == "flow_run.*" || t == "*";
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("event_types[{i}]"),
            format!(
                "unknown event type {t:?}; known: {}, run.*, flow_run.*",
                EVENT_TYPES.join(", ")
            ),
        ))
    }
}

pub async fn create(
    db: &Db,
    ws: &str,
    url: &str,
    event_types: &[String],
    secret: &str,
) -> Result<(Webhook, String)> {
    let parsed_ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && url
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !url.chars().any(char::is_whitespace);
    if !parsed_ok {
        return Err(Error::invalid(
            "url",
            "must be an http(s) URL with a host, at most 2048 characters",
        ));
    }
    if event_types.len() > EVENT_TYPES.len() + 3 {
        return Err(Error::invalid("event_types", "too many entries"));
    }
    for (i, t) in event_types.iter().enumerate() {
        check_event_type(i, t)?;
    }
    let secret = if secret.is_empty() {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        format!("whsec_{}", STANDARD.encode(raw))
    } else {
        let ok = secret.strip_prefix("whsec_").is_some_and(|b| {
            STANDARD
                .decode(b)
                .is_ok_and(|k| (24..=64).contains(&k.len()))
        });
        if !ok {
            return Err(Error::invalid(
                "secret",
                "must be \"whsec_\" + base64 of 24 to 64 bytes",
            ));
        }
        secret.to_owned()
    };
    let m = webhook::Model {
        id: uuid::Uuid::now_v7().to_string(),
        workspace_id: ws.to_owned(),
        url: url.to_owned(),
        event_types: event_types.join(" "),
        secret: secret.clone(),
        create_time: now_micros(),
    };
    webhook::Entity::insert(webhook::ActiveModel {
        id: Set(m.id.clone()),
        workspace_id: Set(m.workspace_id.clone()),
        url: Set(m.url.clone()),
        event_types: Set(m.event_types.clone()),
        secret: Set(m.secret.clone()),
        create_time: Set(m.create_time),
    })
    .exec_without_returning(db.writer())
    .await?;
    Ok((to_pb(&m), secret))
}

pub async fn list(
    db: &impl ConnectionTrait,
    ws: &str,
    limit: i32,
    cur: &str,
) -> Result<Page<Webhook>> {
    let limit = cursor::page_limit(limit)?;
    let mut q = webhook::Entity::find().filter(webhook::Column::WorkspaceId.eq(ws));
    if !cur.is_empty() {
        let (t, id) = cursor::decode_time_id("webhooks", cur)?;
        q = q.filter(crate::agents::after(
            webhook::Column::CreateTime,
            webhook::Column::Id,
            t,
            id,
        ));
    }
    let rows = q
        .order_by_asc(webhook::Column::CreateTime)
        .order_by_asc(webhook::Column::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    page(
        rows,
        limit,
        |r| cursor::encode_time_id("webhooks", r.create_time, &r.id),
        |r| Ok(to_pb(r)),
    )
}

/// Deletes a webhook and its delivery records in one transaction.
pub async fn delete(db: &Db, ws: &str, id: &str) -> Result<()> {
    let txn = db.writer().begin().await?;
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::WorkspaceId.eq(ws))
        .filter(webhook_delivery::Column::WebhookId.eq(id))
        .exec(&txn)
        .await?;
    let res = webhook::Entity::delete_many()
        .filter(webhook::Column::WorkspaceId.eq(ws))
        .filter(webhook::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    if res.rows_affected == 0 {
        return Err(Error::not_found(format!("webhook {id:?} not found")));
    }
    txn.commit().await?;
    Ok(())
}

/// Deliveries of webhook `id`, newest first.
pub async fn list_deliveries(
    db: &impl ConnectionTrait,
    ws: &str,
    id: &str,
    limit: i32,
    cur: &str,
) -> Result<Page<WebhookDelivery>> {
    let limit = cursor::page_limit(limit)?;
    let exists = webhook::Entity::find_by_id(id.to_owned())
        .filter(webhook::Column::WorkspaceId.eq(ws))
        .one(db)
        .await?
        .is_some();
    if !exists {
        return Err(Error::not_found(format!("webhook {id:?} not found")));
    }
    let mut q = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::WorkspaceId.eq(ws))
        .filter(webhook_delivery::Column::WebhookId.eq(id));
    if !cur.is_empty() {
        let (t, did) = cursor::decode_time_id("deliveries", cur)?;
        q = q.filter(crate::agents::before(
            webhook_delivery::Column::CreateTime,
            webhook_delivery::Column::Id,
            t,
            did,
        ));
    }
    let rows = q
        .order_by_desc(webhook_delivery::Column::CreateTime)
        .order_by_desc(webhook_delivery::Column::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    page(
        rows,
        limit,
        |r| cursor::encode_time_id("deliveries", r.create_time, &r.id),
        |r| {
            Ok(WebhookDelivery {
                id: r.id.clone(),
                webhook_id: r.webhook_id.clone(),
                event_type: r.event_type.clone(),
                event_id: r.event_id.clone(),
                status: r.status,
                attempts: r.attempts,
                last_status_code: r.last_status_code,
                last_error: r.last_error.clone(),
                next_attempt_time: Some(to_timestamp(r.next_attempt_time)),
                create_time: Some(to_timestamp(r.create_time)),
                deliver_time: r.deliver_time.map(to_timestamp),
            })
        },
    )
}
