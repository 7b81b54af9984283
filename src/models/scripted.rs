//! The built-in `scripted` provider: deterministic models for tests and demos (binding, see API.md).
//! - `scripted/echo` streams the last user message back word by word.
//! - `scripted/script` plays the agent's `metadata.script`: turn *n* is played when the conversation
//!   holds *n* assistant messages, so a run resumed from a checkpoint continues at the right turn. A turn
//!   is `{"text": ...}` (streamed word by word) or `{"tool_calls": [{"name", "arguments"}]}`, with an
//!   optional `"delay_ms"` before answering. Past the last turn the model answers nothing, which ends
//!   the run.
//!
//! Usage counts each whitespace-separated word as a token.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use serde_json::Value;

use super::{
    Message, ModelError, ModelEvent, ModelProvider, ModelRequest, ModelStream, Role,
    ToolCallRequest,
};

pub struct Scripted;

fn words(s: &str) -> i64 {
    s.split_whitespace().count() as i64
}

/// Word-by-word deltas that concatenate back to the words of `text` separated by single spaces.
fn deltas(text: &str) -> Vec<ModelEvent> {
    text.split_whitespace()
        .enumerate()
        .map(|(i, w)| {
            ModelEvent::Delta(if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            })
        })
        .collect()
}

#[tonic::async_trait]
impl ModelProvider for Scripted {
    async fn stream(&self, req: ModelRequest) -> Result<ModelStream, ModelError> {
        let input_tokens: i64 = req.messages.iter().map(|m| words(&m.content)).sum();
        let (mut events, delay) = match req.model.as_str() {
            "echo" => {
                let last = req
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.content.as_str());
                (deltas(last.unwrap_or("")), 0)
            }
            "script" => play(&req.messages, &req.metadata)?,
            other => {
                return Err(ModelError::new(
                    "model_config",
                    format!("unknown scripted model {other:?}"),
                    false,
                ));
            }
        };
        let output_tokens: i64 = events
            .iter()
            .map(|e| match e {
                ModelEvent::Delta(t) => words(t),
                ModelEvent::ToolCall(c) => 1 + words(&c.arguments.to_string()),
                ModelEvent::Usage { .. } => 0,
            })
            .sum();
        events.push(ModelEvent::Usage {
            input_tokens,
            output_tokens,
        });
        // The delay happens when the stream is first polled: dropping it (cancel) ends the wait.
        let s = stream::once(async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            stream::iter(events.into_iter().map(Ok))
        })
        .flatten();
        Ok(Box::pin(s))
    }
}

/// The events of the turn due, and its delay in milliseconds.
fn play(messages: &[Message], metadata: &Value) -> Result<(Vec<ModelEvent>, u64), ModelError> {
    let bad = |m: &str| ModelError::new("model_config", format!("metadata.script: {m}"), false);
    let script = metadata
        .get("script")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing or not a list"))?;
    let turn_no = messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count();
    let Some(turn) = script.get(turn_no) else {
        return Ok((Vec::new(), 0));
    };
    let delay = turn
        .get("delay_ms")
        .and_then(Value::as_f64)
        .map(|d| d.max(0.0) as u64)
        .unwrap_or(0);
    if let Some(text) = turn.get("text").and_then(Value::as_str) {
        return Ok((deltas(text), delay));
    }
    let calls = turn
        .get("tool_calls")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("a turn needs text or tool_calls"))?;
    let mut events = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let name = call
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a tool call needs a name"))?;
        let arguments = call
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        events.push(ModelEvent::ToolCall(ToolCallRequest {
            id: format!("call_{turn_no}_{i}"),
            name: name.to_owned(),
            arguments,
        }));
    }
    Ok((events, delay))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    async fn collect(req: ModelRequest) -> Vec<ModelEvent> {
        Scripted
            .stream(req)
            .await
            .unwrap()
            .map(|e| e.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn echo_streams_words_and_counts_tokens() {
        let req = ModelRequest {
            model: "echo".into(),
            messages: vec![
                Message::new(Role::System, "be brief"),
                Message::new(Role::User, "hello  there world"),
            ],
            ..Default::default()
        };
        let ev = collect(req).await;
        assert_eq!(
            ev,
            vec![
                ModelEvent::Delta("hello".into()),
                ModelEvent::Delta(" there".into()),
                ModelEvent::Delta(" world".into()),
                ModelEvent::Usage {
                    input_tokens: 5,
                    output_tokens: 3
                },
            ]
        );
    }

    #[tokio::test]
    async fn script_plays_the_turn_due() {
        let metadata = json!({"script": [
            {"tool_calls": [{"name": "current_time", "arguments": {"tz": "UTC"}}]},
            {"text": "it is noon"}
        ]});
        let mut req = ModelRequest {
            model: "script".into(),
            metadata,
            ..Default::default()
        };
        let first = collect(req.clone()).await;
        assert!(
            matches!(&first[0], ModelEvent::ToolCall(c) if c.name == "current_time" && c.id == "call_0_0")
        );
        req.messages.push(Message::new(Role::Assistant, ""));
        assert_eq!(
            collect(req.clone()).await[0],
            ModelEvent::Delta("it".into())
        );
        req.messages
            .push(Message::new(Role::Assistant, "it is noon"));
        assert!(
            matches!(collect(req).await.as_slice(), [ModelEvent::Usage { .. }]),
            "past the end: nothing"
        );
    }
}
