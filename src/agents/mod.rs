//! Agents: definitions owned by a workspace, their immutable versions, soft deletion, and the store
//! (built-in catalog, public agents, hires). Every change writes the new definition and its version row
//! in one transaction, guarded by an optimistic check on the previous version.

mod cache;
pub mod mask;
pub mod store;
pub mod validate;

use std::sync::Arc;

use prost::Message;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
    sea_query::{Expr, ExprTrait, Func, IntoColumnRef, LikeExpr},
};

use crate::{
    error::{Error, Result},
    pb::{Agent, ListAgentsRequest, Visibility},
    store::{
        Db, cursor,
        entities::{agent, agent_version},
        invalidate::{self, Invalidation},
        time::{now_micros, to_timestamp},
    },
};
use cache::AgentCache;

pub struct Agents {
    db: Db,
    /// Model providers configured on this server (agents may only name these).
    providers: Vec<String>,
    cache: AgentCache,
    catalog: store::Catalog,
}

/// A page of results and the cursor of the next one (empty at the end).
pub type Page<T> = (Vec<T>, String);

const UPDATE_RETRIES: usize = 5;

impl Agents {
    pub fn new(db: Db, providers: Vec<String>) -> Self {
        let cache = AgentCache::new(db.backend());
        Agents {
            db,
            providers,
            cache,
            catalog: store::Catalog::builtin(),
        }
    }

    /// Drops cached copies after another process announced a change (`None`: everything).
    pub fn forget(&self, agent: Option<(&str, &str)>) {
        match agent {
            Some((ws, id)) => self.cache.invalidate(ws, id),
            None => self.cache.clear(),
        }
    }

    /// After a committed change: drop the local copy and tell the other processes.
    async fn changed(&self, ws: &str, id: &str) {
        self.cache.invalidate(ws, id);
        let what = Invalidation::Agent {
            workspace_id: ws.to_owned(),
            agent_id: id.to_owned(),
        };
        if let Err(e) = invalidate::publish(&self.db, &what).await {
            tracing::warn!(error = %e, "could not announce an agent change to other replicas");
        }
    }

    pub async fn create(&self, ws: &str, mut agent: Agent) -> Result<Agent> {
        validate::normalize_new(&mut agent);
        let generated = agent.id.is_empty();
        if generated {
            agent.id = validate::slugify(&agent.name);
        }
        validate::check_agent("agent", &agent, &self.providers)?;
        let txn = self.db.writer().begin().await?;
        let created = insert_agent(&txn, ws, agent, generated).await?;
        txn.commit().await?;
        self.changed(ws, &created.id).await;
        Ok(created)
    }

    /// The live (not deleted) agent `id` of workspace `ws`.
    pub async fn get(&self, ws: &str, id: &str) -> Result<Arc<Agent>> {
        if let Some(a) = self.cache.get(ws, id) {
            return Ok(a);
        }
        let epoch = self.cache.epoch();
        let row = agent::Entity::find_by_id((ws.to_owned(), id.to_owned()))
            .filter(agent::Column::DeleteTime.is_null())
            .one(self.db.reader())
            .await?
            .ok_or_else(|| not_found(id))?;
        let a = Arc::new(decode(&row.spec)?);
        self.cache.put(ws, id, a.clone(), epoch);
        Ok(a)
    }

    /// The agents of `ids` that exist, in the order asked, and the ids that do not.
    pub async fn batch_get(&self, ws: &str, ids: &[String]) -> Result<(Vec<Agent>, Vec<String>)> {
        if ids.is_empty() || ids.len() > 100 {
            return Err(Error::invalid("agent_ids", "give 1 to 100 ids"));
        }
        let rows = agent::Entity::find()
            .filter(agent::Column::WorkspaceId.eq(ws))
            .filter(agent::Column::Id.is_in(ids.iter().map(String::as_str)))
            .filter(agent::Column::DeleteTime.is_null())
            .all(self.db.reader())
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            found.insert(r.id, r.spec);
        }
        let (mut agents, mut missing) = (Vec::with_capacity(found.len()), Vec::new());
        for id in ids {
            match found.get(id) {
                Some(spec) => agents.push(decode(spec)?),
                None => missing.push(id.clone()),
            }
        }
        Ok((agents, missing))
    }

    pub async fn list(&self, ws: &str, req: &ListAgentsRequest) -> Result<Page<Agent>> {
        let limit = cursor::page_limit(req.limit)?;
        let mut q = agent::Entity::find()
            .filter(agent::Column::WorkspaceId.eq(ws))
            .filter(agent::Column::DeleteTime.is_null());
        if !req.tag.is_empty() {
            q = q.filter(agent::Column::Tags.like(label_pattern(&req.tag)));
        }
        if !req.capability.is_empty() {
            q = q.filter(agent::Column::Capabilities.like(label_pattern(&req.capability)));
        }
        if !req.category.is_empty() {
            q = q.filter(agent::Column::Category.eq(req.category.as_str()));
        }
        if let Some(enabled) = req.enabled {
            q = q.filter(agent::Column::Enabled.eq(enabled));
        }
        if !req.playbook_template.is_empty() {
            q = q.filter(agent::Column::PlaybookTemplate.eq(req.playbook_template.as_str()));
        }
        if !req.query.is_empty() {
            q = q.filter(text_query(
                &req.query,
                agent::Column::Name,
                agent::Column::Description,
            )?);
        }
        if !req.cursor.is_empty() {
            let (t, id) = cursor::decode_time_id("agents", &req.cursor)?;
            q = q.filter(after(agent::Column::CreateTime, agent::Column::Id, t, id));
        }
        let rows = q
            .order_by_asc(agent::Column::CreateTime)
            .order_by_asc(agent::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        page(
            rows,
            limit,
            |r| cursor::encode_time_id("agents", r.create_time, &r.id),
            |r| decode(&r.spec),
        )
    }

    /// Applies `patch` along `paths` (empty: every populated field) and stores the new version.
    pub async fn update(&self, ws: &str, patch: &Agent, paths: &[String]) -> Result<Agent> {
        if patch.id.is_empty() {
            return Err(Error::invalid("agent.id", "is required"));
        }
        for _ in 0..UPDATE_RETRIES {
            let txn = self.db.writer().begin().await?;
            let row = agent::Entity::find_by_id((ws.to_owned(), patch.id.clone()))
                .filter(agent::Column::DeleteTime.is_null())
                .one(&txn)
                .await?
                .ok_or_else(|| not_found(&patch.id))?;
            let before = decode(&row.spec)?;
            let mut next = before.clone();
            mask::apply(&mut next, patch, paths)?;
            validate::fill_config_defaults(next.config.get_or_insert_with(Default::default));
            next.enabled.get_or_insert(true);
            if next.visibility == Visibility::Unspecified as i32 {
                next.visibility = Visibility::Private as i32;
            }
            validate::check_agent("agent", &next, &self.providers)?;
            if next == before {
                return Ok(before); // nothing changed: no new version
            }
            let now = now_micros();
            next.version = row.version + 1;
            next.update_time = Some(to_timestamp(now));
            let res = agent::Entity::update_many()
                .set(columns(ws, &next, row.create_time, now, row.hired))
                .filter(agent::Column::WorkspaceId.eq(ws))
                .filter(agent::Column::Id.eq(patch.id.as_str()))
                .filter(agent::Column::Version.eq(row.version))
                .exec(&txn)
                .await?;
            if res.rows_affected != 1 {
                txn.rollback().await?;
                continue; // another writer changed it first: re-read and re-apply
            }
            insert_version(&txn, ws, &next, now).await?;
            txn.commit().await?;
            self.changed(ws, &next.id).await;
            return Ok(next);
        }
        Err(Error::Aborted(
            "the agent was changed concurrently; retry".into(),
        ))
    }

    /// Soft delete: the agent leaves reads and lists; versions and runs stay.
    pub async fn delete(&self, ws: &str, id: &str) -> Result<()> {
        let res = agent::Entity::update_many()
            .col_expr(agent::Column::DeleteTime, Expr::value(now_micros()))
            .filter(agent::Column::WorkspaceId.eq(ws))
            .filter(agent::Column::Id.eq(id))
            .filter(agent::Column::DeleteTime.is_null())
            .exec(self.db.writer())
            .await?;
        if res.rows_affected == 0 {
            return Err(not_found(id));
        }
        self.changed(ws, id).await;
        Ok(())
    }

    /// Versions of an agent, newest first. Versions of a deleted agent stay readable (its runs name them).
    pub async fn list_versions(
        &self,
        ws: &str,
        id: &str,
        limit: i32,
        cur: &str,
    ) -> Result<Page<Agent>> {
        let limit = cursor::page_limit(limit)?;
        let mut q = agent_version::Entity::find()
            .filter(agent_version::Column::WorkspaceId.eq(ws))
            .filter(agent_version::Column::AgentId.eq(id));
        if !cur.is_empty() {
            let [v] = cursor::decode::<1>("versions", cur)?;
            let v: i64 = v
                .parse()
                .map_err(|_| Error::invalid("cursor", "malformed or foreign page cursor"))?;
            q = q.filter(agent_version::Column::Version.lt(v));
        }
        let rows = q
            .order_by_desc(agent_version::Column::Version)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        if rows.is_empty() && cur.is_empty() {
            return Err(not_found(id));
        }
        page(
            rows,
            limit,
            |r| cursor::encode("versions", &[&r.version.to_string()]),
            |r| decode(&r.spec),
        )
    }

    pub async fn get_version(&self, ws: &str, id: &str, version: i64) -> Result<Agent> {
        if version < 1 {
            return Err(Error::invalid("version", "must be 1 or more"));
        }
        let row = agent_version::Entity::find_by_id((ws.to_owned(), id.to_owned(), version))
            .one(self.db.reader())
            .await?
            .ok_or_else(|| Error::not_found(format!("agent {id:?} has no version {version}")))?;
        decode(&row.spec)
    }
}

/// Inserts a new agent (or revives a soft-deleted one under the same id, continuing its versions).
/// With `generated_id`, a taken id gets a random suffix instead of ALREADY_EXISTS.
async fn insert_agent(
    txn: &DatabaseTransaction,
    ws: &str,
    mut agent: Agent,
    generated_id: bool,
) -> Result<Agent> {
    let base = agent.id.clone();
    for attempt in 0..8 {
        if attempt > 0 {
            agent.id = validate::with_random_suffix(&base);
        }
        let existing = agent::Entity::find_by_id((ws.to_owned(), agent.id.clone()))
            .one(txn)
            .await?;
        let now = now_micros();
        let hired = agent.hire.is_some();
        match existing {
            Some(row) if row.delete_time.is_none() || generated_id => {
                if generated_id {
                    continue;
                }
                return Err(Error::AlreadyExists(format!(
                    "agent {:?} already exists",
                    agent.id
                )));
            }
            Some(row) => {
                agent.version = row.version + 1;
                agent.create_time = Some(to_timestamp(now));
                agent.update_time = agent.create_time;
                agent::Entity::update_many()
                    .set(columns(ws, &agent, now, now, hired))
                    .filter(agent::Column::WorkspaceId.eq(ws))
                    .filter(agent::Column::Id.eq(agent.id.as_str()))
                    .exec(txn)
                    .await?;
            }
            None => {
                agent.version = 1;
                agent.create_time = Some(to_timestamp(now));
                agent.update_time = agent.create_time;
                agent::Entity::insert(columns(ws, &agent, now, now, hired))
                    .exec_without_returning(txn)
                    .await?;
            }
        }
        insert_version(txn, ws, &agent, now).await?;
        return Ok(agent);
    }
    Err(Error::Aborted(
        "could not find a free id for the agent; give one".into(),
    ))
}

async fn insert_version(txn: &impl ConnectionTrait, ws: &str, a: &Agent, now: i64) -> Result<()> {
    agent_version::Entity::insert(agent_version::ActiveModel {
        workspace_id: Set(ws.to_owned()),
        agent_id: Set(a.id.clone()),
        version: Set(a.version),
        spec: Set(a.encode_to_vec()),
        create_time: Set(now),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// The row of `a`: the encoded definition plus the columns lists filter and sort on.
fn columns(
    ws: &str,
    a: &Agent,
    create_time: i64,
    update_time: i64,
    hired: bool,
) -> agent::ActiveModel {
    let playbook_template = a
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get("playbook_template"))
        .and_then(|v| match &v.kind {
            Some(pbjson_types::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    agent::ActiveModel {
        workspace_id: Set(ws.to_owned()),
        id: Set(a.id.clone()),
        name: Set(a.name.clone()),
        description: Set(a.description.clone()),
        version: Set(a.version),
        enabled: Set(a.enabled.unwrap_or(true)),
        visibility: Set(a.visibility),
        category: Set(a.category.clone()),
        tags: Set(labels(&a.tags)),
        capabilities: Set(labels(&a.capabilities)),
        playbook_template: Set(playbook_template),
        hired: Set(hired),
        spec: Set(a.encode_to_vec()),
        create_time: Set(create_time),
        update_time: Set(update_time),
        delete_time: Set(None),
    }
}

/// `,a,b,` so that a LIKE `%,a,%` matches one whole label.
fn labels(v: &[String]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!(",{},", v.join(","))
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn label_pattern(label: &str) -> LikeExpr {
    LikeExpr::new(format!("%,{},%", escape_like(label))).escape('\\')
}

/// Case-insensitive substring match on either of two text columns.
pub(crate) fn text_query(
    query: &str,
    a: impl IntoColumnRef,
    b: impl IntoColumnRef,
) -> Result<Condition> {
    if query.chars().count() > 200 {
        return Err(Error::invalid("query", "at most 200 characters"));
    }
    let pattern = format!("%{}%", escape_like(&query.to_lowercase()));
    Ok(Condition::any()
        .add(
            Expr::expr(Func::lower(Expr::col(a))).like(LikeExpr::new(pattern.clone()).escape('\\')),
        )
        .add(Expr::expr(Func::lower(Expr::col(b))).like(LikeExpr::new(pattern).escape('\\'))))
}

/// Rows strictly after `(t, id)` in `(time, id)` order.
pub(crate) fn after(
    time: impl ColumnTrait,
    idc: impl ColumnTrait,
    t: i64,
    id: String,
) -> Condition {
    Condition::any()
        .add(time.gt(t))
        .add(Condition::all().add(time.eq(t)).add(idc.gt(id)))
}

/// Rows strictly before `(t, id)` in `(time, id)` order (lists newest first).
pub(crate) fn before(
    time: impl ColumnTrait,
    idc: impl ColumnTrait,
    t: i64,
    id: String,
) -> Condition {
    Condition::any()
        .add(time.lt(t))
        .add(Condition::all().add(time.eq(t)).add(idc.lt(id)))
}

/// Turns `limit + 1` fetched rows into a page and the next cursor.
pub(crate) fn page<R, T>(
    mut rows: Vec<R>,
    limit: u64,
    cursor_of: impl Fn(&R) -> String,
    convert: impl Fn(&R) -> Result<T>,
) -> Result<Page<T>> {
    let next = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(&cursor_of).unwrap_or_default()
    } else {
        String::new()
    };
    let items = rows.iter().map(convert).collect::<Result<Vec<T>>>()?;
    Ok((items, next))
}

pub(crate) fn decode(spec: &[u8]) -> Result<Agent> {
    Agent::decode(spec).map_err(|e| Error::internal(format!("stored agent does not decode: {e}")))
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("agent {id:?} not found"))
}
