//! The rest of RunService: TriggerAgent, GetUsage, sessions, memories (through the memory tool in a
//! run), ExecuteTool and seed 004's approve/reject by action index. Both backends.

mod common;

use std::time::Duration;

use agentry::pb::{
    Agent, ApproveActionRequest, CreateAgentRequest, DeleteMemoryRequest, DeleteSessionRequest,
    ExecuteToolRequest, GetRunRequest, GetSessionRequest, GetUsageRequest, ListMemoriesRequest,
    ListRunsRequest, ListSessionsRequest, RunStatus, StartRunRequest, ToolBinding,
    TriggerAgentRequest, TriggerSource, UsageDimension, WatchRunRequest,
};
use common::{Backend, TestServer, expect_code};
use futures_util::StreamExt;
use serde_json::json;
use tonic::Code;

fn to_struct(v: serde_json::Value) -> pbjson_types::Struct {
    serde_json::from_value(v).unwrap()
}

fn echo(id: &str) -> Agent {
    Agent {
        id: id.into(),
        name: id.into(),
        model: "scripted/echo".into(),
        ..Default::default()
    }
}

async fn settle(srv: &TestServer, run_id: &str) {
    let mut c = srv.runs(&srv.admin_key).await;
    let mut s = c
        .watch_run(WatchRunRequest {
            run_id: run_id.into(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .unwrap()
    {
        e.unwrap();
    }
}

async fn run_echo(srv: &TestServer, agent: &str, session: &str, message: &str) -> String {
    let mut c = srv.runs(&srv.admin_key).await;
    let req = StartRunRequest {
        agent_id: agent.into(),
        message: message.into(),
        session_id: session.into(),
        user_id: "u1".into(),
        ..Default::default()
    };
    let run = c.start_run(req).await.unwrap().into_inner();
    settle(srv, &run.id).await;
    run.id
}

async fn trigger_one_run_per_target(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(echo("outreach")),
        })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let req = TriggerAgentRequest {
        agent_id: "outreach".into(),
        contact_ids: vec!["c1".into(), "c2".into()],
        idempotency_key: "campaign-7".into(),
        ..Default::default()
    };
    let first = runs.trigger_agent(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.status, "success");
    assert_eq!(first.run_ids.len(), 2);
    let again = runs.trigger_agent(req).await.unwrap().into_inner();
    assert_eq!(
        (again.job_id.clone(), again.run_ids.clone()),
        (first.job_id.clone(), first.run_ids.clone()),
        "a retried trigger starts nothing new"
    );
    for (id, contact) in first.run_ids.iter().zip(["c1", "c2"]) {
        let r = runs
            .get_run(GetRunRequest { run_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        let t = r.trigger.unwrap();
        assert_eq!(
            (t.job_id.as_str(), t.target.unwrap().id.as_str()),
            (first.job_id.as_str(), contact)
        );
        assert_eq!(t.source, TriggerSource::Batch as i32);
    }
    let batch = runs
        .list_runs(ListRunsRequest {
            trigger_source: TriggerSource::Batch as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.runs.len(), 2);
    srv.finish().await;
}

async fn usage_by_agent_and_day(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut agents = srv.agents(&srv.admin_key).await;
    for id in ["a", "b"] {
        agents
            .create_agent(CreateAgentRequest {
                agent: Some(echo(id)),
            })
            .await
            .unwrap();
    }
    for m in ["one two", "three four five", "six"] {
        run_echo(&srv, "a", "", m).await;
    }
    run_echo(&srv, "b", "", "seven eight").await;
    let mut runs = srv.runs(&srv.admin_key).await;
    let by_agent = runs
        .get_usage(GetUsageRequest {
            group_by: vec![UsageDimension::Agent as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_agent.rows.len(), 2);
    let a = &by_agent.rows[0];
    assert_eq!((a.agent_id.as_str(), a.run_count), ("a", 3));
    let u = a.usage.unwrap();
    // Echo: as many input as output tokens, one per word.
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.total_tokens),
        (6, 6, 12)
    );
    assert_eq!(by_agent.total.unwrap().total_tokens, 16);
    let by_day = runs
        .get_usage(GetUsageRequest {
            group_by: vec![UsageDimension::Day as i32, UsageDimension::Model as i32],
            agent_id: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_day.rows.len(), 1);
    assert_eq!(by_day.rows[0].model, "scripted/echo");
    assert_eq!(
        by_day.rows[0].day.len(),
        10,
        "YYYY-MM-DD: {}",
        by_day.rows[0].day
    );
    expect_code(
        runs.get_usage(GetUsageRequest {
            group_by: vec![42],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    srv.finish().await;
}

async fn sessions_history_and_delete(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(echo("chat")),
        })
        .await
        .unwrap();
    let r1 = run_echo(&srv, "chat", "s1", "hello there").await;
    run_echo(&srv, "chat", "s1", "how are you").await;
    run_echo(&srv, "chat", "s2", "other").await;
    let mut runs = srv.runs(&srv.admin_key).await;
    let s = runs
        .get_session(GetSessionRequest {
            session_id: "s1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.run_count, 2);
    let msgs: Vec<(&str, &str)> = s
        .messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(
        msgs,
        [
            ("user", "hello there"),
            ("assistant", "hello there"),
            ("user", "how are you"),
            ("assistant", "how are you")
        ]
    );
    let list = runs
        .list_sessions(ListSessionsRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sessions.len(), 1);
    assert_eq!(list.sessions[0].id, "s1");
    let rest = runs
        .list_sessions(ListSessionsRequest {
            cursor: list.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.sessions
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["s2"]
    );
    runs.delete_session(DeleteSessionRequest {
        session_id: "s1".into(),
    })
    .await
    .unwrap();
    expect_code(
        runs.get_session(GetSessionRequest {
            session_id: "s1".into(),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        runs.get_run(GetRunRequest { run_id: r1 }).await,
        Code::NotFound,
    );
    srv.finish().await;
}

async fn memory_tool_saves_per_user(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let script = json!([{"tool_calls": [{"name": "memory", "arguments": {"action": "save", "content": "likes green tea"}}]}, {"text": "noted"}]);
    let agent = Agent {
        id: "rememberer".into(),
        name: "rememberer".into(),
        model: "scripted/script".into(),
        metadata: Some(to_struct(json!({ "script": script }))),
        tools: vec![ToolBinding {
            name: "memory".into(),
            requires_confirmation: false,
            config: None,
        }],
        ..Default::default()
    };
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest { agent: Some(agent) })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let req = StartRunRequest {
        agent_id: "rememberer".into(),
        message: "remember".into(),
        user_id: "ann".into(),
        ..Default::default()
    };
    let run = runs.start_run(req).await.unwrap().into_inner();
    settle(&srv, &run.id).await;
    let done = runs
        .get_run(GetRunRequest { run_id: run.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, RunStatus::Completed as i32, "{:?}", done.error);
    let mems = runs
        .list_memories(ListMemoriesRequest {
            user_id: "ann".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mems.memories.len(), 1);
    assert_eq!(mems.memories[0].content, "likes green tea");

    // config.enable_memory (on by default) gives a run with a user the memory tool, bound or not;
    // turned off, the tool is not the agent's.
    let lister = json!([{"tool_calls": [{"name": "memory", "arguments": {"action": "list"}}]}, {"text": "ok"}]);
    for (id, enabled) in [("recaller", None), ("forgetful", Some(false))] {
        let agent = Agent {
            id: id.into(),
            name: id.into(),
            model: "scripted/script".into(),
            metadata: Some(to_struct(json!({ "script": lister }))),
            config: Some(agentry::pb::AgentConfig {
                enable_memory: enabled,
                ..Default::default()
            }),
            ..Default::default()
        };
        srv.agents(&srv.admin_key)
            .await
            .create_agent(CreateAgentRequest { agent: Some(agent) })
            .await
            .unwrap();
        let run = runs
            .start_run(StartRunRequest {
                agent_id: id.into(),
                message: "what do you know?".into(),
                user_id: "ann".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = runs
            .watch_run(WatchRunRequest {
                run_id: run.id.clone(),
                after_seq: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut outcome = None;
        while let Some(e) = events.next().await {
            if let Some(agentry::pb::run_event::Event::ToolCallCompleted(c)) = e.unwrap().event {
                outcome = c.outcome;
            }
        }
        let outcome = serde_json::to_string(&format!("{outcome:?}")).unwrap();
        if enabled.is_none() {
            assert!(outcome.contains("likes green tea"), "{id}: {outcome}");
        } else {
            assert!(outcome.contains("unknown_tool"), "{id}: {outcome}");
        }
    }
    let none = runs
        .list_memories(ListMemoriesRequest {
            user_id: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.memories.is_empty());
    runs.delete_memory(DeleteMemoryRequest {
        id: mems.memories[0].id.clone(),
    })
    .await
    .unwrap();
    expect_code(
        runs.delete_memory(DeleteMemoryRequest {
            id: mems.memories[0].id.clone(),
        })
        .await,
        Code::NotFound,
    );
    srv.finish().await;
}

async fn execute_tool_directly(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let agent = Agent {
        tools: vec![ToolBinding {
            name: "current_time".into(),
            requires_confirmation: false,
            config: None,
        }],
        ..echo("clock")
    };
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest { agent: Some(agent) })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let out = runs
        .execute_tool(ExecuteToolRequest {
            agent_id: "clock".into(),
            tool_name: "current_time".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.status, "success", "{}", out.message);
    let result = serde_json::to_value(out.result.unwrap()).unwrap();
    assert!(result.get("unix").is_some(), "{result}");
    expect_code(
        runs.execute_tool(ExecuteToolRequest {
            agent_id: "clock".into(),
            tool_name: "http_request".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    srv.finish().await;
}

async fn approve_action_by_index(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let script =
        json!([{"tool_calls": [{"name": "current_time", "arguments": {}}]}, {"text": "sent"}]);
    let agent = Agent {
        id: "careful".into(),
        name: "careful".into(),
        model: "scripted/script".into(),
        metadata: Some(to_struct(json!({ "script": script }))),
        tools: vec![ToolBinding {
            name: "current_time".into(),
            requires_confirmation: true,
            config: None,
        }],
        ..Default::default()
    };
    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest { agent: Some(agent) })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let run = runs
        .start_run(StartRunRequest {
            agent_id: "careful".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    settle(&srv, &run.id).await;
    let approve = |contact: &str, index: i32| ApproveActionRequest {
        run_id: run.id.clone(),
        contact_id: contact.into(),
        action_index: index,
        ..Default::default()
    };
    expect_code(
        runs.approve_action(approve("someone", 0)).await,
        Code::NotFound,
    );
    expect_code(
        runs.approve_action(approve("-", 3)).await,
        Code::FailedPrecondition,
    );
    runs.approve_action(approve("-", 0)).await.unwrap();
    settle(&srv, &run.id).await;
    let done = runs
        .get_run(GetRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (done.status, done.output.unwrap().content.as_str()),
        (RunStatus::Completed as i32, "sent")
    );
    srv.finish().await;
}

on_both_backends!(
    trigger_one_run_per_target,
    usage_by_agent_and_day,
    sessions_history_and_delete,
    memory_tool_saves_per_user,
    execute_tool_directly,
    approve_action_by_index,
);
