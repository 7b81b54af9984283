//! Partial updates of an agent through a `google.protobuf.FieldMask` (AIP-134). An explicit mask
//! copies exactly its paths, clearing a field whose value in the patch is empty; an empty mask means
//! every field that is populated in the patch, descending into `model_settings` and `config` so that
//! `{config: {max_steps: 5}}` changes only `max_steps`.

use crate::{
    error::{Error, Result},
    pb::{Agent, AgentConfig, ModelSettings},
};

const MUTABLE: &[&str] = &[
    "name",
    "description",
    "template",
    "model",
    "model_settings",
    "tags",
    "category",
    "capabilities",
    "input_schema",
    "output_schema",
    "tools",
    "config",
    "enabled",
    "visibility",
    "metadata",
];
const OUTPUT_ONLY: &[&str] = &["id", "version", "create_time", "update_time", "hire"];

/// Applies `patch` to `current` along `paths` (empty: infer from the patch). Returns the paths applied.
pub fn apply(current: &mut Agent, patch: &Agent, paths: &[String]) -> Result<Vec<String>> {
    let paths = if paths.is_empty() {
        populated_paths(patch)
    } else {
        paths.to_vec()
    };
    for (i, path) in paths.iter().enumerate() {
        apply_path(current, patch, path).map_err(|e| match e {
            Error::InvalidArgument { message, .. } => {
                Error::invalid(format!("update_mask.paths[{i}]"), message)
            }
            other => other,
        })?;
    }
    Ok(paths)
}

fn apply_path(cur: &mut Agent, p: &Agent, path: &str) -> Result<()> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    match (head, rest) {
        ("name", None) => cur.name = p.name.clone(),
        ("description", None) => cur.description = p.description.clone(),
        ("template", None) => cur.template = p.template.clone(),
        ("model", None) => cur.model = p.model.clone(),
        ("model_settings", None) => cur.model_settings = p.model_settings,
        ("model_settings", Some(leaf)) => {
            let src = p.model_settings.unwrap_or_default();
            let dst = cur
                .model_settings
                .get_or_insert_with(ModelSettings::default);
            match leaf {
                "temperature" => dst.temperature = src.temperature,
                "max_tokens" => dst.max_tokens = src.max_tokens,
                "top_p" => dst.top_p = src.top_p,
                _ => return Err(unknown(path)),
            }
        }
        ("tags", None) => cur.tags = p.tags.clone(),
        ("category", None) => cur.category = p.category.clone(),
        ("capabilities", None) => cur.capabilities = p.capabilities.clone(),
        ("input_schema", None) => cur.input_schema = p.input_schema.clone(),
        ("output_schema", None) => cur.output_schema = p.output_schema.clone(),
        ("tools", None) => cur.tools = p.tools.clone(),
        ("config", None) => cur.config = p.config.clone(),
        ("config", Some(leaf)) => {
            let src = p.config.clone().unwrap_or_default();
            let dst = cur.config.get_or_insert_with(AgentConfig::default);
            match leaf {
                "enable_memory" => dst.enable_memory = src.enable_memory,
                "enable_history" => dst.enable_history = src.enable_history,
                "num_history_runs" => dst.num_history_runs = src.num_history_runs,
                "enable_reasoning" => dst.enable_reasoning = src.enable_reasoning,
                "reasoning_min_steps" => dst.reasoning_min_steps = src.reasoning_min_steps,
                "reasoning_max_steps" => dst.reasoning_max_steps = src.reasoning_max_steps,
                "max_steps" => dst.max_steps = src.max_steps,
                "worker_config" => dst.worker_config = src.worker_config,
                _ => return Err(unknown(path)),
            }
        }
        ("enabled", None) => cur.enabled = Some(p.enabled.unwrap_or(false)),
        ("visibility", None) => cur.visibility = p.visibility,
        ("metadata", None) => cur.metadata = p.metadata.clone(),
        (h, _) if OUTPUT_ONLY.contains(&h) => {
            return Err(Error::invalid("", format!("{path:?} cannot be changed")));
        }
        _ => return Err(unknown(path)),
    }
    Ok(())
}

fn unknown(path: &str) -> Error {
    Error::invalid(
        "",
        format!(
            "unknown field path {path:?}; updatable: {}",
            MUTABLE.join(", ")
        ),
    )
}

/// The paths of every populated field of `p` (sub-fields for `model_settings` and `config`).
fn populated_paths(p: &Agent) -> Vec<String> {
    let mut paths = Vec::new();
    let mut add = |set: bool, path: &str| {
        if set {
            paths.push(path.to_owned());
        }
    };
    add(!p.name.is_empty(), "name");
    add(!p.description.is_empty(), "description");
    add(!p.template.is_empty(), "template");
    add(!p.model.is_empty(), "model");
    if let Some(s) = &p.model_settings {
        add(s.temperature.is_some(), "model_settings.temperature");
        add(s.max_tokens.is_some(), "model_settings.max_tokens");
        add(s.top_p.is_some(), "model_settings.top_p");
    }
    add(!p.tags.is_empty(), "tags");
    add(!p.category.is_empty(), "category");
    add(!p.capabilities.is_empty(), "capabilities");
    add(p.input_schema.is_some(), "input_schema");
    add(p.output_schema.is_some(), "output_schema");
    add(!p.tools.is_empty(), "tools");
    if let Some(c) = &p.config {
        add(c.enable_memory.is_some(), "config.enable_memory");
        add(c.enable_history.is_some(), "config.enable_history");
        add(c.num_history_runs.is_some(), "config.num_history_runs");
        add(c.enable_reasoning.is_some(), "config.enable_reasoning");
        add(
            c.reasoning_min_steps.is_some(),
            "config.reasoning_min_steps",
        );
        add(
            c.reasoning_max_steps.is_some(),
            "config.reasoning_max_steps",
        );
        add(c.max_steps.is_some(), "config.max_steps");
        add(c.worker_config.is_some(), "config.worker_config");
    }
    add(p.enabled.is_some(), "enabled");
    add(p.visibility != 0, "visibility");
    add(p.metadata.is_some(), "metadata");
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            name: "A".into(),
            description: "d".into(),
            config: Some(AgentConfig {
                max_steps: Some(3),
                enable_memory: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn explicit_paths_clear_and_set() {
        let mut cur = agent();
        let patch = Agent {
            name: "B".into(),
            ..Default::default()
        };
        apply(&mut cur, &patch, &["name".into(), "description".into()]).unwrap();
        assert_eq!((cur.name.as_str(), cur.description.as_str()), ("B", ""));
    }

    #[test]
    fn empty_mask_merges_config_leaves() {
        let mut cur = agent();
        let patch = Agent {
            config: Some(AgentConfig {
                max_steps: Some(7),
                ..Default::default()
            }),
            ..Default::default()
        };
        let paths = apply(&mut cur, &patch, &[]).unwrap();
        assert_eq!(paths, vec!["config.max_steps"]);
        let c = cur.config.unwrap();
        assert_eq!((c.max_steps, c.enable_memory), (Some(7), Some(true)));
        assert_eq!(cur.name, "A");
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut cur = agent();
        for bad in ["id", "version", "nope", "config.nope", "name.x"] {
            let err = apply(&mut cur, &Agent::default(), &[bad.into()]).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { ref field, .. } if field == "update_mask.paths[0]"),
                "{bad}"
            );
        }
    }
}
