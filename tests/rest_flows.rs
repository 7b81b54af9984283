//! FlowService over the REST shim, on seed 003's paths (`/api/v1/flows...`): a legacy caller creates a
//! flow from a template, triggers it, streams its progress as Server-Sent Events (resuming with
//! Last-Event-ID), lists runs by source, pauses, resumes and cancels, and publishes events.

mod common;
mod rest_support;

use common::{Backend, TestServer};
use http::Method;
use rest_support::{Http, sse_events};
use serde_json::json;

async fn seed_003_over_http(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    let templates = h
        .get("/api/v1/flows/templates?category=sales")
        .await
        .expect(200);
    assert_eq!(templates["templates"][0]["slug"], "lead-to-sequence");
    h.get("/api/v1/flows/templates/approval-gate")
        .await
        .expect(200);
    h.post(
        "/api/v1/flows",
        json!({"id": "greet", "name": "Greet", "graph": {
            "nodes": [{"id": "first", "wait": {"duration": "0s"}},
                      {"id": "second", "branch": {"cases": [{"condition": "input.n > 1", "target_node_id": "big"}]}},
                      {"id": "big", "wait": {"duration": "0s"}}],
            "edges": [{"from_node_id": "first", "to_node_id": "second"},
                      {"from_node_id": "second", "to_node_id": "big"}]}}),
    )
    .await
    .expect(200);
    let flow = h.get("/api/v1/flows/greet").await.expect(200);
    assert_eq!(flow["version"], "1");
    let patched = h
        .patch(
            "/api/v1/flows/greet",
            json!({"description": "now described"}),
        )
        .await
        .expect(200);
    assert_eq!(patched["version"], "2");
    let versions = h.get("/api/v1/flows/greet/versions").await.expect(200);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    h.post("/api/v1/flows/greet/versions/1/archive", json!({}))
        .await
        .expect(200);

    let run = h
        .post(
            "/api/v1/flows/greet/trigger",
            json!({"input": {"n": 5}, "idempotency_key": "once"}),
        )
        .await
        .expect(200);
    assert_eq!(run["status"], "FLOW_RUN_STATUS_QUEUED");
    assert_eq!(run["trigger"]["source"], "FLOW_TRIGGER_SOURCE_MANUAL");
    let id = run["id"].as_str().unwrap().to_owned();
    let resp = h.get(&format!("/api/v1/flows/runs/{id}/stream")).await;
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let events = sse_events(&resp.text());
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"flow_run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"flow_run_completed"), "{kinds:?}");
    for (i, (kind, sse_id, data)) in events.iter().enumerate() {
        assert_eq!(sse_id.as_deref(), Some((i + 1).to_string().as_str()));
        assert!(data.get(kind.as_str()).is_some(), "{kind}: {data}");
    }
    // Resume after the second event.
    let r = h
        .send(
            h.request(Method::GET, &format!("/v1/flow-runs/{id}/events:watch"))
                .header("last-event-id", "2"),
        )
        .await;
    let rest = sse_events(&r.text());
    assert_eq!(rest.len(), events.len() - 2);
    assert_eq!(rest[0].1.as_deref(), Some("3"));

    let done = h.get(&format!("/api/v1/flows/runs/{id}")).await.expect(200);
    assert_eq!(done["status"], "FLOW_RUN_STATUS_COMPLETED");
    assert_eq!(done["steps"].as_array().unwrap().len(), 3);
    assert_eq!(done["output"], json!({"big": null}));
    let listed = h
        .get("/api/v1/flows/runs?flow_id=greet&trigger_source=FLOW_TRIGGER_SOURCE_MANUAL")
        .await
        .expect(200);
    assert_eq!(listed["flow_runs"].as_array().unwrap().len(), 1);

    // Pause, resume and cancel on the seed's action paths.
    h.post(
        "/api/v1/flows",
        json!({"id": "nap", "name": "nap", "graph": {"nodes": [{"id": "w", "wait": {"duration": "30s"}}]}}),
    )
    .await
    .expect(200);
    let nap = h
        .post("/api/v1/flows/nap/trigger", json!({}))
        .await
        .expect(200);
    let nap_id = nap["id"].as_str().unwrap();
    let paused = h
        .post(
            &format!("/api/v1/flows/runs/{nap_id}/pause"),
            json!({"reason": "hold"}),
        )
        .await
        .expect(200);
    assert_eq!(paused["status"], "FLOW_RUN_STATUS_PAUSED");
    h.post(&format!("/api/v1/flows/runs/{nap_id}/resume"), json!({}))
        .await
        .expect(200);
    let cancelled = h
        .post(
            &format!("/api/v1/flows/runs/{nap_id}/cancel"),
            json!({"reason": "bye"}),
        )
        .await
        .expect(200);
    assert_eq!(cancelled["status"], "FLOW_RUN_STATUS_CANCELLED");
    h.post(&format!("/api/v1/flows/runs/{id}/cancel"), json!({}))
        .await
        .expect_error(400, 9);

    // ExternalTrigger and events.
    let t = h
        .post(
            "/api/v1/flows/triggers",
            json!({"flow_id": "greet", "event": {"event_type": "lead.created", "filter": "event.payload.n > 0",
                   "input_mapping": {"n": "{{ event.payload.n }}"}}}),
        )
        .await
        .expect(200);
    assert_eq!(t["enabled"], true);
    let published = h
        .post(
            "/v1/events",
            json!({"type": "lead.created", "payload": {"n": 1}, "event_id": "ev-1"}),
        )
        .await
        .expect(200);
    assert_eq!(published["flow_runs"].as_array().unwrap().len(), 1);
    assert_eq!(published["flow_runs"][0]["input"], json!({"n": 1.0}));
    let again = h
        .post(
            "/v1/events",
            json!({"type": "lead.created", "payload": {"n": 1}, "event_id": "ev-1"}),
        )
        .await
        .expect(200);
    assert_eq!(again["duplicate"], true);
    let triggers = h
        .get("/api/v1/flows/triggers?flow_id=greet")
        .await
        .expect(200);
    assert_eq!(triggers["triggers"].as_array().unwrap().len(), 1);
    h.delete(&format!(
        "/api/v1/flows/triggers/{}",
        t["id"].as_str().unwrap()
    ))
    .await
    .expect(200);
    h.delete("/api/v1/flows/greet").await.expect(200);
    h.get("/api/v1/flows/greet").await.expect_error(404, 5);
    srv.finish().await;
}

on_both_backends!(seed_003_over_http);
