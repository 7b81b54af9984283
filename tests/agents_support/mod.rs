//! Helpers shared by the AgentService list, store and hire tests: typed clients, walking every page of
//! a list, and the built-in store agents as shipped in `store/*.json`.
#![allow(dead_code)]

use agentry::pb::{
    Agent, CreateAgentRequest, GetStoreAgentRequest, ListAgentsRequest, ListStoreAgentsRequest,
    StoreAgent, UpdateAgentRequest, Visibility, agent_service_client::AgentServiceClient,
};
use pbjson_types::FieldMask;
use serde_json::Value;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::common::{Auth, agent};

pub type Client = AgentServiceClient<InterceptedService<Channel, Auth>>;

pub fn json_struct(v: serde_json::Value) -> pbjson_types::Struct {
    serde_json::from_value(v).expect("a JSON object")
}

/// Sort key of the list: (create_time, id).
pub fn key(a: &Agent) -> (i64, i32, String) {
    let t = a.create_time.expect("create_time");
    (t.seconds, t.nanos, a.id.clone())
}

/// Pages through ListAgents with `req` (its cursor is overwritten); returns every agent seen in order
/// and the sizes of the pages. Asserts the order is strictly increasing and the walk ends.
pub async fn walk_agents(c: &mut Client, mut req: ListAgentsRequest) -> (Vec<Agent>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    req.cursor.clear();
    for _ in 0..1000 {
        let page = c.list_agents(req.clone()).await.expect("list").into_inner();
        sizes.push(page.agents.len());
        all.extend(page.agents);
        if page.next_cursor.is_empty() {
            for w in all.windows(2) {
                assert!(
                    key(&w[0]) < key(&w[1]),
                    "list out of (create_time, id) order: {} then {}",
                    w[0].id,
                    w[1].id
                );
            }
            return (all, sizes);
        }
        req.cursor = page.next_cursor;
    }
    panic!("pagination did not end after 1000 pages");
}

pub fn ids(agents: &[Agent]) -> Vec<String> {
    agents.iter().map(|a| a.id.clone()).collect()
}

pub async fn list_ids(c: &mut Client, req: ListAgentsRequest) -> Vec<String> {
    let (all, _) = walk_agents(c, req).await;
    let mut v = ids(&all);
    v.sort();
    v
}

pub fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// The built-in agents as shipped: (slug, parsed JSON), sorted by slug.
pub fn builtins() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/store");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("store/") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "json") {
            let slug = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            out.push((slug, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 5, "the store ships at least 5 agents");
    out
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Slugs of the built-ins for which `keep` holds.
pub fn builtin_slugs(keep: impl Fn(&Value) -> bool) -> Vec<String> {
    builtins()
        .into_iter()
        .filter(|(_, j)| keep(j))
        .map(|(s, _)| s)
        .collect()
}

/// Every store entry for `req` (cursor overwritten), and the page sizes.
pub async fn walk_store(
    c: &mut Client,
    mut req: ListStoreAgentsRequest,
) -> (Vec<StoreAgent>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    req.cursor.clear();
    for _ in 0..500 {
        let page = c
            .list_store_agents(req.clone())
            .await
            .expect("list store")
            .into_inner();
        sizes.push(page.agents.len());
        all.extend(page.agents);
        if page.next_cursor.is_empty() {
            return (all, sizes);
        }
        req.cursor = page.next_cursor;
    }
    panic!("store pagination did not end");
}

pub async fn store_slugs(c: &mut Client, req: ListStoreAgentsRequest) -> Vec<String> {
    walk_store(c, req)
        .await
        .0
        .into_iter()
        .map(|s| s.slug)
        .collect()
}

pub async fn get_store(
    c: &mut Client,
    slug: &str,
    version: i64,
) -> Result<StoreAgent, tonic::Status> {
    c.get_store_agent(GetStoreAgentRequest {
        slug: slug.into(),
        version,
    })
    .await
    .map(|r| r.into_inner())
}

pub fn public(id: &str) -> Agent {
    Agent {
        visibility: Visibility::Public as i32,
        ..agent(id)
    }
}

pub async fn create(c: &mut Client, a: Agent) -> Agent {
    c.create_agent(CreateAgentRequest { agent: Some(a) })
        .await
        .expect("create")
        .into_inner()
}

pub async fn patch(c: &mut Client, a: Agent, paths: &[&str]) -> Agent {
    let mask = FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    };
    c.update_agent(UpdateAgentRequest {
        agent: Some(a),
        update_mask: Some(mask),
    })
    .await
    .expect("update")
    .into_inner()
}
