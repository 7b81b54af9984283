//! WatchRun: replay the stored events after `after_seq`, then follow live ones, with no gap and no
//! duplicate, until the run ends or waits for a human. The watcher subscribes to the live channel
//! before reading the log, and only ever sends the event with the next sequence number: anything it
//! missed (a lagging subscriber, a gap, a run executing in another process) it reads back from the log.
//! Runs executing in another process announce their events through PostgreSQL NOTIFY (a poke); the
//! periodic re-read remains as the safety net for a lost notification.
//! A slow client only fills its own buffer; the run never waits for it.

use std::{pin::Pin, time::Duration};

use futures_util::Stream;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Runs,
    events::{self, Live},
};
use sea_orm::EntityTrait;

use crate::{
    error::Result,
    pb::{RunEvent, RunStatus, run_event::Event},
    store::{Db, entities::run},
};

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<RunEvent, tonic::Status>> + Send>>;

/// Without live news for this long, read the log (the run may execute in another process).
const POLL_EVERY: Duration = Duration::from_millis(500);
const READ_BATCH: u64 = 500;

impl Runs {
    pub async fn watch(&self, ws: &str, run_id: &str, after_seq: i64) -> Result<WatchStream> {
        if after_seq < 0 {
            return Err(crate::error::Error::invalid(
                "after_seq",
                "must be 0 or more",
            ));
        }
        super::check_run_id(run_id)?;
        let mut live = self.hub.subscribe(run_id);
        let first = events::read(self.db.reader(), ws, run_id, after_seq, READ_BATCH).await?;
        // Every run logs run_queued first, so an empty read means the run is missing (or another
        // workspace's), or the client has everything: only then is the run itself read. A run that
        // is settled (ended, or waiting for a human) ends its log with the event saying so.
        let settled = if first.is_empty() {
            let row = self.row(ws, run_id).await?;
            matches!(
                RunStatus::try_from(row.status),
                Ok(RunStatus::Completed
                    | RunStatus::Failed
                    | RunStatus::Cancelled
                    | RunStatus::RequiresAction)
            )
        } else {
            false
        };
        let (tx, rx) = mpsc::channel::<Result<RunEvent, tonic::Status>>(256);
        let db = self.db.clone();
        let hub = self.hub.clone();
        let closing = self.closing.clone();
        let run_id = run_id.to_owned();
        let ws = ws.to_owned();
        tokio::spawn(async move {
            let mut last = after_seq;
            match catch_up(&db, &ws, &tx, &run_id, &mut last, first).await {
                None | Some(true) => return finish(&hub, &run_id),
                Some(false) if settled => return finish(&hub, &run_id),
                Some(false) => {}
            }
            loop {
                let ended = tokio::select! {
                    msg = live.recv() => match msg {
                        Ok(Live::Poke) => catch_up(&db, &ws, &tx, &run_id, &mut last, Vec::new()).await,
                        Ok(Live::Event(e)) if e.seq <= last => continue,
                        Ok(Live::Event(e)) if e.seq == last + 1 => {
                            last = e.seq;
                            let end = events::ends_watch(&e);
                            if tx.send(Ok(RunEvent::clone(&e))).await.is_err() {
                                None
                            } else {
                                Some(end)
                            }
                        }
                        // A gap or a lag: the log has everything.
                        Ok(_) | Err(RecvError::Lagged(_)) => catch_up(&db, &ws, &tx, &run_id, &mut last, Vec::new()).await,
                        Err(RecvError::Closed) => catch_up(&db, &ws, &tx, &run_id, &mut last, Vec::new()).await,
                    },
                    _ = tokio::time::sleep(POLL_EVERY) => catch_up(&db, &ws, &tx, &run_id, &mut last, Vec::new()).await,
                    _ = tx.closed() => None,
                    _ = closing.cancelled() => None,
                };
                match ended {
                    Some(false) => {}
                    None | Some(true) => return finish(&hub, &run_id),
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

fn finish(hub: &events::Hub, run_id: &str) {
    hub.release(run_id);
}

async fn still_waiting(db: &Db, run_id: &str) -> bool {
    let row = run::Entity::find_by_id(run_id.to_owned())
        .one(db.reader())
        .await;
    matches!(row, Ok(Some(r)) if r.status == RunStatus::RequiresAction as i32)
}

/// Sends the logged events after `last`, advancing it. Some(true) when an ending event was sent,
/// Some(false) when the log is exhausted, None when the client left (or the log could not be read).
/// `first`, when not empty, is the log read already (after `last`).
async fn catch_up(
    db: &Db,
    ws: &str,
    tx: &mpsc::Sender<Result<RunEvent, tonic::Status>>,
    run_id: &str,
    last: &mut i64,
    mut first: Vec<RunEvent>,
) -> Option<bool> {
    loop {
        let batch = if first.is_empty() {
            match events::read(db.reader(), ws, run_id, *last, READ_BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return None;
                }
            }
        } else {
            std::mem::take(&mut first)
        };
        let n = batch.len() as u64;
        let count = batch.len();
        for (i, e) in batch.into_iter().enumerate() {
            *last = e.seq;
            let mut end = events::ends_watch(&e);
            // A past approval is history once the run resumed: it ends the watch only if it is the
            // latest event and the run still waits for the decision.
            if end && matches!(e.event, Some(Event::ApprovalRequired(_))) {
                end = i + 1 == count && n < READ_BATCH && still_waiting(db, run_id).await;
            }
            tx.send(Ok(e)).await.ok()?;
            if end {
                return Some(true);
            }
        }
        if n < READ_BATCH {
            return Some(false);
        }
    }
}
