//! Authentication and authorization: missing, malformed and unknown keys, the three header styles,
//! scopes, revocation taking effect at once, and whoami.

mod common;

use agentry::pb::{
    BatchGetAgentsRequest, CreateAgentRequest, CreateApiKeyRequest, CreateApiKeyResponse,
    CreateWebhookRequest, DeleteAgentRequest, DeleteWebhookRequest, GetAgentRequest,
    GetAgentVersionRequest, GetFlowRequest, GetRunRequest, GetStoreAgentRequest,
    GetWorkspaceRequest, HireAgentRequest, ListActiveAgentsRequest, ListAgentVersionsRequest,
    ListAgentsRequest, ListApiKeysRequest, ListRunsRequest, ListStoreAgentsRequest,
    ListWebhookDeliveriesRequest, ListWebhooksRequest, RevokeApiKeyRequest, UpdateAgentRequest,
    admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
    flow_service_client::FlowServiceClient, run_service_client::RunServiceClient,
};
use common::{Auth, Backend, TestServer, agent, expect_code};
use tonic::{Code, Request, Status, service::Interceptor};

/// Sends one raw header (any name and value), for what the harness's `Auth` cannot express.
#[derive(Clone)]
struct Raw(&'static str, String);

impl Interceptor for Raw {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut()
            .insert(self.0, self.1.parse().expect("an ASCII header value"));
        Ok(req)
    }
}

async fn new_key(srv: &TestServer, name: &str, scopes: &[&str]) -> CreateApiKeyResponse {
    let mut admin = srv.admin(&srv.admin_key).await;
    let req = CreateApiKeyRequest {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    };
    admin.create_api_key(req).await.unwrap().into_inner()
}

async fn missing_malformed_and_unknown_keys(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut none = AgentServiceClient::with_interceptor(srv.channel().await, Auth::none());
    let s = expect_code(
        none.list_agents(ListAgentsRequest::default()).await,
        Code::Unauthenticated,
    );
    assert!(s.message().contains("missing API key"), "{s:?}");
    let mut none_admin = AdminServiceClient::with_interceptor(srv.channel().await, Auth::none());
    expect_code(
        none_admin.get_workspace(GetWorkspaceRequest {}).await,
        Code::Unauthenticated,
    );

    // Same public prefix as the real key, different secret: a guess that finds the row but not the hash.
    let mut guessed = srv.admin_key[..srv.admin_key.len() - 4].to_owned();
    guessed.push_str(if srv.admin_key.ends_with("AAAA") {
        "BBBB"
    } else {
        "AAAA"
    });
    let unknown = agentry::auth::keys::generate();
    let headers: Vec<(&'static str, String)> = vec![
        ("authorization", "Bearer agk_short".into()),
        ("authorization", "Bearer not-a-key".into()),
        (
            "authorization",
            format!("Bearer {}-", &srv.admin_key[..srv.admin_key.len() - 1]),
        ),
        ("authorization", format!("Bearer {}x", srv.admin_key)),
        (
            "authorization",
            format!("Bearer {}", srv.admin_key.replace("agk_", "agx_")),
        ),
        ("authorization", format!("Bearer {unknown}")),
        ("authorization", format!("Bearer {guessed}")),
        ("authorization", "Bearer".into()),
        ("authorization", "Bearer ".into()),
        ("authorization", srv.admin_key.clone()),
        ("authorization", format!("Basic {}", srv.admin_key)),
        ("authorization", "Basic x".into()),
        ("x-api-key", unknown.clone()),
        ("x-api-key", String::new()),
        ("x-api-key", "agk_short".into()),
    ];
    for (name, value) in headers {
        let mut c =
            AgentServiceClient::with_interceptor(srv.channel().await, Raw(name, value.clone()));
        let s = expect_code(
            c.list_agents(ListAgentsRequest::default()).await,
            Code::Unauthenticated,
        );
        assert!(
            !s.message().contains(&srv.admin_key),
            "{name}: {value:?}: {s:?}"
        );
        let mut a = AdminServiceClient::with_interceptor(srv.channel().await, Raw(name, value));
        expect_code(
            a.get_workspace(GetWorkspaceRequest {}).await,
            Code::Unauthenticated,
        );
    }
    // The failures did not lock anything: the real key works.
    srv.agents(&srv.admin_key)
        .await
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap();
    srv.finish().await;
}

async fn three_header_styles(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let key = new_key(&srv, "styles", &["agents:read"]).await;
    let id = key.api_key.unwrap().id;
    for auth in [
        Auth::bearer(&key.secret),
        Auth::token(&key.secret),
        Auth::x_api_key(&key.secret),
    ] {
        let mut admin = AdminServiceClient::with_interceptor(srv.channel().await, auth.clone());
        let who = admin
            .get_workspace(GetWorkspaceRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(who.api_key.unwrap().id, id);
        let mut c = AgentServiceClient::with_interceptor(srv.channel().await, auth);
        c.list_agents(ListAgentsRequest::default()).await.unwrap();
    }
    srv.finish().await;
}

async fn scopes_are_enforced(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut root = srv.agents(&srv.admin_key).await;
    root.create_agent(CreateAgentRequest {
        agent: Some(agent("existing")),
    })
    .await
    .unwrap();
    let mut root_admin = srv.admin(&srv.admin_key).await;
    let hook = CreateWebhookRequest {
        url: "https://example.com/h".into(),
        ..Default::default()
    };
    let hook_id = root_admin
        .create_webhook(hook.clone())
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap()
        .id;
    let boot_id = root_admin
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
        .id;

    // agents:read: every read works, every write and every admin RPC but GetWorkspace is denied.
    let reader = new_key(&srv, "reader", &["agents:read"]).await.secret;
    let mut r = srv.agents(&reader).await;
    let deny = Code::PermissionDenied;
    let denied = expect_code(
        r.create_agent(CreateAgentRequest {
            agent: Some(agent("new")),
        })
        .await,
        deny,
    );
    assert!(
        denied.message().contains("agents:write"),
        "names the missing scope: {denied:?}"
    );
    // The scope is checked before the request is looked at.
    expect_code(
        r.create_agent(CreateAgentRequest { agent: None }).await,
        deny,
    );
    let patch = agentry::pb::Agent {
        id: "existing".into(),
        description: "x".into(),
        ..Default::default()
    };
    expect_code(
        r.update_agent(UpdateAgentRequest {
            agent: Some(patch),
            update_mask: None,
        })
        .await,
        deny,
    );
    expect_code(
        r.delete_agent(DeleteAgentRequest {
            id: "existing".into(),
        })
        .await,
        deny,
    );
    expect_code(
        r.hire_agent(HireAgentRequest {
            slug: "echo".into(),
            ..Default::default()
        })
        .await,
        deny,
    );
    r.get_agent(GetAgentRequest {
        id: "existing".into(),
    })
    .await
    .unwrap();
    r.list_agents(ListAgentsRequest::default()).await.unwrap();
    r.batch_get_agents(BatchGetAgentsRequest {
        agent_ids: vec!["existing".into()],
    })
    .await
    .unwrap();
    r.list_agent_versions(ListAgentVersionsRequest {
        id: "existing".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    r.get_agent_version(GetAgentVersionRequest {
        id: "existing".into(),
        version: 1,
    })
    .await
    .unwrap();
    r.list_store_agents(ListStoreAgentsRequest::default())
        .await
        .unwrap();
    r.get_store_agent(GetStoreAgentRequest {
        slug: "echo".into(),
        version: 0,
    })
    .await
    .unwrap();
    r.list_active_agents(ListActiveAgentsRequest::default())
        .await
        .unwrap();
    let mut ra = srv.admin(&reader).await;
    let key_req = CreateApiKeyRequest {
        name: "x".into(),
        scopes: vec!["admin".into()],
    };
    expect_code(ra.create_api_key(key_req.clone()).await, deny);
    expect_code(ra.list_api_keys(ListApiKeysRequest::default()).await, deny);
    expect_code(
        ra.revoke_api_key(RevokeApiKeyRequest {
            id: boot_id.clone(),
        })
        .await,
        deny,
    );
    expect_code(ra.create_webhook(hook.clone()).await, deny);
    expect_code(ra.list_webhooks(ListWebhooksRequest::default()).await, deny);
    expect_code(
        ra.delete_webhook(DeleteWebhookRequest {
            id: hook_id.clone(),
        })
        .await,
        deny,
    );
    let deliveries = ListWebhookDeliveriesRequest {
        webhook_id: hook_id.clone(),
        ..Default::default()
    };
    expect_code(ra.list_webhook_deliveries(deliveries.clone()).await, deny);
    let who = ra
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.api_key.unwrap().scopes, vec!["agents:read".to_owned()]);
    // Nothing the denied calls asked for happened.
    expect_code(
        root.get_agent(GetAgentRequest { id: "new".into() }).await,
        Code::NotFound,
    );
    let got = root
        .get_agent(GetAgentRequest {
            id: "existing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.version, 1);
    let hooks = root_admin
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(hooks.len(), 1);
    let keys = root_admin
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(
        keys.len(),
        2,
        "bootstrap and reader keys only, the bootstrap key not revoked"
    );

    // agents:write without agents:read writes but cannot read.
    let writer = new_key(&srv, "writer", &["agents:write"]).await.secret;
    let mut w = srv.agents(&writer).await;
    w.create_agent(CreateAgentRequest {
        agent: Some(agent("by-writer")),
    })
    .await
    .unwrap();
    let denied = expect_code(
        w.get_agent(GetAgentRequest {
            id: "by-writer".into(),
        })
        .await,
        deny,
    );
    assert!(denied.message().contains("agents:read"), "{denied:?}");
    expect_code(w.list_agents(ListAgentsRequest::default()).await, deny);
    expect_code(
        w.batch_get_agents(BatchGetAgentsRequest {
            agent_ids: vec!["by-writer".into()],
        })
        .await,
        deny,
    );
    expect_code(
        w.list_agent_versions(ListAgentVersionsRequest {
            id: "by-writer".into(),
            ..Default::default()
        })
        .await,
        deny,
    );
    expect_code(
        w.get_agent_version(GetAgentVersionRequest {
            id: "by-writer".into(),
            version: 1,
        })
        .await,
        deny,
    );
    expect_code(
        w.list_store_agents(ListStoreAgentsRequest::default()).await,
        deny,
    );
    expect_code(
        w.list_active_agents(ListActiveAgentsRequest::default())
            .await,
        deny,
    );
    expect_code(
        srv.admin(&writer)
            .await
            .list_api_keys(ListApiKeysRequest::default())
            .await,
        deny,
    );
    w.delete_agent(DeleteAgentRequest {
        id: "by-writer".into(),
    })
    .await
    .unwrap();

    // admin alone manages keys and webhooks but does not imply the agent scopes.
    let admin_only = new_key(&srv, "admin-only", &["admin"]).await.secret;
    expect_code(
        srv.agents(&admin_only)
            .await
            .list_agents(ListAgentsRequest::default())
            .await,
        deny,
    );
    let mut ao = srv.admin(&admin_only).await;
    ao.list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap();
    ao.list_webhook_deliveries(deliveries).await.unwrap();
    srv.finish().await;
}

async fn revoked_key_stops_at_once(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut admin = srv.admin(&srv.admin_key).await;
    let created = new_key(&srv, "short-lived", &["agents:read", "admin"]).await;
    let key = created.api_key.unwrap();
    let mut c = srv.agents(&created.secret).await;
    for _ in 0..3 {
        c.list_agents(ListAgentsRequest::default())
            .await
            .expect("works before revocation (and is cached)");
    }
    let revoked = admin
        .revoke_api_key(RevokeApiKeyRequest { id: key.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.id, key.id);
    let revoke_time = revoked.revoke_time.expect("revoke_time is set");
    let s = expect_code(
        c.list_agents(ListAgentsRequest::default()).await,
        Code::Unauthenticated,
    );
    assert!(s.message().contains("revoked"), "{s:?}");
    for auth in [
        Auth::token(&created.secret),
        Auth::x_api_key(&created.secret),
    ] {
        let mut a = AdminServiceClient::with_interceptor(srv.channel().await, auth);
        expect_code(
            a.get_workspace(GetWorkspaceRequest {}).await,
            Code::Unauthenticated,
        );
    }
    // Revoking again is a no-op that returns the key as it is.
    let again = admin
        .revoke_api_key(RevokeApiKeyRequest { id: key.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revoke_time, Some(revoke_time));
    assert_eq!(again, revoked);
    for id in [
        uuid::Uuid::now_v7().to_string(),
        "not-a-uuid".into(),
        String::new(),
    ] {
        expect_code(
            admin.revoke_api_key(RevokeApiKeyRequest { id }).await,
            Code::NotFound,
        );
    }

    // Revoked keys are listed only on request.
    let boot_id = admin
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
        .id;
    let ids = |include_revoked| {
        let mut admin = admin.clone();
        async move {
            let req = ListApiKeysRequest {
                include_revoked,
                ..Default::default()
            };
            admin
                .list_api_keys(req)
                .await
                .unwrap()
                .into_inner()
                .api_keys
                .into_iter()
                .map(|k| k.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(false).await, vec![boot_id.clone()]);
    assert_eq!(ids(true).await, vec![boot_id, key.id.clone()]);

    // A key that revokes itself is refused on its very next call.
    let selfish = new_key(&srv, "selfish", &["admin"]).await;
    let mut s = srv.admin(&selfish.secret).await;
    s.list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap();
    s.revoke_api_key(RevokeApiKeyRequest {
        id: selfish.api_key.unwrap().id,
    })
    .await
    .unwrap();
    expect_code(
        s.list_api_keys(ListApiKeysRequest::default()).await,
        Code::Unauthenticated,
    );
    admin
        .get_workspace(GetWorkspaceRequest {})
        .await
        .expect("other keys are unaffected");
    srv.finish().await;
}

async fn whoami_and_secrets(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut admin = srv.admin(&srv.admin_key).await;
    let who = admin
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    let ws = who.workspace.unwrap();
    assert_eq!(ws.name, "default");
    assert!(!ws.id.is_empty() && ws.create_time.is_some());
    let key = who.api_key.unwrap();
    assert!(
        key.prefix.starts_with("agk_") && key.prefix.len() > 4,
        "{key:?}"
    );
    assert!(srv.admin_key.starts_with(&key.prefix) && key.prefix.len() < srv.admin_key.len());
    assert_eq!(
        key.scopes.len(),
        8,
        "the bootstrap key has every scope: {:?}",
        key.scopes
    );
    assert!(key.revoke_time.is_none() && key.create_time.is_some());

    let created = new_key(&srv, "ci", &["flows:read", "agents:read"]).await;
    let mut mine = srv.admin(&created.secret).await;
    let who2 = mine
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    let k2 = who2.api_key.unwrap();
    assert_eq!(who2.workspace.unwrap().id, ws.id);
    assert_eq!(
        (k2.name.as_str(), &k2.scopes),
        (
            "ci",
            &vec!["agents:read".to_owned(), "flows:read".to_owned()]
        )
    );
    assert_eq!(Some(k2.clone()), created.api_key);
    assert!(created.secret.starts_with(&k2.prefix));

    // Listing never shows a secret, nor any part of one beyond its public prefix.
    let listed = admin
        .list_api_keys(ListApiKeysRequest {
            include_revoked: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let text = format!("{:?}", listed.into_inner());
    for secret in [&srv.admin_key, &created.secret] {
        assert!(!text.contains(secret.as_str()), "a secret leaked: {text}");
        assert!(
            !text.contains(&secret[secret.len() - 20..]),
            "part of a secret leaked: {text}"
        );
    }
    assert!(text.contains(&key.prefix) && text.contains(&k2.prefix));
    srv.finish().await;
}

async fn runs_and_flows_need_a_key(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut runs = RunServiceClient::with_interceptor(srv.channel().await, Auth::none());
    let run = || GetRunRequest {
        run_id: uuid::Uuid::now_v7().to_string(),
    };
    expect_code(runs.get_run(run()).await, Code::Unauthenticated);
    expect_code(
        runs.list_runs(ListRunsRequest::default()).await,
        Code::Unauthenticated,
    );
    let mut flows = FlowServiceClient::with_interceptor(srv.channel().await, Auth::none());
    expect_code(
        flows
            .get_flow(GetFlowRequest {
                id: "f".into(),
                version: 0,
            })
            .await,
        Code::Unauthenticated,
    );
    let mut bad = RunServiceClient::with_interceptor(
        srv.channel().await,
        Auth::bearer(&agentry::auth::keys::generate()),
    );
    expect_code(bad.get_run(run()).await, Code::Unauthenticated);

    // With a key: RunService answers (a run that does not exist is NOT_FOUND, the list is empty).
    expect_code(
        srv.runs(&srv.admin_key).await.get_run(run()).await,
        Code::NotFound,
    );
    let listed = srv
        .runs(&srv.admin_key)
        .await
        .list_runs(ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.runs.is_empty());
    // A key without agents:read cannot read runs.
    let admin_only = srv.workspace_key("admins-only", "admin").await;
    expect_code(
        srv.runs(&admin_only).await.get_run(run()).await,
        Code::PermissionDenied,
    );
    let get_flow = GetFlowRequest {
        id: "f".into(),
        version: 0,
    };
    expect_code(
        srv.flows(&srv.admin_key)
            .await
            .get_flow(get_flow.clone())
            .await,
        Code::NotFound,
    );
    // A key without flows:read cannot read flows.
    expect_code(
        srv.flows(&admin_only).await.get_flow(get_flow).await,
        Code::PermissionDenied,
    );
    srv.finish().await;
}

on_both_backends!(
    missing_malformed_and_unknown_keys,
    three_header_styles,
    scopes_are_enforced,
    revoked_key_stops_at_once,
    whoami_and_secrets,
    runs_and_flows_need_a_key,
);
