//! The webhook delivery worker: sends what the outbox ([`super::outbox`]) queued, at least once,
//! signed as Standard Webhooks specify (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), and retries failures with growing delays until
//! [`MAX_ATTEMPTS`]. A 2xx answer is a delivery; anything else (another status, a timeout, a refused
//! connection) is retried.
//!
//! Deliveries are claimed like runs: the claim pushes `next_attempt_time` a minute ahead, so a
//! delivery whose worker died is sent again by whoever polls next (hence at least once), and several
//! processes on one PostgreSQL database share the work (`FOR UPDATE SKIP LOCKED`).
//!
//! Webhook URLs are chosen by workspace admins, so, as for the `http_request` tool, private and
//! reserved addresses are refused (unless the server allows them) and the checked address is the one
//! connected to.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use sha2::Sha256;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{
    error::Result,
    pb::DeliveryStatus,
    store::{Db, placeholders, time::now_micros},
    tools::http_request::{Refused, pinned_client},
};

/// Attempts before a delivery is FAILED.
pub const MAX_ATTEMPTS: i32 = 10;
/// Delay after the n-th failed attempt (1 s, 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h).
const BACKOFF_SECS: [i64; 9] = [1, 5, 30, 120, 600, 1800, 3600, 10_800, 21_600];
const POLL_EVERY: Duration = Duration::from_secs(1);
const BATCH: i64 = 16;
/// How long a claimed delivery is reserved for its worker.
const CLAIM_FOR: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);

struct Due {
    id: String,
    webhook_id: String,
    event_id: String,
    payload: String,
    attempts: i32,
}

/// What an attempt came to.
struct Attempt {
    status_code: i32,
    error: Option<String>,
}

/// Runs the worker until `stop` turns true. `wake` is notified when deliveries are queued.
pub fn spawn(
    db: Db,
    wake: Arc<Notify>,
    allow_private: bool,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let claimed = match claim(&db).await {
                Ok(due) => {
                    let n = due.len();
                    if n > 0
                        && let Err(e) = deliver_all(&db, due, allow_private).await
                    {
                        tracing::warn!(error = %e, "recording webhook deliveries failed");
                    }
                    n
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed");
                    0
                }
            };
            if claimed as i64 == BATCH {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

async fn claim(db: &Db) -> Result<Vec<Due>> {
    let now = now_micros();
    let lock = if db.backend() == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET next_attempt_time = ? WHERE id IN (SELECT id FROM \
         webhook_deliveries WHERE status = ? AND next_attempt_time <= ? ORDER BY next_attempt_time \
         LIMIT ?{lock}) RETURNING id, webhook_id, event_id, payload, attempts"
    );
    let rows = db
        .writer()
        .query_all_raw(Statement::from_sql_and_values(
            db.backend(),
            placeholders(db.backend(), &sql),
            [
                Value::from(now + CLAIM_FOR.as_micros() as i64),
                (DeliveryStatus::Pending as i32).into(),
                now.into(),
                BATCH.into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Due {
                id: r.try_get("", "id")?,
                webhook_id: r.try_get("", "webhook_id")?,
                event_id: r.try_get("", "event_id")?,
                payload: r.try_get("", "payload")?,
                attempts: r.try_get("", "attempts")?,
            })
        })
        .collect()
}

async fn deliver_all(db: &Db, due: Vec<Due>, allow_private: bool) -> Result<()> {
    let mut ids: Vec<&str> = due.iter().map(|d| d.webhook_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!(
        "SELECT id, url, secret FROM webhooks WHERE id IN ({})",
        vec!["?"; ids.len()].join(", ")
    );
    let hooks: HashMap<String, (String, String)> = db
        .reader()
        .query_all_raw(Statement::from_sql_and_values(
            db.backend(),
            placeholders(db.backend(), &sql),
            ids.iter().map(|id| Value::from(*id)),
        ))
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("", "id")?,
                (r.try_get("", "url")?, r.try_get("", "secret")?),
            ))
        })
        .collect::<Result<_>>()?;
    let attempts = due.iter().map(|d| async {
        match hooks.get(&d.webhook_id) {
            Some((url, secret)) => send(url, secret, d, allow_private).await,
            // Deleted meanwhile (its deliveries go with it).
            None => Attempt {
                status_code: 0,
                error: Some("the webhook was deleted".into()),
            },
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    for (d, a) in due.iter().zip(results) {
        record(db, d, a).await?;
    }
    Ok(())
}

/// The Standard Webhooks signature of `body` (`secret` is `whsec_` + base64 of the key).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

async fn send(url: &str, secret: &str, d: &Due, allow_private: bool) -> Attempt {
    let failed = |status_code: i32, error: String| Attempt {
        status_code,
        error: Some(error),
    };
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return failed(0, format!("bad URL: {e}")),
    };
    let client = match pinned_client(&parsed, allow_private, TIMEOUT).await {
        Ok(c) => c,
        Err(Refused::Timeout(m) | Refused::Unresolved(m) | Refused::Private(m)) => {
            return failed(0, m);
        }
    };
    let timestamp = now_micros() / 1_000_000;
    let response = client
        .post(parsed)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign(secret, &d.event_id, timestamp, &d.payload),
        )
        .body(d.payload.clone())
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Attempt {
            status_code: r.status().as_u16() as i32,
            error: None,
        },
        Ok(r) => {
            let code = r.status().as_u16() as i32;
            let body = r.text().await.unwrap_or_default();
            let snippet: String = body.chars().take(200).collect();
            failed(code, format!("HTTP {code}: {snippet}"))
        }
        Err(e) => failed(0, format!("{e}")),
    }
}

async fn record(db: &Db, d: &Due, a: Attempt) -> Result<()> {
    let now = now_micros();
    let attempts = d.attempts + 1;
    let (status, next, deliver_time) = match &a.error {
        None => (DeliveryStatus::Delivered, now, Some(now)),
        Some(_) if attempts >= MAX_ATTEMPTS => (DeliveryStatus::Failed, now, None),
        Some(_) => {
            let delay = BACKOFF_SECS[(attempts as usize - 1).min(BACKOFF_SECS.len() - 1)];
            (DeliveryStatus::Pending, now + delay * 1_000_000, None)
        }
    };
    let sql = "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status_code = ?, \
               last_error = ?, next_attempt_time = ?, deliver_time = ? WHERE id = ?";
    db.writer()
        .execute_raw(Statement::from_sql_and_values(
            db.backend(),
            placeholders(db.backend(), sql),
            [
                Value::from(status as i32),
                attempts.into(),
                a.status_code.into(),
                a.error.unwrap_or_default().into(),
                next.into(),
                deliver_time.into(),
                d.id.as_str().into(),
            ],
        ))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            super::sign(secret, id, 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
