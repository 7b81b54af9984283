//! Hiring store agents into a workspace, and ListActiveAgents.

mod agents_support;
mod common;

use agentry::pb::{
    Agent, DeleteAgentRequest, GetAgentRequest, GetStoreAgentRequest, HireAgentRequest,
    HireBindings, ListActiveAgentsRequest, ListAgentVersionsRequest, ListAgentsRequest, Visibility,
};
use agents_support::{create, get_store, patch, public};
use common::{Backend, TestServer, agent, expect_code};
use tonic::Code;

async fn hire_agents(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let acme_key = srv.workspace_key("acme", "agents:read,agents:write").await;
    let mut acme = srv.agents(&acme_key).await;
    let echo = get_store(&mut c, "echo", 0).await.unwrap().agent.unwrap();
    let bindings = HireBindings {
        variables: Some(
            serde_json::from_value(serde_json::json!({"tone": "dry", "n": 2})).unwrap(),
        ),
        connector_ids: vec!["crm-1".into()],
        knowledge_ids: vec!["kb-1".into(), "kb-2".into()],
    };
    let hire =
        |slug: &str, version: i64, agent_id: &str, b: Option<HireBindings>| HireAgentRequest {
            slug: slug.into(),
            version,
            agent_id: agent_id.into(),
            bindings: b,
        };

    let hired = c
        .hire_agent(hire("echo", 0, "", Some(bindings.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hired.id, "echo", "the id defaults to the slug");
    assert_eq!(hired.version, 1);
    assert_eq!(hired.visibility, Visibility::Private as i32);
    assert_eq!(hired.enabled, Some(true));
    assert!(hired.create_time.is_some() && hired.update_time.is_some());
    let info = hired.hire.clone().expect("hire info");
    assert_eq!(
        (info.source_slug.as_str(), info.source_version),
        ("echo", 1)
    );
    assert_eq!(info.bindings, Some(bindings.clone()));
    assert!(info.hire_time.is_some());
    assert_eq!(
        (&hired.name, &hired.template, &hired.model),
        (&echo.name, &echo.template, &echo.model)
    );
    assert_eq!(
        (&hired.tags, &hired.capabilities, &hired.input_schema),
        (&echo.tags, &echo.capabilities, &echo.input_schema)
    );
    assert_eq!(
        c.get_agent(GetAgentRequest { id: "echo".into() })
            .await
            .unwrap()
            .into_inner(),
        hired
    );
    let versions = c
        .list_agent_versions(ListAgentVersionsRequest {
            id: "echo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(versions.into_inner().versions, vec![hired.clone()]);
    // The copy is private: the store does not list "default.echo".
    expect_code(
        c.get_store_agent(GetStoreAgentRequest {
            slug: "default.echo".into(),
            version: 0,
        })
        .await,
        Code::NotFound,
    );

    expect_code(
        c.hire_agent(hire("echo", 0, "", None)).await,
        Code::AlreadyExists,
    );
    let custom = c
        .hire_agent(hire("echo", 1, "my-echo", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(custom.id, "my-echo");
    assert_eq!(custom.hire.as_ref().unwrap().source_slug, "echo");
    expect_code(
        c.hire_agent(hire("echo", 0, "my-echo", None)).await,
        Code::AlreadyExists,
    );
    expect_code(
        c.hire_agent(hire("no-such-agent", 0, "", None)).await,
        Code::NotFound,
    );
    expect_code(
        c.hire_agent(hire("echo", 2, "echo-v2", None)).await,
        Code::NotFound,
    );

    // A public agent of another workspace, at an old and at the latest version.
    create(
        &mut acme,
        Agent {
            description: "old".into(),
            ..public("pub")
        },
    )
    .await;
    patch(
        &mut acme,
        Agent {
            id: "pub".into(),
            description: "new".into(),
            ..Default::default()
        },
        &["description"],
    )
    .await;
    let old = c
        .hire_agent(hire("acme.pub", 1, "", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.id, "acme-pub", "dots become dashes");
    assert_eq!(
        (old.description.as_str(), old.version, old.visibility),
        ("old", 1, Visibility::Private as i32)
    );
    let info = old.hire.unwrap();
    assert_eq!(
        (info.source_slug.as_str(), info.source_version),
        ("acme.pub", 1)
    );
    let latest = c
        .hire_agent(hire("acme.pub", 0, "pub-latest", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.description, "new");
    assert_eq!(latest.hire.unwrap().source_version, 2);
    expect_code(
        c.hire_agent(hire("acme.pub", 0, "", None)).await,
        Code::AlreadyExists,
    );
    // The hirer's copies are its own: acme sees none of them.
    let acme_ids: Vec<String> = acme
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(acme_ids, vec!["pub".to_owned()]);
    let mine: Vec<String> = c
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        mine,
        ["echo", "my-echo", "acme-pub", "pub-latest"]
            .map(String::from)
            .to_vec()
    );
    srv.finish().await;
}

async fn active_agents(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let other_key = srv.workspace_key("other", "agents:read,agents:write").await;
    let mut other = srv.agents(&other_key).await;
    create(&mut other, agent("elsewhere")).await;

    create(&mut c, agent("a1")).await;
    create(
        &mut c,
        Agent {
            enabled: Some(false),
            ..agent("a2-disabled")
        },
    )
    .await;
    create(&mut c, agent("a3-deleted")).await;
    c.delete_agent(DeleteAgentRequest {
        id: "a3-deleted".into(),
    })
    .await
    .unwrap();
    let req = |slug: &str, id: &str| HireAgentRequest {
        slug: slug.into(),
        agent_id: id.into(),
        ..Default::default()
    };
    c.hire_agent(req("echo", "")).await.unwrap();
    c.hire_agent(req("scripted-demo", "demo2")).await.unwrap();
    create(&mut c, agent("a4")).await;
    // A disabled hire is still one of the workspace's hires.
    patch(
        &mut c,
        Agent {
            id: "demo2".into(),
            enabled: Some(false),
            ..Default::default()
        },
        &["enabled"],
    )
    .await;
    create(
        &mut c,
        Agent {
            enabled: Some(false),
            ..agent("a5-disabled")
        },
    )
    .await;

    let want = ["a1", "echo", "demo2", "a4"];
    for limit in [0, 1, 2, 3, 100] {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = c
                .list_active_agents(ListActiveAgentsRequest { limit, cursor })
                .await
                .unwrap()
                .into_inner();
            assert!(limit == 0 || page.agents.len() <= limit as usize);
            for a in page.agents {
                let ag = a.agent.clone().expect("agent");
                assert_eq!(
                    ag,
                    c.get_agent(GetAgentRequest { id: ag.id.clone() })
                        .await
                        .unwrap()
                        .into_inner()
                );
                assert_eq!(
                    (
                        a.run_count,
                        a.completed_run_count,
                        a.failed_run_count,
                        a.active_run_count
                    ),
                    (0, 0, 0, 0)
                );
                assert!(a.last_run_time.is_none());
                seen.push(ag.id);
            }
            if page.next_cursor.is_empty() {
                break;
            }
            assert!(seen.len() < 50, "pagination ends");
            cursor = page.next_cursor;
        }
        assert_eq!(seen, want.map(String::from).to_vec(), "limit {limit}");
    }
    let first = c
        .list_active_agents(ListActiveAgentsRequest {
            limit: 2,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.agents.len(), 2);
    assert!(!first.next_cursor.is_empty());
    let page = other
        .list_active_agents(ListActiveAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.agents
            .iter()
            .map(|a| a.agent.as_ref().unwrap().id.as_str())
            .collect::<Vec<_>>(),
        ["elsewhere"]
    );
    srv.finish().await;
}

on_both_backends!(hire_agents, active_agents);
