//! `/openapi.json` against a real server: an OpenAPI 3.1 document that is valid (structurally here, and
//! by `openapi-spec-validator` when Python has it), that lists exactly the routes the server has, and
//! whose every operation the live server answers (never "no route" 404 or 405, never a 5xx).

mod common;
mod rest_support;

use std::collections::{BTreeSet, HashSet};

use common::{Backend, TestServer};
use http::Method;
use rest_support::Http;
use serde_json::{Value as J, json};

async fn document(h: &Http) -> J {
    let r = h.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a J, out: &mut Vec<&'a str>) {
    match v {
        J::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().expect("a $ref is a string"));
                } else {
                    refs(x, out);
                }
            }
        }
        J::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn operations(doc: &J) -> Vec<(String, String, &J)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.to_ascii_uppercase(), path.clone(), op));
        }
    }
    out
}

async fn document_is_valid_and_complete(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::anonymous(srv.http_addr);
    let doc = document(&h).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["bearer"],
        json!({"type": "http", "scheme": "bearer",
        "description": schemes["bearer"]["description"]})
    );
    assert_eq!(schemes["apiKey"]["in"], "header");
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Agent",
        "RunEvent",
        "Flow",
        "ApiKey",
        "Status",
        "Visibility",
        "RunStatus",
    ] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
    assert_eq!(
        schemas["Agent"]["properties"]["version"]["type"], "string",
        "int64 as a string"
    );
    assert_eq!(
        schemas["Agent"]["properties"]["create_time"]["format"],
        "date-time"
    );
    assert_eq!(
        schemas["Agent"]["properties"]["create_time"]["readOnly"],
        true
    );
    assert_eq!(schemas["Agent"]["properties"]["metadata"]["type"], "object");
    assert_eq!(
        schemas["Visibility"]["enum"],
        json!([
            "VISIBILITY_UNSPECIFIED",
            "VISIBILITY_PRIVATE",
            "VISIBILITY_PUBLIC"
        ])
    );

    // Every $ref resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 100);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("a local schema ref");
        assert!(schemas.contains_key(name), "dangling {r}");
    }

    // operationIds are unique; every template variable is a path parameter and vice versa.
    let mut ids = HashSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        let vars: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap())
            .collect();
        let params: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(vars, params, "{method} {path}");
        assert!(op["responses"]["200"].is_object(), "{method} {path}");
        if op["tags"][0] == "Meta" {
            continue;
        }
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Status"
        );
    }

    // The document lists exactly the server's routes.
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .filter(|(_, _, op)| op["tags"][0] != "Meta")
        .map(|(m, _, op)| (m, op["operationId"].as_str().unwrap().to_owned()))
        .collect();
    let served: BTreeSet<(String, String)> = agentry::rest::operations()
        .into_iter()
        .map(|(m, _, id)| (m.to_string(), id.to_owned()))
        .collect();
    assert_eq!(documented, served);
    assert!(served.len() > 100, "{}", served.len());
    srv.finish().await;
}

/// A value for a path parameter, per its schema.
fn sample(param: &J) -> &'static str {
    if param["schema"]["format"] == "int64" {
        "1"
    } else {
        "x1"
    }
}

async fn every_documented_route_answers(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let h = Http::new(srv.http_addr, &srv.admin_key);
    let doc = document(&h).await;
    let mut seen = 0;
    for (method, path, op) in operations(&doc) {
        let mut url = path.clone();
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] == "path" {
                let name = p["name"].as_str().unwrap();
                url = url.replace(&format!("{{{name}}}"), sample(p));
            }
        }
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = h.request(m, &url);
        if op.get("requestBody").is_some() {
            req = req.json(&json!({}));
        }
        let r = h.send(req).await;
        let ctx = format!(
            "{method} {url} ({}): {} {}",
            op["operationId"],
            r.status,
            r.text()
        );
        assert_ne!(r.status, 405, "{ctx}");
        if r.status == 404 {
            let e = r.json();
            assert!(
                !e["message"].as_str().unwrap().starts_with("no route"),
                "{ctx}"
            );
        }
        assert!(r.status < 500, "{ctx}");
        if r.status >= 400 {
            r.expect_error(r.status, r.json()["code"].as_i64().unwrap() as i32);
        }
        seen += 1;
    }
    assert!(seen > 100, "{seen}");
    srv.finish().await;
}

/// openapi-spec-validator, when this machine's Python has it (CI installs it and also validates the
/// document of a live server in .ci/run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_spec_validator_accepts_it() {
    let has = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        eprintln!("SKIPPED: python3 -m openapi_spec_validator is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, agentry::rest::OPENAPI_JSON).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

on_both_backends!(
    document_is_valid_and_complete,
    every_documented_route_answers
);
