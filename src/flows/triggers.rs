//! Triggers (seed 003's ExternalTrigger) and published events. An event trigger starts a run of its
//! flow for every published event of its type that passes its CEL filter; a schedule trigger starts
//! one at every tick of its cron expression. Publishing is one transaction: the event's row (its id is
//! the dedupe key) and the runs it starts commit together, so an event id starts its runs exactly once.
//! A schedule advances its next fire time with a compare-and-set in the transaction that inserts the
//! run, so among several processes exactly one fires each tick; ticks missed while no process ran
//! fire once, not once per missed tick.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds},
};
use prost::Message;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde_json::{Value, json};

use super::{
    Flows,
    expr::{self, Vars},
    runs::insert_run,
};
use crate::{
    agents::{Page, after, page, validate},
    error::{Error, Result},
    pb::{
        FlowRun, FlowRunTrigger, FlowTriggerSource, PublishEventRequest, PublishEventResponse,
        Trigger, trigger::Kind,
    },
    runs::{json_struct, struct_json},
    store::{
        cursor,
        entities::{flow_event, flow_run, flow_trigger},
        time::{now_micros, to_timestamp},
    },
};

/// Parses a five-field cron expression in a time zone.
fn schedule(
    cron: &str,
    tz: &str,
) -> std::result::Result<(Cron, chrono_tz::Tz), (&'static str, String)> {
    let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
    let c = parser
        .parse(cron)
        .map_err(|e| ("cron", format!("not a five-field cron expression: {e}")))?;
    let tz = if tz.is_empty() {
        chrono_tz::UTC
    } else {
        chrono_tz::Tz::from_str(tz)
            .map_err(|_| ("timezone", format!("unknown IANA time zone {tz:?}")))?
    };
    Ok((c, tz))
}

/// The first tick of `cron` strictly after `after` (microseconds), if any.
pub fn next_fire(cron: &Cron, tz: chrono_tz::Tz, after: i64) -> Option<i64> {
    let t = DateTime::<Utc>::from_timestamp_micros(after)?.with_timezone(&tz);
    cron.find_next_occurrence(&t, false)
        .ok()
        .map(|n| n.with_timezone(&Utc).timestamp_micros())
}

fn decode(spec: &[u8]) -> Result<Trigger> {
    Trigger::decode(spec)
        .map_err(|e| Error::internal(format!("stored trigger does not decode: {e}")))
}

impl Flows {
    pub async fn create_trigger(&self, ws: &str, mut t: Trigger) -> Result<Trigger> {
        if t.flow_id.is_empty() {
            return Err(Error::invalid("trigger.flow_id", "is required"));
        }
        validate::check_slug("trigger.flow_id", &t.flow_id)?;
        let flow = self.get(ws, &t.flow_id, 0).await.map_err(|e| match e {
            Error::NotFound(m) => Error::invalid("trigger.flow_id", m),
            e => e,
        })?;
        let now = now_micros();
        let enabled = t.enabled.unwrap_or(true);
        let (event_type, next) = match &t.kind {
            None => {
                return Err(Error::invalid(
                    "trigger",
                    "a trigger needs one of event, schedule",
                ));
            }
            Some(Kind::Event(e)) => {
                if e.event_type.is_empty() || e.event_type.len() > 255 {
                    return Err(Error::invalid(
                        "trigger.event.event_type",
                        "1 to 255 characters",
                    ));
                }
                if !e.filter.is_empty() {
                    expr::compile("trigger.event.filter", &e.filter)?;
                }
                expr::check_template(
                    "trigger.event.input_mapping",
                    &struct_json(e.input_mapping.as_ref()),
                )?;
                (e.event_type.clone(), None)
            }
            Some(Kind::Schedule(s)) => {
                let (cron, tz) = schedule(&s.cron, &s.timezone)
                    .map_err(|(f, m)| Error::invalid(format!("trigger.schedule.{f}"), m))?;
                if let Some(schema) = &flow.input_schema {
                    crate::runs::check_input(schema, s.input.as_ref())
                        .map_err(|e| e.in_field("trigger.schedule"))?;
                }
                let next = next_fire(&cron, tz, now)
                    .ok_or_else(|| Error::invalid("trigger.schedule.cron", "never fires"))?;
                (String::new(), enabled.then_some(next))
            }
        };
        t.id = uuid::Uuid::now_v7().to_string();
        t.enabled = Some(enabled);
        t.create_time = Some(to_timestamp(now));
        flow_trigger::Entity::insert(flow_trigger::ActiveModel {
            id: Set(t.id.clone()),
            workspace_id: Set(ws.to_owned()),
            flow_id: Set(t.flow_id.clone()),
            event_type: Set(event_type),
            enabled: Set(enabled),
            spec: Set(t.encode_to_vec()),
            next_fire: Set(next),
            create_time: Set(now),
        })
        .exec_without_returning(self.db.writer())
        .await?;
        Ok(t)
    }

    pub async fn list_triggers(
        &self,
        ws: &str,
        flow_id: &str,
        limit: i32,
        cur: &str,
    ) -> Result<Page<Trigger>> {
        let limit = cursor::page_limit(limit)?;
        let mut q = flow_trigger::Entity::find().filter(flow_trigger::Column::WorkspaceId.eq(ws));
        if !flow_id.is_empty() {
            q = q.filter(flow_trigger::Column::FlowId.eq(flow_id));
        }
        if !cur.is_empty() {
            let (t, id) = cursor::decode_time_id("triggers", cur)?;
            q = q.filter(after(
                flow_trigger::Column::CreateTime,
                flow_trigger::Column::Id,
                t,
                id,
            ));
        }
        let rows = q
            .order_by_asc(flow_trigger::Column::CreateTime)
            .order_by_asc(flow_trigger::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        page(
            rows,
            limit,
            |r| cursor::encode_time_id("triggers", r.create_time, &r.id),
            |r| {
                let mut t = decode(&r.spec)?;
                t.enabled = Some(r.enabled);
                Ok(t)
            },
        )
    }

    pub async fn delete_trigger(&self, ws: &str, id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(Error::invalid("id", "is required"));
        }
        let res = flow_trigger::Entity::delete_many()
            .filter(flow_trigger::Column::WorkspaceId.eq(ws))
            .filter(flow_trigger::Column::Id.eq(id))
            .exec(self.db.writer())
            .await?;
        if res.rows_affected == 0 {
            return Err(Error::not_found(format!("trigger {id:?} not found")));
        }
        Ok(())
    }

    /// Starts a run for every enabled event trigger the event matches (once per event id).
    pub async fn publish(
        &self,
        ws: &str,
        req: PublishEventRequest,
    ) -> Result<PublishEventResponse> {
        if req.r#type.is_empty() || req.r#type.len() > 255 {
            return Err(Error::invalid("type", "1 to 255 characters"));
        }
        if req.event_id.len() > 255 {
            return Err(Error::invalid("event_id", "at most 255 characters"));
        }
        let event_id = if req.event_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            req.event_id.clone()
        };
        if let Some(resp) = self.published(ws, &event_id).await? {
            return Ok(resp);
        }
        let payload = match struct_json(req.payload.as_ref()) {
            Value::Null => json!({}),
            v => v,
        };
        let event = json!({"type": req.r#type, "id": event_id, "payload": payload});
        let triggers = flow_trigger::Entity::find()
            .filter(flow_trigger::Column::WorkspaceId.eq(ws))
            .filter(flow_trigger::Column::EventType.eq(req.r#type.as_str()))
            .filter(flow_trigger::Column::Enabled.eq(true))
            .order_by_asc(flow_trigger::Column::CreateTime)
            .all(self.db.reader())
            .await?;
        let txn = self.db.writer().begin().await?;
        let mut runs: Vec<FlowRun> = Vec::new();
        for row in triggers {
            let t = decode(&row.spec)?;
            let Some(Kind::Event(e)) = &t.kind else {
                continue;
            };
            let vars = Vars(&[("event", &event)]);
            if !e.filter.is_empty() {
                match expr::eval_bool(&e.filter, &vars) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(msg) => {
                        tracing::warn!(trigger_id = %t.id, error = %msg, "trigger filter failed; skipped");
                        continue;
                    }
                }
            }
            let mapping = struct_json(e.input_mapping.as_ref());
            let input = if mapping.as_object().is_none_or(|m| m.is_empty()) {
                payload.clone()
            } else {
                match expr::render(&mapping, &vars) {
                    Ok(v) => v,
                    Err(msg) => {
                        tracing::warn!(trigger_id = %t.id, error = %msg, "trigger input mapping failed; skipped");
                        continue;
                    }
                }
            };
            let Ok(flow) = self.get(ws, &t.flow_id, 0).await else {
                continue; // deleted since
            };
            let trigger = FlowRunTrigger {
                source: FlowTriggerSource::Event as i32,
                trigger_id: t.id.clone(),
                event_id: event_id.clone(),
            };
            match insert_run(&txn, ws, &flow, json_struct(&input), trigger, "").await {
                Ok(run) => runs.push(run),
                Err(Error::InvalidArgument { field, message }) => {
                    tracing::warn!(trigger_id = %t.id, %field, %message, "event does not fit the flow's input schema; skipped");
                }
                Err(e) => return Err(e),
            }
        }
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let inserted = flow_event::Entity::insert(flow_event::ActiveModel {
            workspace_id: Set(ws.to_owned()),
            event_id: Set(event_id.clone()),
            event_type: Set(req.r#type.clone()),
            flow_run_ids: Set(ids.join(" ")),
            create_time: Set(now_micros()),
        })
        .exec_without_returning(&txn)
        .await;
        if inserted.is_err() {
            // The same id was published concurrently and committed first.
            txn.rollback().await?;
            return self
                .published(ws, &event_id)
                .await?
                .ok_or_else(|| Error::Aborted("publishing failed; retry".into()));
        }
        txn.commit().await?;
        self.started(&ids).await;
        Ok(PublishEventResponse {
            event_id,
            flow_runs: runs,
            duplicate: false,
        })
    }

    /// The result of an event id published before.
    async fn published(&self, ws: &str, event_id: &str) -> Result<Option<PublishEventResponse>> {
        let Some(row) = flow_event::Entity::find_by_id((ws.to_owned(), event_id.to_owned()))
            .one(self.db.reader())
            .await?
        else {
            return Ok(None);
        };
        let ids = super::runs::ids(&row.flow_run_ids);
        let rows = flow_run::Entity::find()
            .filter(flow_run::Column::Id.is_in(ids.iter().copied()))
            .all(self.db.reader())
            .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for r in &rows {
            runs.push(FlowRun::decode(r.spec.as_slice()).map_err(Error::internal)?);
        }
        Ok(Some(PublishEventResponse {
            event_id: event_id.to_owned(),
            flow_runs: runs,
            duplicate: true,
        }))
    }

    /// Fires the schedules that are due (each exactly once per tick across processes).
    pub async fn fire_schedules(&self) -> Result<()> {
        let now = now_micros();
        let due = flow_trigger::Entity::find()
            .filter(flow_trigger::Column::NextFire.lte(now))
            .filter(flow_trigger::Column::Enabled.eq(true))
            .limit(50)
            .all(self.db.reader())
            .await?;
        for row in due {
            let t = decode(&row.spec)?;
            let Some(Kind::Schedule(s)) = &t.kind else {
                continue;
            };
            let next = schedule(&s.cron, &s.timezone)
                .ok()
                .and_then(|(c, tz)| next_fire(&c, tz, now));
            let txn = self.db.writer().begin().await?;
            let claimed = flow_trigger::Entity::update_many()
                .col_expr(flow_trigger::Column::NextFire, next.into())
                .filter(flow_trigger::Column::Id.eq(row.id.as_str()))
                .filter(flow_trigger::Column::NextFire.eq(row.next_fire))
                .exec(&txn)
                .await?;
            if claimed.rows_affected != 1 {
                txn.rollback().await?;
                continue; // another process fired it
            }
            let trigger = FlowRunTrigger {
                source: FlowTriggerSource::Schedule as i32,
                trigger_id: t.id.clone(),
                event_id: String::new(),
            };
            let run = match self.get(&row.workspace_id, &t.flow_id, 0).await {
                Ok(flow) => {
                    insert_run(&txn, &row.workspace_id, &flow, s.input.clone(), trigger, "").await
                }
                Err(e) => Err(e),
            };
            match run {
                Ok(run) => {
                    txn.commit().await?;
                    self.started(&[run.id.as_str()]).await;
                }
                Err(e) => {
                    // The tick is consumed either way: a broken schedule must not fire in a loop.
                    tracing::warn!(trigger_id = %t.id, error = %e, "scheduled run not started");
                    txn.commit().await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_in_a_time_zone() {
        let (c, tz) = schedule("0 9 * * MON-FRI", "Europe/Paris").unwrap();
        // Friday 2026-11-20 09:00 Paris is 08:00 UTC; the next tick after it is Monday 23rd.
        let fri = DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z")
            .unwrap()
            .timestamp_micros();
        let next = next_fire(&c, tz, fri).unwrap();
        assert_eq!(
            DateTime::<Utc>::from_timestamp_micros(next)
                .unwrap()
                .to_rfc3339(),
            "2026-11-23T08:00:00+00:00"
        );
        assert!(schedule("* * * * * *", "").is_err(), "six fields");
        assert!(schedule("0 9 * * MON", "Mars/Olympus").is_err());
        assert!(schedule("61 * * * *", "").is_err());
    }
}
