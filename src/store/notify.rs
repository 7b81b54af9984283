//! PostgreSQL LISTEN/NOTIFY, shared by everything that tells the other processes on one database
//! about a change (cache invalidation, run wake-ups and events). A notification sent inside a
//! transaction is delivered when, and only if, it commits. SQLite is one process: there is nothing to
//! tell, and both functions do nothing.

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DbBackend, Statement, sqlx::postgres::PgListener};
use tokio::{sync::watch, task::JoinHandle};

use super::Db;
use crate::error::Result;

/// What a listener hears.
pub enum Heard<'a> {
    /// The listening connection is (again) established: notifications sent while it was down are
    /// lost, so whatever they would have told must be assumed.
    Connected,
    Message {
        channel: &'a str,
        payload: &'a str,
    },
}

/// The statement that sends `payload` on `channel` (PostgreSQL only); run it inside a transaction
/// to deliver it with the commit.
pub fn statement(channel: &str, payload: &str) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [channel.into(), payload.into()],
    )
}

/// Sends `payload` on `channel` now (no-op on SQLite).
pub async fn send(db: &Db, channel: &str, payload: &str) -> Result<()> {
    if db.backend() == DbBackend::Postgres {
        db.writer().execute_raw(statement(channel, payload)).await?;
    }
    Ok(())
}

/// On PostgreSQL, listens on `channels` until `stop` turns true, handing what it hears to `on`;
/// reconnects (and says so with [`Heard::Connected`]) whenever the connection drops.
pub fn listen(
    db: &Db,
    channels: &'static [&'static str],
    on: Arc<dyn Fn(Heard<'_>) + Send + Sync>,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if db.backend() != DbBackend::Postgres {
        return None;
    }
    let pool = db.writer().get_postgres_connection_pool().clone();
    Some(tokio::spawn(async move {
        loop {
            let connected = match PgListener::connect_with(&pool).await {
                Ok(mut l) => l.listen_all(channels.iter().copied()).await.map(|()| l),
                Err(e) => Err(e),
            };
            let mut listener = match connected {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, ?channels, "cannot LISTEN; retrying");
                    if wait_or_stop(&mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            on(Heard::Connected);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    msg = listener.try_recv() => match msg {
                        Ok(Some(n)) => on(Heard::Message { channel: n.channel(), payload: n.payload() }),
                        Ok(None) => on(Heard::Connected), // reconnected: notifications may be lost
                        Err(e) => {
                            tracing::warn!(error = %e, ?channels, "listener failed; reconnecting");
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
