//! Webhook delivery end to end: a run's lifecycle events reach the webhooks subscribed to them, signed
//! as Standard Webhooks specify, retried after a failed attempt with the same `webhook-id`, and the
//! deliveries list tells what happened. A webhook subscribed to other events gets nothing.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentry::pb::{
    Agent, CreateAgentRequest, CreateWebhookRequest, DeliveryStatus, ListWebhookDeliveriesRequest,
    RunStatus, StartRunRequest, WatchRunRequest,
};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::{Backend, TestServer};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

type Log = Arc<Mutex<Vec<(String, HeaderMap, String)>>>;

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Records every request; the first one to `/hook` fails with 503.
async fn receive(State(log): State<Log>, headers: HeaderMap, body: String) -> StatusCode {
    let mut log = log.lock().unwrap();
    log.push(("hook".into(), headers, body));
    if log.len() == 1 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn receive_other(State(log): State<Log>, headers: HeaderMap, body: String) -> StatusCode {
    log.lock().unwrap().push(("other".into(), headers, body));
    StatusCode::OK
}

fn verify(secret: &str, headers: &HeaderMap, body: &str) {
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.{body}",
        header("webhook-id"),
        header("webhook-timestamp")
    );
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header("webhook-signature"), expected, "signature");
    let ts: i64 = header("webhook-timestamp").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 60, "timestamp {ts} is now");
}

async fn lifecycle_events_are_delivered_signed_and_retried(backend: Backend) {
    let log: Log = Arc::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .route("/other", post(receive_other))
        .with_state(log.clone());
    let addr = serve(app).await;
    let srv = TestServer::start(&backend).await;
    let mut admin = srv.admin(&srv.admin_key).await;
    let secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    let hook = admin
        .create_webhook(CreateWebhookRequest {
            url: format!("http://{addr}/hook"),
            event_types: vec!["run.completed".into()],
            secret: secret.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    let other = admin
        .create_webhook(CreateWebhookRequest {
            url: format!("http://{addr}/other"),
            event_types: vec!["run.failed".into(), "flow_run.*".into()],
            secret: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();

    srv.agents(&srv.admin_key)
        .await
        .create_agent(CreateAgentRequest {
            agent: Some(Agent {
                id: "echo".into(),
                name: "echo".into(),
                model: "scripted/echo".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut runs = srv.runs(&srv.admin_key).await;
    let run = runs
        .start_run(StartRunRequest {
            agent_id: "echo".into(),
            message: "hook me".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = runs
        .watch_run(WatchRunRequest {
            run_id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut last_seq = 0;
    while let Some(e) = events.next().await {
        last_seq = e.unwrap().seq;
    }

    // The first attempt fails (503); the retry, about a second later, succeeds.
    let start = Instant::now();
    while log.lock().unwrap().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "two attempts expected, got {:?}",
            log.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "nothing for the other webhook, no third try");
    for (path, headers, body) in &got {
        assert_eq!(path, "hook");
        verify(&secret, headers, body);
        assert_eq!(
            headers.get("webhook-id").unwrap(),
            &format!("{}:{last_seq}", run.id),
            "the same id on every attempt: the run and its run_completed event"
        );
        let payload: Value = serde_json::from_str(body).unwrap();
        assert_eq!(payload["type"], "run.completed");
        assert_eq!(payload["data"]["id"], run.id.as_str());
        assert_eq!(payload["data"]["status"], "RUN_STATUS_COMPLETED");
        assert_eq!(payload["data"]["output"]["content"], "hook me");
        assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    let list = |webhook_id: String| ListWebhookDeliveriesRequest {
        webhook_id,
        ..Default::default()
    };
    let start = Instant::now();
    let delivery = loop {
        let d = admin
            .list_webhook_deliveries(list(hook.id.clone()))
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        assert_eq!(d.len(), 1, "{d:?}");
        if d[0].status == DeliveryStatus::Delivered as i32 {
            break d[0].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivery.event_type, "run.completed");
    assert_eq!(delivery.attempts, 2);
    assert_eq!(delivery.last_status_code, 204);
    assert!(delivery.last_error.is_empty(), "{delivery:?}");
    assert!(delivery.deliver_time.is_some());
    let none = admin
        .list_webhook_deliveries(list(other.id.clone()))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(
        runs.get_run(agentry::pb::GetRunRequest { run_id: run.id })
            .await
            .unwrap()
            .into_inner()
            .status,
        RunStatus::Completed as i32
    );
    srv.finish().await;
}

on_both_backends!(lifecycle_events_are_delivered_signed_and_retried);
