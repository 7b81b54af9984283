//! Runs across the processes that share one PostgreSQL database. After a commit, the writer tells the
//! others which runs have new events (their watchers there read the log at once instead of at their
//! next poll) and that runs became claimable (their engines claim at once); CancelRun tells the process
//! executing a run to stop it now instead of at its next lease renewal. A process ignores its own
//! notices: locally the same news travels in memory.
//!
//! Payload: `<sender>\t<kind>\t<run ids, comma-separated>`; kinds: `q` claimable, `e` events, `c`
//! cancel. PostgreSQL caps a payload at 8,000 bytes, so long id lists are split.

use std::sync::Arc;

use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use super::{
    engine::{LocalRuns, StopReason},
    events::Hub,
};
use crate::store::{
    Db,
    notify::{self, Heard},
};

pub(crate) const CHANNEL: &str = "agentry_runs";
/// Run ids per notice: 36 bytes and a comma each, well under the 8,000-byte payload cap.
const IDS_PER_NOTICE: usize = 150;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Claimable,
    Events,
    Cancel,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Claimable => "q",
            Kind::Events => "e",
            Kind::Cancel => "c",
        }
    }
}

/// The payloads announcing `kind` for `ids` (`Claimable` names no run: one payload).
pub(crate) fn payloads<'a>(
    sender: &str,
    kind: Kind,
    ids: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    if kind == Kind::Claimable {
        return vec![format!("{sender}\t{}\t", kind.code())];
    }
    let ids: Vec<&str> = ids.into_iter().collect();
    ids.chunks(IDS_PER_NOTICE)
        .map(|chunk| format!("{sender}\t{}\t{}", kind.code(), chunk.join(",")))
        .collect()
}

/// Sends one notice now (no-op on SQLite).
pub(crate) async fn send(db: &Db, sender: &str, kind: Kind, id: &str) {
    for p in payloads(sender, kind, [id]) {
        if let Err(e) = notify::send(db, CHANNEL, &p).await {
            tracing::warn!(error = %e, "cannot notify the other processes");
        }
    }
}

/// What this process does with the others' notices.
pub(crate) struct Receiver {
    pub me: Arc<str>,
    pub hub: Arc<Hub>,
    pub wake: Arc<Notify>,
    pub local: Arc<LocalRuns>,
}

impl Receiver {
    pub fn listen(self, db: &Db, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        let on = Arc::new(move |heard: Heard<'_>| self.hear(heard));
        notify::listen(db, &[CHANNEL], on, stop)
    }

    fn hear(&self, heard: Heard<'_>) {
        let payload = match heard {
            // Notices may have been lost: look for work, and let every watcher read its log.
            Heard::Connected => {
                self.wake.notify_one();
                self.hub.poke_all();
                return;
            }
            Heard::Message { payload, .. } => payload,
        };
        let mut parts = payload.splitn(3, '\t');
        let (Some(sender), Some(kind), Some(ids)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if sender == &*self.me {
            return;
        }
        let ids = ids.split(',').filter(|id| !id.is_empty());
        match kind {
            "q" => self.wake.notify_one(),
            "e" => ids.for_each(|id| self.hub.poke(id)),
            "c" => ids.for_each(|id| {
                self.local.stop(id, StopReason::Cancel);
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_id_lists_are_split_under_the_payload_cap() {
        let ids: Vec<String> = (0..400).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let p = payloads("me", Kind::Events, ids.iter().map(String::as_str));
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| p.len() < 8000));
        let back: Vec<&str> = p
            .iter()
            .flat_map(|p| p.splitn(3, '\t').nth(2).unwrap().split(','))
            .collect();
        assert_eq!(back, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(payloads("me", Kind::Claimable, []), vec!["me\tq\t"]);
        assert!(payloads("me", Kind::Events, []).is_empty());
    }
}
