//! Validation and normalisation of agent definitions. Every rule names the failing field with its full
//! request path (`agent.config.max_steps`), so the caller can fix the input without guessing.

use pbjson_types::{Struct, Value, value::Kind};

use crate::{
    error::{Error, Result},
    pb::{Agent, AgentConfig, Visibility},
};

pub const MAX_NAME: usize = 255;
pub const MAX_DESCRIPTION: usize = 1000;
pub const MAX_TEMPLATE: usize = 100_000;
const MAX_LABELS: usize = 50;
const MAX_LABEL: usize = 64;
const MAX_TOOLS: usize = 64;
const MAX_SPEC_BYTES: usize = 1 << 20;

/// Built-in tool names (the MCP seam: `mcp:<server>/<tool>` for a server in `config.worker_config`).
pub const BUILTIN_TOOLS: &[&str] = &["http_request", "current_time", "memory"];
/// Models of the built-in `scripted` provider.
pub const SCRIPTED_MODELS: &[&str] = &["scripted/echo", "scripted/script"];
/// Providers every server has (built-in `scripted`, and `openai`/`anthropic` with their public
/// endpoints); a server's config file may add more, which `Agents` passes to [`check_agent`].
pub const DEFAULT_PROVIDERS: &[&str] = &["scripted", "openai", "anthropic"];

/// `^[a-z0-9][a-z0-9_-]{0,254}$`
pub fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

pub fn check_slug(field: &str, s: &str) -> Result<()> {
    if is_slug(s) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must match ^[a-z0-9][a-z0-9_-]{0,254}$",
        ))
    }
}

/// `base` with a random suffix (`base-x7k2qa`), for a generated id that was taken; still a slug.
pub fn with_random_suffix(base: &str) -> String {
    use rand::{Rng, distr::Alphanumeric};
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(6)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{}-{suffix}", &base[..base.len().min(240)])
}

/// A slug made from a display name ("Code Reviewer!" -> "code-reviewer").
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.truncate(200);
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        "agent".to_owned()
    } else {
        slug
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Fills the defaults of a new agent and clears what only the server sets.
pub fn normalize_new(agent: &mut Agent) {
    agent.version = 0;
    agent.create_time = None;
    agent.update_time = None;
    agent.hire = None;
    agent.enabled.get_or_insert(true);
    if agent.visibility == Visibility::Unspecified as i32 {
        agent.visibility = Visibility::Private as i32;
    }
    fill_config_defaults(agent.config.get_or_insert_with(Default::default));
}

pub fn fill_config_defaults(c: &mut AgentConfig) {
    c.enable_memory.get_or_insert(true);
    c.enable_history.get_or_insert(true);
    c.num_history_runs.get_or_insert(3);
    c.enable_reasoning.get_or_insert(false);
    c.reasoning_min_steps.get_or_insert(1);
    c.reasoning_max_steps.get_or_insert(10);
    c.max_steps.get_or_insert(10);
}

/// Checks a whole (normalised) agent. `p` is the request path of the agent message, e.g. "agent".
pub fn check_agent(p: &str, a: &Agent, providers: &[String]) -> Result<()> {
    check_slug(&format!("{p}.id"), &a.id)?;
    if a.name.trim().is_empty() {
        return Err(Error::invalid(format!("{p}.name"), "is required"));
    }
    if chars(&a.name) > MAX_NAME {
        return Err(Error::invalid(
            format!("{p}.name"),
            format!("at most {MAX_NAME} characters"),
        ));
    }
    if chars(&a.description) > MAX_DESCRIPTION {
        return Err(Error::invalid(
            format!("{p}.description"),
            format!("at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if chars(&a.template) > MAX_TEMPLATE {
        return Err(Error::invalid(
            format!("{p}.template"),
            format!("at most {MAX_TEMPLATE} characters"),
        ));
    }
    check_model(
        &format!("{p}.model"),
        &a.model,
        a.metadata.as_ref(),
        p,
        providers,
    )?;
    if let Some(s) = &a.model_settings {
        if let Some(t) = s.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(Error::invalid(
                format!("{p}.model_settings.temperature"),
                "must be between 0 and 2",
            ));
        }
        if let Some(t) = s.top_p
            && !(0.0..=1.0).contains(&t)
        {
            return Err(Error::invalid(
                format!("{p}.model_settings.top_p"),
                "must be between 0 and 1",
            ));
        }
        if let Some(m) = s.max_tokens
            && !(1..=1_000_000).contains(&m)
        {
            return Err(Error::invalid(
                format!("{p}.model_settings.max_tokens"),
                "must be between 1 and 1000000",
            ));
        }
    }
    check_labels(&format!("{p}.tags"), &a.tags)?;
    check_labels(&format!("{p}.capabilities"), &a.capabilities)?;
    if chars(&a.category) > MAX_LABEL || a.category.contains(',') {
        return Err(Error::invalid(
            format!("{p}.category"),
            "at most 64 characters, no commas",
        ));
    }
    check_schema(&format!("{p}.input_schema"), a.input_schema.as_ref())?;
    check_schema(&format!("{p}.output_schema"), a.output_schema.as_ref())?;
    if Visibility::try_from(a.visibility).is_err() {
        return Err(Error::invalid(format!("{p}.visibility"), "unknown value"));
    }
    if let Some(c) = &a.config {
        check_config(&format!("{p}.config"), c)?;
    }
    check_tools(p, a)?;
    let size = prost::Message::encoded_len(a);
    if size > MAX_SPEC_BYTES {
        return Err(Error::invalid(
            p,
            format!("the definition is {size} bytes; at most {MAX_SPEC_BYTES}"),
        ));
    }
    Ok(())
}

fn check_model(
    field: &str,
    model: &str,
    metadata: Option<&Struct>,
    p: &str,
    providers: &[String],
) -> Result<()> {
    if model.is_empty() {
        return Ok(()); // the server's default model at run time
    }
    let Some((provider, name)) = model.split_once('/') else {
        return Err(Error::invalid(
            field,
            "must be \"provider/model\", e.g. \"openai/gpt-4o-mini\"",
        ));
    };
    if !providers.iter().any(|p| p == provider) {
        return Err(Error::invalid(
            field,
            format!(
                "unknown provider {provider:?}; configured on this server: {}",
                providers.join(", ")
            ),
        ));
    }
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_whitespace) {
        return Err(Error::invalid(
            field,
            "the model name must be 1 to 200 characters without spaces",
        ));
    }
    if provider == "scripted" {
        if !SCRIPTED_MODELS.contains(&model) {
            return Err(Error::invalid(
                field,
                format!(
                    "unknown scripted model; known: {}",
                    SCRIPTED_MODELS.join(", ")
                ),
            ));
        }
        if model == "scripted/script" {
            check_script(
                &format!("{p}.metadata.script"),
                metadata.and_then(|m| m.fields.get("script")),
            )?;
        }
    }
    Ok(())
}

/// `metadata.script` of `scripted/script`: a list of turns, each `{"text": s}` or
/// `{"tool_calls": [{"name": s, "arguments": {..}}]}`, optionally with `"delay_ms": n`.
fn check_script(field: &str, script: Option<&Value>) -> Result<()> {
    let Some(Kind::ListValue(turns)) = script.and_then(|v| v.kind.as_ref()) else {
        return Err(Error::invalid(
            field,
            "scripted/script needs a list of turns in metadata.script",
        ));
    };
    if turns.values.is_empty() || turns.values.len() > 1000 {
        return Err(Error::invalid(field, "must have 1 to 1000 turns"));
    }
    for (i, turn) in turns.values.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let Some(Kind::StructValue(turn)) = &turn.kind else {
            return Err(Error::invalid(f, "a turn is an object"));
        };
        let text = turn.fields.get("text");
        let calls = turn.fields.get("tool_calls");
        match (
            text.and_then(|v| v.kind.as_ref()),
            calls.and_then(|v| v.kind.as_ref()),
        ) {
            (Some(Kind::StringValue(_)), None) => {}
            (None, Some(Kind::ListValue(calls))) if !calls.values.is_empty() => {
                for (j, call) in calls.values.iter().enumerate() {
                    let ok = matches!(&call.kind, Some(Kind::StructValue(c))
                        if matches!(c.fields.get("name").and_then(|n| n.kind.as_ref()), Some(Kind::StringValue(n)) if !n.is_empty())
                        && matches!(c.fields.get("arguments").map(|a| a.kind.as_ref()), None | Some(Some(Kind::StructValue(_)))));
                    if !ok {
                        return Err(Error::invalid(
                            format!("{f}.tool_calls[{j}]"),
                            "a tool call is {\"name\": string, \"arguments\": object}",
                        ));
                    }
                }
            }
            _ => {
                return Err(Error::invalid(
                    f,
                    "a turn has either \"text\" (a string) or \"tool_calls\" (a non-empty list)",
                ));
            }
        }
        if let Some(d) = turn.fields.get("delay_ms") {
            match d.kind {
                Some(Kind::NumberValue(n)) if (0.0..=600_000.0).contains(&n) => {}
                _ => {
                    return Err(Error::invalid(
                        format!("{f}.delay_ms"),
                        "must be a number from 0 to 600000",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_labels(field: &str, labels: &[String]) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_LABELS} entries"),
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        if l.trim().is_empty() || chars(l) > MAX_LABEL || l.contains(',') {
            return Err(Error::invalid(
                format!("{field}[{i}]"),
                "1 to 64 characters, no commas",
            ));
        }
    }
    Ok(())
}

/// A JSON Schema must itself be valid against its meta-schema. Remote `$ref`s are never fetched.
pub fn check_schema(field: &str, schema: Option<&Struct>) -> Result<()> {
    let Some(schema) = schema else { return Ok(()) };
    let json = serde_json::to_value(schema).map_err(Error::internal)?;
    jsonschema::meta::validate(&json).map_err(|e| {
        Error::invalid(
            field,
            format!("not a valid JSON Schema: {e} (at {})", e.instance_path()),
        )
    })?;
    jsonschema::validator_for(&json)
        .map_err(|e| Error::invalid(field, format!("not a usable JSON Schema: {e}")))?;
    Ok(())
}

fn check_config(p: &str, c: &AgentConfig) -> Result<()> {
    let range = |field: &str, v: Option<i32>, lo: i32, hi: i32| -> Result<()> {
        match v {
            Some(v) if !(lo..=hi).contains(&v) => Err(Error::invalid(
                format!("{p}.{field}"),
                format!("must be between {lo} and {hi}"),
            )),
            _ => Ok(()),
        }
    };
    range("num_history_runs", c.num_history_runs, 0, 100)?;
    range("reasoning_min_steps", c.reasoning_min_steps, 1, 100)?;
    range("reasoning_max_steps", c.reasoning_max_steps, 1, 100)?;
    range("max_steps", c.max_steps, 1, 100)?;
    if let (Some(lo), Some(hi)) = (c.reasoning_min_steps, c.reasoning_max_steps)
        && lo > hi
    {
        return Err(Error::invalid(
            format!("{p}.reasoning_min_steps"),
            "must not exceed reasoning_max_steps",
        ));
    }
    if let Some(w) = &c.worker_config {
        let mut names = std::collections::HashSet::new();
        for (i, s) in w.mcp_servers.iter().enumerate() {
            let f = format!("{p}.worker_config.mcp_servers[{i}]");
            check_slug(&format!("{f}.name"), &s.name)?;
            if !names.insert(s.name.as_str()) {
                return Err(Error::invalid(format!("{f}.name"), "duplicate server name"));
            }
            if !(s.url.starts_with("http://") || s.url.starts_with("https://"))
                || s.url.len() > 2048
            {
                return Err(Error::invalid(
                    format!("{f}.url"),
                    "must be an http(s) URL of at most 2048 characters",
                ));
            }
        }
    }
    Ok(())
}

fn check_tools(p: &str, a: &Agent) -> Result<()> {
    if a.tools.len() > MAX_TOOLS {
        return Err(Error::invalid(
            format!("{p}.tools"),
            format!("at most {MAX_TOOLS} tools"),
        ));
    }
    let servers: Vec<&str> = a
        .config
        .as_ref()
        .and_then(|c| c.worker_config.as_ref())
        .map(|w| w.mcp_servers.iter().map(|s| s.name.as_str()).collect())
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (i, t) in a.tools.iter().enumerate() {
        let f = format!("{p}.tools[{i}].name");
        let known = BUILTIN_TOOLS.contains(&t.name.as_str())
            || t.name
                .strip_prefix("mcp:")
                .and_then(|r| r.split_once('/'))
                .is_some_and(|(server, tool)| servers.contains(&server) && !tool.is_empty());
        if !known {
            return Err(Error::invalid(
                f,
                format!(
                    "unknown tool {:?}; built-in tools are {}, MCP tools are \"mcp:<server>/<tool>\" for a server of config.worker_config.mcp_servers",
                    t.name,
                    BUILTIN_TOOLS.join(", ")
                ),
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(Error::invalid(f, "duplicate tool"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(is_slug("a") && is_slug("code-reviewer_2") && is_slug(&"a".repeat(255)));
        assert!(
            !is_slug("")
                && !is_slug("-a")
                && !is_slug("A")
                && !is_slug("a.b")
                && !is_slug(&"a".repeat(256))
        );
        assert_eq!(slugify("Code Reviewer Agent!"), "code-reviewer-agent");
        assert_eq!(slugify("¡¡¡"), "agent");
        assert!(is_slug(&slugify(&"Ünïcode Name ".repeat(40))));
    }
}
