//! The run event log and its live fan-out. Events are appended to `run_events` with gapless sequence
//! numbers in the same transaction as the run's state change (by the group-commit writer), and only
//! after that commit are they broadcast to watchers in this process. A watcher therefore never sees an event that is not durable,
//! and a reconnecting client replays from the log what it missed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prost::Message as _;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::broadcast;

use crate::{
    error::{Error, Result},
    pb::{RunEvent, run_event::Event},
    store::entities::run_event,
};

/// Live events of one run, buffered per subscriber; a subscriber that falls this far behind is told
/// it lagged and re-reads the log (a slow client never slows the run).
const CHANNEL_CAPACITY: usize = 1024;

pub fn kind(e: &Event) -> &'static str {
    match e {
        Event::RunQueued(_) => "run_queued",
        Event::RunStarted(_) => "run_started",
        Event::MessageDelta(_) => "message_delta",
        Event::Message(_) => "message",
        Event::ReasoningStep(_) => "reasoning_step",
        Event::ToolCallStarted(_) => "tool_call_started",
        Event::ToolCallCompleted(_) => "tool_call_completed",
        Event::ApprovalRequired(_) => "approval_required",
        Event::Usage(_) => "usage",
        Event::RunCompleted(_) => "run_completed",
        Event::RunFailed(_) => "run_failed",
        Event::RunCancelled(_) => "run_cancelled",
    }
}

/// The webhook event type a lifecycle event announces; None for the others (deltas, tool calls...).
pub fn lifecycle_type(e: &Event) -> Option<&'static str> {
    Some(match e {
        Event::RunQueued(_) => "run.queued",
        Event::RunStarted(_) => "run.started",
        Event::ApprovalRequired(_) => "run.requires_action",
        Event::RunCompleted(_) => "run.completed",
        Event::RunFailed(_) => "run.failed",
        Event::RunCancelled(_) => "run.cancelled",
        _ => return None,
    })
}

/// Whether a watcher stops after this event (the run is terminal or waits for a human).
pub fn ends_watch(e: &RunEvent) -> bool {
    matches!(
        e.event,
        Some(
            Event::RunCompleted(_)
                | Event::RunFailed(_)
                | Event::RunCancelled(_)
                | Event::ApprovalRequired(_)
        )
    )
}

/// Stored events of a run of the workspace after `after_seq`, at most `limit`, in order.
pub async fn read(
    db: &impl ConnectionTrait,
    workspace_id: &str,
    run_id: &str,
    after_seq: i64,
    limit: u64,
) -> Result<Vec<RunEvent>> {
    let rows = run_event::Entity::find()
        .filter(run_event::Column::RunId.eq(run_id))
        .filter(run_event::Column::WorkspaceId.eq(workspace_id))
        .filter(run_event::Column::Seq.gt(after_seq))
        .order_by_asc(run_event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?;
    rows.iter()
        .map(|r| {
            RunEvent::decode(r.data.as_slice())
                .map_err(|e| Error::internal(format!("stored event: {e}")))
        })
        .collect()
}

/// What a watcher hears live.
#[derive(Clone)]
pub enum Live {
    /// An event committed by this process.
    Event(Arc<RunEvent>),
    /// Events were committed by another process: read the log.
    Poke,
}

/// In-process fan-out of committed events to the watchers of each run.
#[derive(Default)]
pub struct Hub {
    runs: Mutex<HashMap<String, broadcast::Sender<Live>>>,
}

impl Hub {
    pub fn subscribe(&self, run_id: &str) -> broadcast::Receiver<Live> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(run_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Sends committed events to the run's watchers (nobody watching: nothing to do).
    pub fn publish(&self, events: Vec<RunEvent>) {
        let Some(first) = events.first() else { return };
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = runs.get(&first.run_id) else {
            return;
        };
        if tx.receiver_count() == 0 {
            runs.remove(&first.run_id);
            return;
        }
        for e in events {
            let _ = tx.send(Live::Event(Arc::new(e)));
        }
    }

    /// Tells the run's watchers (if any) to read the log.
    pub fn poke(&self, run_id: &str) {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = runs.get(run_id) {
            let _ = tx.send(Live::Poke);
        }
    }

    /// Tells every watcher to read the log.
    pub fn poke_all(&self) {
        for tx in self.runs.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let _ = tx.send(Live::Poke);
        }
    }

    /// Drops the channel of a run nobody watches any more.
    pub fn release(&self, run_id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs.get(run_id).is_some_and(|tx| tx.receiver_count() == 0) {
            runs.remove(run_id);
        }
    }
}
