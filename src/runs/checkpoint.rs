//! A run's checkpoint: the conversation so far and the tool calls of the last model turn with their
//! decisions and results. It is written in the same transaction as the events of each step, so a run
//! picked up by another worker continues exactly where the last committed step left it, and a tool
//! call whose result is recorded here is never executed again.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::Message;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub messages: Vec<Message>,
    /// Model turns taken.
    pub steps: u32,
    /// Tool calls of the last assistant turn that are not yet answered in `messages`.
    #[serde(default)]
    pub pending: Vec<PendingCall>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// The run request's model settings, which win over the agent's on every turn.
    #[serde(default)]
    pub overrides: Overrides,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub top_p: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
    pub requires_confirmation: bool,
    #[serde(default)]
    pub decision: Option<Decision>,
    /// Set once the call ran (or was rejected): `Ok(result)` or `Err((code, message))`.
    #[serde(default)]
    pub outcome: Option<Result<Value, (String, String)>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    /// Edited arguments, when the human changed them.
    pub arguments: Option<Value>,
    pub reason: String,
}

impl PendingCall {
    /// Waiting for a human.
    pub fn awaits_decision(&self) -> bool {
        self.requires_confirmation && self.decision.is_none() && self.outcome.is_none()
    }
}

impl Checkpoint {
    pub fn decode(text: Option<&str>) -> Checkpoint {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
