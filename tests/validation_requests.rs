//! Validation of request-level fields (ids, batch sizes, limits, cursors, versions, hire bindings, API
//! keys, webhooks) and of request sizes: INVALID_ARGUMENT naming the exact field in its
//! `google.rpc.BadRequest` detail, and a clear refusal of bodies over 4 MiB that leaves the server serving.

mod common;

use agentry::pb::{
    Agent, BatchGetAgentsRequest as BatchGet, CreateAgentRequest, CreateApiKeyRequest,
    CreateWebhookRequest, DeleteAgentRequest, GetAgentRequest,
    GetAgentVersionRequest as GetVersion, GetStoreAgentRequest as GetStore, GetWorkspaceRequest,
    HireAgentRequest, HireBindings, ListActiveAgentsRequest as ListActive,
    ListAgentVersionsRequest as ListVersions, ListAgentsRequest, ListApiKeysRequest,
    ListStoreAgentsRequest as ListStore, ListWebhookDeliveriesRequest, ListWebhooksRequest,
    UpdateAgentRequest, agent_service_client::AgentServiceClient,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use common::{Auth, Backend, TestServer, agent, expect_code};
use pbjson_types::Struct;
use serde_json::json;
use tonic::{Code, Response, Status, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

type Agents = AgentServiceClient<InterceptedService<Channel, Auth>>;

/// Asserts INVALID_ARGUMENT whose BadRequest detail (and message) names exactly `field`.
#[track_caller]
fn bad_field<T: std::fmt::Debug>(res: Result<Response<T>, Status>, field: &str) {
    let s = expect_code(res, Code::InvalidArgument);
    let br = s
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest detail: {s:?}"));
    let got: Vec<&str> = br
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        got.first().copied(),
        Some(field),
        "violations {got:?} of {s:?}"
    );
    assert!(!br.field_violations[0].description.is_empty(), "{s:?}");
    assert!(
        s.message().contains(field),
        "the message names the field: {s:?}"
    );
}

fn obj(v: serde_json::Value) -> Option<Struct> {
    Some(serde_json::from_value(v).expect("a JSON object"))
}

/// The minimal valid agent `id`, changed by `f`.
fn with(id: &str, f: impl FnOnce(&mut Agent)) -> Agent {
    let mut a = agent(id);
    f(&mut a);
    a
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Creates each agent and asserts that its failure names its field.
async fn refuse_all(c: &mut Agents, cases: Vec<(Agent, &str)>) {
    for (a, field) in cases {
        let what = format!("{a:?}");
        let res = c.create_agent(CreateAgentRequest { agent: Some(a) }).await;
        assert!(res.is_err(), "accepted: {}", &what[..what.len().min(300)]);
        bad_field(res, field);
    }
}

/// Creates each agent and asserts it is accepted (the positive controls of the rules).
async fn accept_all(c: &mut Agents, agents: Vec<Agent>) {
    for a in agents {
        let id = a.id.clone();
        if let Err(s) = c.create_agent(CreateAgentRequest { agent: Some(a) }).await {
            panic!("agent {id:?} should be valid: {s:?}");
        }
    }
}

async fn read_request_fields(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    accept_all(&mut c, vec![agent("a0"), agent("a1"), agent("a2")]).await;
    for d in ["two", "three"] {
        let patch = Agent {
            id: "a0".into(),
            description: d.into(),
            ..Default::default()
        };
        c.update_agent(UpdateAgentRequest {
            agent: Some(patch),
            update_mask: None,
        })
        .await
        .unwrap();
    }
    let versions = |id: &str, limit, cursor: &str| ListVersions {
        id: id.into(),
        limit,
        cursor: cursor.into(),
    };
    for id in ["", "Bad", "a.b", &"a".repeat(256)] {
        bad_field(c.get_agent(GetAgentRequest { id: id.into() }).await, "id");
        bad_field(
            c.delete_agent(DeleteAgentRequest { id: id.into() }).await,
            "id",
        );
        bad_field(c.list_agent_versions(versions(id, 0, "")).await, "id");
        bad_field(
            c.get_agent_version(GetVersion {
                id: id.into(),
                version: 1,
            })
            .await,
            "id",
        );
    }
    let ids = |n: usize| (0..n).map(|i| format!("x{i}")).collect::<Vec<_>>();
    bad_field(
        c.batch_get_agents(BatchGet { agent_ids: vec![] }).await,
        "agent_ids",
    );
    bad_field(
        c.batch_get_agents(BatchGet {
            agent_ids: ids(101),
        })
        .await,
        "agent_ids",
    );
    bad_field(
        c.batch_get_agents(BatchGet {
            agent_ids: strings(&["a0", "Bad"]),
        })
        .await,
        "agent_ids[1]",
    );
    let ok = c
        .batch_get_agents(BatchGet {
            agent_ids: ids(100),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.missing_ids.len(), 100);

    let list = |limit, cursor: &str| ListAgentsRequest {
        limit,
        cursor: cursor.into(),
        ..Default::default()
    };
    let active = |limit, cursor: &str| ListActive {
        limit,
        cursor: cursor.into(),
    };
    let store = |limit, cursor: &str| ListStore {
        limit,
        cursor: cursor.into(),
        ..Default::default()
    };
    for limit in [-1, 101, i32::MIN, i32::MAX] {
        bad_field(c.list_agents(list(limit, "")).await, "limit");
        bad_field(
            c.list_agent_versions(versions("a0", limit, "")).await,
            "limit",
        );
        bad_field(c.list_active_agents(active(limit, "")).await, "limit");
        bad_field(c.list_store_agents(store(limit, "")).await, "limit");
    }
    let query = ListAgentsRequest {
        query: "q".repeat(201),
        ..Default::default()
    };
    bad_field(c.list_agents(query).await, "query");

    // Genuine cursors of each list, to be used on the wrong one.
    let agents_cursor = c
        .list_agents(list(1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_cursor;
    let versions_cursor = c
        .list_agent_versions(versions("a0", 1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_cursor;
    assert!(!agents_cursor.is_empty() && !versions_cursor.is_empty());
    let junk = [
        "garbage".to_owned(),
        "!!!".to_owned(),
        URL_SAFE_NO_PAD.encode("hello world"),
        URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00, 0x80]),
        URL_SAFE_NO_PAD.encode("agents\u{1f}not-a-time\u{1f}a0"),
        URL_SAFE_NO_PAD.encode("agents\u{1f}12"),
        "A".repeat(5000),
    ];
    for cursor in junk.iter().chain([&versions_cursor]) {
        bad_field(c.list_agents(list(0, cursor)).await, "cursor");
        bad_field(c.list_active_agents(active(0, cursor)).await, "cursor");
        bad_field(c.list_store_agents(store(0, cursor)).await, "cursor");
    }
    let version_junk = [
        URL_SAFE_NO_PAD.encode("versions\u{1f}abc"),
        URL_SAFE_NO_PAD.encode("versions"),
    ];
    for cursor in junk.iter().chain(&version_junk).chain([&agents_cursor]) {
        bad_field(
            c.list_agent_versions(versions("a0", 1, cursor)).await,
            "cursor",
        );
    }
    // The genuine cursors keep working where they belong.
    assert_eq!(
        c.list_agents(list(0, &agents_cursor))
            .await
            .unwrap()
            .into_inner()
            .agents
            .len(),
        2
    );
    let rest = c
        .list_agent_versions(versions("a0", 0, &versions_cursor))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1]
    );

    for version in [0, -1] {
        bad_field(
            c.get_agent_version(GetVersion {
                id: "a0".into(),
                version,
            })
            .await,
            "version",
        );
    }
    srv.finish().await;
}

async fn store_and_hire_fields(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let hire = |slug: &str, agent_id: &str, bindings: Option<HireBindings>| HireAgentRequest {
        slug: slug.into(),
        version: 0,
        agent_id: agent_id.into(),
        bindings,
    };
    for slug in ["", "Bad Slug", "a.B", "a.b.c", ".x", "x."] {
        bad_field(c.hire_agent(hire(slug, "", None)).await, "slug");
        bad_field(
            c.get_store_agent(GetStore {
                slug: slug.into(),
                version: 0,
            })
            .await,
            "slug",
        );
    }
    bad_field(
        c.get_store_agent(GetStore {
            slug: "echo".into(),
            version: -1,
        })
        .await,
        "version",
    );
    bad_field(
        c.hire_agent(HireAgentRequest {
            version: -1,
            ..hire("echo", "", None)
        })
        .await,
        "version",
    );
    for id in ["Bad Id", "-x", &"a".repeat(256)] {
        bad_field(c.hire_agent(hire("echo", id, None)).await, "agent_id");
    }
    let ids = |n: usize| (0..n).map(|i| format!("conn-{i}")).collect::<Vec<_>>();
    let connectors = |v: Vec<String>| {
        Some(HireBindings {
            connector_ids: v,
            ..Default::default()
        })
    };
    let knowledge = |v: Vec<String>| {
        Some(HireBindings {
            knowledge_ids: v,
            ..Default::default()
        })
    };
    let cases = [
        (connectors(ids(101)), "bindings.connector_ids"),
        (
            connectors(strings(&["ok", ""])),
            "bindings.connector_ids[1]",
        ),
        (knowledge(ids(101)), "bindings.knowledge_ids"),
        (
            knowledge(vec!["k".repeat(256)]),
            "bindings.knowledge_ids[0]",
        ),
    ];
    for (bindings, field) in cases {
        bad_field(c.hire_agent(hire("echo", "", bindings)).await, field);
    }
    // Nothing was hired by the refused requests; 100 connector ids are fine.
    expect_code(
        c.get_agent(GetAgentRequest { id: "echo".into() }).await,
        Code::NotFound,
    );
    let hired = c
        .hire_agent(hire("echo", "", connectors(ids(100))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hired.id, "echo");
    srv.finish().await;
}

async fn admin_fields(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut a = srv.admin(&srv.admin_key).await;
    let key = |name: &str, scopes: &[&str]| CreateApiKeyRequest {
        name: name.into(),
        scopes: strings(scopes),
    };
    bad_field(a.create_api_key(key("k", &["nope"])).await, "scopes[0]");
    bad_field(
        a.create_api_key(key("k", &["agents:read", "agents:delete"]))
            .await,
        "scopes[1]",
    );
    bad_field(
        a.create_api_key(key("k", &["agents:read", ""])).await,
        "scopes[1]",
    );
    bad_field(a.create_api_key(key("k", &[])).await, "scopes");
    bad_field(
        a.create_api_key(key(&"n".repeat(256), &["admin"])).await,
        "name",
    );
    a.create_api_key(key(&"é".repeat(255), &["admin"]))
        .await
        .unwrap();
    let keys = |limit, cursor: &str| ListApiKeysRequest {
        limit,
        cursor: cursor.into(),
        include_revoked: true,
    };
    bad_field(a.list_api_keys(keys(101, "")).await, "limit");
    bad_field(a.list_api_keys(keys(-1, "")).await, "limit");
    bad_field(a.list_api_keys(keys(0, "garbage")).await, "cursor");

    let hook = |url: &str, types: &[&str], secret: &str| CreateWebhookRequest {
        url: url.into(),
        event_types: strings(types),
        secret: secret.into(),
    };
    let long_url = format!("https://example.com/{}", "p".repeat(2048));
    let urls = [
        "ftp://example.com/h",
        "http://",
        "https://",
        "http://exa mple.com/h",
        "example.com",
        "",
    ];
    for url in urls.iter().chain(&["https:///path", long_url.as_str()]) {
        bad_field(a.create_webhook(hook(url, &[], "")).await, "url");
    }
    let url = "https://example.com/h";
    bad_field(
        a.create_webhook(hook(url, &["run.nope"], "")).await,
        "event_types[0]",
    );
    bad_field(
        a.create_webhook(hook(url, &["run.completed", "agent.created"], ""))
            .await,
        "event_types[1]",
    );
    let short = format!("whsec_{}", STANDARD.encode([7u8; 8]));
    for secret in ["nope", "whsec_", "whsec_!!!not base64!!!", &short] {
        bad_field(a.create_webhook(hook(url, &[], secret)).await, "secret");
    }
    assert!(
        a.list_webhooks(ListWebhooksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .webhooks
            .is_empty()
    );
    let id = a
        .create_webhook(hook(url, &["run.*"], ""))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap()
        .id;
    bad_field(
        a.list_webhooks(ListWebhooksRequest {
            limit: 101,
            cursor: String::new(),
        })
        .await,
        "limit",
    );
    bad_field(
        a.list_webhooks(ListWebhooksRequest {
            limit: 0,
            cursor: "garbage".into(),
        })
        .await,
        "cursor",
    );
    let ld = |limit, cursor: &str| ListWebhookDeliveriesRequest {
        webhook_id: id.clone(),
        limit,
        cursor: cursor.into(),
    };
    bad_field(a.list_webhook_deliveries(ld(101, "")).await, "limit");
    bad_field(a.list_webhook_deliveries(ld(0, "garbage")).await, "cursor");
    srv.finish().await;
}

async fn request_size_limits(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    // Over 4 MiB: refused by the transport before any handler runs.
    let huge = with("huge", |a| a.template = "t".repeat(5 << 20));
    let s = expect_code(
        c.create_agent(CreateAgentRequest { agent: Some(huge) })
            .await,
        Code::OutOfRange,
    );
    assert!(s.message().contains("too large"), "a clear message: {s:?}");
    // The server, and this very connection, still answer.
    accept_all(&mut c, vec![agent("after-huge")]).await;
    srv.admin(&srv.admin_key)
        .await
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap();

    // Under 4 MiB but over the 1 MiB definition limit: refused by the agent size rule.
    let blob = |n: usize| obj(json!({ "blob": "m".repeat(n) }));
    refuse_all(
        &mut c,
        vec![(with("big", |a| a.metadata = blob(3 << 19)), "agent")],
    )
    .await;
    let patch = Agent {
        id: "after-huge".into(),
        metadata: blob(3 << 19),
        ..Default::default()
    };
    bad_field(
        c.update_agent(UpdateAgentRequest {
            agent: Some(patch),
            update_mask: None,
        })
        .await,
        "agent",
    );
    expect_code(
        c.get_agent(GetAgentRequest { id: "big".into() }).await,
        Code::NotFound,
    );
    // Just under the limit is accepted.
    accept_all(&mut c, vec![with("big", |a| a.metadata = blob(1_000_000))]).await;
    srv.finish().await;
}

on_both_backends!(
    read_request_fields,
    store_and_hire_fields,
    admin_fields,
    request_size_limits,
);
