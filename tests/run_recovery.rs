//! Crash and shutdown recovery with the real binary: `kill -9` in the middle of a run, then a restart
//! on the same database: the run completes from its last checkpoint, and the tool call whose result was
//! recorded is not executed again. SIGTERM hands in-flight runs back at once (no lease to wait for).
//!
//! On PostgreSQL, two processes share one database and its run queue: when one is killed with runs in
//! flight, the survivor takes them over once their leases expire and finishes every one of them, each
//! run held by one process at a time (its event log stays gapless), and no recorded tool result is
//! executed again.

mod common;
mod proc_support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use std::collections::HashMap;

use agentry::pb::{
    Agent, CreateAgentRequest, GetRunRequest, ListRunEventsRequest, ListRunsRequest, Run, RunEvent,
    RunStatus, StartRunRequest, ToolBinding, WatchRunRequest,
    agent_service_client::AgentServiceClient, run_service_client::RunServiceClient,
};
use common::{Auth, Backend, TestDb};
use futures_util::StreamExt;
use proc_support::{connect, spawn};
use sea_orm::sqlx::{Connection, PgConnection};
use serde_json::json;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

type Runs = RunServiceClient<InterceptedService<Channel, Auth>>;

fn agent() -> Agent {
    scripted_agent("durable", 1500)
}

/// A tool call (current_time), then a final answer `delay_ms` later.
fn scripted_agent(id: &str, delay_ms: u64) -> Agent {
    let script = json!([
        {"tool_calls": [{"name": "current_time", "arguments": {}}]},
        {"text": "finished after the crash", "delay_ms": delay_ms}
    ]);
    Agent {
        id: id.into(),
        name: id.into(),
        model: "scripted/script".into(),
        metadata: Some(serde_json::from_value(json!({ "script": script })).unwrap()),
        tools: vec![ToolBinding {
            name: "current_time".into(),
            requires_confirmation: false,
            config: None,
        }],
        ..Default::default()
    }
}

/// Starts a run and returns once its tool result is recorded (the model's slow second turn is in flight).
async fn start_and_wait_for_tool(channel: Channel, key: &str) -> (Runs, String) {
    let mut agents = AgentServiceClient::with_interceptor(channel.clone(), Auth::bearer(key));
    agents
        .create_agent(CreateAgentRequest {
            agent: Some(agent()),
        })
        .await
        .unwrap();
    let mut runs = RunServiceClient::with_interceptor(channel, Auth::bearer(key));
    let run = runs
        .start_run(StartRunRequest {
            agent_id: "durable".into(),
            message: "go".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut s = runs
        .watch_run(WatchRunRequest {
            run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(e) = s.next().await {
        if agentry::runs::events::kind(e.unwrap().event.as_ref().unwrap()) == "tool_call_completed"
        {
            break;
        }
    }
    (runs, run.id)
}

async fn wait_completed(runs: &mut Runs, run_id: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = runs
            .get_run(GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.status == RunStatus::Completed as i32 {
            assert_eq!(r.output.unwrap().content, "finished after the crash");
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "run not completed after {within:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tool_starts(runs: &mut Runs, run_id: &str) -> usize {
    let evs = runs
        .list_run_events(agentry::pb::ListRunEventsRequest {
            run_id: run_id.into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    // Sequence numbers stay gapless across the crash.
    assert!(evs.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1));
    evs.iter()
        .filter(|e| agentry::runs::events::kind(e.event.as_ref().unwrap()) == "tool_call_started")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_completes_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let key = agentry::auth::keys::generate();
    let mut first = spawn(&db, &key);
    let (_, run_id) = start_and_wait_for_tool(connect(&first).await, &key).await;
    first.child.kill().unwrap(); // SIGKILL: no shutdown, no lease release
    first.child.wait().unwrap();

    let mut second = spawn(&db, &key);
    let mut runs = RunServiceClient::with_interceptor(connect(&second).await, Auth::bearer(&key));
    // The dead worker's lease (15 s) must expire before another claims the run.
    wait_completed(&mut runs, &run_id, Duration::from_secs(40)).await;
    assert_eq!(
        tool_starts(&mut runs, &run_id).await,
        1,
        "the recorded tool call did not run again"
    );
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_runs_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let key = agentry::auth::keys::generate();
    let mut first = spawn(&db, &key);
    let (_, run_id) = start_and_wait_for_tool(connect(&first).await, &key).await;
    let t = Instant::now();
    Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    let status = first.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );

    let mut second = spawn(&db, &key);
    let mut runs = RunServiceClient::with_interceptor(connect(&second).await, Auth::bearer(&key));
    // Released, not left to expire: well under the 15 s lease (1.5 s of model delay included).
    let took = wait_completed(&mut runs, &run_id, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(tool_starts(&mut runs, &run_id).await, 1);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

// --- Two processes on one PostgreSQL database ---

/// Runs started through each process.
const RUNS_PER_PROCESS: usize = 3;
/// The final model turn: long enough that every run is still in it when the first process is killed.
const SLOW_TURN_MS: u64 = 8000;
/// From the kill: the dead process's leases expire (15 s), then its runs replay the slow turn.
const RECOVERY: Duration = Duration::from_secs(40);

fn kind_of(e: &RunEvent) -> &'static str {
    agentry::runs::events::kind(e.event.as_ref().expect("event set"))
}

/// The whole event log of a run; its sequence numbers must be gapless from 1.
async fn event_log(runs: &mut Runs, run_id: &str) -> Vec<RunEvent> {
    let page = runs
        .list_run_events(ListRunEventsRequest {
            run_id: run_id.into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.next_cursor.is_empty(),
        "run {run_id}: log over 1000 events"
    );
    let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "run {run_id}: sequence numbers not gapless from 1"
    );
    page.events
}

async fn start_runs(runs: &mut Runs, agent_id: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let run = runs
            .start_run(StartRunRequest {
                agent_id: agent_id.into(),
                message: format!("go {i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(run.id);
    }
    ids
}

/// Returns once every run has recorded its tool result (and is in its slow final turn).
async fn wait_tool_results(runs: &mut Runs, ids: &[String]) {
    let start = Instant::now();
    for id in ids {
        loop {
            let log = event_log(runs, id).await;
            if log.iter().any(|e| kind_of(e) == "tool_call_completed") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "run {id}: no tool result after 20 s: {:?}",
                log.iter().map(kind_of).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `(status, lease_owner, lease_expire_time)` of every run, read from the database: which process
/// holds which run is not visible through the API.
async fn leases(db_url: &str) -> HashMap<String, (i32, Option<String>, Option<i64>)> {
    let mut c = PgConnection::connect(db_url).await.expect("connect");
    let rows: Vec<(String, i32, Option<String>, Option<i64>)> =
        sea_orm::sqlx::query_as("SELECT id, status, lease_owner, lease_expire_time FROM runs")
            .fetch_all(&mut c)
            .await
            .expect("read leases");
    let _ = c.close().await;
    rows.into_iter()
        .map(|(id, status, owner, expiry)| (id, (status, owner, expiry)))
        .collect()
}

fn micros(t: &pbjson_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_one_killed_the_other_finishes_every_run() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let mut db = TestDb::new(&backend).await;
    let key = agentry::auth::keys::generate();

    // A alone first: it migrates the fresh database, and the runs started through it are its own.
    let mut a = spawn(&db.url, &key);
    let channel_a = connect(&a).await;
    AgentServiceClient::with_interceptor(channel_a.clone(), Auth::bearer(&key))
        .create_agent(CreateAgentRequest {
            agent: Some(scripted_agent("shared", SLOW_TURN_MS)),
        })
        .await
        .unwrap();
    let mut runs_a = RunServiceClient::with_interceptor(channel_a, Auth::bearer(&key));
    let mut ids = start_runs(&mut runs_a, "shared", RUNS_PER_PROCESS).await;
    wait_tool_results(&mut runs_a, &ids).await;
    let owner_a = leases(&db.url).await[&ids[0]]
        .1
        .clone()
        .expect("a run in flight has a lease owner");

    // B joins: both processes now execute runs at once, claiming from the same queue.
    let b = spawn(&db.url, &key);
    let mut runs_b = RunServiceClient::with_interceptor(connect(&b).await, Auth::bearer(&key));
    ids.extend(start_runs(&mut runs_b, "shared", RUNS_PER_PROCESS).await);
    wait_tool_results(&mut runs_b, &ids).await;

    // kill -9 of A: no shutdown, its leases are left to expire.
    let at_kill = leases(&db.url).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    let orphans: Vec<&String> = ids
        .iter()
        .filter(|id| at_kill[*id].1.as_deref() == Some(owner_a.as_str()))
        .collect();
    for id in &ids[..RUNS_PER_PROCESS] {
        assert!(
            orphans.contains(&id),
            "run {id} was no longer held by A when A was killed: {:?}",
            at_kill[id]
        );
        assert_eq!(at_kill[id].0, RunStatus::Running as i32, "run {id}");
    }

    // B finishes every run, A's once their leases have expired.
    let mut done: HashMap<String, Run> = HashMap::new();
    while done.len() < ids.len() {
        for id in &ids {
            if done.contains_key(id) {
                continue;
            }
            let run = runs_b
                .get_run(GetRunRequest { run_id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            match RunStatus::try_from(run.status) {
                Ok(RunStatus::Completed) => {
                    assert_eq!(
                        run.output.as_ref().unwrap().content,
                        "finished after the crash"
                    );
                    done.insert(id.clone(), run);
                }
                Ok(RunStatus::Queued | RunStatus::Running) => {}
                _ => panic!("run {id} ended otherwise: {run:?}"),
            }
        }
        assert!(
            killed.elapsed() < RECOVERY,
            "{} of {} runs not completed {RECOVERY:?} after the kill",
            ids.len() - done.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{} of {} runs were taken over; all completed {:?} after the kill",
        orphans.len(),
        ids.len(),
        killed.elapsed()
    );

    // None lost, none added.
    let listed = runs_b
        .list_runs(ListRunsRequest {
            agent_id: "shared".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut listed: Vec<String> = listed.runs.into_iter().map(|r| r.id).collect();
    let mut expected = ids.clone();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);

    for id in &ids {
        // Gapless seqs (checked by event_log): one writer at a time appended to the log.
        let log = event_log(&mut runs_b, id).await;
        let mut started: HashMap<String, usize> = HashMap::new();
        let mut completed: HashMap<String, usize> = HashMap::new();
        for e in &log {
            match e.event.as_ref().unwrap() {
                agentry::pb::run_event::Event::ToolCallStarted(s) => {
                    *started
                        .entry(s.tool_call.as_ref().unwrap().id.clone())
                        .or_default() += 1
                }
                agentry::pb::run_event::Event::ToolCallCompleted(c) => {
                    *completed.entry(c.tool_call_id.clone()).or_default() += 1
                }
                _ => {}
            }
        }
        let kinds: Vec<&str> = log.iter().map(kind_of).collect();
        // The recorded tool result was not executed again, not even by the process that took over.
        assert_eq!(completed.len(), 1, "run {id}: {kinds:?}");
        assert_eq!(started, completed, "run {id}: {kinds:?}");
        assert!(
            completed.values().all(|n| *n == 1),
            "run {id}: a tool call completed twice: {kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "run_completed").count(),
            1,
            "run {id}: {kinds:?}"
        );
        assert_eq!(kinds.last(), Some(&"run_completed"), "run {id}");
    }

    // A's runs ended after their leases expired: B waited for them rather than taking them early.
    for id in &orphans {
        let expiry = at_kill[*id].2.expect("a held run has a lease expiry");
        let end = micros(done[*id].end_time.as_ref().expect("end_time"));
        assert!(
            end >= expiry,
            "run {id} of the killed process ended at {end}, before its lease expired at {expiry}"
        );
    }

    drop(b);
    db.drop_db().await;
}
