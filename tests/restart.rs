//! A restart of the server keeps all data: agents and their versions, the store, keys and webhooks read
//! back identically from a new server on the same database, and the bootstrap does not run again.

mod common;

use agentry::{
    pb::{
        Agent, ApiKey, CreateAgentRequest, CreateApiKeyRequest, CreateWebhookRequest,
        DeleteAgentRequest, GetAgentRequest, GetWorkspaceRequest, GetWorkspaceResponse,
        HireAgentRequest, ListActiveAgentsRequest, ListAgentVersionsRequest, ListAgentsRequest,
        ListApiKeysRequest, ListStoreAgentsRequest, ListWebhooksRequest, RevokeApiKeyRequest,
        StoreAgent, UpdateAgentRequest, Visibility, Webhook,
    },
    store::{
        Db,
        entities::{api_key, workspace},
    },
};
use common::{Backend, TestServer, agent, expect_code};
use pbjson_types::FieldMask;
use sea_orm::{EntityTrait, PaginatorTrait};
use tonic::Code;

/// Everything the workspace can read back, in list order.
#[derive(Debug, PartialEq)]
struct Snapshot {
    agents: Vec<Agent>,
    got: Vec<Agent>,
    versions: Vec<Vec<Agent>>,
    deleted_versions: Vec<Agent>,
    store: Vec<StoreAgent>,
    active: Vec<String>,
    keys: Vec<ApiKey>,
    webhooks: Vec<Webhook>,
    whoami: GetWorkspaceResponse,
    workspaces: u64,
    all_keys: u64,
}

async fn snapshot(srv: &TestServer, key: &str) -> Snapshot {
    let mut c = srv.agents(key).await;
    let mut a = srv.admin(key).await;
    let agents = c
        .list_agents(ListAgentsRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(agents.next_cursor.is_empty());
    let agents = agents.agents;
    let (mut got, mut versions) = (Vec::new(), Vec::new());
    for ag in &agents {
        got.push(
            c.get_agent(GetAgentRequest { id: ag.id.clone() })
                .await
                .unwrap()
                .into_inner(),
        );
        let v = c.list_agent_versions(ListAgentVersionsRequest {
            id: ag.id.clone(),
            limit: 100,
            cursor: String::new(),
        });
        versions.push(v.await.unwrap().into_inner().versions);
    }
    expect_code(
        c.get_agent(GetAgentRequest { id: "gone".into() }).await,
        Code::NotFound,
    );
    let deleted = c.list_agent_versions(ListAgentVersionsRequest {
        id: "gone".into(),
        limit: 100,
        cursor: String::new(),
    });
    let deleted_versions = deleted.await.unwrap().into_inner().versions;
    let store = c
        .list_store_agents(ListStoreAgentsRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let active = c
        .list_active_agents(ListActiveAgentsRequest {
            limit: 100,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let keys = a.list_api_keys(ListApiKeysRequest {
        limit: 100,
        include_revoked: true,
        ..Default::default()
    });
    let keys = keys.await.unwrap().into_inner().api_keys;
    let webhooks = a
        .list_webhooks(ListWebhooksRequest {
            limit: 100,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let db = Db::connect(&srv.db.url).await.expect("db");
    let workspaces = workspace::Entity::find().count(db.reader()).await.unwrap();
    let all_keys = api_key::Entity::find().count(db.reader()).await.unwrap();
    db.close().await;
    Snapshot {
        agents,
        got,
        versions,
        deleted_versions,
        store: store.agents,
        active: active
            .agents
            .into_iter()
            .map(|a| a.agent.unwrap().id)
            .collect(),
        keys,
        webhooks: webhooks.webhooks,
        whoami: a
            .get_workspace(GetWorkspaceRequest {})
            .await
            .unwrap()
            .into_inner(),
        workspaces,
        all_keys,
    }
}

async fn restart_keeps_all_data(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let admin_key = srv.admin_key.clone();
    let mut c = srv.agents(&admin_key).await;
    let mut admin = srv.admin(&admin_key).await;

    // Agents with several versions, a public one, a disabled one, a deleted one and a hire.
    for id in ["alpha", "beta", "gone"] {
        let mut a = agent(id);
        a.tags = vec!["t1".into()];
        a.metadata = Some(
            serde_json::from_value(serde_json::json!({"playbook_template": "p", "n": [1, 2]}))
                .unwrap(),
        );
        c.create_agent(CreateAgentRequest { agent: Some(a) })
            .await
            .unwrap();
    }
    for (i, d) in ["one", "two", "three"].iter().enumerate() {
        let mut patch = Agent {
            id: "alpha".into(),
            description: (*d).into(),
            ..Default::default()
        };
        let mut paths = vec!["description".to_owned()];
        if i == 1 {
            patch.visibility = Visibility::Public as i32;
            paths.push("visibility".into());
        }
        let req = UpdateAgentRequest {
            agent: Some(patch),
            update_mask: Some(FieldMask { paths }),
        };
        c.update_agent(req).await.unwrap();
    }
    let disable = Agent {
        id: "beta".into(),
        enabled: Some(false),
        ..Default::default()
    };
    c.update_agent(UpdateAgentRequest {
        agent: Some(disable),
        update_mask: Some(FieldMask {
            paths: vec!["enabled".into()],
        }),
    })
    .await
    .unwrap();
    c.delete_agent(DeleteAgentRequest { id: "gone".into() })
        .await
        .unwrap();
    c.hire_agent(HireAgentRequest {
        slug: "echo".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Keys (one revoked) and a webhook.
    let reader = admin
        .create_api_key(CreateApiKeyRequest {
            name: "reader".into(),
            scopes: vec!["agents:read".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let revoked = admin
        .create_api_key(CreateApiKeyRequest {
            name: "old".into(),
            scopes: vec!["agents:write".into()],
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .revoke_api_key(RevokeApiKeyRequest {
            id: revoked.api_key.unwrap().id,
        })
        .await
        .unwrap();
    let hook = admin
        .create_webhook(CreateWebhookRequest {
            url: "https://hooks.example.com/agentry".into(),
            event_types: vec!["run.completed".into(), "flow_run.*".into()],
            secret: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let _ = srv.workspace_key("acme", "agents:read").await;

    let before = snapshot(&srv, &admin_key).await;
    assert_eq!(
        before
            .agents
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["alpha", "beta", "echo"]
    );
    assert_eq!(before.versions[0].len(), 4);
    assert_eq!(before.deleted_versions.len(), 1);
    assert!(before.store.iter().any(|s| s.slug == "default.alpha"));
    assert_eq!(before.active, ["alpha", "echo"]);
    assert_eq!(before.keys.len(), 3);
    assert_eq!(before.webhooks, vec![hook.webhook.clone().unwrap()]);
    assert_eq!((before.workspaces, before.all_keys), (2, 4));

    let db = srv.stop().await;
    let srv = TestServer::start_on(db, admin_key.clone()).await;
    let after = snapshot(&srv, &admin_key).await;
    assert_eq!(
        after, before,
        "everything reads back identically after a restart"
    );

    // The keys keep working with their scopes; the revoked one stays revoked.
    let mut r = srv.agents(&reader.secret).await;
    assert_eq!(
        r.get_agent(GetAgentRequest { id: "alpha".into() })
            .await
            .unwrap()
            .into_inner(),
        before.got[0]
    );
    expect_code(
        r.create_agent(CreateAgentRequest {
            agent: Some(agent("nope")),
        })
        .await,
        Code::PermissionDenied,
    );
    let mut old = srv.agents(&revoked.secret).await;
    expect_code(
        old.get_agent(GetAgentRequest { id: "alpha".into() }).await,
        Code::Unauthenticated,
    );

    // Writes continue where they left off.
    let mut c = srv.agents(&admin_key).await;
    let patch = Agent {
        id: "alpha".into(),
        description: "four".into(),
        ..Default::default()
    };
    let req = UpdateAgentRequest {
        agent: Some(patch),
        update_mask: Some(FieldMask {
            paths: vec!["description".into()],
        }),
    };
    assert_eq!(c.update_agent(req).await.unwrap().into_inner().version, 5);
    expect_code(
        c.create_agent(CreateAgentRequest {
            agent: Some(agent("beta")),
        })
        .await,
        Code::AlreadyExists,
    );

    // A restart with another bootstrap key does not bootstrap: that key is unknown, the old one works.
    let db = srv.stop().await;
    let other_key = agentry::auth::keys::generate();
    let srv = TestServer::start_on(db, other_key.clone()).await;
    let mut stranger = srv.agents(&other_key).await;
    expect_code(
        stranger.list_agents(ListAgentsRequest::default()).await,
        Code::Unauthenticated,
    );
    let again = snapshot(&srv, &admin_key).await;
    assert_eq!((again.workspaces, again.all_keys), (2, 4));
    assert_eq!(again.keys, before.keys);
    assert_eq!(again.whoami, before.whoami);
    assert_eq!(again.versions[0].len(), 5);
    srv.finish().await;
}

on_both_backends!(restart_keeps_all_data);
