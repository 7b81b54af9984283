//! GetUsage: tokens and cost of the workspace's runs over a time window, grouped by any of agent,
//! model and UTC day, aggregated by the database from the runs' usage columns.

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use super::Runs;
use crate::{
    error::{Error, Result},
    pb::{GetUsageRequest, GetUsageResponse, Usage, UsageDimension, UsageRow},
    store::time::from_timestamp,
};

impl Runs {
    pub async fn usage(&self, ws: &str, req: &GetUsageRequest) -> Result<GetUsageResponse> {
        let backend = self.db.backend();
        let mut by_agent = false;
        let mut by_model = false;
        let mut by_day = false;
        for (i, d) in req.group_by.iter().enumerate() {
            match UsageDimension::try_from(*d) {
                Ok(UsageDimension::Agent) => by_agent = true,
                Ok(UsageDimension::Model) => by_model = true,
                Ok(UsageDimension::Day) => by_day = true,
                _ => {
                    return Err(Error::invalid(
                        format!("group_by[{i}]"),
                        "unknown dimension",
                    ));
                }
            }
        }
        let day = match backend {
            DbBackend::Postgres => {
                "to_char(to_timestamp(create_time / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
            _ => "date(create_time / 1000000, 'unixepoch')",
        };
        let mut select = Vec::new();
        let mut group = Vec::new();
        for (on, expr, alias) in [
            (by_agent, "agent_id", "agent_id"),
            (by_model, "model", "model"),
            (by_day, day, "day"),
        ] {
            if on {
                select.push(format!("{expr} AS {alias}"));
                group.push(expr.to_owned());
            }
        }
        let mut sql = select.join(", ");
        if !sql.is_empty() {
            sql.push_str(", ");
        }
        sql = format!(
            "SELECT {sql}COUNT(*) AS run_count, CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd FROM runs WHERE workspace_id = ?"
        );
        let mut values: Vec<Value> = vec![ws.into()];
        if let Some(t) = &req.start_time {
            sql.push_str(" AND create_time >= ?");
            values.push(
                from_timestamp(t)
                    .ok_or_else(|| Error::invalid("start_time", "out of range"))?
                    .into(),
            );
        }
        if let Some(t) = &req.end_time {
            sql.push_str(" AND create_time < ?");
            values.push(
                from_timestamp(t)
                    .ok_or_else(|| Error::invalid("end_time", "out of range"))?
                    .into(),
            );
        }
        if !req.agent_id.is_empty() {
            sql.push_str(" AND agent_id = ?");
            values.push(req.agent_id.clone().into());
        }
        if !req.model.is_empty() {
            sql.push_str(" AND model = ?");
            values.push(req.model.clone().into());
        }
        if !group.is_empty() {
            let g = group.join(", ");
            sql.push_str(&format!(" GROUP BY {g} ORDER BY {g}"));
        }
        let sql = crate::store::placeholders(backend, &sql);
        let rows = self
            .db
            .reader()
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let mut total = Usage::default();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let usage = Usage {
                input_tokens: r.try_get("", "input_tokens")?,
                output_tokens: r.try_get("", "output_tokens")?,
                total_tokens: 0,
                cost_usd: r.try_get("", "cost_usd")?,
            };
            let usage = Usage {
                total_tokens: usage.input_tokens + usage.output_tokens,
                ..usage
            };
            total.input_tokens += usage.input_tokens;
            total.output_tokens += usage.output_tokens;
            total.total_tokens += usage.total_tokens;
            total.cost_usd += usage.cost_usd;
            let run_count: i64 = r.try_get("", "run_count")?;
            out.push(UsageRow {
                agent_id: if by_agent {
                    r.try_get("", "agent_id")?
                } else {
                    String::new()
                },
                model: if by_model {
                    r.try_get("", "model")?
                } else {
                    String::new()
                },
                day: if by_day {
                    r.try_get::<Option<String>>("", "day")?.unwrap_or_default()
                } else {
                    String::new()
                },
                run_count,
                usage: Some(usage),
            });
        }
        Ok(GetUsageResponse {
            rows: out,
            total: Some(total),
        })
    }
}
