//! Two `agentry serve` processes sharing one PostgreSQL database: a key revoked or an agent changed
//! through one is seen by the other at once (LISTEN/NOTIFY invalidation), not after its cache TTL
//! (5 s for keys, 30 s for agents). Runs too: a watcher on one process gets the events of a run
//! executing on the other as they are committed (not at its next poll of the log), and a cancel sent
//! through one stops the run on the other at once (not at its next lease renewal).

mod common;

use std::time::{Duration, Instant};

use agentry::pb::{
    Agent, CancelRunRequest, CreateAgentRequest, CreateApiKeyRequest, GetAgentRequest,
    GetRunRequest, GetWorkspaceRequest, RevokeApiKeyRequest, RunStatus, StartRunRequest,
    ToolBinding, UpdateAgentRequest, WatchRunRequest, run_event::Event,
};
use common::{Backend, TestServer, agent};
use futures_util::StreamExt;
use serde_json::json;

/// Well under both TTLs, well over a notification's round trip.
const PROPAGATION: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_other_replica_at_once() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let a = TestServer::start(&backend).await;
    let b = TestServer::start_on(a.db.share(), a.admin_key.clone()).await;

    // A key used on B (so B caches it), then revoked through A.
    let mut admin_a = a.admin(&a.admin_key).await;
    let created = admin_a
        .create_api_key(CreateApiKeyRequest {
            name: "temp".into(),
            scopes: vec!["agents:read".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut with_key_on_b = b.admin(&created.secret).await;
    with_key_on_b
        .get_workspace(GetWorkspaceRequest {})
        .await
        .expect("the new key works on B");
    admin_a
        .revoke_api_key(RevokeApiKeyRequest {
            id: created.api_key.unwrap().id,
        })
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        match with_key_on_b.get_workspace(GetWorkspaceRequest {}).await {
            Err(s) if s.code() == tonic::Code::Unauthenticated => break,
            _ if start.elapsed() > PROPAGATION => {
                panic!("B still accepts the revoked key after {PROPAGATION:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }

    // An agent read on B (so B caches it), then changed through A.
    let mut agents_a = a.agents(&a.admin_key).await;
    let mut agents_b = b.agents(&a.admin_key).await;
    agents_a
        .create_agent(CreateAgentRequest {
            agent: Some(agent("shared")),
        })
        .await
        .unwrap();
    let v1 = agents_b
        .get_agent(GetAgentRequest {
            id: "shared".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.version, 1);
    let patch = agentry::pb::Agent {
        id: "shared".into(),
        description: "changed on A".into(),
        ..Default::default()
    };
    agents_a
        .update_agent(UpdateAgentRequest {
            agent: Some(patch),
            update_mask: None,
        })
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let got = agents_b
            .get_agent(GetAgentRequest {
                id: "shared".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if got.version == 2 {
            assert_eq!(got.description, "changed on A");
            break;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "B still serves version 1 after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Deleted through A: gone on B too.
    agents_a
        .delete_agent(agentry::pb::DeleteAgentRequest {
            id: "shared".into(),
        })
        .await
        .unwrap();
    let start = Instant::now();
    while agents_b
        .get_agent(GetAgentRequest {
            id: "shared".into(),
        })
        .await
        .is_ok()
    {
        assert!(
            start.elapsed() < PROPAGATION,
            "B still serves a deleted agent after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _ = b.stop().await;
    a.finish().await;
}

fn scripted(id: &str, script: serde_json::Value) -> Agent {
    Agent {
        id: id.into(),
        name: id.into(),
        model: "scripted/script".into(),
        metadata: Some(serde_json::from_value(json!({ "script": script })).unwrap()),
        tools: vec![ToolBinding {
            name: "current_time".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_news_crosses_processes_at_once() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let a = TestServer::start(&backend).await;
    let mut agents_a = a.agents(&a.admin_key).await;
    let mut runs_a = a.runs(&a.admin_key).await;
    for agent in [
        scripted(
            "paced",
            json!([
                {"tool_calls": [{"name": "current_time", "arguments": {}}]},
                {"text": "done at last", "delay_ms": 2500}
            ]),
        ),
        scripted("stuck", json!([{"text": "never", "delay_ms": 60000}])),
    ] {
        agents_a
            .create_agent(CreateAgentRequest { agent: Some(agent) })
            .await
            .unwrap();
    }
    // Started while A is the only process: A executes them.
    let mut ids = Vec::new();
    for agent in ["paced", "stuck", "stuck", "stuck"] {
        let run = runs_a
            .start_run(StartRunRequest {
                agent_id: agent.into(),
                message: "go".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(run.id);
    }
    for id in &ids {
        let start = Instant::now();
        while runs_a
            .get_run(GetRunRequest { run_id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .status
            != RunStatus::Running as i32
        {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "run {id} not claimed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let b = TestServer::start_on(a.db.share(), a.admin_key.clone()).await;
    let mut runs_b = b.runs(&a.admin_key).await;

    // B watches the run A executes: the final events reach B as soon as A commits them. Polling the
    // log (every 500 ms) would deliver them a few hundred milliseconds late.
    let mut stream = runs_b
        .watch_run(WatchRunRequest {
            run_id: ids[0].clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (mut seq, mut lag) = (0, None);
    while let Some(e) = stream.next().await {
        let e = e.unwrap();
        seq += 1;
        assert_eq!(e.seq, seq, "gapless, no duplicate");
        if let Some(Event::RunCompleted(_)) = e.event {
            let t = e.time.unwrap();
            let committed = Duration::new(t.seconds as u64, t.nanos as u32);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            lag = Some(now.saturating_sub(committed));
        }
    }
    let lag = lag.expect("the watch on B saw the run complete");
    assert!(
        lag < Duration::from_millis(200),
        "run_completed reached B {lag:?} after A committed it"
    );

    // Cancelled through B while A executes them: A stops each at once, not at its next lease
    // renewal (every 3 s).
    for id in &ids[1..] {
        let t = Instant::now();
        let run = runs_b
            .cancel_run(CancelRunRequest {
                run_id: id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(run.status, RunStatus::Cancelled as i32);
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "cancel through B took {:?}",
            t.elapsed()
        );
    }

    let _ = b.stop().await;
    a.finish().await;
}
