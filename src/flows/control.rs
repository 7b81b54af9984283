//! What people do to a flow run: pause it, resume it, decide one of its approvals, cancel it.
//! Each is one `mutate`: the run's state and the event saying what happened commit together, and an
//! executor holding the run sees the change at its next step.

use sea_orm::EntityTrait;

use super::{
    Flows,
    graph::Shape,
    plan::{Plan, State},
    runs::{Guard, Lease, check_id},
};
use crate::{
    error::{Error, Result},
    pb::{ApprovalDecision, FlowRun},
    runs::Runs,
    store::{entities::api_key, time::now_micros},
};

impl Flows {
    pub async fn pause(&self, ws: &str, id: &str, reason: &str) -> Result<FlowRun> {
        check_id("flow_run_id", id)?;
        check_reason(reason)?;
        let (_, run) = self
            .mutate(id, Guard::Api(ws), Lease::Keep, |st| st.pause(reason))
            .await?;
        Ok(run)
    }

    /// Resumes a PAUSED run, or with `approval`, decides the approval step of that node.
    pub async fn resume(
        &self,
        ws: &str,
        id: &str,
        approval: Option<&ApprovalDecision>,
        key_id: &str,
    ) -> Result<FlowRun> {
        check_id("flow_run_id", id)?;
        let row = self.run_row(ws, id).await?;
        let graph = self.graph(ws, &row.flow_id, row.flow_version).await?;
        let shape = Shape::new(&graph);
        let plan = Plan {
            graph: &graph,
            shape: &shape,
        };
        let key_name = match approval {
            Some(a) => {
                if a.node_id.is_empty() {
                    return Err(Error::invalid("approval.node_id", "is required"));
                }
                check_reason(&a.reason).map_err(|e| e.in_field("approval"))?;
                api_key::Entity::find_by_id(key_id.to_owned())
                    .one(self.db.reader())
                    .await?
                    .map(|k| k.name)
                    .unwrap_or_default()
            }
            None => String::new(),
        };
        let (_, run) = self
            .mutate(id, Guard::Api(ws), Lease::Keep, |st: &mut State| {
                let now = now_micros();
                match approval {
                    Some(a) => {
                        st.decide(&plan, &a.node_id, a.approved, &a.reason, &key_name, now)?
                    }
                    None => st.resume()?,
                }
                st.advance(&plan, now);
                Ok(())
            })
            .await?;
        Ok(run)
    }

    /// Ends the run CANCELLED and cancels the agent runs of its running steps.
    pub async fn cancel(&self, runs: &Runs, ws: &str, id: &str, reason: &str) -> Result<FlowRun> {
        check_id("flow_run_id", id)?;
        check_reason(reason)?;
        let (children, run) = self
            .mutate(id, Guard::Api(ws), Lease::Keep, |st| {
                st.cancel(reason, now_micros())?;
                Ok(std::mem::take(&mut st.cancel_children))
            })
            .await?;
        cancel_children(runs, ws, &children, "the flow run was cancelled").await;
        Ok(run)
    }
}

pub(crate) async fn cancel_children(runs: &Runs, ws: &str, ids: &[String], reason: &str) {
    for child in ids {
        if let Err(e) = runs.cancel(ws, child, reason).await {
            tracing::debug!(run_id = %child, error = %e, "child run not cancelled");
        }
    }
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.chars().count() > 1000 {
        return Err(Error::invalid("reason", "at most 1000 characters"));
    }
    Ok(())
}
