//! The run workloads: a whole run, StartRun then WatchRun until its final event, over gRPC or over the REST
//! shim (`POST /v1/runs`, then `GET /v1/runs/{run_id}/events:watch` as Server-Sent Events), with the agents
//! they run.

use std::time::{Duration, Instant};

use agentry::pb::{Agent, CreateAgentRequest, StartRunRequest, WatchRunRequest, run_event};
use tonic::Code;

use crate::{
    Res,
    grpc::{Client, RunClient, status_text},
    http::{self, HttpConn},
    load::{self, Sample},
    sse,
};

/// `scripted/echo`: answers at once.
pub const RUN_AGENT: &str = "bench-run";
/// `scripted/script` with one 50 ms step.
pub const RUN_50MS_AGENT: &str = "bench-run-50ms";
const MESSAGE: &str = "hello bench";

/// Creates the agents the runs use; agents left by an earlier run are fine.
pub async fn setup(client: &mut Client, hint: &str) -> Res<()> {
    let script: serde_json::Value = serde_json::json!({"script": [{"text": "ok", "delay_ms": 50}]});
    let agents = [
        Agent {
            id: RUN_AGENT.to_owned(),
            name: "Bench run".to_owned(),
            model: "scripted/echo".to_owned(),
            ..Default::default()
        },
        Agent {
            id: RUN_50MS_AGENT.to_owned(),
            name: "Bench run 50 ms".to_owned(),
            model: "scripted/script".to_owned(),
            metadata: serde_json::from_value(script).ok(),
            ..Default::default()
        },
    ];
    for agent in agents {
        let id = agent.id.clone();
        match client
            .create_agent(CreateAgentRequest { agent: Some(agent) })
            .await
        {
            Err(s) if s.code() != Code::AlreadyExists => {
                return Err(format!("creating agent {id}: {}{hint}", status_text(&s)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// StartRun, then WatchRun until the stream ends; Ok when the last event is `run_completed`. The latency
/// runs from StartRun's call to the `run_completed` event, the first event's from StartRun's answer.
pub async fn grpc_run(c: &mut RunClient, agent: &str) -> Res<Sample> {
    let t0 = Instant::now();
    let req = StartRunRequest {
        agent_id: agent.to_owned(),
        message: MESSAGE.to_owned(),
        ..Default::default()
    };
    let run = c
        .start_run(req)
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    let started = Instant::now();
    let watch = WatchRunRequest {
        run_id: run.id,
        after_seq: 0,
    };
    let stream = c
        .watch_run(watch)
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    load::follow(stream, t0, started, |e| {
        matches!(e.event, Some(run_event::Event::RunCompleted(_)))
    })
    .await
}

/// A whole run over the REST shim, on one HTTP/1.1 keep-alive connection: the POST, then the SSE stream
/// (which the server ends after the run's final event, so the connection serves the next run).
pub struct HttpRun {
    conn: HttpConn,
    addr: String,
    key: String,
    post: Vec<u8>,
    body: Vec<u8>,
    events: sse::Parser,
}

impl HttpRun {
    pub fn new(addr: &str, key: &str, agent: &str) -> HttpRun {
        let json = serde_json::json!({"agent_id": agent, "message": MESSAGE}).to_string();
        HttpRun {
            conn: HttpConn::new(addr),
            addr: addr.to_owned(),
            key: key.to_owned(),
            post: http::request(
                "POST",
                "/v1/runs",
                addr,
                key,
                "application/json",
                Some(&json),
            ),
            body: Vec::with_capacity(4096),
            events: sse::Parser::default(),
        }
    }

    /// One run; Ok when the last event is `run_completed`. The latency runs from the POST to the
    /// `run_completed` frame, the first event's from the POST's answer to the first frame.
    pub async fn run(&mut self) -> Res<Sample> {
        let t0 = Instant::now();
        let status = (self.conn.exchange(&self.post, &mut self.body).await)
            .map_err(|e| format!("POST /v1/runs: {e}"))?;
        if status != 200 {
            let e = http::status_error(status, &self.body);
            return Err(format!("POST /v1/runs: {e}"));
        }
        let started = Instant::now();
        let id = run_id(&self.body).map_err(|e| format!("POST /v1/runs: {e}"))?;
        let path = format!("/v1/runs/{id}/events:watch");
        let res = self.watch(&path, t0, started).await;
        if res.is_err() {
            // The rest of the answer is unread or unusable.
            self.conn.disconnect();
        }
        res.map_err(|e| format!("GET {path}: {e}"))
    }

    async fn watch(&mut self, path: &str, t0: Instant, started: Instant) -> Res<Sample> {
        let req = http::request(
            "GET",
            path,
            &self.addr,
            &self.key,
            "text/event-stream",
            None,
        );
        let mut resp = self.conn.send(&req).await?;
        if resp.status != 200 {
            self.body.clear();
            while self.conn.read_body(&mut resp, &mut self.body).await? {}
            return Err(http::status_error(resp.status, &self.body));
        }
        self.events.clear();
        let (mut first, mut completed, mut last) = (None::<Duration>, None, None);
        while self.conn.read_body(&mut resp, self.events.buffer()).await? {
            while let Some(ev) = self.events.next_event()? {
                let now = Instant::now();
                first.get_or_insert(now - started);
                completed = (ev.kind == "run_completed").then(|| now - t0);
                last = Some(ev);
            }
        }
        if self.events.pending() > 0 {
            return Err(format!(
                "the stream ended inside an event ({} bytes)",
                self.events.pending()
            ));
        }
        match (completed, last) {
            (Some(latency), _) => Ok(Sample {
                latency,
                first_event: first,
            }),
            (None, None) => Err("the event stream ended without an event".to_owned()),
            (None, Some(ev)) => {
                let mut data = ev.data;
                if let Some((i, _)) = data.char_indices().nth(300) {
                    data.truncate(i);
                    data.push_str("...");
                }
                Err(format!("the run ended with event {}: {data}", ev.kind))
            }
        }
    }
}

/// The `id` of the Run in StartRun's JSON answer, checked to be safe in a path segment.
fn run_id(body: &[u8]) -> Res<String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("an answer that is not JSON: {e}"))?;
    let id = v.get("id").and_then(|id| id.as_str()).unwrap_or("");
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~');
    if id.is_empty() || !id.chars().all(safe) {
        return Err(format!("no usable run id in the answer: {id:?}"));
    }
    Ok(id.to_owned())
}
