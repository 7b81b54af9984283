//! ListActiveAgents' run statistics come from one grouped query over the runs table. The run engine is
//! later work, so this test writes run rows directly and checks the aggregate on both backends.

mod common;

use agentry::{
    pb::{CreateAgentRequest, ListActiveAgentsRequest, RunStatus},
    store::{Db, entities::run, time::from_timestamp},
};
use common::{Backend, TestServer, agent};
use sea_orm::{ActiveValue::Set, EntityTrait};

async fn insert_run(db: &Db, ws: &str, agent_id: &str, status: RunStatus, create_time: i64) {
    run::Entity::insert(run::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        workspace_id: Set(ws.to_owned()),
        agent_id: Set(agent_id.to_owned()),
        agent_version: Set(1),
        session_id: Set(String::new()),
        user_id: Set(String::new()),
        status: Set(status as i32),
        trigger_source: Set(1),
        idempotency_key: Set(None),
        lease_owner: Set(None),
        lease_expire_time: Set(None),
        spec: Set(Vec::new()),
        create_time: Set(create_time),
        start_time: Set(None),
        end_time: Set(None),
        checkpoint: Set(None),
        cancel_requested: Set(false),
        update_time: Set(create_time),
        model: Set("scripted/echo".into()),
        input_tokens: Set(0),
        output_tokens: Set(0),
        cost_usd: Set(0.0),
        last_seq: Set(0),
    })
    .exec_without_returning(db.writer())
    .await
    .expect("insert run");
}

async fn run_statistics(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    for id in ["busy", "idle"] {
        c.create_agent(CreateAgentRequest {
            agent: Some(agent(id)),
        })
        .await
        .unwrap();
    }
    let ws = {
        let mut a = srv.admin(&srv.admin_key).await;
        a.get_workspace(agentry::pb::GetWorkspaceRequest {})
            .await
            .unwrap()
            .into_inner()
            .workspace
            .unwrap()
            .id
    };
    let db = Db::connect(&srv.db.url).await.unwrap();
    let base = 1_700_000_000_000_000;
    let statuses = [
        RunStatus::Completed,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::RequiresAction,
        RunStatus::Cancelled,
    ];
    for (i, s) in statuses.into_iter().enumerate() {
        insert_run(&db, &ws, "busy", s, base + i as i64).await;
    }
    // A run of another workspace's agent with the same id must not count.
    let other = agentry::admin::ensure_workspace(db.writer(), "other")
        .await
        .unwrap();
    insert_run(&db, &other.id, "busy", RunStatus::Completed, base + 100).await;
    db.close().await;

    let page = c
        .list_active_agents(ListActiveAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let busy = page
        .agents
        .iter()
        .find(|a| a.agent.as_ref().unwrap().id == "busy")
        .unwrap();
    assert_eq!(busy.run_count, 7);
    assert_eq!(busy.completed_run_count, 2);
    assert_eq!(busy.failed_run_count, 1);
    assert_eq!(busy.active_run_count, 3);
    assert_eq!(
        from_timestamp(busy.last_run_time.as_ref().unwrap()),
        Some(base + 6)
    );
    let idle = page
        .agents
        .iter()
        .find(|a| a.agent.as_ref().unwrap().id == "idle")
        .unwrap();
    assert_eq!((idle.run_count, idle.last_run_time.is_none()), (0, true));
    srv.finish().await;
}

on_both_backends!(run_statistics);
