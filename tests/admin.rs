//! AdminService round trips: API keys (secret shown once, pagination) and webhooks (secrets, pagination,
//! deletion, deliveries).

mod common;

use agentry::pb::{
    CreateApiKeyRequest, CreateWebhookRequest, DeleteWebhookRequest, GetWorkspaceRequest,
    ListAgentsRequest, ListApiKeysRequest, ListWebhookDeliveriesRequest, ListWebhooksRequest,
    Webhook,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use common::{Backend, TestServer, expect_code};
use tonic::Code;

async fn create_api_key_returns_a_working_secret(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut admin = srv.admin(&srv.admin_key).await;
    let req = CreateApiKeyRequest {
        name: "deploy bot".into(),
        scopes: vec![
            "flows:trigger".into(),
            "agents:read".into(),
            "agents:read".into(),
        ],
    };
    let created = admin
        .create_api_key(req.clone())
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret.clone();
    assert!(secret.starts_with("agk_") && secret.len() == 48, "{secret}");
    assert!(
        secret[4..].bytes().all(|b| b.is_ascii_alphanumeric()),
        "{secret}"
    );
    let key = created.api_key.unwrap();
    assert_eq!(key.name, "deploy bot");
    assert_eq!(
        key.scopes,
        vec!["agents:read".to_owned(), "flows:trigger".to_owned()]
    );
    assert!(secret.starts_with(&key.prefix) && key.prefix.len() < secret.len());
    assert!(uuid::Uuid::parse_str(&key.id).is_ok(), "{}", key.id);
    assert!(key.create_time.is_some() && key.revoke_time.is_none());

    // The secret works, with exactly its scopes.
    let mut who = srv.admin(&secret).await;
    let me = who
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.api_key.unwrap().id, key.id);
    assert_eq!(me.workspace.unwrap().name, "default");
    srv.agents(&secret)
        .await
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap();
    expect_code(
        who.list_api_keys(ListApiKeysRequest::default()).await,
        Code::PermissionDenied,
    );

    // Another key with the same request is a different key; the name need not be unique.
    let other = admin.create_api_key(req).await.unwrap().into_inner();
    assert_ne!(other.secret, secret);
    assert_ne!(other.api_key.as_ref().unwrap().id, key.id);
    assert_ne!(other.api_key.unwrap().prefix, key.prefix);
    // An unnamed key is fine.
    let unnamed = CreateApiKeyRequest {
        name: String::new(),
        scopes: vec!["admin".into()],
    };
    let unnamed = admin.create_api_key(unnamed).await.unwrap().into_inner();
    srv.admin(&unnamed.secret)
        .await
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap();
    srv.finish().await;
}

async fn list_api_keys_pages(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut admin = srv.admin(&srv.admin_key).await;
    let boot = admin
        .get_workspace(GetWorkspaceRequest {})
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    let mut expected = vec![boot.id];
    for i in 0..4 {
        let req = CreateApiKeyRequest {
            name: format!("k{i}"),
            scopes: vec!["agents:read".into()],
        };
        expected.push(
            admin
                .create_api_key(req)
                .await
                .unwrap()
                .into_inner()
                .api_key
                .unwrap()
                .id,
        );
    }
    let (mut seen, mut cursor, mut sizes) = (Vec::new(), String::new(), Vec::new());
    loop {
        let page = admin.list_api_keys(ListApiKeysRequest {
            limit: 2,
            cursor: cursor.clone(),
            include_revoked: false,
        });
        let page = page.await.unwrap().into_inner();
        sizes.push(page.api_keys.len());
        seen.extend(page.api_keys.into_iter().map(|k| k.id));
        if page.next_cursor.is_empty() {
            break;
        }
        assert!(sizes.len() < 10, "pagination does not end");
        cursor = page.next_cursor;
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(seen, expected, "every key once, oldest first");
    // The default page holds all five.
    let all = admin
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.api_keys.len(), 5);
    assert!(all.next_cursor.is_empty());
    srv.finish().await;
}

async fn webhook_lifecycle(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut admin = srv.admin(&srv.admin_key).await;
    assert!(
        admin
            .list_webhooks(ListWebhooksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .webhooks
            .is_empty()
    );

    let generated = admin
        .create_webhook(CreateWebhookRequest {
            url: "https://hooks.example.com/agentry".into(),
            event_types: vec!["run.completed".into(), "flow_run.*".into()],
            secret: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let raw = generated
        .secret
        .strip_prefix("whsec_")
        .expect("a whsec_ secret");
    let bytes = STANDARD.decode(raw).expect("base64 after whsec_");
    assert!(bytes.len() >= 24, "{} bytes", bytes.len());
    let first = generated.webhook.unwrap();
    assert_eq!(first.url, "https://hooks.example.com/agentry");
    assert_eq!(
        first.event_types,
        vec!["run.completed".to_owned(), "flow_run.*".to_owned()]
    );
    assert!(uuid::Uuid::parse_str(&first.id).is_ok() && first.create_time.is_some());

    let given = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let echoed = admin
        .create_webhook(CreateWebhookRequest {
            url: "http://127.0.0.1:9/h".into(),
            event_types: vec![],
            secret: given.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(echoed.secret, given);
    let second = echoed.webhook.unwrap();
    assert!(second.event_types.is_empty(), "empty means every event");
    let third = admin
        .create_webhook(CreateWebhookRequest {
            url: "https://c.example.com/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(third.secret, generated.secret, "generated secrets differ");
    let third = third.webhook.unwrap();

    // Pages of two: no duplicate, no gap, oldest first; the secret is never listed.
    let mut seen: Vec<Webhook> = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_webhooks(ListWebhooksRequest { limit: 2, cursor })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        let text = format!("{page:?}");
        assert!(
            !text.contains(raw) && !text.contains(&given[6..]),
            "a secret was listed: {text}"
        );
        seen.extend(page.webhooks);
        if page.next_cursor.is_empty() {
            break;
        }
        assert!(pages < 10, "pagination does not end");
        cursor = page.next_cursor;
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, vec![first.clone(), second.clone(), third.clone()]);

    // Deliveries of an existing webhook: none yet.
    let deliveries = |id: &str| ListWebhookDeliveriesRequest {
        webhook_id: id.into(),
        ..Default::default()
    };
    let none = admin
        .list_webhook_deliveries(deliveries(&first.id))
        .await
        .unwrap()
        .into_inner();
    assert!(
        none.deliveries.is_empty() && none.next_cursor.is_empty(),
        "{none:?}"
    );

    // Delete: gone from the list and from every read; a second delete is NOT_FOUND.
    let deleted = admin
        .delete_webhook(DeleteWebhookRequest {
            id: second.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.id, second.id);
    let left = admin
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(left, vec![first.clone(), third]);
    expect_code(
        admin
            .delete_webhook(DeleteWebhookRequest {
                id: second.id.clone(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        admin.list_webhook_deliveries(deliveries(&second.id)).await,
        Code::NotFound,
    );
    for id in [
        uuid::Uuid::now_v7().to_string(),
        "nope".into(),
        String::new(),
    ] {
        expect_code(
            admin
                .delete_webhook(DeleteWebhookRequest { id: id.clone() })
                .await,
            Code::NotFound,
        );
        expect_code(
            admin.list_webhook_deliveries(deliveries(&id)).await,
            Code::NotFound,
        );
    }
    admin
        .list_webhook_deliveries(deliveries(&first.id))
        .await
        .expect("the others are untouched");
    srv.finish().await;
}

on_both_backends!(
    create_api_key_returns_a_working_secret,
    list_api_keys_pages,
    webhook_lifecycle
);
