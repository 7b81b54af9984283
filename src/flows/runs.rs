//! Flow runs in the database: creating them (TriggerFlow, events, schedules), reading and listing
//! them, and `mutate`, the one way a run changes. `mutate` locks the row, applies a change to the
//! decoded state, and in the same transaction stores the new state, appends its events with the next
//! sequence numbers, queues webhook deliveries and (PostgreSQL) notifies the other processes; only
//! after the commit are local watchers told. So a watcher never sees an event that was not stored,
//! and a crash never leaves a step recorded without its event.

use std::{collections::BTreeMap, pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use prost::Message;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Flows, hub,
    plan::{self, State},
};
use crate::{
    admin::outbox::{self, Lifecycle},
    agents::{Page, before, page},
    error::{Error, Result},
    pb::{
        Flow, FlowRun, FlowRunEvent, FlowRunStatus, FlowRunTrigger, FlowTriggerSource,
        ListFlowRunsRequest, TriggerFlowRequest, flow_run_event::Event,
    },
    store::{
        cursor,
        entities::{flow_run, flow_run_event},
        notify,
        time::{from_timestamp, now_micros, to_timestamp},
    },
};

pub type FlowWatchStream = Pin<Box<dyn Stream<Item = Result<FlowRunEvent, tonic::Status>> + Send>>;

/// The PostgreSQL channel of flow run changes: `<sender>\t<run id>\t<1 if claimable>`.
pub const CHANNEL: &str = "agentry_flow_runs";
const POLL_EVERY: Duration = Duration::from_millis(1000);
const READ_BATCH: u64 = 500;

/// A version of a flow run row: see [`Flows::stamp`].
pub type Stamp = (i64, i64);

/// Who may change a run.
pub enum Guard<'a> {
    /// An API call of workspace `ws`.
    Api(&'a str),
    /// The executor holding the lease.
    Owner(&'a str),
}

/// What a change does to the lease.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Keep,
    /// The executor lets the run go (it waits, is paused, or the process stops).
    Release,
}

/// The webhook event type of a flow run event.
fn lifecycle_type(e: &Event) -> Option<&'static str> {
    Some(match e {
        Event::FlowRunStarted(_) => "flow_run.started",
        Event::FlowRunPaused(_) => "flow_run.paused",
        Event::FlowRunCompleted(_) => "flow_run.completed",
        Event::FlowRunFailed(_) => "flow_run.failed",
        Event::FlowRunCancelled(_) => "flow_run.cancelled",
        _ => return None,
    })
}

pub fn ends_watch(e: &FlowRunEvent) -> bool {
    matches!(
        e.event,
        Some(Event::FlowRunCompleted(_) | Event::FlowRunFailed(_) | Event::FlowRunCancelled(_))
    )
}

pub(crate) fn check_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if id.len() > 64 || uuid::Uuid::parse_str(id).is_err() {
        return Err(Error::not_found(format!("flow run {id:?} not found")));
    }
    Ok(())
}

fn decode_run(row: &flow_run::Model) -> Result<FlowRun> {
    FlowRun::decode(row.spec.as_slice())
        .map_err(|e| Error::internal(format!("stored flow run does not decode: {e}")))
}

impl Flows {
    /// Starts a MANUAL run of the flow's current version (or returns the run of the same idempotency key).
    pub async fn trigger(&self, ws: &str, req: TriggerFlowRequest) -> Result<FlowRun> {
        crate::agents::validate::check_slug("flow_id", &req.flow_id)?;
        if req.idempotency_key.len() > 255 {
            return Err(Error::invalid("idempotency_key", "at most 255 characters"));
        }
        if !req.idempotency_key.is_empty()
            && let Some(run) = self.by_key(ws, &req.idempotency_key).await?
        {
            return Ok(run);
        }
        let flow = self.get(ws, &req.flow_id, 0).await?;
        let trigger = FlowRunTrigger {
            source: FlowTriggerSource::Manual as i32,
            ..Default::default()
        };
        let txn = self.db.writer().begin().await?;
        let run = insert_run(&txn, ws, &flow, req.input, trigger, &req.idempotency_key).await;
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                txn.rollback().await?;
                if !req.idempotency_key.is_empty()
                    && let Some(run) = self.by_key(ws, &req.idempotency_key).await?
                {
                    return Ok(run); // a concurrent call with the same key won
                }
                return Err(e);
            }
        };
        txn.commit().await?;
        self.started(&[run.id.as_str()]).await;
        Ok(run)
    }

    /// Tells the executors that runs were queued (after their commit).
    pub(crate) async fn started(&self, ids: &[&str]) {
        self.wake.notify_one();
        if self.db.backend() == DbBackend::Postgres {
            for id in ids {
                let payload = format!("{}\t{id}\t1", self.me);
                if let Err(e) = notify::send(&self.db, CHANNEL, &payload).await {
                    // The other processes find the run at their next poll.
                    tracing::warn!(error = %e, "could not announce a queued flow run");
                }
            }
        }
    }

    async fn by_key(&self, ws: &str, key: &str) -> Result<Option<FlowRun>> {
        let row = flow_run::Entity::find()
            .filter(flow_run::Column::WorkspaceId.eq(ws))
            .filter(flow_run::Column::IdempotencyKey.eq(key))
            .one(self.db.reader())
            .await?;
        row.as_ref().map(decode_run).transpose()
    }

    pub async fn get_run(&self, ws: &str, id: &str) -> Result<FlowRun> {
        check_id("flow_run_id", id)?;
        let row = self.run_row(ws, id).await?;
        decode_run(&row)
    }

    pub(crate) async fn run_row(&self, ws: &str, id: &str) -> Result<flow_run::Model> {
        flow_run::Entity::find_by_id(id.to_owned())
            .filter(flow_run::Column::WorkspaceId.eq(ws))
            .one(self.db.reader())
            .await?
            .ok_or_else(|| Error::not_found(format!("flow run {id:?} not found")))
    }

    /// Flow runs of the workspace, newest first.
    pub async fn list_runs(&self, ws: &str, req: &ListFlowRunsRequest) -> Result<Page<FlowRun>> {
        let limit = cursor::page_limit(req.limit)?;
        let mut q = flow_run::Entity::find().filter(flow_run::Column::WorkspaceId.eq(ws));
        if !req.flow_id.is_empty() {
            q = q.filter(flow_run::Column::FlowId.eq(req.flow_id.as_str()));
        }
        if req.status != 0 {
            FlowRunStatus::try_from(req.status)
                .map_err(|_| Error::invalid("status", "unknown status"))?;
            q = q.filter(flow_run::Column::Status.eq(req.status));
        }
        if req.trigger_source != 0 {
            FlowTriggerSource::try_from(req.trigger_source)
                .map_err(|_| Error::invalid("trigger_source", "unknown source"))?;
            q = q.filter(flow_run::Column::TriggerSource.eq(req.trigger_source));
        }
        if let Some(t) = &req.created_after {
            let t =
                from_timestamp(t).ok_or_else(|| Error::invalid("created_after", "out of range"))?;
            q = q.filter(flow_run::Column::CreateTime.gte(t));
        }
        if let Some(t) = &req.created_before {
            let t = from_timestamp(t)
                .ok_or_else(|| Error::invalid("created_before", "out of range"))?;
            q = q.filter(flow_run::Column::CreateTime.lt(t));
        }
        if !req.cursor.is_empty() {
            let (t, id) = cursor::decode_time_id("flow_runs", &req.cursor)?;
            q = q.filter(before(
                flow_run::Column::CreateTime,
                flow_run::Column::Id,
                t,
                id,
            ));
        }
        let rows = q
            .order_by_desc(flow_run::Column::CreateTime)
            .order_by_desc(flow_run::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        page(
            rows,
            limit,
            |r| cursor::encode_time_id("flow_runs", r.create_time, &r.id),
            decode_run,
        )
    }

    /// Changes run `id` through `f` in one transaction (see the module doc). Returns `f`'s result
    /// and the run as stored.
    pub(crate) async fn mutate<T>(
        &self,
        id: &str,
        guard: Guard<'_>,
        lease: Lease,
        f: impl FnOnce(&mut State) -> Result<T>,
    ) -> Result<(T, FlowRun)> {
        let (out, run, _) = self.mutate_stamped(id, guard, lease, f).await?;
        Ok((out, run))
    }

    /// [`Self::mutate`], also returning the row's stamp after it: see [`Self::stamp`].
    pub(crate) async fn mutate_stamped<T>(
        &self,
        id: &str,
        guard: Guard<'_>,
        lease: Lease,
        f: impl FnOnce(&mut State) -> Result<T>,
    ) -> Result<(T, FlowRun, Stamp)> {
        let backend = self.db.backend();
        let txn = self.db.writer().begin().await?;
        let mut q = flow_run::Entity::find_by_id(id.to_owned());
        if let Guard::Api(ws) = guard {
            q = q.filter(flow_run::Column::WorkspaceId.eq(ws));
        }
        if backend == DbBackend::Postgres {
            q = q.lock_exclusive();
        }
        let row = q
            .one(&txn)
            .await?
            .ok_or_else(|| Error::not_found(format!("flow run {id:?} not found")))?;
        if let Guard::Owner(me) = guard
            && row.owner.as_deref() != Some(me)
        {
            return Err(Error::Aborted(format!("lost the lease of flow run {id:?}")));
        }
        let mut st = State {
            run: decode_run(&row)?,
            timers: serde_json::from_str::<BTreeMap<String, i64>>(&row.timers).unwrap_or_default(),
            ..Default::default()
        };
        let before = st.run.clone();
        let before_timers = st.timers.clone();
        let out = f(&mut st)?;
        let now = now_micros();
        let terminal = plan::is_terminal(st.run.status);
        let owner = if terminal || lease == Lease::Release {
            None
        } else {
            row.owner.clone()
        };
        let due_at = if terminal {
            None
        } else if owner.is_some() {
            row.due_at
        } else {
            match FlowRunStatus::try_from(st.run.status) {
                Ok(FlowRunStatus::Paused) => None,
                Ok(FlowRunStatus::Waiting) => st.timers.values().min().copied(),
                _ => Some(now),
            }
        };
        if st.run == before
            && st.timers == before_timers
            && st.events.is_empty()
            && owner == row.owner
            && due_at == row.due_at
        {
            txn.rollback().await?;
            return Ok((out, st.run, (row.last_seq, row.update_time)));
        }
        let spec = st.run.encode_to_vec();
        let n = st.events.len() as i64;
        // Strictly increasing, so that a stamp names one version of the row.
        let now = now.max(row.update_time + 1);
        flow_run::Entity::update_many()
            .col_expr(flow_run::Column::Status, st.run.status.into())
            .col_expr(flow_run::Column::Spec, spec.clone().into())
            .col_expr(
                flow_run::Column::Timers,
                serde_json::to_string(&st.timers)
                    .unwrap_or_else(|_| "{}".into())
                    .into(),
            )
            .col_expr(flow_run::Column::Owner, owner.clone().into())
            .col_expr(flow_run::Column::DueAt, due_at.into())
            .col_expr(flow_run::Column::LastSeq, (row.last_seq + n).into())
            .col_expr(flow_run::Column::UpdateTime, now.into())
            .filter(flow_run::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        let mut lifecycle = Vec::new();
        if n > 0 {
            let mut rows = Vec::with_capacity(st.events.len());
            for (e, seq) in st.events.iter().zip(row.last_seq + 1..) {
                if let Some(t) = lifecycle_type(e) {
                    lifecycle.push((t, seq));
                }
                let ev = FlowRunEvent {
                    flow_run_id: id.to_owned(),
                    seq,
                    time: Some(to_timestamp(now)),
                    event: Some(e.clone()),
                };
                rows.push(flow_run_event::ActiveModel {
                    flow_run_id: Set(id.to_owned()),
                    seq: Set(seq),
                    workspace_id: Set(row.workspace_id.clone()),
                    data: Set(ev.encode_to_vec()),
                    time: Set(now),
                });
            }
            flow_run_event::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await?;
        }
        let queued = if lifecycle.is_empty() {
            0
        } else {
            let events: Vec<Lifecycle<'_>> = lifecycle
                .iter()
                .map(|&(event_type, seq)| Lifecycle {
                    workspace_id: &row.workspace_id,
                    event_type,
                    run_id: id,
                    seq,
                    run: &spec,
                    message: "agentry.v1.FlowRun",
                })
                .collect();
            outbox::enqueue(&txn, backend, &events, now).await?
        };
        let claimable = owner.is_none() && due_at.is_some_and(|d| d <= now);
        if backend == DbBackend::Postgres {
            let payload = format!("{}\t{id}\t{}", self.me, u8::from(claimable));
            txn.execute_raw(notify::statement(CHANNEL, &payload))
                .await?;
        }
        txn.commit().await?;
        self.hub.changed(id);
        if claimable {
            self.wake.notify_one();
        }
        if queued > 0 {
            self.deliveries.notify_one();
        }
        Ok((out, st.run, (row.last_seq + n, now)))
    }

    /// What version of run `id` the database holds: (last_seq, update_time), which every change of the
    /// row moves forward. A worker compares it with the stamp of its own last change to tell a change
    /// of someone else's from the echo of its own.
    pub(crate) async fn stamp(&self, id: &str) -> Result<Option<Stamp>> {
        Ok(flow_run::Entity::find_by_id(id.to_owned())
            .one(self.db.reader())
            .await?
            .map(|r| (r.last_seq, r.update_time)))
    }

    /// Replays the events after `after_seq`, then follows the run until it ends.
    pub async fn watch(&self, ws: &str, id: &str, after_seq: i64) -> Result<FlowWatchStream> {
        if after_seq < 0 {
            return Err(Error::invalid("after_seq", "must be 0 or more"));
        }
        check_id("flow_run_id", id)?;
        let mut rx = self.hub.subscribe();
        self.run_row(ws, id).await?;
        let (tx, out) = mpsc::channel::<Result<FlowRunEvent, tonic::Status>>(256);
        let db = self.db.clone();
        let closing = self.closing.clone();
        let (ws, id) = (ws.to_owned(), id.to_owned());
        tokio::spawn(async move {
            let mut last = after_seq;
            loop {
                let rows = flow_run_event::Entity::find()
                    .filter(flow_run_event::Column::FlowRunId.eq(id.as_str()))
                    .filter(flow_run_event::Column::WorkspaceId.eq(ws.as_str()))
                    .filter(flow_run_event::Column::Seq.gt(last))
                    .order_by_asc(flow_run_event::Column::Seq)
                    .limit(READ_BATCH)
                    .all(db.reader())
                    .await;
                let rows = match rows {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(Error::from(e).into())).await;
                        return;
                    }
                };
                let full = rows.len() as u64 == READ_BATCH;
                for r in rows {
                    let Ok(e) = FlowRunEvent::decode(r.data.as_slice()) else {
                        continue;
                    };
                    last = e.seq;
                    let end = ends_watch(&e);
                    if tx.send(Ok(e)).await.is_err() || end {
                        return;
                    }
                }
                if full {
                    continue;
                }
                // A run that ended before `after_seq` caught up has nothing more to say.
                match flow_run::Entity::find_by_id(id.clone())
                    .one(db.reader())
                    .await
                {
                    Ok(Some(r)) if plan::is_terminal(r.status) && r.last_seq <= last => return,
                    _ => {}
                }
                tokio::select! {
                    _ = hub::changed(&mut rx, &id) => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = tx.closed() => return,
                    _ = closing.cancelled() => return,
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(out)))
    }

    /// On PostgreSQL, follows the other processes' flow run notices until `stop` turns true.
    pub fn listen(
        self: &Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let me = self.clone();
        notify::listen(
            &self.db,
            &[CHANNEL],
            Arc::new(move |h| match h {
                notify::Heard::Connected => me.wake.notify_one(),
                notify::Heard::Message { payload, .. } => me.heard(payload),
            }),
            stop,
        )
    }

    /// Applies a notice of another process.
    pub fn heard(&self, payload: &str) {
        let mut parts = payload.split('\t');
        let (Some(sender), Some(id), claimable) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        if sender == &*self.me {
            return;
        }
        self.hub.changed(id);
        if claimable == Some("1") {
            self.wake.notify_one();
        }
    }
}

/// Inserts a QUEUED run of `flow`'s current version (input validated against its schema).
pub(crate) async fn insert_run(
    txn: &DatabaseTransaction,
    ws: &str,
    flow: &Flow,
    input: Option<pbjson_types::Struct>,
    trigger: FlowRunTrigger,
    idempotency_key: &str,
) -> Result<FlowRun> {
    if let Some(schema) = &flow.input_schema {
        crate::runs::check_input(schema, input.as_ref())?;
    }
    let now = now_micros();
    let run = FlowRun {
        id: uuid::Uuid::now_v7().to_string(),
        flow_id: flow.id.clone(),
        flow_version: flow.version,
        status: FlowRunStatus::Queued as i32,
        input: Some(input.unwrap_or_default()),
        trigger: Some(trigger.clone()),
        idempotency_key: idempotency_key.to_owned(),
        create_time: Some(to_timestamp(now)),
        ..Default::default()
    };
    flow_run::Entity::insert(flow_run::ActiveModel {
        id: Set(run.id.clone()),
        workspace_id: Set(ws.to_owned()),
        flow_id: Set(flow.id.clone()),
        flow_version: Set(flow.version),
        status: Set(run.status),
        trigger_source: Set(trigger.source),
        idempotency_key: Set((!idempotency_key.is_empty()).then(|| idempotency_key.to_owned())),
        spec: Set(run.encode_to_vec()),
        timers: Set("{}".into()),
        owner: Set(None),
        due_at: Set(Some(now)),
        last_seq: Set(0),
        create_time: Set(now),
        update_time: Set(now),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(run)
}

/// The flow run ids in a published event's row.
pub(crate) fn ids(s: &str) -> Vec<&str> {
    s.split(' ').filter(|s| !s.is_empty()).collect()
}
