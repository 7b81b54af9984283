//! Cross-replica cache invalidation. Each process caches API keys and agent definitions; when one
//! process revokes a key or changes an agent, the others must drop their copy. On PostgreSQL the change
//! is announced with `NOTIFY agentry_invalidate` and every process LISTENs; when the listening
//! connection drops (notifications may have been missed), the process clears its caches entirely. SQLite
//! is one process, where the local invalidation suffices. Cache TTLs remain as a last safety net.

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DbBackend, Statement, sqlx::postgres::PgListener};
use tokio::{sync::watch, task::JoinHandle};

use super::Db;
use crate::error::Result;

const CHANNEL: &str = "agentry_invalidate";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    ApiKey {
        key_id: String,
    },
    Agent {
        workspace_id: String,
        agent_id: String,
    },
    /// Anything may have changed (a missed notification).
    All,
}

impl Invalidation {
    fn encode(&self) -> String {
        match self {
            Invalidation::ApiKey { key_id } => format!("key\t{key_id}"),
            Invalidation::Agent {
                workspace_id,
                agent_id,
            } => format!("agent\t{workspace_id}\t{agent_id}"),
            Invalidation::All => "all".to_owned(),
        }
    }

    fn decode(s: &str) -> Invalidation {
        let mut parts = s.split('\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("key"), Some(k), None) => Invalidation::ApiKey {
                key_id: k.to_owned(),
            },
            (Some("agent"), Some(w), Some(a)) => Invalidation::Agent {
                workspace_id: w.to_owned(),
                agent_id: a.to_owned(),
            },
            _ => Invalidation::All,
        }
    }
}

/// Announces a change to the other processes sharing the database (no-op on SQLite).
pub async fn publish(db: &Db, what: &Invalidation) -> Result<()> {
    if db.backend() != DbBackend::Postgres {
        return Ok(());
    }
    let stmt = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CHANNEL.into(), what.encode().into()],
    );
    db.writer().execute_raw(stmt).await?;
    Ok(())
}

/// On PostgreSQL, listens for announcements until `stop` turns true and hands each to `apply`.
pub fn listen(
    db: &Db,
    apply: Arc<dyn Fn(Invalidation) + Send + Sync>,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if db.backend() != DbBackend::Postgres {
        return None;
    }
    let pool = db.writer().get_postgres_connection_pool().clone();
    Some(tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN for cache invalidations; retrying");
                        if wait_or_stop(&mut stop).await {
                            return;
                        }
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect the invalidation listener; retrying");
                    if wait_or_stop(&mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            // Whatever changed while nobody listened is unknown: start from empty caches.
            apply(Invalidation::All);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    msg = listener.try_recv() => match msg {
                        Ok(Some(n)) => apply(Invalidation::decode(n.payload())),
                        Ok(None) => apply(Invalidation::All), // reconnected: notifications may be lost
                        Err(e) => {
                            tracing::warn!(error = %e, "invalidation listener failed; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }))
}

/// Sleeps a second; true when asked to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for inv in [
            Invalidation::ApiKey { key_id: "k".into() },
            Invalidation::Agent {
                workspace_id: "w".into(),
                agent_id: "a-1".into(),
            },
            Invalidation::All,
        ] {
            assert_eq!(Invalidation::decode(&inv.encode()), inv);
        }
        assert_eq!(Invalidation::decode("garbage"), Invalidation::All);
    }
}
