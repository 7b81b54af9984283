//! ListAgents: keyset pagination under concurrent inserts, and every filter (alone, combined, and with
//! a cursor).

mod agents_support;
mod common;

use std::{
    collections::{BTreeSet, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use agentry::pb::{Agent, DeleteAgentRequest, ListAgentsRequest, UpdateAgentRequest};
use agents_support::{Client, create, ids, json_struct, list_ids, sorted, walk_agents};
use common::{Backend, TestServer, agent};
use pbjson_types::FieldMask;

async fn pagination_over_250_agents_with_concurrent_inserts(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let c = srv.agents(&srv.admin_key).await;

    // 250 agents, created by 10 concurrent tasks.
    let originals: BTreeSet<String> = (0..250).map(|i| format!("orig-{i:03}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..10 {
        let mut c = c.clone();
        tasks.spawn(async move {
            for i in (t..250).step_by(10) {
                create(&mut c, agent(&format!("orig-{i:03}"))).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("creator task");
    }

    // Another task keeps inserting while the pages are read. Its ids sort before the originals, so a
    // list ordered by id with offsets would show duplicates.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let inserter = {
        let (mut c, stop, count) = (c.clone(), stop.clone(), count.clone());
        tokio::spawn(async move {
            let mut first_tx = Some(first_tx);
            let mut inserted = Vec::new();
            while !stop.load(Ordering::SeqCst) && inserted.len() < 500 {
                let id = format!("aa-new-{:03}", inserted.len());
                create(&mut c, agent(&id)).await;
                inserted.push(id);
                count.fetch_add(1, Ordering::SeqCst);
                if let Some(tx) = first_tx.take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            inserted
        })
    };
    first_rx.await.expect("the inserter inserts");
    let inserted_before_walk = count.load(Ordering::SeqCst);

    let mut pc = c.clone();
    let mut seen: Vec<String> = Vec::new();
    let mut req = ListAgentsRequest {
        limit: 7,
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = pc
            .list_agents(req.clone())
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(pages < 1000, "pagination does not end");
        assert!(
            page.agents.len() <= 7,
            "a page holds at most `limit` agents"
        );
        if !page.next_cursor.is_empty() {
            assert_eq!(page.agents.len(), 7, "only the last page may be short");
        }
        seen.extend(ids(&page.agents));
        if page.next_cursor.is_empty() {
            break;
        }
        req.cursor = page.next_cursor;
    }
    assert!(
        count.load(Ordering::SeqCst) > inserted_before_walk,
        "inserts ran during the walk"
    );
    let inserted_during_walk = {
        stop.store(true, Ordering::SeqCst);
        inserter.await.expect("inserter task")
    };
    assert!(!inserted_during_walk.is_empty());
    assert!(pages >= 250 / 7, "{pages} pages");

    let mut unique = HashSet::new();
    for id in &seen {
        assert!(unique.insert(id.clone()), "{id} listed twice");
        assert!(
            originals.contains(id) || inserted_during_walk.contains(id),
            "unknown id {id}"
        );
    }
    for id in &originals {
        assert!(unique.contains(id), "{id} was never listed (gap)");
    }

    // Quiet now: every page size is exact, and the walk holds everything exactly once.
    let everything: BTreeSet<String> = originals
        .iter()
        .chain(&inserted_during_walk)
        .cloned()
        .collect();
    let total = everything.len();
    for (limit, page_size) in [(100, 100), (0, 20), (7, 7)] {
        let (all, sizes) = walk_agents(
            &mut pc,
            ListAgentsRequest {
                limit,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(all.len(), total, "limit {limit}");
        assert_eq!(
            ids(&all).into_iter().collect::<BTreeSet<_>>(),
            everything,
            "limit {limit}"
        );
        let (last, full) = sizes.split_last().unwrap();
        assert!(
            full.iter().all(|s| *s == page_size),
            "limit {limit}: {sizes:?}"
        );
        assert!(
            *last <= page_size && (*last > 0 || sizes.len() == 1),
            "limit {limit}: {sizes:?}"
        );
        assert_eq!(
            sizes.len(),
            total.div_ceil(page_size),
            "limit {limit}: {sizes:?}"
        );
    }
    srv.finish().await;
}

/// Agents to filter: each filter has a near miss next to its hit.
async fn seed_filter_agents(c: &mut Client) {
    let specs: Vec<(&str, serde_json::Value)> = vec![
        (
            "sup",
            serde_json::json!({"tags": ["sup"], "category": "sales", "capabilities": ["email"]}),
        ),
        (
            "support",
            serde_json::json!({"tags": ["support", "x"], "category": "sales-ops", "capabilities": ["emails"]}),
        ),
        (
            "promo",
            serde_json::json!({"tags": ["50%_off"], "category": "marketing", "capabilities": ["e-mail", "email"]}),
        ),
        // Would match an unescaped LIKE '%,50%_off,%'.
        (
            "promo-like",
            serde_json::json!({"tags": ["50xyoff"], "category": "sales%", "capabilities": ["e_mail"]}),
        ),
        (
            "promo-longer",
            serde_json::json!({"tags": ["50%_offer", "a"], "category": "Sales", "capabilities": ["mail"]}),
        ),
    ];
    for (id, v) in specs {
        let mut a = agent(id);
        a.tags = serde_json::from_value(v["tags"].clone()).unwrap();
        a.category = v["category"].as_str().unwrap().to_owned();
        a.capabilities = serde_json::from_value(v["capabilities"].clone()).unwrap();
        create(c, a).await;
    }
    let mut a = agent("helper");
    a.name = "Customer HELPER".into();
    a.description = "Handles refunds and 100% of complaints".into();
    a.enabled = Some(false);
    create(c, a).await;
    let mut a = agent("refund-bot");
    a.name = "Refund bot".into();
    a.description = "under_score".into();
    create(c, a).await;
    for (id, meta) in [
        (
            "pb-renewal",
            serde_json::json!({"playbook_template": "renewal"}),
        ),
        (
            "pb-renewal-v2",
            serde_json::json!({"playbook_template": "renewal-v2"}),
        ),
        ("pb-number", serde_json::json!({"playbook_template": 5})),
        (
            "pb-nested",
            serde_json::json!({"playbook": {"playbook_template": "renewal"}}),
        ),
        (
            "pb-renewal-off",
            serde_json::json!({"playbook_template": "renewal", "x": 1}),
        ),
    ] {
        let mut a = agent(id);
        a.metadata = Some(json_struct(meta));
        a.enabled = Some(id != "pb-renewal-off");
        create(c, a).await;
    }
}

async fn filters(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    seed_filter_agents(&mut c).await;
    let q = |f: fn(&mut ListAgentsRequest)| {
        let mut r = ListAgentsRequest::default();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, ListAgentsRequest, Vec<&str>)> = vec![
        ("tag sup", q(|r| r.tag = "sup".into()), vec!["sup"]),
        (
            "tag support",
            q(|r| r.tag = "support".into()),
            vec!["support"],
        ),
        ("tag su (prefix)", q(|r| r.tag = "su".into()), vec![]),
        (
            "tag x (second label)",
            q(|r| r.tag = "x".into()),
            vec!["support"],
        ),
        (
            "tag 50%_off",
            q(|r| r.tag = "50%_off".into()),
            vec!["promo"],
        ),
        ("tag 50%", q(|r| r.tag = "50%".into()), vec![]),
        ("tag %", q(|r| r.tag = "%".into()), vec![]),
        ("tag _", q(|r| r.tag = "_".into()), vec![]),
        (
            "category sales",
            q(|r| r.category = "sales".into()),
            vec!["sup"],
        ),
        (
            "category sales%",
            q(|r| r.category = "sales%".into()),
            vec!["promo-like"],
        ),
        ("category sale", q(|r| r.category = "sale".into()), vec![]),
        (
            "capability email",
            q(|r| r.capability = "email".into()),
            vec!["sup", "promo"],
        ),
        (
            "capability e_mail",
            q(|r| r.capability = "e_mail".into()),
            vec!["promo-like"],
        ),
        (
            "capability mail",
            q(|r| r.capability = "mail".into()),
            vec!["promo-longer"],
        ),
        (
            "enabled false",
            q(|r| r.enabled = Some(false)),
            vec!["helper", "pb-renewal-off"],
        ),
        (
            "query refund",
            q(|r| r.query = "REFUND".into()),
            vec!["helper", "refund-bot"],
        ),
        (
            "query helper",
            q(|r| r.query = "helper".into()),
            vec!["helper"],
        ),
        ("query 100%", q(|r| r.query = "100%".into()), vec!["helper"]),
        (
            "query 0% of",
            q(|r| r.query = "0% OF".into()),
            vec!["helper"],
        ),
        ("query _", q(|r| r.query = "_".into()), vec!["refund-bot"]),
        ("query nothing", q(|r| r.query = "zzz".into()), vec![]),
        (
            "playbook renewal",
            q(|r| r.playbook_template = "renewal".into()),
            vec!["pb-renewal", "pb-renewal-off"],
        ),
        (
            "playbook renewal-v2",
            q(|r| r.playbook_template = "renewal-v2".into()),
            vec!["pb-renewal-v2"],
        ),
        (
            "playbook renew",
            q(|r| r.playbook_template = "renew".into()),
            vec![],
        ),
        (
            "playbook 5 (not a string)",
            q(|r| r.playbook_template = "5".into()),
            vec![],
        ),
        (
            "playbook + enabled",
            q(|r| {
                r.playbook_template = "renewal".into();
                r.enabled = Some(true);
            }),
            vec!["pb-renewal"],
        ),
        (
            "capability + category",
            q(|r| {
                r.capability = "email".into();
                r.category = "marketing".into();
            }),
            vec!["promo"],
        ),
        (
            "query + enabled",
            q(|r| {
                r.query = "refund".into();
                r.enabled = Some(true);
            }),
            vec!["refund-bot"],
        ),
        (
            "tag + category mismatch",
            q(|r| {
                r.tag = "sup".into();
                r.category = "marketing".into();
            }),
            vec![],
        ),
    ];
    for (name, req, want) in cases {
        assert_eq!(list_ids(&mut c, req).await, sorted(&want), "{name}");
    }
    let all = list_ids(&mut c, ListAgentsRequest::default()).await;
    assert_eq!(all.len(), 12);
    let enabled = list_ids(
        &mut c,
        ListAgentsRequest {
            enabled: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(enabled.len(), 10);
    assert!(!enabled.contains(&"helper".to_owned()));

    // The filter columns follow updates and deletes.
    let patch = Agent {
        id: "sup".into(),
        tags: vec!["renamed".into()],
        ..Default::default()
    };
    let mask = FieldMask {
        paths: vec!["tags".into()],
    };
    c.update_agent(UpdateAgentRequest {
        agent: Some(patch),
        update_mask: Some(mask),
    })
    .await
    .unwrap();
    assert!(
        list_ids(
            &mut c,
            ListAgentsRequest {
                tag: "sup".into(),
                ..Default::default()
            }
        )
        .await
        .is_empty()
    );
    assert_eq!(
        list_ids(
            &mut c,
            ListAgentsRequest {
                tag: "renamed".into(),
                ..Default::default()
            }
        )
        .await,
        sorted(&["sup"])
    );
    let patch = Agent {
        id: "helper".into(),
        enabled: Some(true),
        ..Default::default()
    };
    let mask = FieldMask {
        paths: vec!["enabled".into()],
    };
    c.update_agent(UpdateAgentRequest {
        agent: Some(patch),
        update_mask: Some(mask),
    })
    .await
    .unwrap();
    assert_eq!(
        list_ids(
            &mut c,
            ListAgentsRequest {
                enabled: Some(false),
                ..Default::default()
            }
        )
        .await,
        sorted(&["pb-renewal-off"])
    );
    c.delete_agent(DeleteAgentRequest { id: "promo".into() })
        .await
        .unwrap();
    assert!(
        list_ids(
            &mut c,
            ListAgentsRequest {
                tag: "50%_off".into(),
                ..Default::default()
            }
        )
        .await
        .is_empty()
    );
    assert_eq!(
        list_ids(
            &mut c,
            ListAgentsRequest {
                capability: "email".into(),
                ..Default::default()
            }
        )
        .await,
        sorted(&["sup"])
    );
    srv.finish().await;
}

async fn filters_with_pagination(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    // 30 agents; every third is tagged "bulk", and half of those are disabled.
    let mut bulk = Vec::new();
    let mut bulk_enabled = Vec::new();
    for i in 0..30 {
        let mut a = agent(&format!("p-{i:02}"));
        if i % 3 == 0 {
            a.tags = vec!["bulk".into(), format!("n{i}")];
            a.category = "ops".into();
            a.enabled = Some(i % 2 == 0);
            bulk.push(a.id.clone());
            if i % 2 == 0 {
                bulk_enabled.push(a.id.clone());
            }
        } else {
            a.tags = vec!["bulky".into()];
            a.category = "ops".into();
        }
        create(&mut c, a).await;
    }
    assert_eq!(bulk.len(), 10);

    let (all, sizes) = walk_agents(
        &mut c,
        ListAgentsRequest {
            limit: 3,
            tag: "bulk".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&all), bulk, "creation order, every match once");
    assert_eq!(sizes, vec![3, 3, 3, 1]);

    let req = ListAgentsRequest {
        limit: 2,
        tag: "bulk".into(),
        enabled: Some(true),
        category: "ops".into(),
        ..Default::default()
    };
    let (all, sizes) = walk_agents(&mut c, req).await;
    assert_eq!(ids(&all), bulk_enabled);
    assert_eq!(sizes, vec![2, 2, 1]);

    // A filtered cursor, reused with the same filter, resumes after the last agent of its page.
    let first = c
        .list_agents(ListAgentsRequest {
            limit: 4,
            tag: "bulk".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&first.agents), bulk[..4].to_vec());
    // An agent that now matches but sorts before the cursor is not shown; one created after it is.
    let patch = Agent {
        id: "p-01".into(),
        tags: vec!["bulk".into()],
        ..Default::default()
    };
    c.update_agent(UpdateAgentRequest {
        agent: Some(patch),
        update_mask: Some(FieldMask {
            paths: vec!["tags".into()],
        }),
    })
    .await
    .unwrap();
    let mut late = agent("p-late");
    late.tags = vec!["bulk".into()];
    create(&mut c, late).await;
    let mut rest = Vec::new();
    let mut cursor = first.next_cursor;
    while !cursor.is_empty() {
        let page = c
            .list_agents(ListAgentsRequest {
                limit: 4,
                tag: "bulk".into(),
                cursor,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        rest.extend(ids(&page.agents));
        cursor = page.next_cursor;
    }
    let mut want = bulk[4..].to_vec();
    want.push("p-late".into());
    assert_eq!(rest, want);

    // A query filter across pages.
    let (all, sizes) = walk_agents(
        &mut c,
        ListAgentsRequest {
            limit: 5,
            query: "AGENT P-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&all),
        (10..20).map(|i| format!("p-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(sizes, vec![5, 5]);
    srv.finish().await;
}

on_both_backends!(
    pagination_over_250_agents_with_concurrent_inserts,
    filters,
    filters_with_pagination
);
