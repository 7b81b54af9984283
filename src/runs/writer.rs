//! Group commit: every change to a run and its event log goes through one writer task, which takes
//! the changes of many callers from a channel and commits them together in one transaction, with
//! multi-row INSERTs, then acknowledges each caller and broadcasts the committed events.
//!
//! Why: with SQLite's single writer connection, each statement and each commit costs about 100 µs of
//! the writer's time, so a run written as four separate transactions caps the server at a few hundred
//! runs per second. Batched, a run costs about one UPDATE of its own plus a share of two INSERTs and a
//! commit. Callers see the same contract as before: when `create` or `change` returns, the change is
//! durable, and an event is broadcast only after its commit.
//!
//! Events are numbered here, from `runs.last_seq`, in the statement that also checks the caller may
//! change the run (`UPDATE ... WHERE <guard> RETURNING last_seq`), so numbering needs no extra query
//! and two writers can never append the same sequence number.
//!
//! If a batch fails (a constraint, a lost connection), its changes are retried one by one, so one bad
//! change fails alone.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use prost::Message as _;
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, Statement, TransactionTrait, Value,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    events::{self, Hub},
    notify::Kind,
};
use crate::{
    admin::outbox::Lifecycle,
    error::{Error, Result},
    pb::{RunEvent, RunStatus, run_event::Event},
    store::{
        Db,
        entities::run,
        placeholders,
        time::{now_micros, to_timestamp},
    },
};

/// Most changes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Most rows in one multi-row INSERT (SQLite allows 32,766 parameters in a statement).
const ROWS_PER_INSERT: usize = 200;
/// Changes waiting for the writer before callers wait to queue theirs.
const QUEUE: usize = 4096;

/// Who may change a run.
pub(crate) enum Guard {
    /// The worker holding the lease, while the run is RUNNING.
    Lease(String),
    /// Anyone, while the run has this status (control paths: cancel, decisions).
    Status(RunStatus),
}

/// A new state of an existing run.
pub(crate) struct RunChange {
    pub run_id: String,
    pub workspace_id: String,
    pub guard: Guard,
    /// The encoded `Run`; None leaves it as it is.
    pub spec: Option<Vec<u8>>,
    pub status: RunStatus,
    pub checkpoint: Option<String>,
    /// Input tokens, output tokens, cost.
    pub usage: Option<(i64, i64, f64)>,
    pub start_time: Option<i64>,
    /// Sets `end_time` to the commit time.
    pub end: bool,
    /// Clears the lease (the run leaves RUNNING).
    pub release_lease: bool,
}

enum Op {
    Create {
        row: Box<run::Model>,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<bool>>,
    },
    Change {
        change: Box<RunChange>,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<bool>>,
    },
}

impl Op {
    fn events(&self) -> &[Event] {
        match self {
            Op::Create { events, .. } | Op::Change { events, .. } => events,
        }
    }

    fn ids(&self) -> (&str, &str) {
        match self {
            Op::Create { row, .. } => (&row.id, &row.workspace_id),
            Op::Change { change, .. } => (&change.run_id, &change.workspace_id),
        }
    }
}

/// The handle callers use; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Starts the writer task; it ends when the last handle is dropped.
    /// `deliveries` is notified when webhook deliveries were queued.
    pub fn spawn(db: Db, hub: Arc<Hub>, me: Arc<str>, deliveries: Arc<Notify>) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, hub, me, deliveries, rx));
        Writer { tx }
    }

    /// Inserts a new run (its `last_seq` is ignored) with its first events. Ok(false) when a run with
    /// its id or its idempotency key exists already.
    pub async fn create(&self, row: run::Model, events: Vec<Event>) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.send(
            Op::Create {
                row: Box::new(row),
                events,
                reply,
            },
            rx,
        )
        .await
    }

    /// Applies `change` and appends `events`, if the guard holds; Ok(false) when it does not.
    pub async fn change(&self, change: RunChange, events: Vec<Event>) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.send(
            Op::Change {
                change: Box::new(change),
                events,
                reply,
            },
            rx,
        )
        .await
    }

    async fn send(&self, op: Op, rx: oneshot::Receiver<Result<bool>>) -> Result<bool> {
        let stopped = || Error::Unavailable("the server is shutting down".into());
        self.tx.send(op).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(
    db: Db,
    hub: Arc<Hub>,
    me: Arc<str>,
    deliveries: Arc<Notify>,
    mut rx: mpsc::Receiver<Op>,
) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        let now = now_micros();
        match write(&db, &me, &deliveries, &ops, now).await {
            Ok(seqs) => finish(&hub, ops.drain(..), seqs, now),
            Err(e) if ops.len() == 1 => reply_err(ops.pop(), e),
            Err(e) => {
                tracing::warn!(error = %e, changes = ops.len(), "batched run write failed; retrying one by one");
                for op in ops.drain(..) {
                    let now = now_micros();
                    match write(&db, &me, &deliveries, std::slice::from_ref(&op), now).await {
                        Ok(seqs) => finish(&hub, std::iter::once(op), seqs, now),
                        Err(e) => reply_err(Some(op), e),
                    }
                }
            }
        }
    }
}

fn reply_err(op: Option<Op>, e: Error) {
    match op {
        Some(Op::Create { reply, .. } | Op::Change { reply, .. }) => {
            let _ = reply.send(Err(e));
        }
        None => {}
    }
}

/// After the commit: broadcast each applied op's events and acknowledge every caller.
fn finish(hub: &Hub, ops: impl Iterator<Item = Op>, seqs: Vec<Option<i64>>, now: i64) {
    for (op, first) in ops.zip(seqs) {
        let (run_id, events, reply) = match op {
            Op::Create { row, events, reply } => (row.id, events, reply),
            Op::Change {
                change,
                events,
                reply,
            } => (change.run_id, events, reply),
        };
        if let Some(first) = first
            && !events.is_empty()
        {
            let time = Some(to_timestamp(now));
            let stored: Vec<RunEvent> = events
                .into_iter()
                .zip(first..)
                .map(|(e, seq)| RunEvent {
                    run_id: run_id.clone(),
                    seq,
                    time,
                    event: Some(e),
                })
                .collect();
            hub.publish(stored);
        }
        let _ = reply.send(Ok(first.is_some()));
    }
}

/// Writes `ops` in one transaction. For each op: the sequence number of its first event, or None if
/// it was not applied (a create that conflicted, a change whose guard failed).
async fn write(
    db: &Db,
    me: &str,
    deliveries: &Notify,
    ops: &[Op],
    now: i64,
) -> Result<Vec<Option<i64>>> {
    let backend = db.backend();
    let txn = db.writer().begin().await?;
    let mut seqs = vec![None; ops.len()];

    let creates: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i], Op::Create { .. }))
        .collect();
    for chunk in creates.chunks(ROWS_PER_INSERT) {
        let inserted = insert_runs(&txn, backend, ops, chunk, now).await?;
        for &i in chunk {
            if inserted.contains(ops[i].ids().0) {
                seqs[i] = Some(1);
            }
        }
    }
    // Changes in rounds where each run appears once (an UPDATE ... FROM matches a row once); in
    // practice one round, as a worker waits for each commit before its next change.
    let mut rest: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i], Op::Change { .. }))
        .collect();
    while !rest.is_empty() {
        let mut seen = HashSet::with_capacity(rest.len());
        let (round, later): (Vec<usize>, Vec<usize>) =
            rest.into_iter().partition(|&i| seen.insert(ops[i].ids().0));
        rest = later;
        for chunk in round.chunks(ROWS_PER_INSERT) {
            let applied = apply(&txn, backend, ops, chunk, now).await?;
            for &i in chunk {
                if let Some(last) = applied.get(ops[i].ids().0) {
                    seqs[i] = Some(last - ops[i].events().len() as i64 + 1);
                }
            }
        }
    }
    insert_events(&txn, backend, ops, &seqs, now).await?;
    let announced =
        crate::admin::outbox::enqueue(&txn, backend, &lifecycle(ops, &seqs), now).await?;
    if backend == DbBackend::Postgres {
        // Delivered with the commit, and only if it commits.
        for payload in notices(me, ops, &seqs) {
            txn.execute_raw(crate::store::notify::statement(
                super::notify::CHANNEL,
                &payload,
            ))
            .await?;
        }
    }
    txn.commit().await?;
    if announced > 0 {
        deliveries.notify_one();
    }
    Ok(seqs)
}

/// The lifecycle events of the applied ops, for the webhook outbox.
fn lifecycle<'a>(ops: &'a [Op], seqs: &[Option<i64>]) -> Vec<Lifecycle<'a>> {
    let mut out = Vec::new();
    for (op, first) in ops.iter().zip(seqs) {
        let Some(first) = *first else { continue };
        let (run_id, workspace_id) = op.ids();
        let run = match op {
            Op::Create { row, .. } => row.spec.as_slice(),
            Op::Change { change, .. } => match &change.spec {
                Some(spec) => spec.as_slice(),
                None => continue,
            },
        };
        for (e, seq) in op.events().iter().zip(first..) {
            let Some(event_type) = events::lifecycle_type(e) else {
                continue;
            };
            out.push(Lifecycle {
                workspace_id,
                event_type,
                run_id,
                seq,
                run,
                message: "agentry.v1.Run",
            });
        }
    }
    out
}

/// What the other processes must hear of this batch: the runs with new events, and whether a run
/// became claimable.
fn notices(me: &str, ops: &[Op], seqs: &[Option<i64>]) -> Vec<String> {
    let applied = || {
        ops.iter()
            .zip(seqs)
            .filter(|(_, s)| s.is_some())
            .map(|(op, _)| op)
    };
    let claimable = applied().any(|op| match op {
        Op::Create { row, .. } => row.status == RunStatus::Queued as i32,
        Op::Change { change, .. } => change.status == RunStatus::Queued,
    });
    let with_events = applied()
        .filter(|op| !op.events().is_empty())
        .map(|op| op.ids().0);
    let mut out = super::notify::payloads(me, Kind::Events, with_events);
    if claimable {
        out.extend(super::notify::payloads(me, Kind::Claimable, []));
    }
    out
}

const RUN_COLUMNS: &str = "id, workspace_id, agent_id, agent_version, session_id, user_id, status, \
    trigger_source, idempotency_key, lease_owner, lease_expire_time, spec, create_time, start_time, \
    end_time, checkpoint, cancel_requested, update_time, model, input_tokens, output_tokens, cost_usd, \
    last_seq";
const RUN_ARITY: usize = 23;
const EVENT_ARITY: usize = 6;

/// Inserts the runs of `ops[chunk]`; returns the ids that were inserted.
async fn insert_runs(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    ops: &[Op],
    chunk: &[usize],
    now: i64,
) -> Result<HashSet<String>> {
    let mut values = Vec::with_capacity(chunk.len() * RUN_ARITY);
    for &i in chunk {
        let Op::Create { row, events, .. } = &ops[i] else {
            continue;
        };
        let r = row.as_ref();
        values.extend([
            Value::from(r.id.as_str()),
            r.workspace_id.as_str().into(),
            r.agent_id.as_str().into(),
            r.agent_version.into(),
            r.session_id.as_str().into(),
            r.user_id.as_str().into(),
            r.status.into(),
            r.trigger_source.into(),
            r.idempotency_key.clone().into(),
            r.lease_owner.clone().into(),
            r.lease_expire_time.into(),
            r.spec.clone().into(),
            r.create_time.into(),
            r.start_time.into(),
            r.end_time.into(),
            r.checkpoint.clone().into(),
            r.cancel_requested.into(),
            now.into(),
            r.model.as_str().into(),
            r.input_tokens.into(),
            r.output_tokens.into(),
            r.cost_usd.into(),
            (events.len() as i64).into(),
        ]);
    }
    let sql = format!(
        "INSERT INTO runs ({RUN_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING RETURNING id",
        tuples(values.len() / RUN_ARITY, RUN_ARITY)
    );
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            placeholders(backend, &sql),
            values,
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String>("", "id")?))
        .collect()
}

const CHANGE_ARITY: usize = 13;

/// Applies the changes `ops[chunk]` (distinct runs) in one statement, each only if its guard holds;
/// returns the new `last_seq` of each run changed. A NULL in the VALUES row leaves the column as is.
async fn apply(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    ops: &[Op],
    chunk: &[usize],
    now: i64,
) -> Result<HashMap<String, i64>> {
    let mut values: Vec<Value> = Vec::with_capacity(2 + chunk.len() * CHANGE_ARITY);
    values.extend([Value::from(now), Value::from(now)]);
    for &i in chunk {
        let Op::Change {
            change: c, events, ..
        } = &ops[i]
        else {
            continue;
        };
        let (input, output, cost) = match c.usage {
            Some((i, o, c)) => (Some(i), Some(o), Some(c)),
            None => (None, None, None),
        };
        let (from, owner) = match &c.guard {
            Guard::Lease(owner) => (RunStatus::Running, Some(owner.clone())),
            Guard::Status(from) => (*from, None),
        };
        values.extend([
            Value::from(c.run_id.as_str()),
            (c.status as i32).into(),
            (events.len() as i64).into(),
            c.spec.clone().into(),
            c.checkpoint.clone().into(),
            input.into(),
            output.into(),
            cost.into(),
            c.start_time.into(),
            c.end.into(),
            c.release_lease.into(),
            (from as i32).into(),
            owner.into(),
        ]);
    }
    let rows = (values.len() - 2) / CHANGE_ARITY;
    // VALUES columns are named column1, column2... on both SQLite and PostgreSQL.
    let sql = format!(
        "UPDATE runs SET status = v.column2, update_time = ?, last_seq = runs.last_seq + v.column3, \
         spec = COALESCE(v.column4, runs.spec), checkpoint = COALESCE(v.column5, runs.checkpoint), \
         input_tokens = COALESCE(v.column6, runs.input_tokens), \
         output_tokens = COALESCE(v.column7, runs.output_tokens), \
         cost_usd = COALESCE(v.column8, runs.cost_usd), \
         start_time = COALESCE(v.column9, runs.start_time), \
         end_time = CASE WHEN v.column10 THEN ? ELSE runs.end_time END, \
         lease_owner = CASE WHEN v.column11 THEN NULL ELSE runs.lease_owner END, \
         lease_expire_time = CASE WHEN v.column11 THEN NULL ELSE runs.lease_expire_time END \
         FROM (VALUES {}) AS v \
         WHERE runs.id = v.column1 AND runs.status = v.column12 \
         AND (v.column13 IS NULL OR runs.lease_owner = v.column13) \
         RETURNING id, last_seq",
        tuples(rows, CHANGE_ARITY)
    );
    let returned = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            placeholders(backend, &sql),
            values,
        ))
        .await?;
    returned
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<String>("", "id")?,
                r.try_get::<i64>("", "last_seq")?,
            ))
        })
        .collect()
}

/// Appends the events of every applied op, numbered from its first sequence number.
async fn insert_events(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    ops: &[Op],
    seqs: &[Option<i64>],
    now: i64,
) -> Result<()> {
    let time = Some(to_timestamp(now));
    let mut values = Vec::new();
    let mut rows = 0;
    for (op, first) in ops.iter().zip(seqs) {
        let Some(first) = *first else { continue };
        let (run_id, ws) = op.ids();
        for (e, seq) in op.events().iter().zip(first..) {
            // The stored form is the whole RunEvent; the oneof is encoded after the header fields
            // (protobuf does not care about field order), which spares cloning the event.
            let mut data = RunEvent {
                run_id: run_id.to_owned(),
                seq,
                time,
                event: None,
            }
            .encode_to_vec();
            e.encode(&mut data);
            values.extend([
                Value::from(run_id),
                seq.into(),
                ws.into(),
                events::kind(e).into(),
                data.into(),
                now.into(),
            ]);
            rows += 1;
            if rows == ROWS_PER_INSERT {
                insert_event_rows(txn, backend, std::mem::take(&mut values), rows).await?;
                rows = 0;
            }
        }
    }
    if rows > 0 {
        insert_event_rows(txn, backend, values, rows).await?;
    }
    Ok(())
}

async fn insert_event_rows(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    values: Vec<Value>,
    rows: usize,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO run_events (run_id, seq, workspace_id, kind, data, time) VALUES {}",
        tuples(rows, EVENT_ARITY)
    );
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        placeholders(backend, &sql),
        values,
    ))
    .await?;
    Ok(())
}

/// `(?, ?, ?), (?, ?, ?)`: `rows` tuples of `arity` placeholders.
fn tuples(rows: usize, arity: usize) -> String {
    let one = format!("({})", vec!["?"; arity].join(", "));
    vec![one; rows].join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tuples_have_the_right_shape() {
        assert_eq!(super::tuples(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(super::tuples(1, 1), "(?)");
    }
}
