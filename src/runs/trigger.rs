//! TriggerAgent (seed 004): one run per target under one job id. With an idempotency key, each run's
//! key is derived from it and the target, so a retried trigger returns the same job and runs.

use super::Runs;
use crate::{
    agents::Agents,
    error::{Error, Result},
    pb::{
        RunTarget, RunTrigger, StartRunRequest, TriggerAgentRequest, TriggerAgentResponse,
        TriggerSource,
    },
};

const MAX_TARGETS: usize = 1000;

impl Runs {
    pub async fn trigger(
        &self,
        agents: &Agents,
        ws: &str,
        req: TriggerAgentRequest,
    ) -> Result<TriggerAgentResponse> {
        let mut targets: Vec<RunTarget> = req
            .contact_ids
            .iter()
            .map(|id| RunTarget {
                id: id.clone(),
                data: None,
            })
            .collect();
        targets.extend(req.targets.iter().cloned());
        if targets.len() > MAX_TARGETS {
            return Err(Error::invalid(
                "targets",
                format!("at most {MAX_TARGETS} targets (contact_ids included)"),
            ));
        }
        for (i, t) in targets.iter().enumerate() {
            if t.id.is_empty() || t.id.len() > 255 {
                return Err(Error::invalid(
                    format!("targets[{i}].id"),
                    "1 to 255 characters",
                ));
            }
        }
        if req.idempotency_key.len() > 200 {
            return Err(Error::invalid("idempotency_key", "at most 200 characters"));
        }
        // No target: one run with the agent's default targeting.
        let targets: Vec<Option<RunTarget>> = if targets.is_empty() {
            vec![None]
        } else {
            targets.into_iter().map(Some).collect()
        };
        let mut job_id = uuid::Uuid::now_v7().to_string();
        let mut run_ids = Vec::with_capacity(targets.len());
        for (i, target) in targets.into_iter().enumerate() {
            let key = if req.idempotency_key.is_empty() {
                String::new()
            } else {
                format!(
                    "{}:{}",
                    req.idempotency_key,
                    target.as_ref().map(|t| t.id.as_str()).unwrap_or("-")
                )
            };
            let start = StartRunRequest {
                agent_id: req.agent_id.clone(),
                input: req.input.clone(),
                idempotency_key: key,
                ..Default::default()
            };
            let trigger = RunTrigger {
                source: TriggerSource::Batch as i32,
                job_id: job_id.clone(),
                target,
                ..Default::default()
            };
            let run = self.start(agents, ws, start, trigger).await?;
            if i == 0 {
                // A retried trigger finds its first run: report that run's job.
                if let Some(j) = run
                    .trigger
                    .as_ref()
                    .map(|t| t.job_id.clone())
                    .filter(|j| !j.is_empty())
                {
                    job_id = j;
                }
            }
            run_ids.push(run.id);
        }
        Ok(TriggerAgentResponse {
            status: "success".into(),
            job_id,
            run_ids,
        })
    }
}
