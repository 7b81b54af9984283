//! Unit tests of `json_out.rs`.
use super::*;
use crate::pb;
use pbjson_types::{Struct, Timestamp, Value, value::Kind as V};

/// The reference: prost-reflect's serializer with the same options.
fn reflect(name: &str, bytes: &[u8]) -> serde_json::Value {
    let d = transcode::message(name).unwrap();
    let m = prost_reflect::DynamicMessage::decode(d, bytes).unwrap();
    m.serialize_with_options(
        serde_json::value::Serializer,
        &transcode::serialize_options(),
    )
    .unwrap()
}

#[track_caller]
fn same(name: &str, msg: &impl prost::Message) {
    let bytes = msg.encode_to_vec();
    let ours: serde_json::Value = serde_json::from_slice(&to_json(name, &bytes).unwrap()).unwrap();
    assert_eq!(ours, reflect(name, &bytes), "{name}");
}

fn value(k: V) -> Value {
    Value { kind: Some(k) }
}

fn full_agent() -> pb::Agent {
    let mut meta = Struct::default();
    meta.fields.insert("n".into(), value(V::NumberValue(1.5)));
    meta.fields
        .insert("s".into(), value(V::StringValue("a\"b\n".into())));
    meta.fields.insert("b".into(), value(V::BoolValue(true)));
    meta.fields.insert("z".into(), value(V::NullValue(0)));
    let mut inner = Struct::default();
    inner.fields.insert(
        "deep".into(),
        value(V::ListValue(pbjson_types::ListValue {
            values: vec![
                value(V::NumberValue(-2.0)),
                value(V::StringValue("x".into())),
            ],
        })),
    );
    meta.fields.insert("o".into(), value(V::StructValue(inner)));
    pb::Agent {
        id: "a-1".into(),
        name: "Agent ünïcode ✓".into(),
        version: 1 << 40,
        model_settings: Some(pb::ModelSettings {
            temperature: Some(0.25),
            max_tokens: Some(-5),
            top_p: None,
        }),
        tags: vec!["t1".into(), "t2".into()],
        tools: vec![pb::ToolBinding {
            name: "http_request".into(),
            requires_confirmation: true,
            config: Some(meta.clone()),
        }],
        config: Some(pb::AgentConfig {
            enable_memory: Some(false),
            max_steps: Some(10),
            worker_config: Some(pb::WorkerConfig {
                mcp_servers: vec![pb::McpServer {
                    name: "m".into(),
                    headers: [
                        ("a".to_owned(), "1".to_owned()),
                        ("b".to_owned(), String::new()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        enabled: Some(true),
        visibility: 2,
        metadata: Some(meta),
        create_time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 510_691_000,
        }),
        update_time: Some(Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        hire: Some(pb::HireInfo {
            source_version: 3,
            hire_time: Some(Timestamp {
                seconds: 5,
                nanos: 1,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn agrees_with_prost_reflect() {
    same("agentry.v1.Agent", &pb::Agent::default());
    same("agentry.v1.Agent", &full_agent());
    same(
        "agentry.v1.ListAgentsResponse",
        &pb::ListAgentsResponse {
            agents: vec![full_agent(), pb::Agent::default()],
            next_cursor: "c".into(),
        },
    );
    same(
        "agentry.v1.BatchGetAgentsResponse",
        &pb::BatchGetAgentsResponse::default(),
    );
    for ev in [
        pb::run_event::Event::MessageDelta(pb::MessageDelta { text: "hi".into() }),
        pb::run_event::Event::RunQueued(pb::RunQueued {}),
        pb::run_event::Event::Usage(pb::Usage {
            input_tokens: 3,
            total_tokens: -1,
            cost_usd: 0.1,
            ..Default::default()
        }),
        pb::run_event::Event::ToolCallCompleted(pb::ToolCallCompleted {
            tool_call_id: "t".into(),
            name: "n".into(),
            outcome: Some(pb::tool_call_completed::Outcome::Result(value(
                V::StringValue("r".into()),
            ))),
        }),
        pb::run_event::Event::ReasoningStep(pb::ReasoningStep {
            confidence: Some(f64::NAN),
            ..Default::default()
        }),
    ] {
        same(
            "agentry.v1.RunEvent",
            &pb::RunEvent {
                run_id: "r".into(),
                seq: 7,
                time: Some(Timestamp {
                    seconds: 1,
                    nanos: 123_456_789,
                }),
                event: Some(ev),
            },
        );
    }
    same(
        "agentry.v1.Run",
        &pb::Run {
            status: 99,
            ..Default::default()
        },
    );
    same(
        "agentry.v1.FlowNode",
        &pb::FlowNode {
            timeout: Some(pbjson_types::Duration {
                seconds: -3,
                nanos: -500_000_000,
            }),
            retry: Some(pb::RetryPolicy {
                initial_backoff: Some(pbjson_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    same(
        "agentry.v1.UpdateAgentRequest",
        &pb::UpdateAgentRequest {
            agent: None,
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["config.max_steps".into(), "name".into()],
            }),
        },
    );
    same(
        "agentry.v1.Flow",
        &pb::Flow {
            archived_versions: vec![1, -2, 3],
            ..Default::default()
        },
    );
}

#[test]
fn bad_bytes_are_errors() {
    assert!(to_json("agentry.v1.Agent", &[0x0a, 0x05, b'a']).is_err());
    assert!(to_json("agentry.v1.Agent", &[0x0a, 0x01, 0xff]).is_err());
    assert!(to_json("agentry.v1.Nope", &[]).is_err());
}
