//! Unit tests of `transcode.rs`.
use super::*;

fn agent_desc() -> MessageDescriptor {
    message("agentry.v1.Agent").unwrap()
}

#[test]
fn masks_from_body_keys() {
    let body: J = serde_json::json!({
        "description": "",
        "modelSettings": {"temperature": 0.5},
        "config": {"max_steps": 3, "workerConfig": {"hooks": {}}},
        "metadata": {"a": 1},
        "tags": [],
        "id": "x"
    });
    let mut paths = infer_mask(&agent_desc(), &body, &["id"]);
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "config.max_steps",
            "config.worker_config",
            "description",
            "metadata",
            "model_settings.temperature",
            "tags"
        ]
    );
}

#[test]
fn json_errors_name_the_field() {
    let e = parse_json(&agent_desc(), br#"{"config": {"max_steps": "x"}}"#, "agent").unwrap_err();
    assert!(
        e.message.contains("agent.config.max_steps"),
        "{}",
        e.message
    );
    let e = parse_json(&agent_desc(), br#"{"nme": "x"}"#, "agent").unwrap_err();
    assert!(e.message.contains("agent.nme"), "{}", e.message);
    let e = parse_json(&agent_desc(), br#"{"visibility": "SHOUTING"}"#, "agent").unwrap_err();
    assert!(e.message.contains("agent.visibility"), "{}", e.message);
    let e = parse_json(&agent_desc(), br#"{"name": "x""#, "agent").unwrap_err();
    assert!(e.message.contains("malformed JSON"), "{}", e.message);
    let e = parse_json(&agent_desc(), br#"{"name": "x"} trailing"#, "agent").unwrap_err();
    assert!(e.message.contains("malformed JSON"), "{}", e.message);
}

#[test]
fn text_forms() {
    let d = message("agentry.v1.GetAgentVersionRequest").unwrap();
    let mut m = DynamicMessage::new(d);
    set_path(&mut m, "version", "12", true).unwrap();
    assert!(set_path(&mut m, "version", "x", true).is_err());
    assert!(
        set_path(&mut m, "version", "13", true).is_err(),
        "contradiction"
    );
    let f = message("agentry.v1.ListRunsRequest").unwrap();
    let mut m = DynamicMessage::new(f.clone());
    set_path(&mut m, "status", "RUN_STATUS_COMPLETED", false).unwrap();
    set_path(&mut m, "created_after", "2025-01-01T00:00:00Z", false).unwrap();
    assert!(set_path(&mut m, "status", "DONE", false).is_err());
    assert!(set_path(&mut m, "created_before", "yesterday", false).is_err());
    let mask = parse_well_known(
        &message("google.protobuf.FieldMask").unwrap(),
        "description,config.maxSteps",
    )
    .unwrap();
    assert_eq!(
        mask.get_field_by_name("paths").unwrap().as_ref(),
        &Value::List(vec![
            Value::String("description".into()),
            Value::String("config.max_steps".into())
        ])
    );
}
