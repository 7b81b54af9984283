//! Every validation rule of an agent definition (CreateAgent, UpdateAgent): INVALID_ARGUMENT whose
//! `google.rpc.BadRequest` detail names the exact field, never a panic, never INTERNAL; each group of rules
//! also has its positive controls. Request-level fields are in `validation_requests.rs`.

mod common;

use agentry::pb::{
    Agent, AgentConfig, CreateAgentRequest, GetAgentRequest, McpServer, ModelSettings, ToolBinding,
    UpdateAgentRequest, WorkerConfig, agent_service_client::AgentServiceClient,
};
use common::{Auth, Backend, TestServer, agent, expect_code};
use pbjson_types::{FieldMask, Struct};
use serde_json::json;
use tonic::{Code, Response, Status, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

type Agents = AgentServiceClient<InterceptedService<Channel, Auth>>;

/// Asserts INVALID_ARGUMENT whose BadRequest detail (and message) names exactly `field`.
#[track_caller]
fn bad_field<T: std::fmt::Debug>(res: Result<Response<T>, Status>, field: &str) {
    let s = expect_code(res, Code::InvalidArgument);
    let br = s
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest detail: {s:?}"));
    let got: Vec<&str> = br
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        got.first().copied(),
        Some(field),
        "violations {got:?} of {s:?}"
    );
    assert!(!br.field_violations[0].description.is_empty(), "{s:?}");
    assert!(
        s.message().contains(field),
        "the message names the field: {s:?}"
    );
}

fn obj(v: serde_json::Value) -> Option<Struct> {
    Some(serde_json::from_value(v).expect("a JSON object"))
}

/// The minimal valid agent `id`, changed by `f`.
fn with(id: &str, f: impl FnOnce(&mut Agent)) -> Agent {
    let mut a = agent(id);
    f(&mut a);
    a
}

fn with_script(script: serde_json::Value) -> Agent {
    with("scripted", |a| {
        a.model = "scripted/script".into();
        a.metadata = obj(json!({ "script": script }));
    })
}

fn cfg(f: impl FnOnce(&mut AgentConfig)) -> Agent {
    let mut c = AgentConfig::default();
    f(&mut c);
    with("cfg", |a| a.config = Some(c))
}

fn mcp(servers: &[(&str, &str)]) -> Option<AgentConfig> {
    let server = |(n, u): &(&str, &str)| McpServer {
        name: n.to_string(),
        url: u.to_string(),
        ..Default::default()
    };
    let w = WorkerConfig {
        mcp_servers: servers.iter().map(server).collect(),
        ..Default::default()
    };
    Some(AgentConfig {
        worker_config: Some(w),
        ..Default::default()
    })
}

fn tools(names: &[&str]) -> Vec<ToolBinding> {
    names
        .iter()
        .map(|n| ToolBinding {
            name: n.to_string(),
            ..Default::default()
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Creates each agent and asserts that its failure names its field.
async fn refuse_all(c: &mut Agents, cases: Vec<(Agent, &str)>) {
    for (a, field) in cases {
        let what = format!("{a:?}");
        let res = c.create_agent(CreateAgentRequest { agent: Some(a) }).await;
        assert!(res.is_err(), "accepted: {}", &what[..what.len().min(300)]);
        bad_field(res, field);
    }
}

/// Creates each agent and asserts it is accepted (the positive controls of the rules).
async fn accept_all(c: &mut Agents, agents: Vec<Agent>) {
    for a in agents {
        let id = a.id.clone();
        if let Err(s) = c.create_agent(CreateAgentRequest { agent: Some(a) }).await {
            panic!("agent {id:?} should be valid: {s:?}");
        }
    }
}

async fn ids_names_and_texts(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    bad_field(
        c.create_agent(CreateAgentRequest { agent: None }).await,
        "agent",
    );
    let long_id = "a".repeat(256);
    let mut cases: Vec<(Agent, &str)> = [
        "Upper",
        "-dash",
        "has.dot",
        "with space",
        "ünï",
        long_id.as_str(),
    ]
    .map(|id| (agent(id), "agent.id"))
    .into();
    cases.extend([
        (with("noname", |a| a.name = String::new()), "agent.name"),
        (with("blank", |a| a.name = "   ".into()), "agent.name"),
        (
            with("long-name", |a| a.name = "n".repeat(256)),
            "agent.name",
        ),
        (
            with("desc", |a| a.description = "d".repeat(1001)),
            "agent.description",
        ),
        (
            with("tpl", |a| a.template = "t".repeat(100_001)),
            "agent.template",
        ),
    ]);
    refuse_all(&mut c, cases).await;
    let ok = vec![
        with(&"a".repeat(255), |a| a.name = "Longest id".into()),
        agent("0-digit_start"),
        // Limits count characters, not bytes.
        with("long-name", |a| a.name = "é".repeat(255)),
        with("desc", |a| a.description = "d".repeat(1000)),
        with("tpl", |a| a.template = "t".repeat(100_000)),
    ];
    accept_all(&mut c, ok).await;
    srv.finish().await;
}

async fn model_rules(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let models = [
        "gpt4",
        "nope/gpt-4o",
        "scripted/unknown",
        "openai/",
        "openai/gpt 4",
        "/gpt4",
    ];
    let mut cases: Vec<(Agent, &str)> = models
        .map(|m| (with("m", |a| a.model = m.into()), "agent.model"))
        .into();
    let script = "agent.metadata.script";
    let delay = "agent.metadata.script[1].delay_ms";
    let call = "agent.metadata.script[0].tool_calls[0]";
    cases.extend([
        (with("s", |a| a.model = "scripted/script".into()), script),
        (with_script(json!("hello")), script),
        (with_script(json!([])), script),
        (with_script(json!(["text"])), "agent.metadata.script[0]"),
        (
            with_script(json!([{"text": "a"}, {"text": "b", "tool_calls": [{"name": "x"}]}])),
            "agent.metadata.script[1]",
        ),
        (
            with_script(json!([{"tool_calls": []}])),
            "agent.metadata.script[0]",
        ),
        (
            with_script(json!([{"text": 5}])),
            "agent.metadata.script[0]",
        ),
        (
            with_script(json!([{"tool_calls": [{"arguments": {}}]}])),
            call,
        ),
        (
            with_script(json!([{"tool_calls": [{"name": "x", "arguments": "no"}]}])),
            call,
        ),
    ]);
    for d in [json!(-1), json!(600_001), json!("100"), json!(null)] {
        cases.push((
            with_script(json!([{"text": "hi"}, {"text": "there", "delay_ms": d}])),
            delay,
        ));
    }
    refuse_all(&mut c, cases).await;
    let turns =
        json!([{"text": "hi", "delay_ms": 10}, {"tool_calls": [{"name": "t", "arguments": {}}]}]);
    let ok = [
        "openai/gpt-4o-mini",
        "anthropic/claude-sonnet-4",
        "scripted/echo",
    ]
    .map(|m| with(&m.replace(['/', '.'], "-"), |a| a.model = m.into()));
    accept_all(&mut c, [ok.to_vec(), vec![with_script(turns)]].concat()).await;
    srv.finish().await;
}

async fn settings_and_labels(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let ms = |f: fn(&mut ModelSettings)| {
        let mut s = ModelSettings::default();
        f(&mut s);
        with("ms", |a| a.model_settings = Some(s))
    };
    let (t, p, m) = (
        "agent.model_settings.temperature",
        "agent.model_settings.top_p",
        "agent.model_settings.max_tokens",
    );
    let suffixes = ["[0]", "[1]", "[0]", "[1]", ""];
    let tag_fields = suffixes.map(|s| format!("agent.tags{s}"));
    let cap_fields = suffixes.map(|s| format!("agent.capabilities{s}"));
    let mut cases = vec![
        (ms(|s| s.temperature = Some(-0.1)), t),
        (ms(|s| s.temperature = Some(2.01)), t),
        (ms(|s| s.temperature = Some(f64::NAN)), t),
        (ms(|s| s.top_p = Some(-0.5)), p),
        (ms(|s| s.top_p = Some(1.5)), p),
        (ms(|s| s.max_tokens = Some(0)), m),
        (ms(|s| s.max_tokens = Some(-5)), m),
        (ms(|s| s.max_tokens = Some(1_000_001)), m),
        (with("cat", |a| a.category = "a,b".into()), "agent.category"),
        (
            with("cat", |a| a.category = "c".repeat(65)),
            "agent.category",
        ),
    ];
    let bad_labels = [
        vec![String::new()],
        strings(&["ok", " "]),
        strings(&["a,b"]),
        vec!["ok".into(), "x".repeat(65)],
        (0..51).map(|i| format!("l{i}")).collect(),
    ];
    for ((labels, tags), caps) in bad_labels.into_iter().zip(&tag_fields).zip(&cap_fields) {
        cases.push((with("l", |a| a.tags = labels.clone()), tags.as_str()));
        cases.push((with("l", |a| a.capabilities = labels), caps.as_str()));
    }
    refuse_all(&mut c, cases).await;
    let fifty: Vec<String> = (0..50).map(|i| format!("{i}{}", "y".repeat(60))).collect();
    let edge = ms(|s| {
        *s = ModelSettings {
            temperature: Some(2.0),
            top_p: Some(0.0),
            max_tokens: Some(1_000_000),
        }
    });
    let ok = vec![
        edge,
        with("tags", |a| a.tags = fifty.clone()),
        with("caps", |a| a.capabilities = fifty.clone()),
        with("category", |a| a.category = "c".repeat(64)),
    ];
    accept_all(&mut c, ok).await;
    srv.finish().await;
}

async fn schemas_visibility_config(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let mut cases = Vec::new();
    let schemas = [
        json!({"type": 12}),
        json!({"type": "nonsense"}),
        json!({"required": "x"}),
        json!({"minimum": "x"}),
    ];
    for bad in schemas {
        cases.push((
            with("schema", |a| a.input_schema = obj(bad.clone())),
            "agent.input_schema",
        ));
        cases.push((
            with("schema", |a| a.output_schema = obj(bad)),
            "agent.output_schema",
        ));
    }
    for v in [99, -1, 3] {
        cases.push((with("vis", |a| a.visibility = v), "agent.visibility"));
    }
    let (steps, runs) = ("agent.config.max_steps", "agent.config.num_history_runs");
    let (min, max) = (
        "agent.config.reasoning_min_steps",
        "agent.config.reasoning_max_steps",
    );
    cases.extend([
        (cfg(|c| c.max_steps = Some(0)), steps),
        (cfg(|c| c.max_steps = Some(101)), steps),
        (cfg(|c| c.num_history_runs = Some(101)), runs),
        (cfg(|c| c.num_history_runs = Some(-1)), runs),
        (cfg(|c| c.reasoning_max_steps = Some(0)), max),
        (cfg(|c| c.reasoning_min_steps = Some(101)), min),
        (
            cfg(|c| (c.reasoning_min_steps, c.reasoning_max_steps) = (Some(5), Some(4))),
            min,
        ),
        // The defaults count: a min of 20 against the default max of 10.
        (cfg(|c| c.reasoning_min_steps = Some(20)), min),
    ]);
    refuse_all(&mut c, cases).await;
    let good =
        obj(json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}));
    let ok = vec![
        with("schema", |a| {
            (a.input_schema, a.output_schema) = (good.clone(), good)
        }),
        with("public", |a| a.visibility = 2),
        cfg(|c| {
            (c.max_steps, c.num_history_runs) = (Some(100), Some(0));
            (c.reasoning_min_steps, c.reasoning_max_steps) = (Some(7), Some(7));
        }),
    ];
    accept_all(&mut c, ok).await;
    srv.finish().await;
}

async fn tools_and_mcp_servers(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    let (name0, name1) = (
        "agent.config.worker_config.mcp_servers[0].name",
        "agent.config.worker_config.mcp_servers[1].name",
    );
    let url0 = "agent.config.worker_config.mcp_servers[0].url";
    let long_url = format!("https://example.com/{}", "p".repeat(2048));
    let server = |list: &[(&str, &str)]| with("mcp", |a| a.config = mcp(list));
    let tool = |names: &[&str]| with("tools", |a| a.tools = tools(names));
    let declared = mcp(&[("srv", "https://mcp.example.com/mcp")]);
    let mcp_tool = |names: &[&str]| {
        with("tools", |a| {
            (a.tools, a.config) = (tools(names), declared.clone())
        })
    };
    let cases = vec![
        (server(&[("Bad Name", "https://mcp.example.com")]), name0),
        (server(&[("", "https://mcp.example.com")]), name0),
        (
            server(&[
                ("ok", "https://a.example.com"),
                ("ok", "https://b.example.com"),
            ]),
            name1,
        ),
        (server(&[("srv", "ftp://mcp.example.com")]), url0),
        (server(&[("srv", "mcp.example.com")]), url0),
        (server(&[("srv", "")]), url0),
        (server(&[("srv", long_url.as_str())]), url0),
        (tool(&["nope"]), "agent.tools[0].name"),
        (tool(&["current_time", ""]), "agent.tools[1].name"),
        (
            tool(&["current_time", "memory", "current_time"]),
            "agent.tools[2].name",
        ),
        (tool(&["current_time"; 65]), "agent.tools"),
        // mcp:<server>/<tool> is allowed only for a declared server, and needs a tool name.
        (tool(&["mcp:srv/tool"]), "agent.tools[0].name"),
        (mcp_tool(&["mcp:other/tool"]), "agent.tools[0].name"),
        (mcp_tool(&["mcp:srv/"]), "agent.tools[0].name"),
        (mcp_tool(&["mcp:srv"]), "agent.tools[0].name"),
        (mcp_tool(&["mcp:srv/a", "mcp:srv/a"]), "agent.tools[1].name"),
    ];
    refuse_all(&mut c, cases).await;
    accept_all(
        &mut c,
        vec![mcp_tool(&[
            "mcp:srv/search",
            "http_request",
            "current_time",
            "memory",
        ])],
    )
    .await;
    srv.finish().await;
}

async fn update_rules(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut c = srv.agents(&srv.admin_key).await;
    accept_all(&mut c, vec![agent("target")]).await;
    let upd = |patch: Option<Agent>, paths: &[&str]| UpdateAgentRequest {
        agent: patch,
        update_mask: Some(FieldMask {
            paths: strings(paths),
        }),
    };
    let target = |f: fn(&mut Agent)| {
        let mut a = Agent {
            id: "target".into(),
            ..Default::default()
        };
        f(&mut a);
        Some(a)
    };
    for path in [
        "nope",
        "version",
        "id",
        "create_time",
        "update_time",
        "hire",
        "config.nope",
        "name.x",
    ] {
        bad_field(
            c.update_agent(upd(target(|_| {}), &[path])).await,
            "update_mask.paths[0]",
        );
    }
    let res = c
        .update_agent(upd(target(|_| {}), &["description", "version"]))
        .await;
    bad_field(res, "update_mask.paths[1]");
    bad_field(c.update_agent(upd(None, &["description"])).await, "agent");
    bad_field(
        c.update_agent(upd(Some(Agent::default()), &["name"])).await,
        "agent.id",
    );
    bad_field(
        c.update_agent(upd(target(|a| a.id = "Target".into()), &["name"]))
            .await,
        "agent.id",
    );
    // The result of an update is validated like a new agent.
    let long = target(|a| a.description = "d".repeat(1001));
    bad_field(
        c.update_agent(upd(long.clone(), &["description"])).await,
        "agent.description",
    );
    bad_field(c.update_agent(upd(long, &[])).await, "agent.description");
    bad_field(
        c.update_agent(upd(target(|_| {}), &["name"])).await,
        "agent.name",
    );
    let steps = target(|a| {
        a.config = Some(AgentConfig {
            max_steps: Some(0),
            ..Default::default()
        })
    });
    bad_field(
        c.update_agent(upd(steps, &["config.max_steps"])).await,
        "agent.config.max_steps",
    );
    bad_field(
        c.update_agent(upd(target(|a| a.visibility = 99), &[]))
            .await,
        "agent.visibility",
    );
    bad_field(
        c.update_agent(upd(target(|a| a.model = "gpt4".into()), &[]))
            .await,
        "agent.model",
    );
    // None of the refused updates was stored.
    let got = c
        .get_agent(GetAgentRequest {
            id: "target".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.version, got.description.as_str(), got.model.as_str()),
        (1, "", "scripted/echo")
    );
    srv.finish().await;
}

on_both_backends!(
    ids_names_and_texts,
    model_rules,
    settings_and_labels,
    schemas_visibility_config,
    tools_and_mcp_servers,
    update_rules,
);
