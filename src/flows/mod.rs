//! Flows: versioned graphs of agent, tool, wait, branch and approval nodes, and their durable runs.
//!
//! A flow is stored like an agent: the current definition in `flows` and every version, immutable, in
//! `flow_versions`; runs pin the version they started with. A flow run is one row whose encoded
//! `FlowRun` (steps included) is the checkpoint, changed only through [`runs`]' transactional
//! `mutate`, which also appends the run's events; the [`executor`] claims runs with a lease and drives
//! them through the state machine of [`plan`]. Triggers and published events start runs ([`triggers`]);
//! the gallery of [`templates`] creates flows.

mod control;
pub mod executor;
mod expr;
pub mod graph;
mod hub;
mod mcp;
mod nodes;
pub mod plan;
mod runs;
pub mod templates;
mod triggers;

use std::{collections::HashMap, sync::Arc};

use prost::Message;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, sea_query::Expr,
};
use tokio::sync::Notify;

use crate::{
    agents::{Page, after, page, validate},
    error::{Error, Result},
    pb::{Flow, FlowGraph, UpdateFlowRequest},
    store::{
        Db, cursor,
        entities::{flow, flow_trigger, flow_version},
        time::{now_micros, to_timestamp},
    },
};

pub use hub::FlowHub;
pub use runs::FlowWatchStream;

const UPDATE_RETRIES: usize = 5;

/// The flow service, shared by the API and the executor.
pub struct Flows {
    db: Db,
    hub: Arc<FlowHub>,
    /// Wakes this process's executor when a run became claimable.
    wake: Arc<Notify>,
    /// This process's id (lease owner, notice sender).
    me: Arc<str>,
    /// Notified when webhook deliveries were queued.
    deliveries: Arc<Notify>,
    templates: templates::Gallery,
    /// Ends open watch streams at shutdown.
    closing: tokio_util::sync::CancellationToken,
    /// Graphs of flow versions (immutable) the executor ran recently.
    graphs: std::sync::Mutex<HashMap<(String, String, i64), Arc<FlowGraph>>>,
}

/// Versions kept in the graph cache; beyond it the cache starts over.
const GRAPH_CACHE: usize = 1024;

impl Flows {
    pub fn new(db: Db, deliveries: Arc<Notify>) -> Flows {
        Flows {
            db,
            hub: Arc::default(),
            wake: Arc::default(),
            me: uuid::Uuid::now_v7().to_string().into(),
            deliveries,
            templates: templates::Gallery::builtin(),
            closing: Default::default(),
            graphs: Default::default(),
        }
    }

    /// Ends every open watch stream (server shutdown).
    pub fn close(&self) {
        self.closing.cancel();
    }

    pub async fn create(&self, ws: &str, mut f: Flow) -> Result<Flow> {
        let generated = f.id.is_empty();
        if generated {
            f.id = validate::slugify(&f.name);
        }
        f.archived_versions.clear();
        graph::check_flow("flow", &f)?;
        let txn = self.db.writer().begin().await?;
        let base = f.id.clone();
        for attempt in 0..8 {
            if attempt > 0 {
                f.id = validate::with_random_suffix(&base);
            }
            let existing = flow::Entity::find_by_id((ws.to_owned(), f.id.clone()))
                .one(&txn)
                .await?;
            let now = now_micros();
            f.create_time = Some(to_timestamp(now));
            f.update_time = f.create_time;
            match existing {
                Some(row) if row.delete_time.is_none() || generated => {
                    if generated {
                        continue;
                    }
                    return Err(Error::AlreadyExists(format!(
                        "flow {:?} already exists",
                        f.id
                    )));
                }
                Some(row) => {
                    // A deleted flow's id is reused: its versions continue (old runs name them).
                    f.version = row.version + 1;
                    flow::Entity::update_many()
                        .set(columns(ws, &f, now, now))
                        .filter(flow::Column::WorkspaceId.eq(ws))
                        .filter(flow::Column::Id.eq(f.id.as_str()))
                        .exec(&txn)
                        .await?;
                }
                None => {
                    f.version = 1;
                    flow::Entity::insert(columns(ws, &f, now, now))
                        .exec_without_returning(&txn)
                        .await?;
                }
            }
            insert_version(&txn, ws, &f, now).await?;
            txn.commit().await?;
            return Ok(f);
        }
        Err(Error::Aborted(
            "could not find a free id for the flow; give one".into(),
        ))
    }

    /// The live flow `id`, at `version` (0: the current one).
    pub async fn get(&self, ws: &str, id: &str, version: i64) -> Result<Flow> {
        validate::check_slug("id", id)?;
        if version < 0 {
            return Err(Error::invalid("version", "must be 0 or more"));
        }
        let row = self.live_row(ws, id).await?;
        let current = decode(&row.spec)?;
        if version == 0 || version == current.version {
            return Ok(current);
        }
        let mut f = self.version(ws, id, version).await?;
        f.archived_versions = current.archived_versions;
        Ok(f)
    }

    async fn live_row(&self, ws: &str, id: &str) -> Result<flow::Model> {
        flow::Entity::find_by_id((ws.to_owned(), id.to_owned()))
            .filter(flow::Column::DeleteTime.is_null())
            .one(self.db.reader())
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// A stored version, whatever became of the flow since (runs pinned to it need it).
    pub(crate) async fn version(&self, ws: &str, id: &str, version: i64) -> Result<Flow> {
        let row = flow_version::Entity::find_by_id((ws.to_owned(), id.to_owned(), version))
            .one(self.db.reader())
            .await?
            .ok_or_else(|| Error::not_found(format!("flow {id:?} has no version {version}")))?;
        decode(&row.spec)
    }

    /// The graph of a flow version, from the cache when it is there (versions never change).
    pub(crate) async fn graph(&self, ws: &str, id: &str, version: i64) -> Result<Arc<FlowGraph>> {
        let key = (ws.to_owned(), id.to_owned(), version);
        if let Some(g) = self.graphs.lock().expect("graph cache").get(&key) {
            return Ok(g.clone());
        }
        let g = Arc::new(
            self.version(ws, id, version)
                .await?
                .graph
                .unwrap_or_default(),
        );
        let mut cache = self.graphs.lock().expect("graph cache");
        if cache.len() >= GRAPH_CACHE {
            cache.clear();
        }
        cache.insert(key, g.clone());
        Ok(g)
    }

    pub async fn list(&self, ws: &str, limit: i32, cur: &str) -> Result<Page<Flow>> {
        let limit = cursor::page_limit(limit)?;
        let mut q = flow::Entity::find()
            .filter(flow::Column::WorkspaceId.eq(ws))
            .filter(flow::Column::DeleteTime.is_null());
        if !cur.is_empty() {
            let (t, id) = cursor::decode_time_id("flows", cur)?;
            q = q.filter(after(flow::Column::CreateTime, flow::Column::Id, t, id));
        }
        let rows = q
            .order_by_asc(flow::Column::CreateTime)
            .order_by_asc(flow::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        page(
            rows,
            limit,
            |r| cursor::encode_time_id("flows", r.create_time, &r.id),
            |r| decode(&r.spec),
        )
    }

    /// Applies the fields of `req.flow` named by the mask (empty: every field set) as a new version.
    pub async fn update(&self, ws: &str, req: &UpdateFlowRequest) -> Result<Flow> {
        let patch = req
            .flow
            .as_ref()
            .ok_or_else(|| Error::invalid("flow", "is required"))?;
        if patch.id.is_empty() {
            return Err(Error::invalid("flow.id", "is required"));
        }
        let mut paths: Vec<String> = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            if !patch.name.is_empty() {
                paths.push("name".into());
            }
            if !patch.description.is_empty() {
                paths.push("description".into());
            }
            if patch.input_schema.is_some() {
                paths.push("input_schema".into());
            }
            if patch.graph.is_some() {
                paths.push("graph".into());
            }
        }
        for p in &paths {
            if !matches!(
                p.as_str(),
                "name" | "description" | "input_schema" | "graph"
            ) {
                return Err(Error::invalid(
                    "update_mask",
                    format!("{p:?} cannot be updated; use name, description, input_schema, graph"),
                ));
            }
        }
        for _ in 0..UPDATE_RETRIES {
            let txn = self.db.writer().begin().await?;
            let row = flow::Entity::find_by_id((ws.to_owned(), patch.id.clone()))
                .filter(flow::Column::DeleteTime.is_null())
                .one(&txn)
                .await?
                .ok_or_else(|| not_found(&patch.id))?;
            let before = decode(&row.spec)?;
            let mut next = before.clone();
            for p in &paths {
                match p.as_str() {
                    "name" => next.name.clone_from(&patch.name),
                    "description" => next.description.clone_from(&patch.description),
                    "input_schema" => next.input_schema.clone_from(&patch.input_schema),
                    _ => next.graph.clone_from(&patch.graph),
                }
            }
            graph::check_flow("flow", &next)?;
            if next == before {
                return Ok(before);
            }
            let now = now_micros();
            next.version = row.version + 1;
            next.update_time = Some(to_timestamp(now));
            let res = flow::Entity::update_many()
                .set(columns(ws, &next, row.create_time, now))
                .filter(flow::Column::WorkspaceId.eq(ws))
                .filter(flow::Column::Id.eq(patch.id.as_str()))
                .filter(flow::Column::Version.eq(row.version))
                .exec(&txn)
                .await?;
            if res.rows_affected != 1 {
                txn.rollback().await?;
                continue;
            }
            insert_version(&txn, ws, &next, now).await?;
            txn.commit().await?;
            return Ok(next);
        }
        Err(Error::Aborted(
            "the flow was changed concurrently; retry".into(),
        ))
    }

    /// Soft delete: the flow leaves reads and lists and its triggers are disabled, in one transaction;
    /// its versions and runs stay readable.
    pub async fn delete(&self, ws: &str, id: &str) -> Result<()> {
        validate::check_slug("id", id)?;
        let txn = self.db.writer().begin().await?;
        let res = flow::Entity::update_many()
            .col_expr(flow::Column::DeleteTime, Expr::value(now_micros()))
            .filter(flow::Column::WorkspaceId.eq(ws))
            .filter(flow::Column::Id.eq(id))
            .filter(flow::Column::DeleteTime.is_null())
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            return Err(not_found(id));
        }
        flow_trigger::Entity::update_many()
            .col_expr(flow_trigger::Column::Enabled, Expr::value(false))
            .col_expr(
                flow_trigger::Column::NextFire,
                Expr::value(Option::<i64>::None),
            )
            .filter(flow_trigger::Column::WorkspaceId.eq(ws))
            .filter(flow_trigger::Column::FlowId.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Versions newest first; archived ones only with `include_archived`.
    pub async fn list_versions(
        &self,
        ws: &str,
        id: &str,
        limit: i32,
        cur: &str,
        include_archived: bool,
    ) -> Result<Page<Flow>> {
        validate::check_slug("id", id)?;
        let limit = cursor::page_limit(limit)?;
        self.live_row(ws, id).await?;
        let mut q = flow_version::Entity::find()
            .filter(flow_version::Column::WorkspaceId.eq(ws))
            .filter(flow_version::Column::FlowId.eq(id));
        if !include_archived {
            q = q.filter(flow_version::Column::Archived.eq(false));
        }
        if !cur.is_empty() {
            let [v] = cursor::decode::<1>("flow_versions", cur)?;
            let v: i64 = v
                .parse()
                .map_err(|_| Error::invalid("cursor", "malformed or foreign page cursor"))?;
            q = q.filter(flow_version::Column::Version.lt(v));
        }
        let rows = q
            .order_by_desc(flow_version::Column::Version)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        page(
            rows,
            limit,
            |r| cursor::encode("flow_versions", &[&r.version.to_string()]),
            |r| decode(&r.spec),
        )
    }

    /// Archives a past version (idempotent); the current one cannot be.
    pub async fn archive_version(&self, ws: &str, id: &str, version: i64) -> Result<Flow> {
        validate::check_slug("flow_id", id)?;
        if version < 1 {
            return Err(Error::invalid("version", "must be 1 or more"));
        }
        for _ in 0..UPDATE_RETRIES {
            let txn = self.db.writer().begin().await?;
            let row = flow::Entity::find_by_id((ws.to_owned(), id.to_owned()))
                .filter(flow::Column::DeleteTime.is_null())
                .one(&txn)
                .await?
                .ok_or_else(|| not_found(id))?;
            if version == row.version {
                return Err(Error::FailedPrecondition(format!(
                    "version {version} is the current version of flow {id:?}"
                )));
            }
            flow_version::Entity::find_by_id((ws.to_owned(), id.to_owned(), version))
                .one(&txn)
                .await?
                .ok_or_else(|| Error::not_found(format!("flow {id:?} has no version {version}")))?;
            let mut f = decode(&row.spec)?;
            if f.archived_versions.contains(&version) {
                return Ok(f);
            }
            f.archived_versions.push(version);
            f.archived_versions.sort_unstable();
            flow_version::Entity::update_many()
                .col_expr(flow_version::Column::Archived, Expr::value(true))
                .filter(flow_version::Column::WorkspaceId.eq(ws))
                .filter(flow_version::Column::FlowId.eq(id))
                .filter(flow_version::Column::Version.eq(version))
                .exec(&txn)
                .await?;
            let res = flow::Entity::update_many()
                .col_expr(flow::Column::Spec, Expr::value(f.encode_to_vec()))
                .filter(flow::Column::WorkspaceId.eq(ws))
                .filter(flow::Column::Id.eq(id))
                .filter(flow::Column::Spec.eq(row.spec.clone()))
                .exec(&txn)
                .await?;
            if res.rows_affected != 1 {
                txn.rollback().await?;
                continue;
            }
            txn.commit().await?;
            return Ok(f);
        }
        Err(Error::Aborted(
            "the flow was changed concurrently; retry".into(),
        ))
    }
}

async fn insert_version(txn: &impl ConnectionTrait, ws: &str, f: &Flow, now: i64) -> Result<()> {
    let mut stored = f.clone();
    stored.archived_versions.clear();
    flow_version::Entity::insert(flow_version::ActiveModel {
        workspace_id: Set(ws.to_owned()),
        flow_id: Set(f.id.clone()),
        version: Set(f.version),
        spec: Set(stored.encode_to_vec()),
        archived: Set(false),
        create_time: Set(now),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

fn columns(ws: &str, f: &Flow, create_time: i64, update_time: i64) -> flow::ActiveModel {
    flow::ActiveModel {
        workspace_id: Set(ws.to_owned()),
        id: Set(f.id.clone()),
        name: Set(f.name.clone()),
        version: Set(f.version),
        spec: Set(f.encode_to_vec()),
        create_time: Set(create_time),
        update_time: Set(update_time),
        delete_time: Set(None),
    }
}

pub(crate) fn decode(spec: &[u8]) -> Result<Flow> {
    Flow::decode(spec).map_err(|e| Error::internal(format!("stored flow does not decode: {e}")))
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("flow {id:?} not found"))
}
