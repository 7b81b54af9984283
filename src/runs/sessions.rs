//! Sessions and memories. A session is the runs that share a `session_id` (the conversation history
//! the engine feeds back with `enable_history`); memories are what the `memory` tool saved per user.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait, Value,
};

use super::{Runs, decode_run, struct_json};
use crate::{
    agents::{Page, page},
    error::{Error, Result},
    pb::{Memory, RunStatus, Session, SessionMessage},
    store::{
        cursor,
        entities::{memory, run, run_event},
        placeholders,
        time::to_timestamp,
    },
};

/// Most runs whose messages GetSession returns (the newest).
const SESSION_RUNS: u64 = 100;

fn check_session_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > 255 {
        return Err(Error::invalid("session_id", "1 to 255 characters"));
    }
    Ok(())
}

impl Runs {
    pub async fn session(&self, ws: &str, session_id: &str) -> Result<Session> {
        check_session_id(session_id)?;
        let mut rows = run::Entity::find()
            .filter(run::Column::WorkspaceId.eq(ws))
            .filter(run::Column::SessionId.eq(session_id))
            .order_by_desc(run::Column::CreateTime)
            .limit(SESSION_RUNS)
            .all(self.db.reader())
            .await?;
        if rows.is_empty() {
            return Err(Error::not_found(format!(
                "session {session_id:?} not found"
            )));
        }
        rows.reverse();
        let count = self.session_run_count(ws, session_id).await?;
        let mut messages = Vec::with_capacity(rows.len() * 2);
        for r in &rows {
            let run = decode_run(&r.spec)?;
            let user = if run.message.is_empty() {
                struct_json(run.input.as_ref()).to_string()
            } else {
                run.message.clone()
            };
            messages.push(SessionMessage {
                role: "user".into(),
                content: user,
                run_id: run.id.clone(),
                time: run.create_time,
            });
            if let Some(out) = run
                .output
                .filter(|_| run.status == RunStatus::Completed as i32)
            {
                messages.push(SessionMessage {
                    role: "assistant".into(),
                    content: out.content,
                    run_id: run.id.clone(),
                    time: run.end_time,
                });
            }
        }
        let first = rows.first().expect("non-empty");
        let last = rows.last().expect("non-empty");
        Ok(Session {
            id: session_id.to_owned(),
            agent_id: last.agent_id.clone(),
            user_id: last.user_id.clone(),
            run_count: count,
            create_time: Some(to_timestamp(first.create_time)),
            update_time: Some(to_timestamp(last.update_time.max(last.create_time))),
            messages,
        })
    }

    async fn session_run_count(&self, ws: &str, session_id: &str) -> Result<i64> {
        let sql = placeholders(
            self.db.backend(),
            "SELECT COUNT(*) AS n FROM runs WHERE workspace_id = ? AND session_id = ?",
        );
        let stmt = Statement::from_sql_and_values(
            self.db.backend(),
            sql,
            [Value::from(ws), Value::from(session_id)],
        );
        let row = self.db.reader().query_one_raw(stmt).await?;
        Ok(row
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Sessions of the workspace by id, without their messages.
    pub async fn sessions(
        &self,
        ws: &str,
        agent_id: &str,
        user_id: &str,
        limit: i32,
        cur: &str,
    ) -> Result<Page<Session>> {
        let limit = cursor::page_limit(limit)?;
        let mut sql = String::from(
            "SELECT session_id, MIN(agent_id) AS agent_id, MIN(user_id) AS user_id, COUNT(*) AS n, \
             MIN(create_time) AS first, MAX(create_time) AS last FROM runs WHERE workspace_id = ? AND session_id <> ''",
        );
        let mut values: Vec<Value> = vec![ws.into()];
        if !agent_id.is_empty() {
            sql.push_str(" AND agent_id = ?");
            values.push(agent_id.into());
        }
        if !user_id.is_empty() {
            sql.push_str(" AND user_id = ?");
            values.push(user_id.into());
        }
        if !cur.is_empty() {
            let [after] = cursor::decode::<1>("sessions", cur)?;
            sql.push_str(" AND session_id > ?");
            values.push(after.into());
        }
        sql.push_str(" GROUP BY session_id ORDER BY session_id LIMIT ?");
        values.push(((limit + 1) as i64).into());
        let stmt = Statement::from_sql_and_values(
            self.db.backend(),
            placeholders(self.db.backend(), &sql),
            values,
        );
        let rows = self.db.reader().query_all_raw(stmt).await?;
        let sessions = rows
            .into_iter()
            .map(|r| {
                Ok(Session {
                    id: r.try_get("", "session_id")?,
                    agent_id: r.try_get("", "agent_id")?,
                    user_id: r.try_get("", "user_id")?,
                    run_count: r.try_get("", "n")?,
                    create_time: Some(to_timestamp(r.try_get("", "first")?)),
                    update_time: Some(to_timestamp(r.try_get("", "last")?)),
                    messages: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        page(
            sessions,
            limit,
            |s| cursor::encode("sessions", &[&s.id]),
            |s| Ok(s.clone()),
        )
    }

    /// Deletes a session's history: its runs and their events, in one transaction. Refused while one
    /// of its runs is still active.
    pub async fn delete_session(&self, ws: &str, session_id: &str) -> Result<()> {
        check_session_id(session_id)?;
        let txn = self.db.writer().begin().await?;
        let runs = run::Entity::find()
            .filter(run::Column::WorkspaceId.eq(ws))
            .filter(run::Column::SessionId.eq(session_id))
            .all(&txn)
            .await?;
        if runs.is_empty() {
            return Err(Error::not_found(format!(
                "session {session_id:?} not found"
            )));
        }
        let active = [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::RequiresAction,
        ]
        .map(|s| s as i32);
        if runs.iter().any(|r| active.contains(&r.status)) {
            return Err(Error::FailedPrecondition(format!(
                "session {session_id:?} has runs still active; cancel them first"
            )));
        }
        let ids: Vec<String> = runs.into_iter().map(|r| r.id).collect();
        for chunk in ids.chunks(500) {
            run_event::Entity::delete_many()
                .filter(run_event::Column::RunId.is_in(chunk.iter().cloned()))
                .exec(&txn)
                .await?;
            run::Entity::delete_many()
                .filter(run::Column::Id.is_in(chunk.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    pub async fn memories(
        &self,
        ws: &str,
        user_id: &str,
        limit: i32,
        cur: &str,
    ) -> Result<Page<Memory>> {
        let limit = cursor::page_limit(limit)?;
        let mut q = memory::Entity::find().filter(memory::Column::WorkspaceId.eq(ws));
        if !user_id.is_empty() {
            q = q.filter(memory::Column::UserId.eq(user_id));
        }
        if !cur.is_empty() {
            let (t, id) = cursor::decode_time_id("memories", cur)?;
            q = q.filter(crate::agents::after(
                memory::Column::CreateTime,
                memory::Column::Id,
                t,
                id,
            ));
        }
        let rows = q
            .order_by_asc(memory::Column::CreateTime)
            .order_by_asc(memory::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        page(
            rows,
            limit,
            |m| cursor::encode_time_id("memories", m.create_time, &m.id),
            |m| {
                Ok(Memory {
                    id: m.id.clone(),
                    user_id: m.user_id.clone(),
                    content: m.content.clone(),
                    metadata: serde_json::from_str::<serde_json::Value>(&m.metadata)
                        .ok()
                        .as_ref()
                        .and_then(super::json_struct),
                    create_time: Some(to_timestamp(m.create_time)),
                })
            },
        )
    }

    pub async fn delete_memory(&self, ws: &str, id: &str) -> Result<()> {
        let res = memory::Entity::delete_many()
            .filter(memory::Column::WorkspaceId.eq(ws))
            .filter(memory::Column::Id.eq(id))
            .exec(self.db.writer())
            .await?;
        if res.rows_affected == 0 {
            return Err(Error::not_found(format!("memory {id:?} not found")));
        }
        Ok(())
    }
}
