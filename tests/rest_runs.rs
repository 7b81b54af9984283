//! RunService over the REST shim: runs started over HTTP, Server-Sent Events for WatchRun and ChatStream
//! (event kind, seq ids, resuming with Last-Event-ID or `?after_seq=`), seed 002's chat with and without
//! `stream`, errors before the first event as plain JSON, and run reads on every binding.

mod common;
mod rest_support;

use common::{Backend, TestServer};
use http::Method;
use rest_support::{Http, seed_agent, sse_events};
use serde_json::json;

/// Watches a run to its end; returns (event kind, id, data) of every event.
async fn watch(
    h: &Http,
    path: &str,
    last_event_id: Option<&str>,
) -> Vec<(String, Option<String>, serde_json::Value)> {
    let mut r = h.request(Method::GET, path);
    if let Some(id) = last_event_id {
        r = r.header("last-event-id", id);
    }
    let resp = h.send(r).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        resp.header("content-encoding"),
        None,
        "SSE is never compressed"
    );
    sse_events(&resp.text())
}

async fn watch_run_as_sse(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    h.post("/v1/agents", seed_agent("echo")).await.expect(200);
    let run = h
        .post(
            "/v1/agents/echo/runs",
            json!({"message": "one two three", "user_id": "u1"}),
        )
        .await
        .expect(200);
    assert_eq!(run["agent_id"], "echo");
    assert_eq!(run["status"], "RUN_STATUS_QUEUED");
    let id = run["id"].as_str().unwrap().to_owned();

    let events = watch(&h, &format!("/v1/runs/{id}/events:watch"), None).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_queued"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_completed"), "{kinds:?}");
    assert!(kinds.contains(&"message_delta"), "{kinds:?}");
    for (i, (kind, sse_id, data)) in events.iter().enumerate() {
        let seq = (i + 1).to_string();
        assert_eq!(sse_id.as_deref(), Some(seq.as_str()), "ids are the seqs");
        assert_eq!(data["seq"], json!(seq));
        assert_eq!(data["run_id"], json!(id));
        assert!(data.get(kind.as_str()).is_some(), "{kind}: {data}");
    }
    let text: String = events
        .iter()
        .filter(|(k, _, _)| k == "message_delta")
        .map(|(_, _, d)| d["message_delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "one two three");
    let n = events.len();

    // Resuming: Last-Event-ID, ?after_seq=, and the seed path; nothing lost, nothing twice.
    let after2 = watch(&h, &format!("/v1/runs/{id}/events:watch"), Some("2")).await;
    assert_eq!(after2.len(), n - 2);
    assert_eq!(after2[0].1.as_deref(), Some("3"));
    let after3 = watch(&h, &format!("/v1/runs/{id}/events:watch?after_seq=3"), None).await;
    assert_eq!(after3.len(), n - 3);
    assert_eq!(after3[0].1.as_deref(), Some("4"));
    let seed = watch(&h, &format!("/api/v1/agents/runs/{id}/stream"), Some("1")).await;
    assert_eq!(seed.len(), n - 1);
    let e = h
        .send(
            h.request(Method::GET, &format!("/v1/runs/{id}/events:watch"))
                .header("last-event-id", "seven"),
        )
        .await
        .expect_error(400, 3);
    assert!(
        e["message"].as_str().unwrap().contains("Last-Event-ID"),
        "{e}"
    );

    // The same run through every read binding, and the full trace.
    let done = h.get(&format!("/v1/runs/{id}")).await.expect(200);
    assert_eq!(done["status"], "RUN_STATUS_COMPLETED");
    assert_eq!(done["output"]["content"], "one two three");
    assert_eq!(
        h.get(&format!("/v1/agents/runs/{id}")).await.expect(200),
        done
    );
    assert_eq!(
        h.get(&format!("/api/v1/agents/runs/{id}"))
            .await
            .expect(200),
        done
    );
    let trace = h
        .get(&format!("/v1/runs/{id}/events?limit=100"))
        .await
        .expect(200);
    assert_eq!(trace["events"].as_array().unwrap().len(), n);
    let listed = h
        .get("/v1/agents/echo/runs?status=RUN_STATUS_COMPLETED")
        .await
        .expect(200);
    assert_eq!(listed["runs"][0]["id"], json!(id));
    let none = h.get("/v1/runs?status=RUN_STATUS_FAILED").await.expect(200);
    assert_eq!(none["runs"], json!([]));
    assert_eq!(
        h.get("/api/v1/agents/runs?user_id=u1").await.expect(200)["runs"][0]["id"],
        json!(id)
    );

    // A terminal run cannot be cancelled: FAILED_PRECONDITION is a 400.
    h.post(&format!("/v1/runs/{id}:cancel"), json!({}))
        .await
        .expect_error(400, 9);
    h.post(
        &format!("/api/v1/agents/runs/{id}/cancel"),
        json!({"reason": "late"}),
    )
    .await
    .expect_error(400, 9);

    // An error before the first event is a JSON error with its status, not an event stream.
    let missing = h
        .get("/v1/runs/01a20422-0000-7000-8000-000000000000/events:watch")
        .await;
    missing.expect_error(404, 5);
    Http::anonymous(srv.http_addr)
        .get(&format!("/v1/runs/{id}/events:watch"))
        .await
        .expect_error(401, 16);
    srv.finish().await;
}

async fn chat_streams_like_seed_002(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::with_style(srv.http_addr, rest_support::Style::XApiKey, &srv.admin_key);
    h.post("/v2/agents", seed_agent("customer-support"))
        .await
        .expect(200);
    let body = json!({
        "message": "I need help resetting my password",
        "user_id": "user-42",
        "session_id": "sess-abc123",
        "timezone": "America/New_York",
        "locale": "en-US",
        "user_profile": {"profile_id": "prof-42", "email": "jane@acme.com", "full_name": "Jane Smith"},
        "tenant_profile": {"tenant_id": "tenant-acme", "name": "Acme Corp"}
    });

    // Seed path, `stream` unset: seed 002's default is to stream.
    let r = h
        .post("/v2/agents/customer-support/chat", body.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = sse_events(&r.text());
    assert_eq!(events.last().unwrap().0, "run_completed", "{events:?}");
    let streamed: String = events
        .iter()
        .filter(|(k, _, _)| k == "message_delta")
        .map(|(_, _, d)| d["message_delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "I need help resetting my password");

    // `stream: false`: seed 002's ChatResponse as JSON.
    let mut unary = body.clone();
    unary["stream"] = json!(false);
    let resp = h
        .post("/v2/agents/customer-support/chat", unary)
        .await
        .expect(200);
    assert_eq!(resp["status"], "completed");
    assert_eq!(resp["agent_id"], "customer-support");
    assert_eq!(resp["session_id"], "sess-abc123");
    assert_eq!(resp["content"], "I need help resetting my password");
    assert_eq!(resp["tools"], json!([]));

    // The main path answers JSON unless asked to stream; :chatStream always streams.
    let resp = h
        .post("/v1/agents/customer-support:chat", body.clone())
        .await
        .expect(200);
    assert_eq!(resp["status"], "completed");
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let r = h.post("/v1/agents/customer-support:chat", streaming).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let r = h
        .post("/v1/agents/customer-support:chatStream", body.clone())
        .await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse_events(&r.text()).last().unwrap().0, "run_completed");

    // An unknown agent fails before the first event: JSON 404, on both shapes.
    h.post("/v2/agents/nobody/chat", body.clone())
        .await
        .expect_error(404, 5);
    h.post("/v1/agents/nobody:chatStream", body)
        .await
        .expect_error(404, 5);
    srv.finish().await;
}

on_both_backends!(watch_run_as_sse, chat_streams_like_seed_002);
