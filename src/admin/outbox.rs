//! The webhook outbox: a lifecycle event (a run queued, started, waiting for a human, finished) puts
//! one delivery row per subscribed webhook in `webhook_deliveries`, in the same transaction as the
//! event itself, so an event is delivered if and only if it happened, even across a crash. The
//! delivery worker ([`super::delivery`]) sends them.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};

use crate::{error::Result, pb::DeliveryStatus, store::placeholders};

/// One lifecycle event to announce.
pub struct Lifecycle<'a> {
    pub workspace_id: &'a str,
    /// e.g. `run.completed`.
    pub event_type: &'static str,
    /// The run and the event's sequence number, which make the Standard Webhooks `webhook-id`
    /// (`<run_id>:<seq>`): one per event, the same on every retry.
    pub run_id: &'a str,
    pub seq: i64,
    /// What the event is about: the encoded `Run` (or `FlowRun`, see `message`), sent as its JSON
    /// (decoded only if a webhook wants the event).
    pub run: &'a [u8],
    /// The full name of the encoded message, e.g. `agentry.v1.Run`.
    pub message: &'static str,
}

const ARITY: usize = 10;
const ROWS_PER_INSERT: usize = 200;

/// Whether a webhook subscribed to `types` (space-separated; empty means all) gets `event_type`.
pub fn subscribed(types: &str, event_type: &str) -> bool {
    let family = event_type.split('.').next().unwrap_or("");
    types.is_empty()
        || types.split(' ').any(|t| {
            t == "*" || t == event_type || t.strip_suffix(".*").is_some_and(|f| f == family)
        })
}

/// Queues the deliveries of `events` for the webhooks of their workspaces; returns how many.
pub async fn enqueue(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    events: &[Lifecycle<'_>],
    now: i64,
) -> Result<usize> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut workspaces: Vec<&str> = events.iter().map(|e| e.workspace_id).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    let sql = format!(
        "SELECT id, workspace_id, event_types FROM webhooks WHERE workspace_id IN ({})",
        vec!["?"; workspaces.len()].join(", ")
    );
    let hooks = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            placeholders(backend, &sql),
            workspaces.iter().map(|w| Value::from(*w)),
        ))
        .await?;
    if hooks.is_empty() {
        return Ok(0);
    }
    let hooks: Vec<(String, String, String)> = hooks
        .iter()
        .map(|r| {
            Ok((
                r.try_get("", "id")?,
                r.try_get("", "workspace_id")?,
                r.try_get("", "event_types")?,
            ))
        })
        .collect::<Result<_>>()?;
    let timestamp = chrono::DateTime::from_timestamp_micros(now)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut values = Vec::new();
    let mut rows = 0;
    let mut total = 0;
    for e in events {
        let mut payload = None;
        for (hook_id, ws, types) in &hooks {
            if ws != e.workspace_id || !subscribed(types, e.event_type) {
                continue;
            }
            let payload = match &payload {
                Some(p) => String::clone(p),
                None => {
                    // Standard Webhooks payload: type, timestamp, data (the run, as the REST API
                    // prints it).
                    let data = crate::rest::proto_json(e.message, e.run).map_err(|err| {
                        crate::error::Error::internal(format!("run for a webhook: {err}"))
                    })?;
                    let mut p = format!(
                        "{{\"type\":\"{}\",\"timestamp\":\"{timestamp}\",\"data\":",
                        e.event_type
                    );
                    p.push_str(&String::from_utf8_lossy(&data));
                    p.push('}');
                    payload.insert(p).clone()
                }
            };
            values.extend([
                Value::from(uuid::Uuid::now_v7().to_string()),
                hook_id.as_str().into(),
                e.workspace_id.into(),
                e.event_type.into(),
                format!("{}:{}", e.run_id, e.seq).into(),
                payload.into(),
                (DeliveryStatus::Pending as i32).into(),
                "".into(),
                now.into(),
                now.into(),
            ]);
            rows += 1;
            total += 1;
            if rows == ROWS_PER_INSERT {
                insert(txn, backend, std::mem::take(&mut values), rows).await?;
                rows = 0;
            }
        }
    }
    if rows > 0 {
        insert(txn, backend, values, rows).await?;
    }
    Ok(total)
}

async fn insert(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    values: Vec<Value>,
    rows: usize,
) -> Result<()> {
    let one = format!("({}, 0, 0)", ["?"; ARITY].join(", "));
    let sql = format!(
        "INSERT INTO webhook_deliveries (id, webhook_id, workspace_id, event_type, event_id, payload, \
         status, last_error, next_attempt_time, create_time, attempts, last_status_code) VALUES {}",
        vec![one; rows].join(", ")
    );
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        placeholders(backend, &sql),
        values,
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::subscribed;

    #[test]
    fn subscriptions_match_exact_types_families_and_all() {
        assert!(subscribed("", "run.completed"));
        assert!(subscribed("*", "flow_run.failed"));
        assert!(subscribed("run.failed run.completed", "run.completed"));
        assert!(subscribed("run.*", "run.queued"));
        assert!(!subscribed("run.*", "flow_run.completed"));
        assert!(!subscribed("flow_run.*", "run.completed"));
        assert!(!subscribed("run.failed", "run.completed"));
    }
}
