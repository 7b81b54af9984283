//! Renders an agent's template (its instructions) with minijinja over the run's context: `input`,
//! `user_profile`, `tenant_profile`, `timezone`, `locale`, `metadata`, `now` (RFC 3339) and the ids.
//! Undefined values render empty, so optional fields can be tested with `{% if ... %}`.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::json;

use super::{RunRequestExtras, struct_json};
use crate::{
    error::{Error, Result},
    pb::Run,
};

pub(super) fn render(template: &str, run: &Run, extras: &RunRequestExtras) -> Result<String> {
    if !template.contains("{{") && !template.contains("{%") {
        return Ok(template.to_owned());
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    let now = run.create_time.as_ref().map(|t| {
        let secs = t.seconds;
        format!("{secs}")
    });
    let ctx = json!({
        "input": struct_json(run.input.as_ref()),
        "message": run.message,
        "user_profile": extras.user_profile,
        "tenant_profile": extras.tenant_profile,
        "timezone": extras.timezone,
        "locale": extras.locale,
        "metadata": struct_json(run.metadata.as_ref()),
        "run_id": run.id,
        "agent_id": run.agent_id,
        "session_id": run.session_id,
        "user_id": run.user_id,
        "now_unix": now,
    });
    env.render_str(template, ctx)
        .map_err(|e| Error::invalid("agent.template", format!("does not render: {e}")))
}
