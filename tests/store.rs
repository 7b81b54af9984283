//! The store: built-in agents (store/*.json), then PUBLIC agents of every workspace, their versions and
//! slugs. Hiring and ListActiveAgents are in `store_hire.rs`.

mod agents_support;
mod common;

use std::collections::BTreeSet;

use agentry::pb::{
    Agent, DeleteAgentRequest, GetAgentRequest, GetStoreAgentRequest, ListStoreAgentsRequest,
    StoreSource, Visibility,
};
use agents_support::{
    Client, builtin_slugs, builtins, create, get_store, patch, public, store_slugs, strings,
    walk_store,
};
use common::{Backend, TestServer, agent, expect_code};
use tonic::Code;

async fn builtin_catalog(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let data = builtins();

    let page = c
        .list_store_agents(ListStoreAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(page.next_cursor.is_empty());
    assert_eq!(page.agents.len(), data.len(), "one entry per store/*.json");
    for (entry, (slug, json)) in page.agents.iter().zip(&data) {
        assert_eq!(&entry.slug, slug);
        assert_eq!(entry.source, StoreSource::Builtin as i32);
        assert_eq!(entry.publisher, "agentry");
        let a = entry.agent.as_ref().expect("agent");
        assert_eq!(&a.id, slug);
        assert_eq!(a.version, 1);
        assert_eq!(a.visibility, Visibility::Public as i32);
        assert_eq!(a.name, json["name"].as_str().unwrap());
        assert_eq!(a.description, json["description"].as_str().unwrap_or(""));
        assert_eq!(a.category, json["category"].as_str().unwrap_or(""));
        assert_eq!(a.model, json["model"].as_str().unwrap());
        assert_eq!(a.template, json["template"].as_str().unwrap());
        assert_eq!(a.capabilities, strings(&json["capabilities"]));
        assert_eq!(a.tags, strings(&json["tags"]));
        assert!(a.hire.is_none());
        // GetStoreAgent returns the same entry, at version 0 (latest) and 1.
        assert_eq!(&get_store(&mut c, slug, 0).await.unwrap(), entry);
        assert_eq!(&get_store(&mut c, slug, 1).await.unwrap(), entry);
        expect_code(
            c.get_store_agent(GetStoreAgentRequest {
                slug: slug.clone(),
                version: 2,
            })
            .await,
            Code::NotFound,
        );
    }

    let categories: BTreeSet<String> = data
        .iter()
        .filter_map(|(_, j)| j["category"].as_str().map(str::to_owned))
        .collect();
    assert!(categories.len() >= 2);
    for cat in &categories {
        let want = builtin_slugs(|j| j["category"].as_str() == Some(cat.as_str()));
        let got = store_slugs(
            &mut c,
            ListStoreAgentsRequest {
                category: cat.clone(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, want, "category {cat}");
    }
    let capabilities: BTreeSet<String> = data
        .iter()
        .flat_map(|(_, j)| strings(&j["capabilities"]))
        .collect();
    for cap in &capabilities {
        let want = builtin_slugs(|j| strings(&j["capabilities"]).contains(cap));
        let got = store_slugs(
            &mut c,
            ListStoreAgentsRequest {
                capability: cap.clone(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, want, "capability {cap}");
    }
    // A capability shared by several agents, combined with a category.
    let cap = capabilities
        .iter()
        .find(|cap| builtin_slugs(|j| strings(&j["capabilities"]).contains(cap)).len() >= 2)
        .expect("a shared capability");
    let first = builtin_slugs(|j| strings(&j["capabilities"]).contains(cap)).remove(0);
    let cat = data.iter().find(|(s, _)| *s == first).unwrap().1["category"]
        .as_str()
        .unwrap()
        .to_owned();
    let want = builtin_slugs(|j| {
        strings(&j["capabilities"]).contains(cap) && j["category"].as_str() == Some(&cat)
    });
    let got = store_slugs(
        &mut c,
        ListStoreAgentsRequest {
            capability: cap.clone(),
            category: cat,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(got, want);
    assert!(
        store_slugs(
            &mut c,
            ListStoreAgentsRequest {
                category: "no-such-category".into(),
                ..Default::default()
            }
        )
        .await
        .is_empty()
    );
    // A prefix of a capability is not that capability.
    let prefix = &cap[..cap.len() - 1];
    let want = builtin_slugs(|j| strings(&j["capabilities"]).iter().any(|c| c == prefix));
    assert_eq!(
        store_slugs(
            &mut c,
            ListStoreAgentsRequest {
                capability: prefix.into(),
                ..Default::default()
            }
        )
        .await,
        want
    );

    for q in ["SCRIPTED", "email", "Review", "zzz-nothing"] {
        let ql = q.to_lowercase();
        let want = builtin_slugs(|j| {
            j["name"].as_str().unwrap().to_lowercase().contains(&ql)
                || j["description"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&ql)
        });
        let got = store_slugs(
            &mut c,
            ListStoreAgentsRequest {
                query: q.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, want, "query {q}");
    }
    expect_code(
        get_store(&mut c, "no-such-agent", 0)
            .await
            .map(tonic::Response::new),
        Code::NotFound,
    );
    srv.finish().await;
}

async fn pagination_builtins_then_public(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let beta_key = srv.workspace_key("beta", "agents:read,agents:write").await;
    let mut beta = srv.agents(&beta_key).await;
    for id in ["d4", "d1", "d3", "d2"] {
        create(&mut c, public(id)).await;
    }
    for id in ["b2", "b1", "b3"] {
        create(&mut beta, public(id)).await;
    }
    // Not in the store: private, disabled, deleted.
    create(&mut c, agent("private")).await;
    create(
        &mut c,
        Agent {
            enabled: Some(false),
            ..public("disabled")
        },
    )
    .await;
    create(&mut beta, public("gone")).await;
    beta.delete_agent(DeleteAgentRequest { id: "gone".into() })
        .await
        .unwrap();

    let mut want: Vec<String> = builtins().into_iter().map(|(s, _)| s).collect();
    want.extend(
        [
            "beta.b1",
            "beta.b2",
            "beta.b3",
            "default.d1",
            "default.d2",
            "default.d3",
            "default.d4",
        ]
        .map(String::from),
    );
    for limit in [3, 1, 2, 4, 5, 7, 11, 100] {
        for client in [&mut c, &mut beta] {
            let (all, sizes) = walk_store(
                client,
                ListStoreAgentsRequest {
                    limit,
                    ..Default::default()
                },
            )
            .await;
            let slugs: Vec<String> = all.iter().map(|s| s.slug.clone()).collect();
            assert_eq!(
                slugs, want,
                "limit {limit}: built-ins by slug, then public agents by (workspace, id)"
            );
            let (last, full) = sizes.split_last().unwrap();
            assert!(
                full.iter().all(|s| *s == limit as usize) && *last >= 1,
                "limit {limit}: {sizes:?}"
            );
        }
    }
    let (all, _) = walk_store(
        &mut c,
        ListStoreAgentsRequest {
            limit: 3,
            ..Default::default()
        },
    )
    .await;
    let n = builtins().len();
    assert!(
        all[..n]
            .iter()
            .all(|s| s.source == StoreSource::Builtin as i32 && s.publisher == "agentry")
    );
    for s in &all[n..] {
        assert_eq!(s.source, StoreSource::Public as i32);
        assert_eq!(s.publisher, s.slug.split_once('.').unwrap().0);
        assert_eq!(s.agent.as_ref().unwrap().id, s.slug);
    }

    // Filters keep the order and apply to both parts, across pages.
    let echo_cats: Vec<String> = builtin_slugs(|j| j["category"].as_str() == Some("demo"));
    assert!(!echo_cats.is_empty(), "the store has demo agents");
    create(
        &mut beta,
        Agent {
            category: "demo".into(),
            capabilities: vec!["streaming".into()],
            ..public("b-demo")
        },
    )
    .await;
    create(
        &mut c,
        Agent {
            category: "demo".into(),
            ..public("d-demo")
        },
    )
    .await;
    let mut want = echo_cats.clone();
    want.extend(["beta.b-demo".to_owned(), "default.d-demo".to_owned()]);
    for limit in [1, 2, 3] {
        let got = store_slugs(
            &mut c,
            ListStoreAgentsRequest {
                limit,
                category: "demo".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, want, "category demo, limit {limit}");
    }
    let mut want = builtin_slugs(|j| strings(&j["capabilities"]).iter().any(|c| c == "streaming"));
    want.push("beta.b-demo".into());
    let got = store_slugs(
        &mut c,
        ListStoreAgentsRequest {
            limit: 1,
            capability: "streaming".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(got, want);
    let got = store_slugs(
        &mut c,
        ListStoreAgentsRequest {
            limit: 2,
            query: "AGENT D".into(),
            ..Default::default()
        },
    )
    .await;
    let mut want = builtin_slugs(|j| {
        j["name"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("agent d")
            || j["description"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("agent d")
    });
    want.extend(
        [
            "default.d-demo",
            "default.d1",
            "default.d2",
            "default.d3",
            "default.d4",
        ]
        .map(String::from),
    );
    assert_eq!(got, want);
    srv.finish().await;
}

async fn in_store(c: &mut Client, slug: &str) -> bool {
    let listed = store_slugs(
        c,
        ListStoreAgentsRequest {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .iter()
    .any(|s| s == slug);
    let got = get_store(c, slug, 0).await;
    match &got {
        Ok(e) => assert_eq!(e.slug, slug),
        Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
    }
    assert_eq!(listed, got.is_ok(), "{slug}: list and get agree");
    listed
}

async fn public_agent_lifecycle(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let acme_key = srv.workspace_key("acme", "agents:read,agents:write").await;
    let mut acme = srv.agents(&acme_key).await;
    let mut a = agent("pub");
    a.description = "A public helper".into();
    a.category = "ops".into();
    create(&mut acme, a).await;
    assert!(!in_store(&mut c, "acme.pub").await, "private by default");

    let made_public = patch(
        &mut acme,
        Agent {
            id: "pub".into(),
            visibility: Visibility::Public as i32,
            ..Default::default()
        },
        &["visibility"],
    )
    .await;
    for client in [&mut c, &mut acme] {
        assert!(in_store(client, "acme.pub").await);
        let e = get_store(client, "acme.pub", 0).await.unwrap();
        assert_eq!(e.source, StoreSource::Public as i32);
        assert_eq!(e.publisher, "acme");
        let a = e.agent.unwrap();
        assert_eq!(
            a,
            Agent {
                id: "acme.pub".into(),
                ..made_public.clone()
            },
            "the definition, with id set to the slug"
        );
    }
    // The owner still reads it under its own id; the other workspace does not.
    expect_code(
        c.get_agent(GetAgentRequest { id: "pub".into() }).await,
        Code::NotFound,
    );

    let private = Agent {
        id: "pub".into(),
        visibility: Visibility::Private as i32,
        ..Default::default()
    };
    patch(&mut acme, private, &["visibility"]).await;
    assert!(!in_store(&mut c, "acme.pub").await, "private again");
    patch(
        &mut acme,
        Agent {
            id: "pub".into(),
            visibility: Visibility::Public as i32,
            ..Default::default()
        },
        &["visibility"],
    )
    .await;
    assert!(in_store(&mut c, "acme.pub").await);
    patch(
        &mut acme,
        Agent {
            id: "pub".into(),
            enabled: Some(false),
            ..Default::default()
        },
        &["enabled"],
    )
    .await;
    assert!(!in_store(&mut c, "acme.pub").await, "disabled");
    patch(
        &mut acme,
        Agent {
            id: "pub".into(),
            enabled: Some(true),
            ..Default::default()
        },
        &["enabled"],
    )
    .await;
    assert!(in_store(&mut acme, "acme.pub").await);
    acme.delete_agent(DeleteAgentRequest { id: "pub".into() })
        .await
        .unwrap();
    assert!(!in_store(&mut c, "acme.pub").await, "deleted");
    assert!(!in_store(&mut acme, "acme.pub").await, "deleted");
    srv.finish().await;
}

async fn store_versions_and_unknown_slugs(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let acme_key = srv.workspace_key("acme", "agents:read,agents:write").await;
    let mut acme = srv.agents(&acme_key).await;
    let v1 = create(
        &mut acme,
        Agent {
            description: "old".into(),
            ..public("pub")
        },
    )
    .await;
    let v2 = patch(
        &mut acme,
        Agent {
            id: "pub".into(),
            description: "new".into(),
            ..Default::default()
        },
        &["description"],
    )
    .await;
    assert_eq!(v2.version, 2);
    create(&mut acme, agent("secret")).await;

    let latest = get_store(&mut c, "acme.pub", 0)
        .await
        .unwrap()
        .agent
        .unwrap();
    assert_eq!(
        latest,
        Agent {
            id: "acme.pub".into(),
            ..v2.clone()
        }
    );
    assert_eq!(
        get_store(&mut c, "acme.pub", 2)
            .await
            .unwrap()
            .agent
            .unwrap(),
        latest
    );
    let old = get_store(&mut c, "acme.pub", 1).await.unwrap();
    assert_eq!(
        (old.slug.as_str(), old.source, old.publisher.as_str()),
        ("acme.pub", StoreSource::Public as i32, "acme")
    );
    assert_eq!(
        old.agent.unwrap(),
        Agent {
            id: "acme.pub".into(),
            ..v1
        },
        "version 1 is the old definition"
    );
    // The listing shows the latest.
    let (all, _) = walk_store(&mut c, ListStoreAgentsRequest::default()).await;
    let listed = all.into_iter().find(|s| s.slug == "acme.pub").unwrap();
    assert_eq!(listed.agent.unwrap().description, "new");

    for (slug, version) in [
        ("acme.pub", 3),
        ("acme.nope", 0),
        ("nows.pub", 0),
        ("acme.secret", 0),
        ("acme.secret", 1),
        ("default.pub", 0),
        ("no-such-builtin", 0),
        ("echo", 2),
    ] {
        let s = get_store(&mut c, slug, version).await.expect_err(slug);
        assert_eq!(s.code(), Code::NotFound, "{slug}@{version}: {s:?}");
    }
    srv.finish().await;
}

on_both_backends!(
    builtin_catalog,
    pagination_builtins_then_public,
    public_agent_lifecycle,
    store_versions_and_unknown_slugs
);
