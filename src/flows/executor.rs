//! The flow executor: claims flow runs that need a worker (`due_at <= now`) with a lease, and drives
//! each through [`super::plan`] until it ends, waits for a human or for a time further than
//! [`HOLD`] away, or is paused; then it lets the run go. A run whose worker died is claimed again
//! when its lease expires and continues from its checkpoint (its steps): completed steps are not
//! redone, an agent step re-attaches to its child run, a wait keeps its deadline.
//!
//! Each driven run is one task. Its agent and tool steps run as sub-tasks; their results are applied
//! by the next `mutate`, together with whatever else became due, so one commit records a step's end
//! and the steps it starts.

use std::{collections::HashMap, sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value as SqlValue};
use serde_json::Value;
use tokio::{
    sync::{Semaphore, watch},
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Flows,
    control::cancel_children,
    graph::Shape,
    hub,
    nodes::{self, Site},
    plan::{self, Plan, State},
    runs::{Guard, Lease},
};
use crate::{
    api::AppState,
    error::{Error, Result},
    pb::{ErrorInfo, FlowRunStatus, StepStatus},
    store::{
        entities::flow_run,
        placeholders,
        time::{now_micros, to_timestamp},
    },
};
use sea_orm::EntityTrait;

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(4);
/// A run whose next timer is this close stays with its worker instead of being let go.
const HOLD: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often due schedules are looked for (cron's resolution is a minute).
const SCHEDULES_EVERY: Duration = Duration::from_secs(1);
/// Flow runs driven at once per process.
const CONCURRENCY: usize = 256;

pub struct FlowEngine {
    state: Arc<AppState>,
    slots: Arc<Semaphore>,
    allow_private: bool,
    stopping: CancellationToken,
}

type StepResult = (String, i32, std::result::Result<Value, ErrorInfo>);

impl FlowEngine {
    pub fn new(state: Arc<AppState>, allow_private: bool) -> Arc<FlowEngine> {
        Arc::new(FlowEngine {
            state,
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            allow_private,
            stopping: CancellationToken::new(),
        })
    }

    fn flows(&self) -> &Flows {
        &self.state.flows
    }

    /// Claims and drives runs until `stop` turns true; then lets every run go (another process, or
    /// this one after a restart, continues them).
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            let mut last_schedules = tokio::time::Instant::now() - SCHEDULES_EVERY;
            loop {
                if *stop.borrow() {
                    break;
                }
                let free = self.slots.available_permits();
                if free > 0 {
                    match self.claim(free.min(64)).await {
                        Ok(ids) => {
                            for (id, takeover) in ids {
                                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                                    break;
                                };
                                let me = self.clone();
                                let span = tracing::info_span!("flow_run", flow_run_id = %id);
                                tasks.spawn(
                                    async move {
                                        me.drive(&id, takeover).await;
                                        drop(permit);
                                    }
                                    .instrument(span),
                                );
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "claiming flow runs failed"),
                    }
                }
                if last_schedules.elapsed() >= SCHEDULES_EVERY {
                    last_schedules = tokio::time::Instant::now();
                    if let Err(e) = self.state.flows.fire_schedules().await {
                        tracing::warn!(error = %e, "firing schedules failed");
                    }
                }
                let wake = self.flows().wake.clone();
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stop.changed() => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
                while tasks.try_join_next().is_some() {}
            }
            self.stopping.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
        })
    }

    /// Takes up to `n` runs that need a worker: first those nobody holds (new, due, resumed), then
    /// those whose worker's lease expired (takeovers, flagged true).
    async fn claim(&self, n: usize) -> Result<Vec<(String, bool)>> {
        let mut out: Vec<(String, bool)> = self
            .claim_where(n, "owner IS NULL")
            .await?
            .into_iter()
            .map(|id| (id, false))
            .collect();
        if out.len() < n {
            let taken = self.claim_where(n - out.len(), "owner IS NOT NULL").await?;
            out.extend(taken.into_iter().map(|id| (id, true)));
        }
        Ok(out)
    }

    async fn claim_where(&self, n: usize, which: &str) -> Result<Vec<String>> {
        let db = &self.flows().db;
        let backend = db.backend();
        let now = now_micros();
        let lock = if backend == DbBackend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE flow_runs SET owner = ?, due_at = ? WHERE id IN \
             (SELECT id FROM flow_runs WHERE due_at <= ? AND {which} ORDER BY due_at LIMIT ?{lock}) \
             AND due_at <= ? AND {which} RETURNING id"
        );
        let rows = db
            .writer()
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                placeholders(backend, &sql),
                [
                    SqlValue::from(self.flows().me.to_string()),
                    SqlValue::from(now + LEASE.as_micros() as i64),
                    SqlValue::from(now),
                    SqlValue::from(n as i64),
                    SqlValue::from(now),
                ],
            ))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "id").map_err(Error::from))
            .collect()
    }

    /// Extends the lease of run `id`; false when it is no longer ours.
    async fn renew(&self, id: &str) -> bool {
        let db = &self.flows().db;
        let backend = db.backend();
        let res = db
            .writer()
            .execute_raw(Statement::from_sql_and_values(
                backend,
                placeholders(
                    backend,
                    "UPDATE flow_runs SET due_at = ? WHERE id = ? AND owner = ?",
                ),
                [
                    SqlValue::from(now_micros() + LEASE.as_micros() as i64),
                    SqlValue::from(id),
                    SqlValue::from(self.flows().me.to_string()),
                ],
            ))
            .await;
        !matches!(res, Ok(r) if r.rows_affected() == 0)
    }

    async fn drive(self: &Arc<Self>, id: &str, takeover: bool) {
        let flows = self.flows();
        let me = flows.me.to_string();
        let Ok(Some(row)) = flow_run::Entity::find_by_id(id.to_owned())
            .one(flows.db.reader())
            .await
        else {
            return;
        };
        let ws = row.workspace_id.clone();
        let graph = match flows.graph(&ws, &row.flow_id, row.flow_version).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "flow version of a run is missing");
                let _ = flows
                    .mutate(id, Guard::Owner(&me), Lease::Keep, |st| {
                        st.fail(plan::error("internal", e.to_string()), now_micros());
                        Ok(())
                    })
                    .await;
                return;
            }
        };
        let graph = &*graph;
        let shape = Shape::new(graph);
        let plan = Plan {
            graph,
            shape: &shape,
        };
        let mut rx = flows.hub.subscribe();
        let mut inflight: JoinSet<StepResult> = JoinSet::new();
        let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        let mut results: Vec<StepResult> = Vec::new();
        let mut first = true;
        let mut known: super::runs::Stamp;
        let mut renew = tokio::time::interval(RENEW_EVERY);
        renew.reset();
        loop {
            let pending = results.clone();
            let claimed = first;
            let res = flows
                .mutate_stamped(id, Guard::Owner(&me), Lease::Keep, |st: &mut State| {
                    let now = now_micros();
                    if claimed {
                        st.claimed(now, takeover);
                    }
                    for (node, attempt, r) in pending {
                        st.finish(&plan, &node, attempt, r, now);
                    }
                    let execute = st.advance(&plan, now);
                    let steps: Vec<_> =
                        execute.iter().filter_map(|n| st.step(n).cloned()).collect();
                    Ok((
                        steps,
                        st.timers.values().min().copied(),
                        std::mem::take(&mut st.cancel_children),
                    ))
                })
                .await;
            let ((execute, next_timer, children), run, stamp) = match res {
                Ok(v) => v,
                Err(Error::Aborted(_) | Error::NotFound(_)) => {
                    inflight.abort_all();
                    return; // the run was cancelled or taken over
                }
                Err(e) => {
                    tracing::warn!(error = %e, "flow run step not recorded; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            first = false;
            known = stamp;
            results.clear();
            cancel_children(&self.state.runs, &ws, &children, "the flow run ended").await;
            if plan::is_terminal(run.status) {
                inflight.abort_all();
                return;
            }
            let paused = run.status == FlowRunStatus::Paused as i32;
            // Steps no longer running here (cancelled, or decided elsewhere) stop.
            running.retain(|node, h| {
                let keep = run
                    .steps
                    .iter()
                    .any(|s| &s.node_id == node && s.status == StepStatus::Running as i32);
                if !keep {
                    h.abort();
                }
                keep
            });
            if !paused {
                for step in execute {
                    if running.contains_key(&step.node_id) {
                        continue;
                    }
                    let Some(node) = super::graph::node(graph, &shape, &step.node_id).cloned()
                    else {
                        continue;
                    };
                    let me2 = self.clone();
                    let (ws2, id2) = (ws.clone(), id.to_owned());
                    let node_id = step.node_id.clone();
                    let span = tracing::info_span!("flow_step", node_id = %node_id, attempt = step.attempt);
                    let h = inflight.spawn(
                        async move {
                            let attempt = step.attempt;
                            let site = Site {
                                state: &me2.state,
                                workspace_id: &ws2,
                                flow_run_id: &id2,
                                allow_private: me2.allow_private,
                            };
                            let r = nodes::execute(&site, &node, &step, async |child| {
                                me2.record_child(&id2, &node.id, attempt, child).await;
                            })
                            .await;
                            (node.id.clone(), attempt, r)
                        }
                        .instrument(span),
                    );
                    running.insert(node_id, h);
                }
            }
            if running.is_empty() {
                let hold = next_timer.is_some_and(|t| t - now_micros() <= HOLD.as_micros() as i64);
                if paused || !hold {
                    self.release(id).await;
                    return;
                }
            }
            let wake_at = tokio::time::Instant::now()
                + next_timer
                    .map(|t| Duration::from_micros((t - now_micros()).max(0) as u64))
                    .unwrap_or(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                        if let Ok(r) = done {
                            running.remove(&r.0);
                            results.push(r);
                        }
                        // Take every other result that is ready too: one commit for all.
                        while let Some(Ok(r)) = inflight.try_join_next() {
                            running.remove(&r.0);
                            results.push(r);
                        }
                        break;
                    }
                    _ = tokio::time::sleep_until(wake_at) => break,
                    _ = hub::changed(&mut rx, id) => {
                        // The echo of this worker's own change needs nothing; anyone else's does.
                        match flows.stamp(id).await {
                            Ok(Some(s)) if s == known => {}
                            _ => break,
                        }
                    }
                    _ = renew.tick() => {
                        if !self.renew(id).await {
                            inflight.abort_all();
                            return;
                        }
                    }
                    _ = self.stopping.cancelled() => {
                        inflight.abort_all();
                        self.release(id).await;
                        return;
                    }
                }
            }
        }
    }

    /// Lets run `id` go: it is claimed again when it is due. If that cannot be written, the lease
    /// simply expires, later.
    async fn release(&self, id: &str) {
        let me = self.flows().me.to_string();
        if let Err(e) = self
            .flows()
            .mutate(id, Guard::Owner(&me), Lease::Release, |_| Ok(()))
            .await
        {
            tracing::warn!(error = %e, "flow run not released; its lease will expire");
        }
    }

    /// Records the child run of an agent step (shown in GetFlowRun and the step's later events).
    async fn record_child(&self, id: &str, node: &str, attempt: i32, child: String) {
        let me = self.flows().me.to_string();
        let r = self
            .flows()
            .mutate(id, Guard::Owner(&me), Lease::Keep, |st| {
                if let Some(s) = st.run.steps.iter_mut().find(|s| {
                    s.node_id == node
                        && s.attempt == attempt
                        && s.status == StepStatus::Running as i32
                }) {
                    s.child_run_id = child;
                    s.start_time
                        .get_or_insert_with(|| to_timestamp(now_micros()));
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "child run not recorded");
        }
    }
}
