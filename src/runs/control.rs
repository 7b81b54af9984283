//! Human control over runs: cancel, decide pending tool calls, and the inbox of calls waiting for a
//! decision. State changes are conditional updates on the run's current status, so a decision and the
//! engine (or two decisions) can never both win.

use std::time::Duration;

use prost::Message as _;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    Runs,
    checkpoint::{Checkpoint, Decision},
    decode_run,
    engine::StopReason,
    execute::tool_call_pb,
    notify, struct_json,
    writer::{Guard, RunChange},
};
use crate::{
    agents::{Page, page},
    error::{Error, Result},
    pb::{
        PendingApproval, Run, RunCancelled, RunOutput, RunStatus, ToolDecision, run_event::Event,
    },
    store::{
        cursor,
        entities::run,
        time::{now_micros, to_timestamp},
    },
};

/// The message of a run whose every pending call was rejected (seed 002's commit).
pub const ALL_REJECTED: &str = "Tool execution cancelled by user.";

impl Runs {
    /// Cancels a queued, paused or running run. A running one is stopped by its worker, wherever it
    /// runs; this waits briefly for that and returns the run as it then is.
    pub async fn cancel(&self, ws: &str, run_id: &str, reason: &str) -> Result<Run> {
        for _ in 0..5 {
            let row = self.row(ws, run_id).await?;
            let status = RunStatus::try_from(row.status).unwrap_or(RunStatus::Unspecified);
            match status {
                RunStatus::Queued | RunStatus::RequiresAction => {
                    let mut r = decode_run(&row.spec)?;
                    r.status = RunStatus::Cancelled as i32;
                    r.end_time = Some(to_timestamp(now_micros()));
                    r.pending_tool_calls.clear();
                    let reason = if reason.is_empty() {
                        "cancelled by request"
                    } else {
                        reason
                    };
                    let ev = Event::RunCancelled(RunCancelled {
                        reason: reason.to_owned(),
                    });
                    if let Some(r) = self.transition(ws, &row, r, status, vec![ev], None).await? {
                        return Ok(r);
                    }
                }
                RunStatus::Running => {
                    run::Entity::update_many()
                        .col_expr(run::Column::CancelRequested, true.into())
                        .filter(run::Column::Id.eq(run_id))
                        .filter(run::Column::Status.eq(RunStatus::Running as i32))
                        .exec(self.db.writer())
                        .await?;
                    if !self.cancels.stop(run_id, StopReason::Cancel) {
                        // Executing in another process (or about to be claimed): tell it now.
                        notify::send(&self.db, &self.me, notify::Kind::Cancel, run_id).await;
                    }
                    // The worker ends the run, wherever it executes; its lease renewal is the fallback.
                    for _ in 0..100 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let now = self.get(ws, run_id).await?;
                        if now.status != RunStatus::Running as i32 {
                            return Ok(now);
                        }
                    }
                    return self.get(ws, run_id).await;
                }
                _ => {
                    return Err(Error::FailedPrecondition(format!(
                        "run {run_id:?} already ended ({})",
                        status.as_str_name()
                    )));
                }
            }
        }
        Err(Error::Aborted(
            "the run changed state concurrently; retry".into(),
        ))
    }

    /// Records decisions on a REQUIRES_ACTION run's pending calls. When every call that needs a human
    /// is decided, the run resumes (or, if all were rejected, ends CANCELLED).
    pub async fn decide(&self, ws: &str, run_id: &str, decisions: &[ToolDecision]) -> Result<Run> {
        if decisions.is_empty() {
            return Err(Error::invalid("decisions", "give at least one decision"));
        }
        let row = self.row(ws, run_id).await?;
        if row.status != RunStatus::RequiresAction as i32 {
            return Err(Error::FailedPrecondition(format!(
                "run {run_id:?} is not waiting for a decision"
            )));
        }
        let mut cp = Checkpoint::decode(row.checkpoint.as_deref());
        for (i, d) in decisions.iter().enumerate() {
            let call = cp
                .pending
                .iter_mut()
                .find(|c| c.id == d.tool_call_id)
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "decisions[{i}]: tool call {:?} is not pending",
                        d.tool_call_id
                    ))
                })?;
            if !call.awaits_decision() {
                return Err(Error::FailedPrecondition(format!(
                    "decisions[{i}]: tool call {:?} is already decided",
                    d.tool_call_id
                )));
            }
            if d.reason.chars().count() > 1000 {
                return Err(Error::invalid(
                    format!("decisions[{i}].reason"),
                    "at most 1000 characters",
                ));
            }
            let edited = d.arguments.as_ref().map(|a| struct_json(Some(a)));
            call.decision = Some(Decision {
                approved: d.approved,
                arguments: edited,
                reason: d.reason.clone(),
            });
        }
        let mut r = decode_run(&row.spec)?;
        let (status, evs) =
            if cp.pending.iter().any(|c| c.awaits_decision()) {
                r.pending_tool_calls = cp
                    .pending
                    .iter()
                    .filter(|c| c.awaits_decision())
                    .map(|c| tool_call_pb(c, None))
                    .collect();
                (RunStatus::RequiresAction, Vec::new())
            } else if cp.pending.iter().all(|c| {
                c.requires_confirmation && c.decision.as_ref().is_some_and(|d| !d.approved)
            }) {
                r.pending_tool_calls.clear();
                r.end_time = Some(to_timestamp(now_micros()));
                r.output = Some(RunOutput {
                    content: ALL_REJECTED.to_owned(),
                    ..Default::default()
                });
                (
                    RunStatus::Cancelled,
                    vec![Event::RunCancelled(RunCancelled {
                        reason: ALL_REJECTED.to_owned(),
                    })],
                )
            } else {
                r.pending_tool_calls.clear();
                (RunStatus::Queued, Vec::new())
            };
        r.status = status as i32;
        let resumed = status == RunStatus::Queued;
        let out = self
            .transition(ws, &row, r, RunStatus::RequiresAction, evs, Some(&cp))
            .await?
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "run {run_id:?} is no longer waiting for a decision"
                ))
            })?;
        if resumed {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// Writes `next` if the run is still `from`; None if it changed meanwhile.
    async fn transition(
        &self,
        ws: &str,
        row: &run::Model,
        next: Run,
        from: RunStatus,
        evs: Vec<Event>,
        cp: Option<&Checkpoint>,
    ) -> Result<Option<Run>> {
        let change = RunChange {
            run_id: row.id.clone(),
            workspace_id: ws.to_owned(),
            guard: Guard::Status(from),
            spec: Some(next.encode_to_vec()),
            status: RunStatus::try_from(next.status).unwrap_or(RunStatus::Unspecified),
            checkpoint: cp.map(Checkpoint::encode),
            usage: None,
            start_time: None,
            end: next.end_time.is_some(),
            release_lease: false,
        };
        Ok(self.writer.change(change, evs).await?.then_some(next))
    }

    /// The workspace's tool calls waiting for a human, oldest run first.
    pub async fn pending_approvals(
        &self,
        ws: &str,
        limit: i32,
        cur: &str,
    ) -> Result<Page<PendingApproval>> {
        let limit = cursor::page_limit(limit)?;
        let mut q = run::Entity::find()
            .filter(run::Column::WorkspaceId.eq(ws))
            .filter(run::Column::Status.eq(RunStatus::RequiresAction as i32));
        if !cur.is_empty() {
            let (t, id) = cursor::decode_time_id("approvals", cur)?;
            q = q.filter(
                Condition::any().add(run::Column::CreateTime.gt(t)).add(
                    Condition::all()
                        .add(run::Column::CreateTime.eq(t))
                        .add(run::Column::Id.gt(id)),
                ),
            );
        }
        let rows = q
            .order_by_asc(run::Column::CreateTime)
            .order_by_asc(run::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        let (runs, next) = page(
            rows,
            limit,
            |r| cursor::encode_time_id("approvals", r.create_time, &r.id),
            |r| decode_run(&r.spec),
        )?;
        let mut out = Vec::new();
        for r in runs {
            for call in &r.pending_tool_calls {
                out.push(PendingApproval {
                    run_id: r.id.clone(),
                    agent_id: r.agent_id.clone(),
                    session_id: r.session_id.clone(),
                    tool_call: Some(call.clone()),
                    create_time: r.create_time,
                });
            }
        }
        Ok((out, next))
    }
}
