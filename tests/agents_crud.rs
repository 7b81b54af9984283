//! AgentService round trips through the generated client against a real server.

mod common;

use agentry::pb::{
    AgentConfig, BatchGetAgentsRequest, CreateAgentRequest, DeleteAgentRequest, GetAgentRequest,
    GetAgentVersionRequest, ListAgentVersionsRequest, ListAgentsRequest, UpdateAgentRequest,
};
use common::{Backend, TestServer, agent, expect_code};
use pbjson_types::FieldMask;
use tonic::Code;

async fn create_get_list_delete(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let mut a = agent("support");
    a.description = "Handles support".into();
    a.tags = vec!["support".into(), "customer-facing".into()];
    let created = c
        .create_agent(CreateAgentRequest {
            agent: Some(a.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.id, "support");
    assert_eq!(created.version, 1);
    assert_eq!(created.enabled, Some(true));
    assert!(created.create_time.is_some() && created.update_time.is_some());
    let cfg = created.config.clone().unwrap();
    assert_eq!(
        (cfg.enable_memory, cfg.num_history_runs, cfg.max_steps),
        (Some(true), Some(3), Some(10))
    );

    let got = c
        .get_agent(GetAgentRequest {
            id: "support".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    expect_code(
        c.create_agent(CreateAgentRequest { agent: Some(a) }).await,
        Code::AlreadyExists,
    );

    let list = c
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.agents, vec![created.clone()]);
    assert!(list.next_cursor.is_empty());

    let batch = c
        .batch_get_agents(BatchGetAgentsRequest {
            agent_ids: vec!["nope".into(), "support".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.agents, vec![created.clone()]);
    assert_eq!(batch.missing_ids, vec!["nope".to_owned()]);

    let del = c
        .delete_agent(DeleteAgentRequest {
            id: "support".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.id, "support");
    expect_code(
        c.get_agent(GetAgentRequest {
            id: "support".into(),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.delete_agent(DeleteAgentRequest {
            id: "support".into(),
        })
        .await,
        Code::NotFound,
    );
    assert!(
        c.list_agents(ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents
            .is_empty()
    );
    // Soft delete: the versions stay readable.
    let v1 = c
        .get_agent_version(GetAgentVersionRequest {
            id: "support".into(),
            version: 1,
        })
        .await
        .unwrap();
    assert_eq!(v1.into_inner().description, "Handles support");
    srv.finish().await;
}

async fn generated_slug_from_name(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let mut a = agent("");
    a.name = "Code Reviewer Agent!".into();
    let first = c
        .create_agent(CreateAgentRequest {
            agent: Some(a.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.id, "code-reviewer-agent");
    let second = c
        .create_agent(CreateAgentRequest { agent: Some(a) })
        .await
        .unwrap()
        .into_inner();
    assert!(
        second.id.starts_with("code-reviewer-agent-") && second.id != first.id,
        "{}",
        second.id
    );
    srv.finish().await;
}

async fn version_history_after_three_updates(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    c.create_agent(CreateAgentRequest {
        agent: Some(agent("writer")),
    })
    .await
    .unwrap();
    for (i, desc) in ["one", "two", "three"].iter().enumerate() {
        let patch = agentry::pb::Agent {
            id: "writer".into(),
            description: (*desc).into(),
            ..Default::default()
        };
        let mask = FieldMask {
            paths: vec!["description".into()],
        };
        let updated = c
            .update_agent(UpdateAgentRequest {
                agent: Some(patch),
                update_mask: Some(mask),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.version, i as i64 + 2);
        assert_eq!(updated.description, *desc);
        assert_eq!(
            updated.name, "Agent writer",
            "fields outside the mask are kept"
        );
    }
    // An empty mask means "every populated field": config.max_steps alone changes.
    let patch = agentry::pb::Agent {
        id: "writer".into(),
        config: Some(AgentConfig {
            max_steps: Some(4),
            ..Default::default()
        }),
        ..Default::default()
    };
    let updated = c
        .update_agent(UpdateAgentRequest {
            agent: Some(patch),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.version, 5);
    let cfg = updated.config.unwrap();
    assert_eq!((cfg.max_steps, cfg.enable_memory), (Some(4), Some(true)));
    assert_eq!(updated.description, "three");

    let versions = c
        .list_agent_versions(ListAgentVersionsRequest {
            id: "writer".into(),
            limit: 2,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        versions
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        vec![5, 4]
    );
    let rest = c
        .list_agent_versions(ListAgentVersionsRequest {
            id: "writer".into(),
            limit: 10,
            cursor: versions.next_cursor,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(rest.versions[2].description, "");
    assert_eq!(rest.versions[0].description, "two");
    assert!(rest.next_cursor.is_empty());
    let v2 = c
        .get_agent_version(GetAgentVersionRequest {
            id: "writer".into(),
            version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.description, "one");
    expect_code(
        c.get_agent_version(GetAgentVersionRequest {
            id: "writer".into(),
            version: 9,
        })
        .await,
        Code::NotFound,
    );

    // An update that changes nothing makes no version.
    let same = agentry::pb::Agent {
        id: "writer".into(),
        description: "three".into(),
        ..Default::default()
    };
    let r = c
        .update_agent(UpdateAgentRequest {
            agent: Some(same),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 5);
    srv.finish().await;
}

on_both_backends!(
    create_get_list_delete,
    generated_slug_from_name,
    version_history_after_three_updates
);
