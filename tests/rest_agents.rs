//! AgentService over the REST shim against a real server: CRUD on `/v1/agents`, the seed paths
//! (`/v2/agents...` of seed 002, `/api/v1/agents...` of seed 000, seed 004's PATCH), versions, the store
//! and hires, active agents, and proto3 JSON encodings.

mod common;
mod rest_support;

use common::{Backend, TestServer};
use http::Method;
use rest_support::{Http, seed_agent};
use serde_json::json;

async fn crud_on_v1(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);

    let created = h
        .post("/v1/agents", seed_agent("reviewer"))
        .await
        .expect(200);
    assert_eq!(created["id"], "reviewer");
    // proto3 JSON: int64 as a string, enums by name, timestamps in UTC with Z, proto field names,
    // and fields without presence always there.
    assert_eq!(created["version"], "1");
    assert_eq!(created["visibility"], "VISIBILITY_PRIVATE");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["config"]["num_history_runs"], 5);
    assert_eq!(created["config"]["max_steps"], 10, "defaults filled");
    assert_eq!(created["capabilities"], json!([]));
    assert_eq!(created["category"], "");
    let t = created["create_time"].as_str().unwrap();
    assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    assert!(created.get("createTime").is_none());

    let got = h.get("/v1/agents/reviewer").await.expect(200);
    assert_eq!(got, created);

    let list = h.get("/v1/agents").await.expect(200);
    assert_eq!(list["agents"], json!([created.clone()]));
    assert_eq!(list["next_cursor"], "");

    // Query parameters: filters, booleans, lowerCamelCase names, limit and cursor.
    h.post(
        "/v1/agents",
        json!({"id": "second", "name": "Second", "tags": ["x"], "enabled": false}),
    )
    .await
    .expect(200);
    let l = h.get("/v1/agents?tag=engineering").await.expect(200);
    assert_eq!(l["agents"].as_array().unwrap().len(), 1);
    let l = h.get("/v1/agents?enabled=false").await.expect(200);
    assert_eq!(l["agents"][0]["id"], "second");
    let page = h.get("/v1/agents?limit=1").await.expect(200);
    assert_eq!(page["agents"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert!(!cursor.is_empty());
    let page2 = h
        .get(&format!("/v1/agents?limit=1&cursor={cursor}"))
        .await
        .expect(200);
    assert_ne!(page2["agents"][0]["id"], page["agents"][0]["id"]);
    let l = h.get("/v1/agents?playbookTemplate=none").await.expect(200);
    assert_eq!(l["agents"], json!([]));

    let batch = h
        .post(
            "/v1/agents:batchGet",
            json!({"agent_ids": ["nope", "reviewer"]}),
        )
        .await
        .expect(200);
    assert_eq!(batch["agents"][0]["id"], "reviewer");
    assert_eq!(batch["missing_ids"], json!(["nope"]));
    // lowerCamelCase input is accepted too.
    let batch = h
        .post("/v1/agents:batchGet", json!({"agentIds": ["second"]}))
        .await
        .expect(200);
    assert_eq!(batch["agents"][0]["id"], "second");

    let del = h.delete("/v1/agents/reviewer").await.expect(200);
    assert_eq!(
        del,
        json!({"id": "reviewer", "message": "Agent reviewer deleted successfully"})
    );
    h.get("/v1/agents/reviewer").await.expect_error(404, 5);
    srv.finish().await;
}

async fn patch_changes_only_what_is_sent(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    let mut body = seed_agent("a1");
    body["metadata"] = json!({"playbook": {"steps": 3}, "identity_id": "id-1"});
    body["model_settings"] = json!({"temperature": 0.5, "max_tokens": 100});
    let v1 = h.post("/v1/agents", body).await.expect(200);

    // Seed 004: "send only the fields you want to update".
    let v2 = h
        .patch(
            "/v1/agents/a1",
            json!({"description": "Tier 1", "config": {"max_steps": 4}, "modelSettings": {"temperature": 0.9}}),
        )
        .await
        .expect(200);
    assert_eq!(v2["version"], "2");
    assert_eq!(v2["description"], "Tier 1");
    assert_eq!(v2["config"]["max_steps"], 4);
    assert_eq!(v2["model_settings"]["temperature"], 0.9);
    assert_eq!(v2["model_settings"]["max_tokens"], 100, "a sibling is kept");
    for k in [
        "name",
        "template",
        "tags",
        "metadata",
        "create_time",
        "visibility",
    ] {
        assert_eq!(v2[k], v1[k], "{k} must not change");
    }
    for k in ["enable_memory", "num_history_runs", "reasoning_max_steps"] {
        assert_eq!(
            v2["config"][k], v1["config"][k],
            "config.{k} must not change"
        );
    }

    // Clearing a field by sending its empty value; PATCH on the seed paths as well.
    let v3 = h
        .patch("/api/v1/agents/a1", json!({"description": "", "tags": []}))
        .await
        .expect(200);
    assert_eq!(
        (v3["version"].as_str(), v3["description"].as_str()),
        (Some("3"), Some(""))
    );
    assert_eq!(v3["tags"], json!([]));
    assert_eq!(v3["name"], v1["name"]);
    let v4 = h
        .patch("/v2/agents/a1", json!({"enabled": false}))
        .await
        .expect(200);
    assert_eq!(
        (v4["version"].as_str(), &v4["enabled"]),
        (Some("4"), &json!(false))
    );

    // An explicit update_mask in the query wins over the body's keys.
    let v5 = h
        .patch(
            "/v1/agents/a1?update_mask=name",
            json!({"name": "Renamed", "description": "ignored"}),
        )
        .await
        .expect(200);
    assert_eq!(
        (v5["name"].as_str(), v5["description"].as_str()),
        (Some("Renamed"), Some(""))
    );
    // The body may repeat the id of the path, not contradict it.
    h.patch("/v1/agents/a1", json!({"id": "a1", "category": "qa"}))
        .await
        .expect(200);
    let e = h
        .patch("/v1/agents/a1", json!({"id": "other", "category": "qa"}))
        .await
        .expect_error(400, 3);
    assert!(e["message"].as_str().unwrap().contains("agent.id"), "{e}");

    // Versions, with the int64 version in the path.
    let versions = h.get("/v1/agents/a1/versions?limit=2").await.expect(200);
    assert_eq!(versions["versions"][0]["version"], "6");
    assert!(!versions["next_cursor"].as_str().unwrap().is_empty());
    let old = h.get("/v1/agents/a1/versions/2").await.expect(200);
    assert_eq!(
        (old["version"].as_str(), old["description"].as_str()),
        (Some("2"), Some("Tier 1"))
    );
    h.get("/v1/agents/a1/versions/99")
        .await
        .expect_error(404, 5);
    let e = h
        .get("/v1/agents/a1/versions/two")
        .await
        .expect_error(400, 3);
    assert!(e["message"].as_str().unwrap().contains("version"), "{e}");
    srv.finish().await;
}

async fn seed_002_paths(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    // Seed 002 authenticates with X-API-Key.
    let h = Http::with_style(srv.http_addr, rest_support::Style::XApiKey, &srv.admin_key);
    let body = json!({
        "id": "code-reviewer",
        "name": "Code Reviewer Agent",
        "template": "You are an expert code reviewer. Review code for bugs, security issues, and best practices.",
        "description": "Reviews pull requests and code changes",
        "tags": ["engineering", "code-review"],
        "config": {
            "enable_memory": true,
            "enable_history": true,
            "num_history_runs": 5,
            "enable_reasoning": true,
            "reasoning_min_steps": 2,
            "reasoning_max_steps": 8
        }
    });
    let created = h.post("/v2/agents", body).await.expect(200);
    assert_eq!(created["name"], "Code Reviewer Agent");
    assert_eq!(created["config"]["reasoning_max_steps"], 8);
    h.post("/v2/agents", seed_agent("customer-support"))
        .await
        .expect(200);

    let got = h.get("/v2/agents/code-reviewer").await.expect(200);
    assert_eq!(got, created);
    let list = h.get("/v2/agents").await.expect(200);
    assert_eq!(list["agents"].as_array().unwrap().len(), 2);
    let batch = h
        .post(
            "/v2/agents/batch",
            json!({"agent_ids": ["customer-support", "sales-assistant"]}),
        )
        .await
        .expect(200);
    assert_eq!(batch["agents"][0]["id"], "customer-support");
    assert_eq!(batch["missing_ids"], json!(["sales-assistant"]));

    let del = h.delete("/v2/agents/code-reviewer").await.expect(200);
    assert_eq!(
        del,
        json!({"id": "code-reviewer", "message": "Agent code-reviewer deleted successfully"})
    );
    h.get("/v2/agents/code-reviewer").await.expect_error(404, 5);
    srv.finish().await;
}

async fn seed_000_and_004_paths(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    // Seed 004: POST /v1/agents with only a name; its extra fields live in metadata.
    let a = h
        .post(
            "/api/v1/agents",
            json!({"name": "Outreach", "capabilities": ["email"], "enabled": true,
                   "metadata": {"playbook_template": "outbound", "llm_config": {"model": "x"}}}),
        )
        .await
        .expect(200);
    let id = a["id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    assert_eq!(
        h.get(&format!("/api/v1/agents/{id}")).await.expect(200)["name"],
        "Outreach"
    );
    let l = h
        .get("/v1/agents?enabled=true&playbook_template=outbound&limit=20&offset=0")
        .await
        .expect(200);
    assert_eq!(l["agents"][0]["id"], json!(id));
    let l = h.get("/api/v1/agents?capability=email").await.expect(200);
    assert_eq!(l["agents"].as_array().unwrap().len(), 1);

    // Seed 000's store and hires; literal segments win over /api/v1/agents/{id}.
    let store = h
        .get("/api/v1/agents/store?category=sales")
        .await
        .expect(200);
    let slugs: Vec<&str> = store["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].as_str().unwrap())
        .collect();
    assert!(slugs.contains(&"lead-enrichment"), "{slugs:?}");
    assert!(
        store["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["agent"]["category"] == "sales")
    );
    let same = h.get("/v1/store/agents?category=sales").await.expect(200);
    assert_eq!(same, store);
    let one = h
        .get("/api/v1/agents/store/lead-enrichment")
        .await
        .expect(200);
    assert_eq!(one["source"], "STORE_SOURCE_BUILTIN");
    assert!(one["agent"]["input_schema"]["properties"].is_object());
    assert_eq!(
        h.get("/v1/store/agents/lead-enrichment").await.expect(200),
        one
    );
    h.get("/v1/store/agents/no-such-agent")
        .await
        .expect_error(404, 5);

    let hired = h
        .post(
            "/api/v1/agents/store/lead-enrichment/hire",
            json!({"bindings": {"connector_ids": ["crm-1"], "knowledge_ids": ["kb-1"]}}),
        )
        .await
        .expect(200);
    assert_eq!(hired["id"], "lead-enrichment");
    assert_eq!(hired["hire"]["source_slug"], "lead-enrichment");
    assert_eq!(hired["hire"]["bindings"]["connector_ids"], json!(["crm-1"]));
    let hired2 = h
        .post(
            "/v1/store/agents/lead-enrichment:hire",
            json!({"agent_id": "enricher-2"}),
        )
        .await
        .expect(200);
    assert_eq!(hired2["id"], "enricher-2");
    h.post("/v1/store/agents/lead-enrichment:hire", json!({}))
        .await
        .expect_error(409, 6);

    let active = h.get("/api/v1/agents/active").await.expect(200);
    let ids: Vec<&str> = active["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"]["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"lead-enrichment") && ids.contains(&id.as_str()),
        "{ids:?}"
    );
    assert_eq!(active["agents"][0]["run_count"], "0");
    assert_eq!(h.get("/v1/active-agents").await.expect(200), active);

    // Seed 004: offset pagination is refused, not silently ignored.
    let e = h.get("/v1/agents?offset=20").await.expect_error(400, 3);
    assert!(e["message"].as_str().unwrap().contains("cursor"), "{e}");
    let _ = h
        .send(h.request(Method::DELETE, &format!("/api/v1/agents/{id}")))
        .await
        .expect(200);
    srv.finish().await;
}

async fn admin_routes(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    let ws = h.get("/v1/workspace").await.expect(200);
    assert_eq!(ws["workspace"]["name"], "default");

    let k = h
        .post(
            "/v1/admin/api-keys",
            json!({"name": "ci", "scopes": ["agents:read"]}),
        )
        .await
        .expect(200);
    let secret = k["secret"].as_str().unwrap().to_owned();
    let key_id = k["api_key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("agk_"));
    let reader = Http::new(srv.http_addr, &secret);
    reader.get("/v1/agents").await.expect(200);
    let me = reader.get("/v1/workspace").await.expect(200);
    assert_eq!(me["api_key"]["id"], json!(key_id));

    let keys = h.get("/v1/admin/api-keys").await.expect(200);
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 2);
    let revoked = h
        .post(&format!("/v1/admin/api-keys/{key_id}:revoke"), json!({}))
        .await
        .expect(200);
    assert!(revoked["revoke_time"].is_string(), "{revoked}");
    reader.get("/v1/agents").await.expect_error(401, 16);
    // The DELETE binding of the same RPC: revoking again returns the key unchanged.
    let again = h
        .delete(&format!("/v1/admin/api-keys/{key_id}"))
        .await
        .expect(200);
    assert_eq!(again["revoke_time"], revoked["revoke_time"]);
    let all = h
        .get("/v1/admin/api-keys?include_revoked=true")
        .await
        .expect(200);
    assert_eq!(all["api_keys"].as_array().unwrap().len(), 2);
    let live = h.get("/v1/admin/api-keys").await.expect(200);
    assert_eq!(live["api_keys"].as_array().unwrap().len(), 1);

    let wh = h
        .post(
            "/v1/admin/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["run.*"]}),
        )
        .await
        .expect(200);
    let wid = wh["webhook"]["id"].as_str().unwrap().to_owned();
    assert!(wh["secret"].as_str().unwrap().starts_with("whsec_"));
    let list = h.get("/v1/admin/webhooks").await.expect(200);
    assert_eq!(list["webhooks"][0]["id"], json!(wid));
    let d = h
        .get(&format!("/v1/admin/webhooks/{wid}/deliveries"))
        .await
        .expect(200);
    assert_eq!(d["deliveries"], json!([]));
    h.delete(&format!("/v1/admin/webhooks/{wid}"))
        .await
        .expect(200);
    h.get(&format!("/v1/admin/webhooks/{wid}/deliveries"))
        .await
        .expect_error(404, 5);
    srv.finish().await;
}

on_both_backends!(
    crud_on_v1,
    patch_changes_only_what_is_sent,
    seed_002_paths,
    seed_000_and_004_paths,
    admin_routes
);
