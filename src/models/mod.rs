//! Model providers behind one trait. A run's agent names its model as `provider/model`; the registry
//! resolves the provider and the engine streams the answer: text deltas as they arrive, then the
//! tool calls the model asks for, then the token usage. Providers know nothing of runs, storage or
//! events: they turn a conversation into a stream of [`ModelEvent`]s.
//!
//! Built in: `scripted/*` (deterministic, for tests and demos). `openai/*` (any OpenAI-compatible
//! chat-completions endpoint) and `anthropic/*` are configured from the config file.

pub mod anthropic;
pub mod config;
pub mod http;
pub mod openai;
pub mod scripted;
pub mod sse;

use std::{collections::HashMap, pin::Pin, sync::Arc};

use futures_util::Stream;
use serde::{Deserialize, Serialize};

/// One message of the conversation sent to a model. Serialisable: it is the run's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    /// Tool calls an assistant message asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRequest>,
    /// For a `Tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Images of a `User` message: `https://` URLs or `data:<mime>;base64,<data>` URIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            images: Vec::new(),
        }
    }
}

/// A `data:` URI's media type and base64 payload.
pub fn split_data_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("data:")?;
    let (mime, data) = rest.split_once(";base64,")?;
    Some((mime, data))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRequest {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    /// The model name after `provider/`.
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub top_p: Option<f64>,
    /// The agent's metadata (the scripted provider reads its `script` here).
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// Streamed text.
    Delta(String),
    /// The model asks for a tool call (complete: id, name, parsed arguments).
    ToolCall(ToolCallRequest),
    /// Tokens of this model call.
    Usage {
        input_tokens: i64,
        output_tokens: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelError {
    /// "model_unavailable", "model_timeout", "model_bad_response", "model_rate_limited", "model_config"...
    pub code: &'static str,
    pub message: String,
    /// Whether retrying the same call may succeed (429, 5xx, timeouts).
    pub retryable: bool,
}

impl ModelError {
    pub fn new(code: &'static str, message: impl Into<String>, retryable: bool) -> ModelError {
        ModelError {
            code,
            message: message.into(),
            retryable,
        }
    }
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, ModelError>> + Send>>;

/// A model provider. Dropping the returned stream aborts the call in flight (that is how a
/// cancelled run stops its model call).
#[tonic::async_trait]
pub trait ModelProvider: Send + Sync {
    async fn stream(&self, req: ModelRequest) -> Result<ModelStream, ModelError>;
}

/// Per-model prices, US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    pub fn cost(&self, input_tokens: i64, output_tokens: i64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok)
            / 1e6
    }
}

/// Providers by name, and prices by `provider/model`.
#[derive(Clone, Default)]
pub struct Models {
    providers: HashMap<String, Arc<dyn ModelProvider>>,
    prices: HashMap<String, Price>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.providers.keys().collect();
        names.sort();
        f.debug_struct("Models")
            .field("providers", &names)
            .field("prices", &self.prices.len())
            .finish()
    }
}

impl Models {
    /// The built-in providers only.
    pub fn builtin() -> Models {
        let mut m = Models::default();
        m.register("scripted", Arc::new(scripted::Scripted));
        m
    }

    /// The configured provider names, sorted.
    pub fn provider_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.providers.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn register(&mut self, name: &str, provider: Arc<dyn ModelProvider>) {
        self.providers.insert(name.to_owned(), provider);
    }

    pub fn set_price(&mut self, model: &str, price: Price) {
        self.prices.insert(model.to_owned(), price);
    }

    /// The provider of `provider/model` and the model name after the slash.
    pub fn resolve<'a>(
        &self,
        model: &'a str,
    ) -> Result<(Arc<dyn ModelProvider>, &'a str), ModelError> {
        let (provider, name) = model.split_once('/').ok_or_else(|| {
            ModelError::new(
                "model_config",
                format!("model {model:?} is not provider/model"),
                false,
            )
        })?;
        let p = self.providers.get(provider).ok_or_else(|| {
            ModelError::new(
                "model_config",
                format!("provider {provider:?} is not configured on this server"),
                false,
            )
        })?;
        Ok((p.clone(), name))
    }

    pub fn cost(&self, model: &str, input_tokens: i64, output_tokens: i64) -> f64 {
        self.prices
            .get(model)
            .map(|p| p.cost(input_tokens, output_tokens))
            .unwrap_or(0.0)
    }
}
