//! The REST shim's edges against a real server: the three API key header styles, gRPC statuses as HTTP
//! statuses with the `{code, message, details}` body, malformed input (never a 500), unknown paths and
//! methods, the body size limit, request ids, gzip and CORS.

mod common;
mod rest_support;

use std::time::Duration;

use agentry::{
    config::{DbArgs, ServeArgs},
    server::Server,
};
use bytes::Bytes;
use common::{Backend, TestDb, TestServer};
use http::Method;
use http_body_util::BodyExt;
use rest_support::{Http, Style, seed_agent};
use serde_json::json;

async fn auth_header_styles(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    for style in [Style::Bearer, Style::Token, Style::XApiKey] {
        let h = Http::with_style(srv.http_addr, style, &srv.admin_key);
        h.get("/v1/agents").await.expect(200);
    }
    let anon = Http::anonymous(srv.http_addr);
    let e = anon.get("/v1/agents").await.expect_error(401, 16);
    assert!(e["message"].as_str().unwrap().contains("API key"), "{e}");
    Http::new(srv.http_addr, "agk_not_a_real_key")
        .get("/v1/agents")
        .await
        .expect_error(401, 16);
    Http::with_style(srv.http_addr, Style::XApiKey, "garbage")
        .get("/v2/agents")
        .await
        .expect_error(401, 16);
    // The document and liveness are public.
    anon.get("/openapi.json").await.expect(200);
    assert_eq!(anon.get("/healthz").await.text(), "ok");

    // A key without the scope: 403; another workspace's agent: 404 as if it did not exist.
    let admin = Http::new(srv.http_addr, &srv.admin_key);
    admin
        .post("/v1/agents", seed_agent("mine"))
        .await
        .expect(200);
    let reader_key = srv.workspace_key("other", "agents:read").await;
    let reader = Http::new(srv.http_addr, &reader_key);
    let e = reader
        .post("/v1/agents", seed_agent("theirs"))
        .await
        .expect_error(403, 7);
    assert!(
        e["message"].as_str().unwrap().contains("agents:write"),
        "{e}"
    );
    reader.get("/v1/agents/mine").await.expect_error(404, 5);
    reader.get("/v1/admin/api-keys").await.expect_error(403, 7);
    srv.finish().await;
}

async fn statuses_and_bodies(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);

    // 400 from the service's own validation, with its BadRequest detail.
    let e = h
        .post(
            "/v1/agents",
            json!({"id": "x", "name": "", "config": {"max_steps": 1000}}),
        )
        .await
        .expect_error(400, 3);
    let v = &e["details"][0];
    assert_eq!(
        v["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{e}"
    );
    assert!(
        v["field_violations"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("agent."),
        "{e}"
    );

    // 409 ALREADY_EXISTS.
    h.post("/v1/agents", seed_agent("dup")).await.expect(200);
    let e = h
        .post("/v2/agents", seed_agent("dup"))
        .await
        .expect_error(409, 6);
    assert!(e["message"].as_str().unwrap().contains("dup"), "{e}");

    // 404: a missing resource, and a path no route serves.
    h.get("/v1/agents/missing").await.expect_error(404, 5);
    let e = h.get("/v1/nothing/here").await.expect_error(404, 5);
    assert!(
        e["message"].as_str().unwrap().starts_with("no route for"),
        "{e}"
    );
    h.get("/v1/agents/").await.expect_error(404, 5);
    h.get("/").await.expect_error(404, 5);

    // 405 with Allow.
    let r = h.send(h.request(Method::PUT, "/v1/agents/dup")).await;
    r.expect_error(405, 12);
    assert_eq!(r.header("allow"), Some("DELETE, GET, PATCH"));
    let r = h.get("/v1/agents:batchGet").await;
    r.expect_error(405, 12);
    assert_eq!(r.header("allow"), Some("POST"));

    // The flow routes answer (FlowService is implemented): a missing flow is a 404 with the JSON body.
    h.get("/v1/flows/nope").await.expect_error(404, 5);
    h.get("/api/v1/flows/runs/not-a-uuid")
        .await
        .expect_error(404, 5);
    srv.finish().await;
}

async fn malformed_input(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    h.post("/v1/agents", seed_agent("a")).await.expect(200);

    let cases: &[(Method, &str, &'static str, &str)] = &[
        // Malformed JSON.
        (Method::POST, "/v1/agents", r#"{"name": "#, "malformed JSON"),
        (
            Method::POST,
            "/v1/agents",
            r#"{"name": "x"} {"#,
            "malformed JSON",
        ),
        (Method::POST, "/v1/agents", "not json", "malformed JSON"),
        (Method::POST, "/v1/agents:batchGet", "[1, 2]", ""),
        // Wrong types, naming the field.
        (Method::POST, "/v1/agents", r#"{"name": 5}"#, "agent.name"),
        (
            Method::PATCH,
            "/v1/agents/a",
            r#"{"config": {"max_steps": "many"}}"#,
            "agent.config.max_steps",
        ),
        (
            Method::PATCH,
            "/v1/agents/a",
            r#"{"tags": "one"}"#,
            "agent.tags",
        ),
        (
            Method::PATCH,
            "/v1/agents/a",
            r#"{"model_settings": {"max_tokens": 99999999999}}"#,
            "agent.model_settings.max_tokens",
        ),
        (
            Method::PATCH,
            "/v1/agents/a",
            r#"{"input_schema": [1]}"#,
            "agent.input_schema",
        ),
        (
            Method::POST,
            "/v1/agents:batchGet",
            r#"{"agent_ids": [1]}"#,
            "agent_ids",
        ),
        // Unknown enum names.
        (
            Method::PATCH,
            "/v1/agents/a",
            r#"{"visibility": "VISIBILITY_SHOUTING"}"#,
            "agent.visibility",
        ),
        // Unknown fields, with seed 004's hint.
        (
            Method::POST,
            "/v1/agents",
            r#"{"name": "x", "nmae": "y"}"#,
            "agent.nmae",
        ),
        (
            Method::POST,
            "/v1/agents",
            r#"{"name": "x", "llm_config": {}}"#,
            "metadata",
        ),
        (
            Method::POST,
            "/v1/agents",
            r#"{"name": "x", "config": {"max_stepz": 1}}"#,
            "agent.config.max_stepz",
        ),
        // A body where the route takes none.
        (
            Method::GET,
            "/v1/agents",
            r#"{"limit": 5}"#,
            "query parameters",
        ),
    ];
    for (method, path, body, needle) in cases {
        let r = h.raw(method.clone(), path, body).await;
        let e = r.expect_error(400, 3);
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{method} {path} {body}: {msg}");
    }

    let queries = [
        ("/v1/agents?limit=ten", "limit"),
        ("/v1/agents?enabled=maybe", "enabled"),
        ("/v1/agents?colour=blue", "colour"),
        ("/v1/agents?limit=1&limit=2", "more than once"),
        ("/v1/agents/a/versions/1.5", "version"),
        ("/v1/agents/a/versions/99999999999999999999", "version"),
        ("/v1/runs?status=RUN_STATUS_SLEEPING", "status"),
        ("/v1/runs?created_after=yesterday", "created_after"),
        ("/v1/agents/a?id=b", "path"),
        ("/v1/agents/%FF%FE", "UTF-8"),
    ];
    for (path, needle) in queries {
        let e = h.get(path).await.expect_error(400, 3);
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    let e = h
        .send(
            h.request(Method::POST, "/v1/agents:batchGet?agent_ids=a")
                .json(&json!({})),
        )
        .await
        .expect_error(400, 3);
    assert!(e["message"].as_str().unwrap().contains("agent_ids"), "{e}");
    // An invalid slug in the path reaches the service's validation.
    h.get("/v1/agents/Not%20A%20Slug")
        .await
        .expect_error(400, 3);
    // Query values are parsed per type: repeated keys, enum names and numbers, timestamps.
    h.get("/v1/runs?status=RUN_STATUS_COMPLETED&created_after=2025-01-01T00:00:00Z")
        .await
        .expect(200);
    h.get("/v1/runs?status=4").await.expect(200);
    srv.finish().await;
}

async fn size_limit(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    let big = "x".repeat(5 << 20);
    let body = json!({"name": "big", "description": big});
    let e = h.post("/v1/agents", body).await.expect_error(413, 8);
    assert!(e["message"].as_str().unwrap().contains("limit"), "{e}");
    // Without a content-length (chunked), the limit holds while reading.
    let chunks: Vec<Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = (0
        ..5)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b' '; 1 << 20]))))
        .collect();
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let r = h
        .send(h.request(Method::POST, "/v1/agents").stream(stream))
        .await;
    r.expect_error(413, 8);
    // Just under the limit is fine (and then the service's own validation speaks).
    let e = h
        .post(
            "/v1/agents",
            json!({"name": "ok", "description": "y".repeat(3 << 20)}),
        )
        .await
        .expect_error(400, 3);
    assert!(
        e["message"].as_str().unwrap().contains("description"),
        "{e}"
    );
    srv.finish().await;
}

async fn request_ids_and_gzip(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    let r = h.get("/v1/agents").await;
    let id = r.header("x-request-id").expect("a generated request id");
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    let r = h
        .send(
            h.request(Method::GET, "/v1/nope")
                .header("x-request-id", "trace-123"),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("trace-123"));
    assert_eq!(r.status, 404);

    for i in 0..5 {
        h.post("/v1/agents", seed_agent(&format!("agent-{i}")))
            .await
            .expect(200);
    }
    let plain = h.get("/v1/agents").await;
    assert_eq!(plain.header("content-encoding"), None);
    let gz = h
        .send(
            h.request(Method::GET, "/v1/agents")
                .header("accept-encoding", "gzip"),
        )
        .await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz.body.len() < plain.body.len(), "gzip shrinks the list");
    assert_eq!(&gz.body[..2], &[0x1f, 0x8b], "a gzip stream");
    srv.finish().await;
}

async fn cors(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let key = agentry::auth::keys::generate();
    // Through the flags, as `agentry serve --cors-origins https://app.example` would.
    let settings = ServeArgs {
        db: DbArgs {
            database_url: Some(db.url.clone()),
            config: None,
        },
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        bootstrap_key: Some(key.clone()),
        cors_origins: vec!["https://app.example".into(), " ".into()],
        ..Default::default()
    }
    .settings()
    .expect("settings");
    assert_eq!(
        settings.cors_origins,
        vec!["https://app.example".to_owned()]
    );
    let server = Server::bind(&settings).await.expect("server starts");
    let addr = server.http_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
    });
    let h = Http::new(addr, &key);
    let pre = h
        .send(
            h.request(Method::OPTIONS, "/v1/agents/x")
                .header("origin", "https://app.example")
                .header("access-control-request-method", "PATCH")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
        )
        .await;
    assert_eq!(pre.status, 200, "{}", pre.text());
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        pre.header("access-control-allow-methods")
            .unwrap()
            .contains("PATCH")
    );
    let r = h
        .send(
            h.request(Method::GET, "/v1/agents")
                .header("origin", "https://app.example"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        r.header("access-control-expose-headers")
            .unwrap()
            .contains("x-request-id")
    );
    let r = h
        .send(
            h.request(Method::GET, "/v1/agents")
                .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    // Without --cors-origins there are no CORS headers at all.
    let plain = TestServer::start(&backend).await;
    let p = Http::new(plain.http_addr, &plain.admin_key);
    let r = p
        .send(
            p.request(Method::GET, "/v1/agents")
                .header("origin", "https://app.example"),
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    plain.finish().await;
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("stops")
        .expect("clean stop");
    let mut db = db;
    db.drop_db().await;
}

on_both_backends!(
    auth_header_styles,
    statuses_and_bodies,
    malformed_input,
    size_limit,
    request_ids_and_gzip,
    cors
);
