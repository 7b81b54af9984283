//! Crash and shutdown recovery with the real binary: `kill -9` in the middle of a run, then a restart
//! on the same database: the run completes from its last checkpoint, and the tool call whose result was
//! recorded is not executed again. SIGTERM hands in-flight runs back at once (no lease to wait for).

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agentry::pb::{
    Agent, CreateAgentRequest, GetRunRequest, RunStatus, StartRunRequest, ToolBinding,
    WatchRunRequest, agent_service_client::AgentServiceClient,
    run_service_client::RunServiceClient,
};
use common::Auth;
use futures_util::StreamExt;
use serde_json::json;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

struct Proc {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(db_url: &str, key: &str) -> Proc {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_agentry"))
        .args([
            "serve",
            "--grpc-addr",
            &format!("127.0.0.1:{port}"),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--database-url", db_url])
        .env("AGENTRY_BOOTSTRAP_KEY", key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn agentry");
    Proc { child, port }
}

async fn connect(p: &Proc) -> Channel {
    let start = Instant::now();
    loop {
        if let Ok(c) = Channel::from_shared(format!("http://127.0.0.1:{}", p.port))
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Runs = RunServiceClient<InterceptedService<Channel, Auth>>;

fn agent() -> Agent {
    let script = json!([
        {"tool_calls": [{"name": "current_time", "arguments": {}}]},
        {"text": "finished after the crash", "delay_ms": 1500}
    ]);
    Agent {
        id: "durable".into(),
        name: "durable".into(),
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
