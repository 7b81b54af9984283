//! `anthropic/*`: the Messages API (`POST {base}/v1/messages`, `anthropic-version: 2023-06-01`),
//! streamed as server-sent events.
//!
//! On the same reqwest driver as the OpenAI-compatible provider (see `http.rs` for why: retries that
//! never replay a half-streamed answer, `Retry-After`, a detected early end), so both providers
//! fail the same way. Mapping: System messages become the `system` prompt; an assistant message's tool
//! calls become `tool_use` blocks; tool results become `tool_result` blocks of a user turn, and
//! consecutive turns of one role are merged, as the API wants roles to alternate. Streamed:
//! `text_delta` → [`ModelEvent::Delta`], a `tool_use` block's `input_json_delta` fragments → one
//! [`ModelEvent::ToolCall`] at its `content_block_stop`, usage from `message_start`/`message_delta`
//! → [`ModelEvent::Usage`] at `message_stop`, the end marker.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use serde_json::{Value, json};

use super::{
    Message, ModelError, ModelEvent, ModelProvider, ModelRequest, ModelStream, Role,
    ToolCallRequest,
    http::{self, CallSettings, Decoder, snippet},
    openai::parameters,
    sse::SseEvent,
};

pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; this is sent when the agent sets none.
pub const DEFAULT_MAX_TOKENS: i32 = 4096;

pub struct Anthropic {
    settings: Arc<CallSettings>,
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
}

impl Anthropic {
    /// `base_url` is the API root (`https://api.anthropic.com`; a trailing `/v1` is accepted too).
    pub fn new(
        settings: CallSettings,
        base_url: &str,
        api_key: Option<String>,
    ) -> Result<Self, ModelError> {
        let client = settings.client()?;
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        Ok(Anthropic {
            settings: Arc::new(settings),
            client,
            url: format!("{base}/v1/messages"),
            api_key,
        })
    }
}

#[tonic::async_trait]
impl ModelProvider for Anthropic {
    async fn stream(&self, req: ModelRequest) -> Result<ModelStream, ModelError> {
        let key = self.api_key.clone();
        let request = http::sse_post(&self.url, &request_body(&req), move |b| {
            let b = b.header("anthropic-version", API_VERSION);
            match &key {
                Some(k) => b.header("x-api-key", k),
                None => b,
            }
        })?;
        Ok(http::stream(
            self.client.clone(),
            self.settings.clone(),
            self.url.clone(),
            request,
            AnthropicDecoder::default,
        ))
    }
}

/// The Messages API request for `req`.
pub fn request_body(req: &ModelRequest) -> Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System && !m.content.is_empty())
        .map(|m| m.content.as_str())
        .collect();
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages(&req.messages),
        "stream": true,
    });
    if !system.is_empty() {
        body["system"] = Value::String(system.join("\n\n"));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": parameters(&t.parameters)}))
            .collect();
        body["tools"] = Value::Array(tools);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    body
}

/// The conversation as alternating user/assistant turns of content blocks.
fn messages(msgs: &[Message]) -> Vec<Value> {
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in msgs {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User => {
                let mut blocks = text_block(&m.content);
                blocks.extend(m.images.iter().map(|i| image_block(i)));
                ("user", blocks)
            }
            Role::Assistant => {
                let mut blocks = text_block(&m.content);
                for c in &m.tool_calls {
                    let input = if c.arguments.is_object() {
                        c.arguments.clone()
                    } else {
                        json!({})
                    };
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    out.into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// An image block: base64 for a `data:` URI, otherwise a URL source.
fn image_block(image: &str) -> Value {
    match super::split_data_uri(image) {
        Some((mime, data)) => json!({"type": "image", "source":
            {"type": "base64", "media_type": mime, "data": data}}),
        None => json!({"type": "image", "source": {"type": "url", "url": image}}),
    }
}

/// The API rejects empty text blocks.
fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

#[derive(Debug, Default)]
struct ToolBlock {
    id: String,
    name: String,
    json: String,
    /// The `input` of `content_block_start`, used when no fragment follows.
    initial: Option<Value>,
}

/// Decodes Messages API stream events.
#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    tools: HashMap<u64, ToolBlock>,
    input_tokens: i64,
    output_tokens: i64,
    done: bool,
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::new("model_bad_response", msg, false)
}

fn tokens(usage: &Value, key: &str) -> Option<i64> {
    usage.get(key).and_then(Value::as_i64)
}

impl AnthropicDecoder {
    fn usage(&mut self, usage: Option<&Value>) {
        let Some(u) = usage else { return };
        // Cache reads and writes are input too; `input_tokens` alone excludes them.
        let cached = tokens(u, "cache_creation_input_tokens").unwrap_or(0)
            + tokens(u, "cache_read_input_tokens").unwrap_or(0);
        if let Some(i) = tokens(u, "input_tokens") {
            self.input_tokens = i + cached;
        }
        if let Some(o) = tokens(u, "output_tokens") {
            self.output_tokens = o; // cumulative in message_delta
        }
    }
}

impl Decoder for AnthropicDecoder {
    fn event(&mut self, ev: SseEvent, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            bad(format!(
                "an event of the stream is not JSON ({e}): {}",
                snippet(ev.data.as_bytes())
            ))
        })?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(ev.event.as_str());
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => self.usage(v.pointer("/message/usage")),
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or_default();
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let s = |k: &str| {
                            block
                                .get(k)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let initial = block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                            .cloned();
                        self.tools.insert(
                            index,
                            ToolBlock {
                                id: s("id"),
                                name: s("name"),
                                json: String::new(),
                                initial,
                            },
                        );
                    }
                    Some("text") => {
                        if let Some(t) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push_back(ModelEvent::Delta(t.to_owned()));
                        }
                    }
                    _ => {} // thinking, server tools: not part of the answer
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").cloned().unwrap_or_default();
                let s = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or_default();
                match s("type") {
                    "text_delta" if !s("text").is_empty() => {
                        out.push_back(ModelEvent::Delta(s("text").to_owned()))
                    }
                    "input_json_delta" => {
                        let block = self.tools.get_mut(&index).ok_or_else(|| {
                            bad(format!("input_json_delta for content block {index}, which is not a tool_use block"))
                        })?;
                        block.json.push_str(s("partial_json"));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(b) = self.tools.remove(&index) {
                    if b.name.is_empty() {
                        return Err(bad(format!("tool_use block {index} has no name")));
                    }
                    let raw = b.json.trim();
                    let arguments = if raw.is_empty() {
                        b.initial.unwrap_or_else(|| json!({}))
                    } else {
                        serde_json::from_str(raw).map_err(|e| {
                            bad(format!(
                                "the input of tool call {:?} is not valid JSON ({e}): {}",
                                b.name,
                                snippet(raw.as_bytes())
                            ))
                        })?
                    };
                    let id = if b.id.is_empty() {
                        format!("toolu_{}", uuid::Uuid::now_v7().simple())
                    } else {
                        b.id
                    };
                    out.push_back(ModelEvent::ToolCall(ToolCallRequest {
                        id,
                        name: b.name,
                        arguments,
                    }));
                }
            }
            "message_delta" => self.usage(v.get("usage")),
            "message_stop" => {
                self.done = true;
                out.push_back(ModelEvent::Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: self.output_tokens,
                });
            }
            "error" => {
                let etype = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                let (code, retryable) = match etype {
                    "overloaded_error" | "api_error" => ("model_unavailable", true),
                    "rate_limit_error" => ("model_rate_limited", true),
                    "authentication_error" | "permission_error" => ("model_auth", false),
                    _ => ("model_rejected", false),
                };
                return Err(ModelError::new(
                    code,
                    format!("the stream reported {etype}: {msg}"),
                    retryable,
                ));
            }
            _ => {} // ping, and events added to the API later
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.done
    }

    fn end_marker(&self) -> &'static str {
        "event: message_stop"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ToolSpec;

    fn run(events: &[Value]) -> Result<Vec<ModelEvent>, ModelError> {
        let mut d = AnthropicDecoder::default();
        let mut out = VecDeque::new();
        for e in events {
            let event = e["type"].as_str().unwrap_or_default().to_owned();
            d.event(
                SseEvent {
                    event,
                    data: e.to_string(),
                },
                &mut out,
            )?;
        }
        Ok(out.into())
    }

    #[test]
    fn text_tool_use_and_usage() {
        let ev = run(&[
            json!({"type":"message_start","message":{"id":"m","usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            json!({"type":"ping"}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me"}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check."}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"current_time","input":{}}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"timez"}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"one\": \"UTC\"}"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":33}}),
            json!({"type":"message_stop"}),
        ])
        .unwrap();
        assert_eq!(
            ev,
            vec![
                ModelEvent::Delta("Let me".into()),
                ModelEvent::Delta(" check.".into()),
                ModelEvent::ToolCall(ToolCallRequest {
                    id: "toolu_1".into(),
                    name: "current_time".into(),
                    arguments: json!({"timezone": "UTC"})
                }),
                ModelEvent::Usage {
                    input_tokens: 25,
                    output_tokens: 33
                },
            ]
        );
    }

    #[test]
    fn a_tool_use_without_input_fragments_has_empty_arguments() {
        let ev = run(&[
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}),
            json!({"type":"content_block_stop","index":0}),
        ])
        .unwrap();
        assert!(matches!(&ev[0], ModelEvent::ToolCall(c) if c.arguments == json!({})));
    }

    #[test]
    fn errors_and_garbage() {
        let e = run(&[
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        ])
        .unwrap_err();
        assert_eq!((e.code, e.retryable), ("model_unavailable", true));
        assert!(e.message.contains("Overloaded"));
        let e = run(&[
            json!({"type":"error","error":{"type":"invalid_request_error","message":"bad"}}),
        ])
        .unwrap_err();
        assert_eq!((e.code, e.retryable), ("model_rejected", false));
        let mut d = AnthropicDecoder::default();
        let e = d
            .event(
                SseEvent {
                    event: "message_start".into(),
                    data: "not json".into(),
                },
                &mut VecDeque::new(),
            )
            .unwrap_err();
        assert_eq!(e.code, "model_bad_response");
        let e = run(&[
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}),
            json!({"type":"content_block_stop","index":0}),
        ])
        .unwrap_err();
        assert_eq!(e.code, "model_bad_response");
    }

    #[test]
    fn request_maps_system_tools_and_merges_turns() {
        let call = |id: &str| ToolCallRequest {
            id: id.into(),
            name: "f".into(),
            arguments: json!({"a": 1}),
        };
        let tool = |id: &str| Message {
            role: Role::Tool,
            content: "ok".into(),
            tool_calls: vec![],
            tool_call_id: Some(id.into()),
            images: vec![],
        };
        let req = ModelRequest {
            model: "claude-x".into(),
            messages: vec![
                Message::new(Role::System, "one"),
                Message::new(Role::System, "two"),
                Message::new(Role::User, "hi"),
                Message {
                    role: Role::Assistant,
                    content: "calling".into(),
                    tool_calls: vec![call("t1"), call("t2")],
                    tool_call_id: None,
                    images: vec![],
                },
                tool("t1"),
                tool("t2"),
                Message {
                    images: vec![
                        "data:image/png;base64,iVBORw0KGgo=".into(),
                        "https://example.com/cat.jpg".into(),
                    ],
                    ..Message::new(Role::User, "and?")
                },
            ],
            tools: vec![ToolSpec {
                name: "f".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            ..Default::default()
        };
        let b = request_body(&req);
        assert_eq!(b["system"], "one\n\ntwo");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(
            m[0],
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}]})
        );
        assert_eq!(
            m[1]["content"][1],
            json!({"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}})
        );
        assert_eq!(m[2]["role"], "user");
        let last = m[2]["content"].as_array().unwrap();
        assert_eq!(
            last[last.len() - 2..],
            [
                json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}),
                json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}),
            ]
        );
        assert_eq!(
            m[2]["content"].as_array().unwrap().len(),
            5,
            "two results, the next user text and its two images in one turn"
        );
        assert_eq!(m[2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
    }
}
