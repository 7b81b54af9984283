//! Cross-replica cache invalidation. Each process caches API keys and agent definitions; when one
//! process revokes a key or changes an agent, the others must drop their copy. On PostgreSQL the change
//! is announced with `NOTIFY agentry_invalidate` and every process LISTENs; when the listening
//! connection drops (notifications may have been missed), the process clears its caches entirely. SQLite
//! is one process, where the local invalidation suffices. Cache TTLs remain as a last safety net.

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};

use super::{
    Db,
    notify::{self, Heard},
};
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
    notify::send(db, CHANNEL, &what.encode()).await
}

/// On PostgreSQL, listens for announcements until `stop` turns true and hands each to `apply`; after
/// a (re)connection, whatever changed while nobody listened is unknown: `apply(All)`.
pub fn listen(
    db: &Db,
    apply: Arc<dyn Fn(Invalidation) + Send + Sync>,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let on = Arc::new(move |heard: Heard<'_>| match heard {
        Heard::Connected => apply(Invalidation::All),
        Heard::Message { payload, .. } => apply(Invalidation::decode(payload)),
    });
    notify::listen(db, &[CHANNEL], on, stop)
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
