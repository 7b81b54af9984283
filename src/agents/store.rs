//! The agent store: built-in agents shipped in `store/*.json`, then the PUBLIC agents of every
//! workspace (slug `<workspace>.<agent>`), listed in that order with one keyset cursor. Hiring copies a
//! store agent at a version into the caller's workspace, records where it came from, and keeps the
//! copy private. ListActiveAgents joins the workspace's live agents with their run statistics.

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, Func, JoinType, Order, Query},
};

use super::{Agents, Page, after, decode, insert_agent, page, text_query, validate};
use crate::{
    error::{Error, Result},
    pb::{
        ActiveAgent, Agent, HireAgentRequest, HireBindings, HireInfo, ListStoreAgentsRequest,
        RunStatus, StoreAgent, StoreSource, Visibility,
    },
    store::{
        cursor,
        entities::{agent, agent_version, hire, run, workspace},
        time::{now_micros, to_timestamp},
    },
};

include!(concat!(env!("OUT_DIR"), "/builtin_store.rs"));

/// The built-in catalog, parsed once at start-up.
pub struct Catalog {
    agents: Vec<StoreAgent>,
}

impl Catalog {
    pub fn builtin() -> Catalog {
        let mut agents = Vec::with_capacity(BUILTIN_STORE.len());
        for (slug, json) in BUILTIN_STORE {
            match parse_builtin(slug, json) {
                Ok(a) => agents.push(a),
                Err(e) => {
                    tracing::error!(slug, error = %e, "skipping an invalid built-in store agent")
                }
            }
        }
        Catalog { agents }
    }

    fn get(&self, slug: &str) -> Option<&StoreAgent> {
        self.agents
            .binary_search_by(|a| a.slug.as_str().cmp(slug))
            .ok()
            .map(|i| &self.agents[i])
    }
}

fn parse_builtin(slug: &str, json: &str) -> Result<StoreAgent> {
    let mut agent: Agent =
        serde_json::from_str(json).map_err(|e| Error::internal(format!("{slug}: {e}")))?;
    validate::normalize_new(&mut agent);
    agent.visibility = Visibility::Public as i32;
    agent.version = 1;
    if agent.id != slug {
        return Err(Error::internal(format!(
            "{slug}: id {:?} differs from the file name",
            agent.id
        )));
    }
    let defaults: Vec<String> = validate::DEFAULT_PROVIDERS
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    validate::check_agent(slug, &agent, &defaults)?;
    Ok(StoreAgent {
        slug: slug.to_owned(),
        source: StoreSource::Builtin as i32,
        publisher: "agentry".to_owned(),
        agent: Some(agent),
    })
}

fn matches(a: &Agent, req: &ListStoreAgentsRequest) -> bool {
    let q = req.query.to_lowercase();
    (req.category.is_empty() || a.category == req.category)
        && (req.capability.is_empty() || a.capabilities.contains(&req.capability))
        && (q.is_empty()
            || a.name.to_lowercase().contains(&q)
            || a.description.to_lowercase().contains(&q))
}

/// A public agent as a store entry.
fn public_entry(ws_name: &str, mut agent: Agent) -> StoreAgent {
    let slug = format!("{ws_name}.{}", agent.id);
    agent.id.clone_from(&slug);
    agent.hire = None;
    StoreAgent {
        slug,
        source: StoreSource::Public as i32,
        publisher: ws_name.to_owned(),
        agent: Some(agent),
    }
}

impl Agents {
    pub async fn list_store(&self, req: &ListStoreAgentsRequest) -> Result<Page<StoreAgent>> {
        let limit = cursor::page_limit(req.limit)? as usize;
        if req.query.chars().count() > 200 {
            return Err(Error::invalid("query", "at most 200 characters"));
        }
        // Phase "b": built-ins after a slug; phase "p": public agents after (workspace name, agent id).
        let (phase, a, b) = if req.cursor.is_empty() {
            ("b".to_owned(), String::new(), String::new())
        } else {
            let [phase, a, b] = cursor::decode::<3>("store", &req.cursor)?;
            (phase, a, b)
        };
        let mut out = Vec::with_capacity(limit);
        if phase == "b" {
            for s in self.catalog.agents.iter().filter(|s| s.slug > a) {
                if s.agent.as_ref().is_some_and(|ag| matches(ag, req)) {
                    if out.len() == limit {
                        let last: &StoreAgent = out.last().expect("limit >= 1");
                        return Ok((out.clone(), cursor::encode("store", &["b", &last.slug, ""])));
                    }
                    out.push(s.clone());
                }
            }
        } else if phase != "p" {
            return Err(Error::invalid("cursor", "malformed or foreign page cursor"));
        }
        let after_key = if phase == "p" { Some((a, b)) } else { None };
        let want = (limit - out.len()) as u64;
        let mut rows = self.public_rows(req, after_key, want + 1).await?;
        let more = rows.len() as u64 > want;
        rows.truncate(want as usize);
        let next = if more {
            match rows.last() {
                Some((ws, id, _)) => cursor::encode("store", &["p", ws, id]),
                // Built-ins filled the page and public agents follow: resume after the last built-in.
                None => {
                    let last = out.last().expect("want == 0 means the page is full");
                    cursor::encode("store", &["b", &last.slug, ""])
                }
            }
        } else {
            String::new()
        };
        for (ws, _, spec) in rows {
            out.push(public_entry(&ws, decode(&spec)?));
        }
        Ok((out, next))
    }

    /// Live, enabled PUBLIC agents as (workspace name, agent id, spec), ordered by (workspace name, id).
    async fn public_rows(
        &self,
        req: &ListStoreAgentsRequest,
        after_key: Option<(String, String)>,
        limit: u64,
    ) -> Result<Vec<(String, String, Vec<u8>)>> {
        let (a, w) = (Alias::new("a"), Alias::new("w"));
        let wname = || Expr::col((w.clone(), workspace::Column::Name));
        let acol = |c: agent::Column| Expr::col((a.clone(), c));
        let mut q = Query::select();
        q.expr_as(wname(), Alias::new("ws_name"))
            .expr_as(acol(agent::Column::Id), Alias::new("id"))
            .expr_as(acol(agent::Column::Spec), Alias::new("spec"))
            .from_as(agent::Entity, a.clone())
            .join_as(
                JoinType::InnerJoin,
                workspace::Entity,
                w.clone(),
                Expr::col((w.clone(), workspace::Column::Id))
                    .equals((a.clone(), agent::Column::WorkspaceId)),
            )
            .and_where(acol(agent::Column::Visibility).eq(Visibility::Public as i32))
            .and_where(acol(agent::Column::Enabled).eq(true))
            .and_where(acol(agent::Column::DeleteTime).is_null());
        if !req.category.is_empty() {
            q.and_where(acol(agent::Column::Category).eq(req.category.as_str()));
        }
        if !req.capability.is_empty() {
            q.and_where(
                acol(agent::Column::Capabilities).like(super::label_pattern(&req.capability)),
            );
        }
        if !req.query.is_empty() {
            q.cond_where(text_query(
                &req.query,
                (a.clone(), agent::Column::Name),
                (a.clone(), agent::Column::Description),
            )?);
        }
        if let Some((ws, id)) = after_key {
            q.cond_where(
                Condition::any().add(wname().gt(ws.clone())).add(
                    Condition::all()
                        .add(wname().eq(ws))
                        .add(acol(agent::Column::Id).gt(id)),
                ),
            );
        }
        q.order_by_expr(wname(), Order::Asc)
            .order_by_expr(acol(agent::Column::Id), Order::Asc)
            .limit(limit);
        let rows = self.db.reader().query_all(&q).await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("", "ws_name")?,
                    r.try_get("", "id")?,
                    r.try_get("", "spec")?,
                ))
            })
            .collect()
    }

    /// A store agent at `version` (0: latest).
    pub async fn get_store(&self, slug: &str, version: i64) -> Result<StoreAgent> {
        let missing = || Error::not_found(format!("store agent {slug:?} not found"));
        if version < 0 {
            return Err(Error::invalid("version", "must be 0 (latest) or more"));
        }
        let Some((ws_name, id)) = slug.split_once('.') else {
            validate::check_slug("slug", slug)?;
            let s = self.catalog.get(slug).ok_or_else(missing)?;
            if version > 1 {
                return Err(Error::not_found(format!(
                    "store agent {slug:?} has no version {version}"
                )));
            }
            return Ok(s.clone());
        };
        if !validate::is_slug(ws_name) || !validate::is_slug(id) {
            return Err(Error::invalid(
                "slug",
                "a built-in slug, or \"<workspace>.<agent id>\"",
            ));
        }
        let ws = workspace::Entity::find()
            .filter(workspace::Column::Name.eq(ws_name))
            .one(self.db.reader())
            .await?
            .ok_or_else(missing)?;
        let row = agent::Entity::find_by_id((ws.id.clone(), id.to_owned()))
            .filter(agent::Column::Visibility.eq(Visibility::Public as i32))
            .filter(agent::Column::Enabled.eq(true))
            .filter(agent::Column::DeleteTime.is_null())
            .one(self.db.reader())
            .await?
            .ok_or_else(missing)?;
        let spec = if version == 0 || version == row.version {
            row.spec
        } else {
            agent_version::Entity::find_by_id((ws.id, id.to_owned(), version))
                .one(self.db.reader())
                .await?
                .ok_or_else(|| {
                    Error::not_found(format!("store agent {slug:?} has no version {version}"))
                })?
                .spec
        };
        Ok(public_entry(&ws.name, decode(&spec)?))
    }

    /// Copies a store agent into workspace `ws` and records the hire, in one transaction.
    pub async fn hire(&self, ws: &str, req: &HireAgentRequest) -> Result<Agent> {
        let entry = self.get_store(&req.slug, req.version).await?;
        let source = entry.agent.unwrap_or_default();
        let bindings = req.bindings.clone().unwrap_or_default();
        check_bindings(&bindings)?;
        let id = if req.agent_id.is_empty() {
            req.slug.replace('.', "-")
        } else {
            req.agent_id.clone()
        };
        validate::check_slug("agent_id", &id)?;
        let now = now_micros();
        let mut copy = Agent {
            id: id.clone(),
            visibility: Visibility::Private as i32,
            enabled: Some(true),
            hire: Some(HireInfo {
                source_slug: entry.slug.clone(),
                source_version: source.version,
                bindings: Some(bindings.clone()),
                hire_time: Some(to_timestamp(now)),
            }),
            ..source
        };
        validate::fill_config_defaults(copy.config.get_or_insert_with(Default::default));
        let txn = self.db.writer().begin().await?;
        let created = insert_agent(&txn, ws, std::mem::take(&mut copy), false)
            .await
            .map_err(|e| match e {
                Error::AlreadyExists(m) => {
                    Error::AlreadyExists(format!("{m}; choose another agent_id"))
                }
                e => e,
            })?;
        hire::Entity::delete_by_id((ws.to_owned(), id.clone()))
            .exec(&txn)
            .await?;
        hire::Entity::insert(hire::ActiveModel {
            workspace_id: Set(ws.to_owned()),
            agent_id: Set(id.clone()),
            source_slug: Set(entry.slug),
            source_version: Set(source.version),
            bindings: Set(prost::Message::encode_to_vec(&bindings)),
            create_time: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        self.changed(ws, &id).await;
        Ok(created)
    }

    /// Enabled agents and hires of the workspace, with run statistics from one grouped query.
    pub async fn list_active(&self, ws: &str, limit: i32, cur: &str) -> Result<Page<ActiveAgent>> {
        let limit = cursor::page_limit(limit)?;
        let mut q = agent::Entity::find()
            .filter(agent::Column::WorkspaceId.eq(ws))
            .filter(agent::Column::DeleteTime.is_null())
            .filter(
                Condition::any()
                    .add(agent::Column::Enabled.eq(true))
                    .add(agent::Column::Hired.eq(true)),
            );
        if !cur.is_empty() {
            let (t, id) = cursor::decode_time_id("active", cur)?;
            q = q.filter(after(agent::Column::CreateTime, agent::Column::Id, t, id));
        }
        let rows = q
            .order_by_asc(agent::Column::CreateTime)
            .order_by_asc(agent::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        let (agents, next) = page(
            rows,
            limit,
            |r| cursor::encode_time_id("active", r.create_time, &r.id),
            |r| decode(&r.spec),
        )?;
        let mut stats = self
            .run_stats(ws, agents.iter().map(|a| a.id.as_str()))
            .await?;
        let out = agents
            .into_iter()
            .map(|agent| {
                let s = stats.remove(&agent.id).unwrap_or_default();
                ActiveAgent {
                    last_run_time: s.last_run.map(to_timestamp),
                    run_count: s.total,
                    completed_run_count: s.completed,
                    failed_run_count: s.failed,
                    active_run_count: s.active,
                    agent: Some(agent),
                }
            })
            .collect();
        Ok((out, next))
    }

    async fn run_stats<'a>(
        &self,
        ws: &str,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, RunStats>> {
        let ids: Vec<&str> = ids.collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let status = || Expr::col(run::Column::Status);
        // SUM of integers is NUMERIC on PostgreSQL: cast it back to BIGINT for both backends.
        let count_of = |statuses: &[RunStatus]| {
            Expr::expr(Func::sum(
                Expr::case(
                    status().is_in(statuses.iter().map(|s| *s as i32)),
                    Expr::val(1i64),
                )
                .finally(Expr::val(0i64)),
            ))
            .cast_as(Alias::new("BIGINT"))
        };
        let q = Query::select()
            .column(run::Column::AgentId)
            .expr_as(Func::count(Expr::col(run::Column::Id)), Alias::new("total"))
            .expr_as(
                Func::max(Expr::col(run::Column::CreateTime)),
                Alias::new("last_run"),
            )
            .expr_as(count_of(&[RunStatus::Completed]), Alias::new("completed"))
            .expr_as(count_of(&[RunStatus::Failed]), Alias::new("failed"))
            .expr_as(
                count_of(&[
                    RunStatus::Queued,
                    RunStatus::Running,
                    RunStatus::RequiresAction,
                ]),
                Alias::new("active"),
            )
            .from(run::Entity)
            .and_where(Expr::col(run::Column::WorkspaceId).eq(ws))
            .and_where(Expr::col(run::Column::AgentId).is_in(ids))
            .group_by_col(run::Column::AgentId)
            .to_owned();
        let rows = self.db.reader().query_all(&q).await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            out.insert(
                r.try_get::<String>("", "agent_id")?,
                RunStats {
                    total: r.try_get("", "total")?,
                    last_run: r.try_get("", "last_run")?,
                    completed: r.try_get::<Option<i64>>("", "completed")?.unwrap_or(0),
                    failed: r.try_get::<Option<i64>>("", "failed")?.unwrap_or(0),
                    active: r.try_get::<Option<i64>>("", "active")?.unwrap_or(0),
                },
            );
        }
        Ok(out)
    }
}

#[derive(Default)]
struct RunStats {
    total: i64,
    last_run: Option<i64>,
    completed: i64,
    failed: i64,
    active: i64,
}

fn check_bindings(b: &HireBindings) -> Result<()> {
    for (field, ids) in [
        ("connector_ids", &b.connector_ids),
        ("knowledge_ids", &b.knowledge_ids),
    ] {
        if ids.len() > 100 {
            return Err(Error::invalid(
                format!("bindings.{field}"),
                "at most 100 ids",
            ));
        }
        if let Some(i) = ids.iter().position(|id| id.is_empty() || id.len() > 255) {
            return Err(Error::invalid(
                format!("bindings.{field}[{i}]"),
                "1 to 255 characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_agent_parses_and_validates() {
        assert!(BUILTIN_STORE.len() >= 5);
        for (slug, json) in BUILTIN_STORE {
            parse_builtin(slug, json).unwrap_or_else(|e| panic!("{slug}: {e}"));
        }
        assert_eq!(Catalog::builtin().agents.len(), BUILTIN_STORE.len());
    }
}
