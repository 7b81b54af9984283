//! Runs: one execution of an agent. A run is a row in a durable queue: StartRun writes it (QUEUED)
//! with its first event in one transaction and returns; the [`engine`] claims it with a lease, runs the
//! agent loop, and checkpoints after every step. Everything a client sees of a run is its event log
//! ([`events`]), replayable from any sequence number for as long as the run exists.

pub mod checkpoint;
mod control;
pub mod engine;
pub mod events;
mod execute;
mod notify;
mod sessions;
mod template;
mod trigger;
mod usage;
mod watch;
mod writer;

use std::sync::Arc;

use prost::Message as _;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::Notify;

use crate::{
    agents::{Agents, Page, page},
    error::{Error, Result},
    pb::{
        ListRunsRequest, Run, RunQueued, RunStatus, RunTrigger, StartRunRequest, TriggerSource,
        run_event::Event,
    },
    store::{
        Db, cursor,
        entities::run,
        time::{from_timestamp, now_micros, to_timestamp},
    },
};
use events::Hub;

pub use watch::WatchStream;

/// The run service: shared by the API and the engine.
pub struct Runs {
    db: Db,
    hub: Arc<Hub>,
    /// Wakes the engine when a run becomes claimable in this process.
    wake: Arc<Notify>,
    cancels: Arc<engine::LocalRuns>,
    /// Cancelled at shutdown: open watch streams end.
    closing: tokio_util::sync::CancellationToken,
    /// Every change to a run goes through it (group commit).
    writer: writer::Writer,
    /// This process's id: the owner of the leases it takes, the sender of its notices.
    me: Arc<str>,
    /// The engine executing runs in this process (none in tools that only read).
    engine: std::sync::OnceLock<Arc<engine::Engine>>,
    /// Notified when webhook deliveries were queued.
    deliveries: Arc<Notify>,
}

impl Runs {
    /// Must be called inside the Tokio runtime: it starts the group-commit writer task.
    pub fn new(db: Db) -> Runs {
        let hub = Arc::<Hub>::default();
        let me: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let deliveries = Arc::<Notify>::default();
        Runs {
            writer: writer::Writer::spawn(db.clone(), hub.clone(), me.clone(), deliveries.clone()),
            me,
            engine: Default::default(),
            deliveries,
            db,
            hub,
            wake: Arc::default(),
            cancels: Arc::default(),
            closing: Default::default(),
        }
    }

    /// On PostgreSQL, follows the other processes' notices (new events, claimable runs, cancels) until
    /// `stop` turns true.
    pub fn listen(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        notify::Receiver {
            me: self.me.clone(),
            hub: self.hub.clone(),
            wake: self.wake.clone(),
            local: self.cancels.clone(),
        }
        .listen(&self.db, stop)
    }

    /// Notified whenever this process queued webhook deliveries.
    pub fn deliveries_queued(&self) -> Arc<Notify> {
        self.deliveries.clone()
    }

    /// Ends every open watch stream (server shutdown).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// The engine that executes this service's runs.
    pub fn engine(
        &self,
        models: crate::models::Models,
        tools: crate::tools::Tools,
        concurrency: usize,
    ) -> Arc<engine::Engine> {
        let wiring = engine::Wiring {
            db: self.db.clone(),
            owner: self.me.to_string(),
            writer: self.writer.clone(),
            wake: self.wake.clone(),
            local: self.cancels.clone(),
        };
        let engine = engine::Engine::new(wiring, models, tools, concurrency);
        let _ = self.engine.set(engine.clone());
        engine
    }

    /// Validates and queues a run. With an idempotency key already used in the workspace, returns the
    /// run that key started instead of starting another.
    pub async fn start(
        &self,
        agents: &Agents,
        ws: &str,
        req: StartRunRequest,
        trigger: RunTrigger,
    ) -> Result<Run> {
        if req.agent_id.is_empty() {
            return Err(Error::invalid("agent_id", "is required"));
        }
        crate::agents::validate::check_slug("agent_id", &req.agent_id)?;
        if req.idempotency_key.len() > 255 {
            return Err(Error::invalid("idempotency_key", "at most 255 characters"));
        }
        if !req.idempotency_key.is_empty()
            && let Some(existing) = self.by_idempotency_key(ws, &req.idempotency_key).await?
        {
            return Ok(existing);
        }
        let agent = agents.get(ws, &req.agent_id).await?;
        if agent.enabled == Some(false) {
            return Err(Error::FailedPrecondition(format!(
                "agent {:?} is disabled",
                agent.id
            )));
        }
        let model = if req.model.is_empty() {
            agent.model.clone()
        } else {
            req.model.clone()
        };
        if model.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "agent {:?} names no model: set agent.model or pass model",
                agent.id
            )));
        }
        if !model.contains('/') {
            return Err(Error::invalid("model", "must be \"provider/model\""));
        }
        check_lengths(&req)?;
        check_images(&req.images)?;
        if let Some(schema) = &agent.input_schema {
            check_input(schema, req.input.as_ref())?;
        }
        let now = now_micros();
        let id = uuid::Uuid::now_v7();
        let run = Run {
            id: id.to_string(),
            agent_id: agent.id.clone(),
            agent_version: agent.version,
            model,
            session_id: req.session_id.clone(),
            user_id: req.user_id.clone(),
            status: RunStatus::Queued as i32,
            input: req.input.clone(),
            message: req.message.clone(),
            trace_id: hex_trace_id(&id),
            trigger: Some(RunTrigger {
                source: if trigger.source == 0 {
                    TriggerSource::Api as i32
                } else {
                    trigger.source
                },
                ..trigger
            }),
            idempotency_key: req.idempotency_key.clone(),
            metadata: req.metadata.clone(),
            create_time: Some(to_timestamp(now)),
            ..Default::default()
        };
        let request = RunRequestExtras::from(&req);
        // With a free slot here, the run is written already leased to this process and executes at
        // once: no claim, no wake-up. Otherwise it waits in the queue for any process with room.
        let engine = self.engine.get();
        let slot = engine.and_then(|e| e.reserve());
        let (status, lease_owner, lease_expire_time) = match (engine, &slot) {
            (Some(e), Some(_)) => (
                RunStatus::Running as i32,
                Some(self.me.to_string()),
                Some(e.lease_expiry()),
            ),
            _ => (run.status, None, None),
        };
        let row = run::Model {
            id: run.id.clone(),
            workspace_id: ws.to_owned(),
            agent_id: run.agent_id.clone(),
            agent_version: run.agent_version,
            session_id: run.session_id.clone(),
            user_id: run.user_id.clone(),
            status,
            trigger_source: run.trigger.as_ref().map(|t| t.source).unwrap_or(1),
            idempotency_key: (!run.idempotency_key.is_empty()).then(|| run.idempotency_key.clone()),
            lease_owner,
            lease_expire_time,
            spec: run.encode_to_vec(),
            create_time: now,
            start_time: None,
            end_time: None,
            checkpoint: Some(request.encode()),
            cancel_requested: false,
            update_time: now,
            model: run.model.clone(),
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            last_seq: 0,
        };
        let queued = vec![Event::RunQueued(RunQueued {})];
        let claimed = slot.is_some().then(|| engine::Claimed {
            id: row.id.clone(),
            workspace_id: row.workspace_id.clone(),
            spec: row.spec.clone(),
            checkpoint: row.checkpoint.clone(),
            cancel_requested: false,
        });
        if !self.writer.create(row, queued).await? {
            // Two requests with one idempotency key raced: the other one's run is the answer.
            if !req.idempotency_key.is_empty()
                && let Some(existing) = self.by_idempotency_key(ws, &req.idempotency_key).await?
            {
                return Ok(existing);
            }
            return Err(Error::internal("a new run's id collided with another run"));
        }
        match (engine, slot, claimed) {
            (Some(engine), Some(slot), Some(claimed)) => engine.clone().execute(claimed, slot),
            _ => self.wake.notify_one(),
        }
        Ok(run)
    }

    async fn by_idempotency_key(&self, ws: &str, key: &str) -> Result<Option<Run>> {
        let row = run::Entity::find()
            .filter(run::Column::WorkspaceId.eq(ws))
            .filter(run::Column::IdempotencyKey.eq(key))
            .one(self.db.writer())
            .await?;
        row.map(|r| decode_run(&r.spec)).transpose()
    }

    pub async fn get(&self, ws: &str, run_id: &str) -> Result<Run> {
        let row = self.row(ws, run_id).await?;
        decode_run(&row.spec)
    }

    pub(crate) async fn row(&self, ws: &str, run_id: &str) -> Result<run::Model> {
        let missing = || Error::not_found(format!("run {run_id:?} not found"));
        check_run_id(run_id)?;
        run::Entity::find_by_id(run_id.to_owned())
            .filter(run::Column::WorkspaceId.eq(ws))
            .one(self.db.reader())
            .await?
            .ok_or_else(missing)
    }

    /// Runs of the workspace, newest first.
    pub async fn list(&self, ws: &str, req: &ListRunsRequest) -> Result<Page<Run>> {
        let limit = cursor::page_limit(req.limit)?;
        let mut q = run::Entity::find().filter(run::Column::WorkspaceId.eq(ws));
        if !req.agent_id.is_empty() {
            q = q.filter(run::Column::AgentId.eq(req.agent_id.as_str()));
        }
        if req.status != 0 {
            RunStatus::try_from(req.status)
                .map_err(|_| Error::invalid("status", "unknown value"))?;
            q = q.filter(run::Column::Status.eq(req.status));
        }
        if req.trigger_source != 0 {
            TriggerSource::try_from(req.trigger_source)
                .map_err(|_| Error::invalid("trigger_source", "unknown value"))?;
            q = q.filter(run::Column::TriggerSource.eq(req.trigger_source));
        }
        if !req.session_id.is_empty() {
            q = q.filter(run::Column::SessionId.eq(req.session_id.as_str()));
        }
        if !req.user_id.is_empty() {
            q = q.filter(run::Column::UserId.eq(req.user_id.as_str()));
        }
        if let Some(t) = &req.created_after {
            let t =
                from_timestamp(t).ok_or_else(|| Error::invalid("created_after", "out of range"))?;
            q = q.filter(run::Column::CreateTime.gt(t));
        }
        if let Some(t) = &req.created_before {
            let t = from_timestamp(t)
                .ok_or_else(|| Error::invalid("created_before", "out of range"))?;
            q = q.filter(run::Column::CreateTime.lt(t));
        }
        if !req.cursor.is_empty() {
            let (t, id) = cursor::decode_time_id("runs", &req.cursor)?;
            q = q.filter(crate::agents::before(
                run::Column::CreateTime,
                run::Column::Id,
                t,
                id,
            ));
        }
        let rows = q
            .order_by_desc(run::Column::CreateTime)
            .order_by_desc(run::Column::Id)
            .limit(limit + 1)
            .all(self.db.reader())
            .await?;
        page(
            rows,
            limit,
            |r| cursor::encode_time_id("runs", r.create_time, &r.id),
            |r| decode_run(&r.spec),
        )
    }

    /// The stored events of a run after `after_seq` (its full step trace), paged by sequence number.
    pub async fn list_events(
        &self,
        ws: &str,
        run_id: &str,
        after_seq: i64,
        limit: i32,
        cur: &str,
    ) -> Result<Page<crate::pb::RunEvent>> {
        self.row(ws, run_id).await?;
        let limit = match limit {
            0 => 100,
            1..=1000 => limit as u64,
            _ => return Err(Error::invalid("limit", "must be between 1 and 1000")),
        };
        let after = if cur.is_empty() {
            after_seq.max(0)
        } else {
            let [s] = cursor::decode::<1>("events", cur)?;
            s.parse()
                .map_err(|_| Error::invalid("cursor", "malformed or foreign page cursor"))?
        };
        let mut evs = events::read(self.db.reader(), ws, run_id, after, limit + 1).await?;
        let next = if evs.len() as u64 > limit {
            evs.truncate(limit as usize);
            evs.last()
                .map(|e| cursor::encode("events", &[&e.seq.to_string()]))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((evs, next))
    }
}

/// What the run request carries beyond the `Run` message, kept in the initial checkpoint until the
/// engine renders the conversation from it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunRequestExtras {
    pub system_prompt: String,
    pub user_profile: serde_json::Value,
    pub tenant_profile: serde_json::Value,
    pub timezone: String,
    pub locale: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub top_p: Option<f64>,
    /// The user message's images, as URLs or `data:` URIs.
    #[serde(default)]
    pub images: Vec<String>,
}

impl RunRequestExtras {
    fn from(req: &StartRunRequest) -> Self {
        let s = req.model_settings.unwrap_or_default();
        RunRequestExtras {
            system_prompt: req.system_prompt.clone(),
            user_profile: struct_json(req.user_profile.as_ref()),
            tenant_profile: struct_json(req.tenant_profile.as_ref()),
            timezone: req.timezone.clone(),
            locale: req.locale.clone(),
            temperature: s.temperature,
            max_tokens: s.max_tokens,
            top_p: s.top_p,
            images: req
                .images
                .iter()
                .map(|i| {
                    if i.url.is_empty() {
                        format!("data:{};base64,{}", i.mime_type, i.data)
                    } else {
                        i.url.clone()
                    }
                })
                .collect(),
        }
    }

    /// Stored as `{"request": ...}`: a checkpoint without `messages` yet.
    fn encode(&self) -> String {
        serde_json::json!({ "request": self }).to_string()
    }

    pub fn decode(checkpoint: Option<&str>) -> Option<RunRequestExtras> {
        let v: serde_json::Value = serde_json::from_str(checkpoint?).ok()?;
        serde_json::from_value(v.get("request")?.clone()).ok()
    }
}

/// Most images per request, and the largest one (base64 characters, about 3 MiB of image).
const MAX_IMAGES: usize = 16;
const MAX_IMAGE_BASE64: usize = 4 << 20;

/// Each image is a base64 payload with an image media type, or an http(s) URL; not both.
fn check_images(images: &[crate::pb::Image]) -> Result<()> {
    use base64::Engine as _;
    if images.len() > MAX_IMAGES {
        return Err(Error::invalid(
            "images",
            format!("at most {MAX_IMAGES} images"),
        ));
    }
    for (i, img) in images.iter().enumerate() {
        let field = |f: &str| format!("images[{i}]{f}");
        match (img.data.is_empty(), img.url.is_empty()) {
            (true, true) => return Err(Error::invalid(field(""), "give data or url")),
            (false, false) => return Err(Error::invalid(field(""), "give data or url, not both")),
            (true, false) => {
                let ok = reqwest::Url::parse(&img.url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                if !ok || img.url.len() > 8192 {
                    return Err(Error::invalid(field(".url"), "must be an http(s) URL"));
                }
            }
            (false, true) => {
                if !matches!(
                    img.mime_type.as_str(),
                    "image/png" | "image/jpeg" | "image/gif" | "image/webp"
                ) {
                    return Err(Error::invalid(
                        field(".mime_type"),
                        "must be image/png, image/jpeg, image/gif or image/webp",
                    ));
                }
                if img.data.len() > MAX_IMAGE_BASE64 {
                    return Err(Error::invalid(field(".data"), "image too large"));
                }
                if base64::engine::general_purpose::STANDARD
                    .decode(img.data.as_bytes())
                    .is_err()
                {
                    return Err(Error::invalid(field(".data"), "must be standard base64"));
                }
            }
        }
    }
    Ok(())
}

/// A run id is a UUID; anything else names no run.
fn check_run_id(run_id: &str) -> Result<()> {
    match uuid::Uuid::parse_str(run_id) {
        Ok(_) => Ok(()),
        Err(_) if run_id.is_empty() => Err(Error::invalid("run_id", "is required")),
        Err(_) => Err(Error::not_found(format!("run {run_id:?} not found"))),
    }
}

fn check_lengths(req: &StartRunRequest) -> Result<()> {
    for (field, value, max) in [
        ("message", req.message.as_str(), 1_000_000),
        ("session_id", req.session_id.as_str(), 255),
        ("user_id", req.user_id.as_str(), 255),
        ("system_prompt", req.system_prompt.as_str(), 100_000),
        ("timezone", req.timezone.as_str(), 64),
        ("locale", req.locale.as_str(), 35),
    ] {
        if value.chars().count() > max {
            return Err(Error::invalid(field, format!("at most {max} characters")));
        }
    }
    Ok(())
}

/// Validates the run input against the agent's input schema, naming the failing path.
pub(crate) fn check_input(
    schema: &pbjson_types::Struct,
    input: Option<&pbjson_types::Struct>,
) -> Result<()> {
    let schema = serde_json::to_value(schema).map_err(Error::internal)?;
    let input = struct_json(input);
    let input = if input.is_null() {
        serde_json::json!({})
    } else {
        input
    };
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| Error::internal(format!("stored schema: {e}")))?;
    if let Some(err) = validator.iter_errors(&input).next() {
        let mut field = String::from("input");
        for seg in err.instance_path().as_str().split('/').skip(1) {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            if seg.parse::<usize>().is_ok() {
                field.push_str(&format!("[{seg}]"));
            } else {
                field.push('.');
                field.push_str(&seg);
            }
        }
        return Err(Error::invalid(field, err.to_string()));
    }
    Ok(())
}

pub fn struct_json(s: Option<&pbjson_types::Struct>) -> serde_json::Value {
    s.and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// A JSON object as a `Struct` (None for anything else).
pub(crate) fn json_struct(v: &serde_json::Value) -> Option<pbjson_types::Struct> {
    match v {
        serde_json::Value::Object(o) => Some(object_struct(o)),
        _ => None,
    }
}

fn object_struct(o: &serde_json::Map<String, serde_json::Value>) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), pb_from_json(v)))
            .collect(),
    }
}

/// JSON as a `google.protobuf.Value`. A JSON null is an explicit `null_value`, never a Value with no
/// kind set, which proto3 JSON printers (grpcurl, protobuf's json_format) refuse to print.
pub(crate) fn pb_from_json(v: &serde_json::Value) -> pbjson_types::Value {
    use pbjson_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(pbjson_types::ListValue {
            values: a.iter().map(pb_from_json).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(object_struct(o)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

pub(crate) fn decode_run(spec: &[u8]) -> Result<Run> {
    Run::decode(spec).map_err(|e| Error::internal(format!("stored run does not decode: {e}")))
}

/// A W3C trace id (32 lowercase hex digits) derived from the run id.
fn hex_trace_id(id: &uuid::Uuid) -> String {
    hex::encode(id.as_bytes())
}
