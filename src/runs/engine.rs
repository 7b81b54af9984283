//! The engine executes queued runs. It claims them from the database with a lease (owner, expiry) so
//! that several processes can share one PostgreSQL database, each run held by exactly one of them
//! (`FOR UPDATE SKIP LOCKED`); on SQLite the single writer serialises claims. A worker renews its lease
//! while it works; when it stops renewing (the process died), the lease expires and another worker
//! claims the run and continues from its last checkpoint. Every write of a worker is conditional on
//! still holding the lease, so a worker that lost it cannot corrupt the run.
//!
//! Wake-ups: a run started in this process wakes the engine at once; runs of other processes and
//! expired leases are found by polling.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::events::Hub;
use crate::{
    error::Result,
    models::Models,
    pb::RunStatus,
    store::{Db, time::now_micros},
    tools::Tools,
};

pub(crate) const LEASE: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(3);
const POLL_EVERY: Duration = Duration::from_millis(500);
const CLAIM_BATCH: usize = 32;

/// Why a local run task was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// CancelRun: end the run CANCELLED.
    Cancel,
    /// The server is shutting down: hand the run back to the queue.
    Shutdown,
    /// Another worker holds the run now: write nothing.
    LeaseLost,
}

pub(crate) struct LocalRun {
    pub token: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl LocalRun {
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert(reason);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The runs executing in this process.
#[derive(Default)]
pub struct LocalRuns {
    runs: Mutex<HashMap<String, Arc<LocalRun>>>,
}

impl LocalRuns {
    fn insert(&self, run_id: &str) -> Arc<LocalRun> {
        let r = Arc::new(LocalRun {
            token: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_owned(), r.clone());
        r
    }

    fn remove(&self, run_id: &str) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }

    /// Stops the run if it executes here; false if it does not.
    pub(crate) fn stop(&self, run_id: &str, reason: StopReason) -> bool {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        match runs.get(run_id) {
            Some(r) => {
                r.stop(reason);
                true
            }
            None => false,
        }
    }

    fn stop_all(&self, reason: StopReason) {
        for r in self.runs.lock().unwrap_or_else(|p| p.into_inner()).values() {
            r.stop(reason);
        }
    }

    fn is_empty(&self) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

pub struct Engine {
    pub(crate) db: Db,
    pub(crate) hub: Arc<Hub>,
    wake: Arc<Notify>,
    local: Arc<LocalRuns>,
    pub(crate) models: Models,
    pub(crate) tools: Tools,
    /// This process's lease owner id.
    pub(crate) owner: String,
    slots: Arc<Semaphore>,
    concurrency: usize,
}

impl Engine {
    pub(crate) fn new(
        db: Db,
        hub: Arc<Hub>,
        wake: Arc<Notify>,
        local: Arc<LocalRuns>,
        models: Models,
        tools: Tools,
        concurrency: usize,
    ) -> Arc<Engine> {
        let concurrency = concurrency.max(1);
        Arc::new(Engine {
            db,
            hub,
            wake,
            local,
            models,
            tools,
            owner: uuid::Uuid::now_v7().to_string(),
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        })
    }

    /// Runs until `stop` turns true; then stops claiming, hands the runs in flight back to the queue
    /// (they continue from their checkpoint, here after a restart or in another process) and returns.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    break;
                }
                let free = self.slots.available_permits().min(CLAIM_BATCH);
                let mut claimed = 0;
                if free > 0 {
                    match self.claim(free).await {
                        Ok(runs) => {
                            claimed = runs.len();
                            for (ws, run_id) in runs {
                                self.clone().start_task(ws, run_id);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "claiming runs failed"),
                    }
                }
                if claimed == free && free > 0 {
                    continue; // there may be more waiting
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            self.local.stop_all(StopReason::Shutdown);
            // Tasks release their runs as they stop; wait for them (bounded).
            for _ in 0..100 {
                if self.local.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Err(e) = self.release_all().await {
                tracing::warn!(error = %e, "releasing leases at shutdown failed; they will expire");
            }
        })
    }

    fn start_task(self: Arc<Self>, ws: String, run_id: String) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // Cannot happen (we claimed at most the free slots); the lease expires and it is reclaimed.
            return;
        };
        let local = self.local.insert(&run_id);
        // The run's trace id (recorded once the run is loaded) ties every log line of the run together.
        let span = tracing::info_span!("run", run_id = %run_id, workspace = %ws, trace_id = tracing::field::Empty);
        tokio::spawn(
            async move {
            let renewer = self.clone().renew_lease(run_id.clone(), local.clone());
            let result = super::execute::run(&self, &ws, &run_id, &local).await;
            renewer.abort();
            self.local.remove(&run_id);
            drop(permit);
            if let Err(e) = result {
                tracing::error!(error = %e, "run task failed; its lease will expire and it will be retried");
            }
            }
            .instrument(span),
        );
    }

    /// Renews the lease every few seconds; stops the task if the lease is lost or a cancel was requested
    /// (possibly by another process).
    fn renew_lease(self: Arc<Self>, run_id: String, local: Arc<LocalRun>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let now = now_micros();
                let sql = self.sql(
                    "UPDATE runs SET lease_expire_time = ? WHERE id = ? AND lease_owner = ? AND status = ? \
                     RETURNING cancel_requested",
                );
                let stmt = Statement::from_sql_and_values(
                    self.db.backend(),
                    sql,
                    [
                        Value::from(now + LEASE.as_micros() as i64),
                        run_id.clone().into(),
                        self.owner.clone().into(),
                        (RunStatus::Running as i32).into(),
                    ],
                );
                match self.db.writer().query_one_raw(stmt).await {
                    Ok(Some(row)) => {
                        if row.try_get::<bool>("", "cancel_requested").unwrap_or(false) {
                            local.stop(StopReason::Cancel);
                        }
                    }
                    Ok(None) => {
                        local.stop(StopReason::LeaseLost);
                        return;
                    }
                    Err(e) => tracing::warn!(run_id, error = %e, "lease renewal failed"),
                }
            }
        })
    }

    /// Claims up to `n` runs: queued ones, and running ones whose lease expired. Returns (workspace, id).
    async fn claim(&self, n: usize) -> Result<Vec<(String, String)>> {
        let now = now_micros();
        let lock = if self.db.backend() == DbBackend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = self.sql(&format!(
            "UPDATE runs SET status = ?, lease_owner = ?, lease_expire_time = ?, update_time = ? \
             WHERE id IN (SELECT id FROM runs WHERE status = ? OR (status = ? AND lease_expire_time < ?) \
             ORDER BY create_time LIMIT ?{lock}) RETURNING id, workspace_id"
        ));
        let running = RunStatus::Running as i32;
        let stmt = Statement::from_sql_and_values(
            self.db.backend(),
            sql,
            [
                running.into(),
                self.owner.clone().into(),
                Value::from(now + LEASE.as_micros() as i64),
                now.into(),
                (RunStatus::Queued as i32).into(),
                running.into(),
                now.into(),
                (n as i64).into(),
            ],
        );
        let rows = self.db.writer().query_all_raw(stmt).await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get::<String>("", "workspace_id")?,
                    r.try_get::<String>("", "id")?,
                ))
            })
            .collect()
    }

    /// Hands every run this process still holds back to the queue.
    async fn release_all(&self) -> Result<()> {
        let sql = self.sql(
            "UPDATE runs SET status = ?, lease_owner = NULL, lease_expire_time = NULL WHERE lease_owner = ? AND status = ?",
        );
        let stmt = Statement::from_sql_and_values(
            self.db.backend(),
            sql,
            [
                (RunStatus::Queued as i32).into(),
                self.owner.clone().into(),
                (RunStatus::Running as i32).into(),
            ],
        );
        self.db.writer().execute_raw(stmt).await?;
        Ok(())
    }

    /// Raw SQL for this engine's backend.
    fn sql(&self, sql: &str) -> String {
        crate::store::placeholders(self.db.backend(), sql)
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }
}
