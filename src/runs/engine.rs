//! The engine executes queued runs. It claims them from the database with a lease (owner, expiry) so
//! that several processes can share one PostgreSQL database, each run held by exactly one of them
//! (`FOR UPDATE SKIP LOCKED`); on SQLite the single writer serialises claims. A worker renews its lease
//! while it works; when it stops renewing (the process died), the lease expires and another worker
//! claims the run and continues from its last checkpoint. Every write of a worker is conditional on
//! still holding the lease, so a worker that lost it cannot corrupt the run.
//!
//! Leases are renewed by one statement per process every few seconds (not one per run), which also
//! brings back the cancel requests of runs executing here.
//!
//! Wake-ups: a run that becomes claimable wakes the engine at once, in this process in memory and in
//! the others through PostgreSQL NOTIFY; expired leases (and any lost notice) are found by polling.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use sea_orm::EntityTrait;

use super::writer::Writer;
use crate::{
    error::Result,
    models::Models,
    pb::{Agent, RunStatus},
    store::{Db, time::now_micros},
    tools::Tools,
};

pub(crate) const LEASE: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(3);
const POLL_EVERY: Duration = Duration::from_millis(500);
const CLAIM_BATCH: usize = 32;
/// Agent versions kept decoded (they never change once written).
const AGENT_CACHE: usize = 1024;

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

    fn ids(&self) -> Vec<String> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// What the engine shares with the run service.
pub(crate) struct Wiring {
    pub db: Db,
    /// This process's id, the owner of its leases.
    pub owner: String,
    pub writer: Writer,
    /// Notified when a run becomes claimable.
    pub wake: Arc<Notify>,
    pub local: Arc<LocalRuns>,
}

/// A run this engine just claimed: what the claim's `RETURNING` brought back.
pub(crate) struct Claimed {
    pub id: String,
    pub workspace_id: String,
    pub spec: Vec<u8>,
    pub checkpoint: Option<String>,
    pub cancel_requested: bool,
}

pub struct Engine {
    pub(crate) db: Db,
    pub(crate) writer: Writer,
    wake: Arc<Notify>,
    local: Arc<LocalRuns>,
    pub(crate) models: Models,
    pub(crate) tools: Tools,
    /// This process's lease owner id.
    pub(crate) owner: String,
    slots: Arc<Semaphore>,
    concurrency: usize,
    agents: Mutex<HashMap<(String, String, i64), Arc<Agent>>>,
    /// Set at shutdown: no new run starts here.
    stopping: std::sync::atomic::AtomicBool,
}

/// A free execution slot, held from before a run is written until it executes.
pub(crate) struct Reserved(OwnedSemaphorePermit);

impl Engine {
    pub(crate) fn new(
        wiring: Wiring,
        models: Models,
        tools: Tools,
        concurrency: usize,
    ) -> Arc<Engine> {
        let concurrency = concurrency.max(1);
        let Wiring {
            db,
            owner,
            writer,
            wake,
            local,
        } = wiring;
        Arc::new(Engine {
            db,
            writer,
            wake,
            local,
            models,
            tools,
            owner,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            agents: Mutex::default(),
            stopping: Default::default(),
        })
    }

    /// Runs until `stop` turns true; then stops claiming, hands the runs in flight back to the queue
    /// (they continue from their checkpoint, here after a restart or in another process) and returns.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let renewer = self.clone().renew_leases();
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    break;
                }
                // Slots are taken before claiming, so that runs started here meanwhile cannot
                // leave a claimed run without one.
                let mut permits: Vec<OwnedSemaphorePermit> =
                    std::iter::from_fn(|| self.slots.clone().try_acquire_owned().ok())
                        .take(CLAIM_BATCH)
                        .collect();
                let free = permits.len();
                let mut claimed = 0;
                if free > 0 {
                    match self.claim(free).await {
                        Ok(runs) => {
                            claimed = runs.len();
                            for (run, permit) in runs.into_iter().zip(permits.drain(..)) {
                                self.clone().start_task(run, permit);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "claiming runs failed"),
                    }
                }
                drop(permits);
                if claimed == free && free > 0 {
                    continue; // there may be more waiting
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            self.stopping
                .store(true, std::sync::atomic::Ordering::Release);
            self.local.stop_all(StopReason::Shutdown);
            // Tasks release their runs as they stop; wait for them (bounded).
            for _ in 0..100 {
                if self.local.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            renewer.abort();
            if let Err(e) = self.release_all().await {
                tracing::warn!(error = %e, "releasing leases at shutdown failed; they will expire");
            }
        })
    }

    /// A slot for a run started in this process, to execute it without a claim: the caller writes
    /// the run already leased to [`Engine::owner`], then hands it to [`Engine::execute`]. None when
    /// every slot is busy or the engine is stopping (the run is queued for whoever has room).
    pub(crate) fn reserve(&self) -> Option<Reserved> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok().map(Reserved)
    }

    /// The lease a run written by a [`Engine::reserve`] holder starts with.
    pub(crate) fn lease_expiry(&self) -> i64 {
        now_micros() + LEASE.as_micros() as i64
    }

    /// Executes a run this process wrote already leased to itself.
    pub(crate) fn execute(self: Arc<Self>, run: Claimed, slot: Reserved) {
        self.start_task(run, slot.0);
    }

    fn start_task(self: Arc<Self>, run: Claimed, permit: OwnedSemaphorePermit) {
        let local = self.local.insert(&run.id);
        // The run's trace id (recorded once the run is decoded) ties every log line of the run together.
        let span = tracing::info_span!("run", run_id = %run.id, workspace = %run.workspace_id, trace_id = tracing::field::Empty);
        tokio::spawn(
            async move {
                let run_id = run.id.clone();
                let result = super::execute::run(&self, run, &local).await;
                self.local.remove(&run_id);
                drop(permit);
                if let Err(e) = result {
                    tracing::error!(error = %e, "run task failed; its lease will expire and it will be retried");
                }
            }
            .instrument(span),
        );
    }

    /// Every few seconds, renews the leases of all runs this process holds in one statement. A local
    /// run whose lease is gone (another worker took it) is stopped; one whose cancel was requested
    /// (possibly through another process) is cancelled.
    fn renew_leases(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if self.local.is_empty() {
                    continue;
                }
                let held = self.local.ids();
                let sql = self.sql(
                    "UPDATE runs SET lease_expire_time = ? WHERE lease_owner = ? AND status = ? \
                     RETURNING id, cancel_requested",
                );
                let stmt = Statement::from_sql_and_values(
                    self.db.backend(),
                    sql,
                    [
                        Value::from(now_micros() + LEASE.as_micros() as i64),
                        self.owner.clone().into(),
                        (RunStatus::Running as i32).into(),
                    ],
                );
                let rows = match self.db.writer().query_all_raw(stmt).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "lease renewal failed");
                        continue;
                    }
                };
                let mut renewed = std::collections::HashSet::with_capacity(rows.len());
                for row in rows {
                    let Ok(id) = row.try_get::<String>("", "id") else {
                        continue;
                    };
                    if row.try_get::<bool>("", "cancel_requested").unwrap_or(false) {
                        self.local.stop(&id, StopReason::Cancel);
                    }
                    renewed.insert(id);
                }
                // Held before the renewal and not renewed: another worker has the run (or it ended
                // and its task is finishing, for which a stop changes nothing).
                for id in held.iter().filter(|id| !renewed.contains(*id)) {
                    self.local.stop(id, StopReason::LeaseLost);
                }
            }
        })
    }

    /// The agent at the version a run pinned; versions never change, so they are cached.
    pub(crate) async fn agent_version(
        &self,
        ws: &str,
        id: &str,
        version: i64,
    ) -> Result<Arc<Agent>> {
        let key = (ws.to_owned(), id.to_owned(), version);
        if let Some(a) = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(a.clone());
        }
        let row = crate::store::entities::agent_version::Entity::find_by_id(key.clone())
            .one(self.db.reader())
            .await?
            .ok_or_else(|| {
                crate::error::Error::not_found(format!("agent {id:?} version {version} is gone"))
            })?;
        let agent = Arc::new(crate::agents::decode(&row.spec)?);
        let mut cache = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= AGENT_CACHE {
            cache.clear();
        }
        cache.insert(key, agent.clone());
        Ok(agent)
    }

    /// Claims up to `n` runs: queued ones, and running ones whose lease expired.
    async fn claim(&self, n: usize) -> Result<Vec<Claimed>> {
        let now = now_micros();
        let lock = if self.db.backend() == DbBackend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = self.sql(&format!(
            "UPDATE runs SET status = ?, lease_owner = ?, lease_expire_time = ?, update_time = ? \
             WHERE id IN (SELECT id FROM runs WHERE status = ? OR (status = ? AND lease_expire_time < ?) \
             ORDER BY create_time LIMIT ?{lock}) \
             RETURNING id, workspace_id, spec, checkpoint, cancel_requested"
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
                Ok(Claimed {
                    id: r.try_get("", "id")?,
                    workspace_id: r.try_get("", "workspace_id")?,
                    spec: r.try_get("", "spec")?,
                    checkpoint: r.try_get("", "checkpoint")?,
                    cancel_requested: r.try_get("", "cancel_requested")?,
                })
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
