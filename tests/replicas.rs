//! Two `agentry serve` processes sharing one PostgreSQL database: a key revoked or an agent changed
//! through one is seen by the other at once (LISTEN/NOTIFY invalidation), not after its cache TTL
//! (5 s for keys, 30 s for agents).

mod common;

use std::time::{Duration, Instant};

use agentry::pb::{
    CreateAgentRequest, CreateApiKeyRequest, GetAgentRequest, GetWorkspaceRequest,
    RevokeApiKeyRequest, UpdateAgentRequest,
};
use common::{Backend, TestServer, agent};

/// Well under both TTLs, well over a notification's round trip.
const PROPAGATION: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_other_replica_at_once() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let a = TestServer::start(&backend).await;
    let b = TestServer::start_on(a.db.share(), a.admin_key.clone()).await;

    // A key used on B (so B caches it), then revoked through A.
    let mut admin_a = a.admin(&a.admin_key).await;
    let created = admin_a
        .create_api_key(CreateApiKeyRequest {
            name: "temp".into(),
            scopes: vec!["agents:read".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut with_key_on_b = b.admin(&created.secret).await;
    with_key_on_b
        .get_workspace(GetWorkspaceRequest {})
        .await
        .expect("the new key works on B");
    admin_a
        .revoke_api_key(RevokeApiKeyRequest {
            id: created.api_key.unwrap().id,
        })
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        match with_key_on_b.get_workspace(GetWorkspaceRequest {}).await {
            Err(s) if s.code() == tonic::Code::Unauthenticated => break,
            _ if start.elapsed() > PROPAGATION => {
                panic!("B still accepts the revoked key after {PROPAGATION:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }

    // An agent read on B (so B caches it), then changed through A.
    let mut agents_a = a.agents(&a.admin_key).await;
    let mut agents_b = b.agents(&a.admin_key).await;
    agents_a
        .create_agent(CreateAgentRequest {
            agent: Some(agent("shared")),
        })
        .await
        .unwrap();
    let v1 = agents_b
        .get_agent(GetAgentRequest {
            id: "shared".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.version, 1);
    let patch = agentry::pb::Agent {
        id: "shared".into(),
        description: "changed on A".into(),
        ..Default::default()
    };
    agents_a
        .update_agent(UpdateAgentRequest {
            agent: Some(patch),
            update_mask: None,
        })
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let got = agents_b
            .get_agent(GetAgentRequest {
                id: "shared".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if got.version == 2 {
            assert_eq!(got.description, "changed on A");
            break;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "B still serves version 1 after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Deleted through A: gone on B too.
    agents_a
        .delete_agent(agentry::pb::DeleteAgentRequest {
            id: "shared".into(),
        })
        .await
        .unwrap();
    let start = Instant::now();
    while agents_b
        .get_agent(GetAgentRequest {
            id: "shared".into(),
        })
        .await
        .is_ok()
    {
        assert!(
            start.elapsed() < PROPAGATION,
            "B still serves a deleted agent after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _ = b.stop().await;
    a.finish().await;
}
