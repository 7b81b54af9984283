//! Workspace isolation: a key of workspace B cannot read, list, change or delete anything of workspace A
//! through any RPC, and the NOT_FOUND it gets is indistinguishable from that of an id that never existed.

mod common;

use agentry::pb::{
    Agent, BatchGetAgentsRequest, CreateAgentRequest, CreateApiKeyRequest, CreateWebhookRequest,
    DeleteAgentRequest, DeleteWebhookRequest, GetAgentRequest, GetAgentVersionRequest,
    GetStoreAgentRequest, GetWorkspaceRequest, HireAgentRequest, ListActiveAgentsRequest,
    ListAgentVersionsRequest, ListAgentsRequest, ListApiKeysRequest, ListStoreAgentsRequest,
    ListWebhookDeliveriesRequest, ListWebhooksRequest, RevokeApiKeyRequest, UpdateAgentRequest,
    Visibility, agent_service_client::AgentServiceClient,
};
use common::{Auth, Backend, TestServer, agent, expect_code};
use pbjson_types::FieldMask;
use tonic::{Code, Response, Status, service::interceptor::InterceptedService, transport::Channel};

type Agents = AgentServiceClient<InterceptedService<Channel, Auth>>;

const ALL_SCOPES: &str = "agents:read,agents:write,agents:trigger,agents:approve,\
                          flows:read,flows:write,flows:trigger,admin";

/// Workspace A ("default", the harness's admin key) with a private agent `secret-a` at version 2 and a
/// public agent `public-a`; workspace B ("other") with an all-scopes key.
async fn world(backend: &Backend) -> (TestServer, String) {
    let srv = TestServer::start(backend).await;
    let b_key = srv.workspace_key("other", ALL_SCOPES).await;
    let mut a = srv.agents(&srv.admin_key).await;
    let secret = Agent {
        description: "A's secret".into(),
        tags: vec!["t".into()],
        ..agent("secret-a")
    };
    create(&mut a, secret).await;
    let v2 = a
        .update_agent(describe("secret-a", "A's secret v2"))
        .await
        .unwrap();
    assert_eq!(v2.into_inner().version, 2);
    create(
        &mut a,
        Agent {
            visibility: Visibility::Public as i32,
            ..agent("public-a")
        },
    )
    .await;
    (srv, b_key)
}

async fn create(c: &mut Agents, a: Agent) -> Agent {
    c.create_agent(CreateAgentRequest { agent: Some(a) })
        .await
        .unwrap()
        .into_inner()
}

/// UpdateAgent of `id`'s description.
fn describe(id: &str, description: &str) -> UpdateAgentRequest {
    let patch = Agent {
        id: id.into(),
        description: description.into(),
        ..Default::default()
    };
    let mask = FieldMask {
        paths: vec!["description".into()],
    };
    UpdateAgentRequest {
        agent: Some(patch),
        update_mask: Some(mask),
    }
}

fn get(id: &str) -> GetAgentRequest {
    GetAgentRequest { id: id.into() }
}

fn version(id: &str, version: i64) -> GetAgentVersionRequest {
    GetAgentVersionRequest {
        id: id.into(),
        version,
    }
}

fn versions(id: &str, limit: i32, cursor: String) -> ListAgentVersionsRequest {
    ListAgentVersionsRequest {
        id: id.into(),
        limit,
        cursor,
    }
}

fn ids<'a>(it: impl IntoIterator<Item = &'a Agent>) -> Vec<&'a str> {
    it.into_iter().map(|a| a.id.as_str()).collect()
}

/// Both calls fail with NOT_FOUND, with the same message once each id is blanked out.
#[track_caller]
fn same_not_found<T: std::fmt::Debug>(
    existing: (Result<Response<T>, Status>, &str),
    missing: (Result<Response<T>, Status>, &str),
) {
    let e = expect_code(existing.0, Code::NotFound);
    let m = expect_code(missing.0, Code::NotFound);
    assert_eq!(
        e.message().replace(existing.1, "<ID>"),
        m.message().replace(missing.1, "<ID>"),
        "another workspace's resource must look exactly like a missing one"
    );
    assert_eq!(e.details(), m.details());
}

async fn agent_reads_are_isolated(backend: Backend) {
    let (srv, b_key) = world(&backend).await;
    let mut b = srv.agents(&b_key).await;
    let (mine, none) = ("secret-a", "secret-z");
    same_not_found(
        (b.get_agent(get(mine)).await, mine),
        (b.get_agent(get(none)).await, none),
    );
    let (lv_a, lv_n) = (
        versions(mine, 0, String::new()),
        versions(none, 0, String::new()),
    );
    same_not_found(
        (b.list_agent_versions(lv_a).await, mine),
        (b.list_agent_versions(lv_n).await, none),
    );
    for v in [1, 2] {
        let (va, vn) = (version(mine, v), version(none, v));
        same_not_found(
            (b.get_agent_version(va).await, mine),
            (b.get_agent_version(vn).await, none),
        );
    }
    let asked = vec![mine.to_owned(), "public-a".to_owned(), none.to_owned()];
    let batch = b
        .batch_get_agents(BatchGetAgentsRequest {
            agent_ids: asked.clone(),
        })
        .await
        .unwrap();
    let batch = batch.into_inner();
    assert!(batch.agents.is_empty(), "{batch:?}");
    assert_eq!(batch.missing_ids, asked);

    // Lists of B never show A's agents, with or without filters.
    let listed = b
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.agents.is_empty() && listed.next_cursor.is_empty(),
        "{listed:?}"
    );
    let filtered = ListAgentsRequest {
        tag: "t".into(),
        query: "secret".into(),
        ..Default::default()
    };
    assert!(
        b.list_agents(filtered)
            .await
            .unwrap()
            .into_inner()
            .agents
            .is_empty()
    );
    let active = b
        .list_active_agents(ListActiveAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(active.agents.is_empty(), "{active:?}");

    // A's cursors lead B nowhere but to its own data.
    let mut a = srv.agents(&srv.admin_key).await;
    let first = ListAgentsRequest {
        limit: 1,
        ..Default::default()
    };
    let a_page = a.list_agents(first).await.unwrap().into_inner();
    assert_eq!(ids(&a_page.agents), vec![mine], "A sees its own agents");
    let a_versions = a
        .list_agent_versions(versions(mine, 1, String::new()))
        .await
        .unwrap()
        .into_inner();
    create(&mut b, agent("b-own")).await;
    let after = ListAgentsRequest {
        cursor: a_page.next_cursor,
        ..Default::default()
    };
    assert_eq!(
        ids(&b.list_agents(after).await.unwrap().into_inner().agents),
        vec!["b-own"]
    );
    let leaked = b
        .list_agent_versions(versions(mine, 10, a_versions.next_cursor))
        .await
        .unwrap();
    assert!(
        leaked.get_ref().versions.is_empty(),
        "A's versions leaked: {leaked:?}"
    );
    let active = b
        .list_active_agents(ListActiveAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ids(active.agents.iter().filter_map(|a| a.agent.as_ref())),
        vec!["b-own"]
    );

    // The store shows A's public agent to B, never its private one.
    let store = ListStoreAgentsRequest {
        limit: 100,
        ..Default::default()
    };
    let slugs: Vec<String> = b
        .list_store_agents(store)
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .map(|s| s.slug)
        .collect();
    assert!(slugs.contains(&"default.public-a".to_owned()), "{slugs:?}");
    assert!(
        !slugs
            .iter()
            .any(|s| s.contains("secret-a") || s.contains("b-own")),
        "{slugs:?}"
    );
    let gs = |slug: &str| GetStoreAgentRequest {
        slug: slug.into(),
        version: 0,
    };
    same_not_found(
        (b.get_store_agent(gs("default.secret-a")).await, "secret-a"),
        (b.get_store_agent(gs("default.secret-z")).await, "secret-z"),
    );
    srv.finish().await;
}

async fn agent_writes_are_isolated(backend: Backend) {
    let (srv, b_key) = world(&backend).await;
    let mut b = srv.agents(&b_key).await;
    let mut a = srv.agents(&srv.admin_key).await;
    let before = a.get_agent(get("secret-a")).await.unwrap().into_inner();
    let (mine, none) = ("secret-a", "secret-z");
    let upd = |id: &str| describe(id, "hijacked");
    same_not_found(
        (b.update_agent(upd(mine)).await, mine),
        (b.update_agent(upd(none)).await, none),
    );
    let del = |id: &str| DeleteAgentRequest { id: id.into() };
    same_not_found(
        (b.delete_agent(del(mine)).await, mine),
        (b.delete_agent(del(none)).await, none),
    );
    expect_code(b.delete_agent(del("public-a")).await, Code::NotFound);
    expect_code(b.update_agent(upd("public-a")).await, Code::NotFound);
    assert_eq!(
        a.get_agent(get(mine)).await.unwrap().into_inner(),
        before,
        "A's agent is untouched"
    );
    assert_eq!(
        a.get_agent(get("public-a"))
            .await
            .unwrap()
            .into_inner()
            .version,
        1
    );

    // The same id lives independently in both workspaces.
    let b_own = create(
        &mut b,
        Agent {
            description: "B's own".into(),
            ..agent(mine)
        },
    )
    .await;
    assert_eq!(
        (b_own.id.as_str(), b_own.version, b_own.description.as_str()),
        (mine, 1, "B's own")
    );
    let b_updated = b.update_agent(upd(mine)).await.unwrap().into_inner();
    assert_eq!(
        (b_updated.version, b_updated.description.as_str()),
        (2, "hijacked")
    );
    assert_eq!(a.get_agent(get(mine)).await.unwrap().into_inner(), before);
    let a_v2 = a
        .get_agent_version(version(mine, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a_v2.description, "A's secret v2");
    let b_v1 = b
        .get_agent_version(version(mine, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b_v1.description, "B's own");
    let b_list = b
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b_list.agents, vec![b_updated]);
    b.delete_agent(del(mine)).await.unwrap();
    assert_eq!(a.get_agent(get(mine)).await.unwrap().into_inner(), before);
    // A deletes its own: B's deleted copy stays deleted, and each keeps its own versions.
    a.delete_agent(del(mine)).await.unwrap();
    expect_code(b.get_agent(get(mine)).await, Code::NotFound);
    let b_v2 = b
        .get_agent_version(version(mine, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b_v2.description, "hijacked");
    let a_v1 = a
        .get_agent_version(version(mine, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a_v1.description, "A's secret");
    srv.finish().await;
}

async fn hire_across_workspaces(backend: Backend) {
    let (srv, b_key) = world(&backend).await;
    let mut b = srv.agents(&b_key).await;
    let hire = |slug: &str| HireAgentRequest {
        slug: slug.into(),
        ..Default::default()
    };
    same_not_found(
        (b.hire_agent(hire("default.secret-a")).await, "secret-a"),
        (b.hire_agent(hire("default.secret-z")).await, "secret-z"),
    );
    let at_v1 = HireAgentRequest {
        version: 1,
        ..hire("default.secret-a")
    };
    expect_code(b.hire_agent(at_v1).await, Code::NotFound);
    expect_code(b.get_agent(get("default-secret-a")).await, Code::NotFound);

    let hired = b
        .hire_agent(hire("default.public-a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hired.id, "default-public-a");
    assert_eq!(
        hired.visibility,
        Visibility::Private as i32,
        "a hire is private to the hirer"
    );
    assert_eq!(hired.hire.as_ref().unwrap().source_slug, "default.public-a");
    assert_eq!(
        b.get_agent(get("default-public-a"))
            .await
            .unwrap()
            .into_inner(),
        hired
    );
    let active = b
        .list_active_agents(ListActiveAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ids(active.agents.iter().filter_map(|a| a.agent.as_ref())),
        vec!["default-public-a"]
    );
    // The hire belongs to B alone: A does not see B's copy, and its own agents are unchanged.
    let mut a = srv.agents(&srv.admin_key).await;
    expect_code(a.get_agent(get("default-public-a")).await, Code::NotFound);
    let a_list = a
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&a_list.agents), vec!["secret-a", "public-a"]);
    assert_eq!(a_list.agents[1].version, 1);
    // A's public agent made private is out of B's reach.
    let private = UpdateAgentRequest {
        agent: Some(Agent {
            id: "public-a".into(),
            visibility: Visibility::Private as i32,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["visibility".into()],
        }),
    };
    a.update_agent(private).await.unwrap();
    let again = HireAgentRequest {
        agent_id: "second".into(),
        ..hire("default.public-a")
    };
    expect_code(b.hire_agent(again).await, Code::NotFound);
    srv.finish().await;
}

async fn admin_resources_are_isolated(backend: Backend) {
    let (srv, b_key) = world(&backend).await;
    let mut a = srv.admin(&srv.admin_key).await;
    let mut b = srv.admin(&b_key).await;
    let a_boot = a
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    let extra = CreateApiKeyRequest {
        name: "a-extra".into(),
        scopes: vec!["agents:read".into()],
    };
    let created = a.create_api_key(extra).await.unwrap().into_inner();
    let a_extra = created.api_key.unwrap();
    let b_self = b
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b_self.workspace.unwrap().name, "other");

    // Keys: B cannot revoke A's keys, and each side lists only its own.
    let missing = uuid::Uuid::now_v7().to_string();
    let revoke = |id: &str| RevokeApiKeyRequest { id: id.into() };
    for id in [&a_boot.id, &a_extra.id] {
        same_not_found(
            (b.revoke_api_key(revoke(id)).await, id),
            (b.revoke_api_key(revoke(&missing)).await, &missing),
        );
    }
    a.get_workspace(GetWorkspaceRequest {})
        .await
        .expect("A's admin key still works");
    let mut extra = srv.agents(&created.secret).await;
    extra
        .list_agents(ListAgentsRequest::default())
        .await
        .expect("A's other key still works");
    let all = ListApiKeysRequest {
        include_revoked: true,
        limit: 100,
        ..Default::default()
    };
    let key_ids = |r: Result<Response<agentry::pb::ListApiKeysResponse>, Status>| -> Vec<String> {
        r.unwrap()
            .into_inner()
            .api_keys
            .into_iter()
            .map(|k| k.id)
            .collect()
    };
    assert_eq!(
        key_ids(a.list_api_keys(all.clone()).await),
        vec![a_boot.id, a_extra.id]
    );
    let b_keys = key_ids(b.list_api_keys(all).await);
    assert_eq!(b_keys, vec![b_self.api_key.unwrap().id]);

    // Webhooks: B can neither delete nor inspect A's webhook, nor list it.
    let hook = |url: &str| CreateWebhookRequest {
        url: url.into(),
        ..Default::default()
    };
    let hook_id = a
        .create_webhook(hook("https://a.example.com/h"))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap()
        .id;
    let missing = uuid::Uuid::now_v7().to_string();
    let deliveries = |id: &str| ListWebhookDeliveriesRequest {
        webhook_id: id.into(),
        ..Default::default()
    };
    same_not_found(
        (
            b.list_webhook_deliveries(deliveries(&hook_id)).await,
            &hook_id,
        ),
        (
            b.list_webhook_deliveries(deliveries(&missing)).await,
            &missing,
        ),
    );
    let delete = |id: &str| DeleteWebhookRequest { id: id.into() };
    same_not_found(
        (b.delete_webhook(delete(&hook_id)).await, &hook_id),
        (b.delete_webhook(delete(&missing)).await, &missing),
    );
    assert!(
        b.list_webhooks(ListWebhooksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .webhooks
            .is_empty()
    );
    let a_hooks = a
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(
        a_hooks.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        vec![hook_id.as_str()]
    );
    a.list_webhook_deliveries(deliveries(&hook_id))
        .await
        .expect("A still reads its webhook");

    // And the other way round: A cannot touch B's key or webhook.
    let b_hook = b
        .create_webhook(hook("https://b.example.com/h"))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    expect_code(a.delete_webhook(delete(&b_hook.id)).await, Code::NotFound);
    expect_code(a.revoke_api_key(revoke(&b_keys[0])).await, Code::NotFound);
    b.get_workspace(GetWorkspaceRequest {})
        .await
        .expect("B's key still works");
    b.delete_webhook(delete(&b_hook.id))
        .await
        .expect("B deletes its own webhook");
    srv.finish().await;
}

on_both_backends!(
    agent_reads_are_isolated,
    agent_writes_are_isolated,
    hire_across_workspaces,
    admin_resources_are_isolated,
);
