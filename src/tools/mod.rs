//! Tools a model can call. A tool has a name, a description and a JSON Schema for its arguments (what
//! the model sees), and executes with the arguments and the binding's config. The registry holds the
//! built-in tools; MCP tools (`mcp:<server>/<tool>`) will resolve through the same trait.
//!
//! Built in: [`current_time`], [`http_request`] (allow-listed hosts, no private addresses unless the
//! binding allows them) and [`memory`] (per workspace and user). MCP seam: an MCP client registers
//! one [`Tool`] per remote tool under its `mcp:<server>/<tool>` name; nothing else changes.

pub mod current_time;
pub mod http_request;
pub mod memory;

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

use crate::{models::ToolSpec, store::Db};

/// Who is calling, for tools that keep per-user state (memory).
#[derive(Debug, Clone, Default)]
pub struct ToolContext {
    pub workspace_id: String,
    pub user_id: String,
    pub session_id: String,
    pub run_id: String,
    /// The agent's binding config for this tool (e.g. http_request's `allowed_hosts`).
    pub config: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolError {
    /// "invalid_arguments", "forbidden", "tool_failed", "timeout"...
    pub code: &'static str,
    pub message: String,
}

impl ToolError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ToolError {
        ToolError {
            code,
            message: message.into(),
        }
    }
}

#[tonic::async_trait]
pub trait Tool: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON Schema of the arguments.
    fn parameters(&self) -> Value;
    async fn call(&self, ctx: &ToolContext, arguments: Value) -> Result<Value, ToolError>;
}

#[derive(Clone, Default)]
pub struct Tools {
    tools: HashMap<String, Arc<dyn Tool>>,
}

impl Tools {
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.name().to_owned(), tool);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).cloned()
    }
}

/// The built-in tools (names as in `agents::validate::BUILTIN_TOOLS`).
pub fn builtin_tools(db: Db) -> Tools {
    let mut tools = Tools::default();
    tools.register(Arc::new(current_time::CurrentTime));
    tools.register(Arc::new(http_request::HttpRequest));
    tools.register(Arc::new(memory::MemoryTool::new(db)));
    tools
}

/// What the model is shown of `tool`.
pub fn spec(tool: &dyn Tool) -> ToolSpec {
    ToolSpec {
        name: tool.name().to_owned(),
        description: tool.description().to_owned(),
        parameters: tool.parameters(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builtin_names_match_validation() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/t.db?mode=rwc", dir.path().display()))
            .await
            .unwrap();
        let tools = builtin_tools(db);
        for name in crate::agents::validate::BUILTIN_TOOLS {
            let t = tools
                .get(name)
                .unwrap_or_else(|| panic!("{name} is not registered"));
            let s = spec(t.as_ref());
            assert_eq!(s.name, *name);
            assert_eq!(s.parameters["type"], "object");
        }
    }
}
