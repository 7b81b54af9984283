//! `openai/*` and every other OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp,
//! LiteLLM): `POST {base_url}/chat/completions` with `stream: true`, read as server-sent events.
//!
//! Written on reqwest rather than an OpenAI client crate because compatible servers differ in what
//! they send, and the crates' strict chunk types reject those differences; and because the run
//! engine needs what such crates hide: the status and `Retry-After` of a failed call, and whether a
//! stream really ended with `data: [DONE]` or was cut short. Chunks are therefore parsed leniently
//! (every field optional): text deltas are passed on at once, tool-call fragments are accumulated by
//! `index` (id and name in the first fragment, arguments concatenated) and emitted complete at
//! `[DONE]`, followed by the usage chunk that `stream_options.include_usage` asks for.

use std::{collections::BTreeMap, collections::VecDeque, sync::Arc};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Message, ModelError, ModelEvent, ModelProvider, ModelRequest, ModelStream, Role,
    ToolCallRequest,
    http::{self, CallSettings, Decoder, provider_message, snippet},
    sse::SseEvent,
};

pub struct OpenAiCompatible {
    settings: Arc<CallSettings>,
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
}

impl OpenAiCompatible {
    /// `base_url` is the API root (`https://api.openai.com/v1`, `http://localhost:8000/v1`);
    /// without `api_key` no `Authorization` header is sent (local servers).
    pub fn new(
        settings: CallSettings,
        base_url: &str,
        api_key: Option<String>,
    ) -> Result<Self, ModelError> {
        let client = settings.client()?;
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        Ok(OpenAiCompatible {
            settings: Arc::new(settings),
            client,
            url,
            api_key,
        })
    }
}

#[tonic::async_trait]
impl ModelProvider for OpenAiCompatible {
    async fn stream(&self, req: ModelRequest) -> Result<ModelStream, ModelError> {
        let key = self.api_key.clone();
        let request = http::sse_post(&self.url, &request_body(&req), move |b| match &key {
            Some(k) => b.bearer_auth(k),
            None => b,
        })?;
        Ok(http::stream(
            self.client.clone(),
            self.settings.clone(),
            self.url.clone(),
            request,
            OpenAiDecoder::default,
        ))
    }
}

/// The chat-completions request for `req`.
pub fn request_body(req: &ModelRequest) -> Value {
    let mut body = json!({
        "model": req.model,
        "messages": req.messages.iter().map(message_json).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": parameters(&t.parameters)
                }})
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(t) = req.max_tokens {
        body["max_tokens"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    body
}

/// A tool's JSON Schema, or the empty object schema when it has none.
pub fn parameters(p: &Value) -> Value {
    if p.is_object() {
        p.clone()
    } else {
        json!({"type": "object", "properties": {}})
    }
}

fn message_json(m: &Message) -> Value {
    match m.role {
        Role::Assistant if !m.tool_calls.is_empty() => {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                })
                .collect();
            let content = if m.content.is_empty() {
                Value::Null
            } else {
                Value::String(m.content.clone())
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            "content": m.content,
        }),
        Role::User if !m.images.is_empty() => {
            let mut parts = Vec::with_capacity(m.images.len() + 1);
            if !m.content.is_empty() {
                parts.push(json!({"type": "text", "text": m.content}));
            }
            parts.extend(
                m.images
                    .iter()
                    .map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
            );
            json!({"role": "user", "content": parts})
        }
        role => json!({"role": role.as_str(), "content": m.content}),
    }
}

#[derive(Debug, Default, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    index: Option<u32>,
    delta: Option<Delta>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Default, Deserialize)]
struct ToolCallDelta {
    index: Option<u32>,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    /// A string fragment (the standard); some servers send the whole object instead.
    arguments: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Decodes chat-completion chunks.
#[derive(Debug, Default)]
pub struct OpenAiDecoder {
    calls: BTreeMap<u32, PartialCall>,
    last: Option<u32>,
    usage: Option<(i64, i64)>,
    done: bool,
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::new("model_bad_response", msg, false)
}

impl OpenAiDecoder {
    fn tool_delta(&mut self, d: ToolCallDelta) {
        let id = d.id.filter(|s| !s.is_empty());
        // Without an index (some servers), a new id starts a new call; otherwise it continues the last.
        let index = d.index.unwrap_or_else(|| match (self.last, &id) {
            (Some(l), Some(id))
                if self
                    .calls
                    .get(&l)
                    .is_some_and(|c| !c.id.is_empty() && &c.id != id) =>
            {
                l + 1
            }
            (Some(l), _) => l,
            (None, _) => 0,
        });
        self.last = Some(index);
        let call = self.calls.entry(index).or_default();
        if let Some(id) = id
            && call.id.is_empty()
        {
            call.id = id;
        }
        let Some(f) = d.function else { return };
        if let Some(name) = f.name.filter(|n| !n.is_empty())
            && call.name.is_empty()
        {
            call.name = name;
        }
        match f.arguments {
            Some(Value::String(s)) => call.arguments.push_str(&s),
            Some(Value::Null) | None => {}
            Some(v) => call.arguments = v.to_string(),
        }
    }

    fn finish(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(bad(format!("tool call #{index} has no function name")));
            }
            let raw = call.arguments.trim();
            let arguments = if raw.is_empty() {
                Value::Object(Default::default())
            } else {
                serde_json::from_str(raw).map_err(|e| {
                    bad(format!(
                        "the arguments of tool call {:?} are not valid JSON ({e}): {}",
                        call.name,
                        snippet(raw.as_bytes())
                    ))
                })?
            };
            let id = if call.id.is_empty() {
                format!("call_{}", uuid::Uuid::now_v7().simple())
            } else {
                call.id
            };
            out.push_back(ModelEvent::ToolCall(ToolCallRequest {
                id,
                name: call.name,
                arguments,
            }));
        }
        if let Some((input_tokens, output_tokens)) = self.usage.take() {
            out.push_back(ModelEvent::Usage {
                input_tokens,
                output_tokens,
            });
        }
        Ok(())
    }
}

impl Decoder for OpenAiDecoder {
    fn event(&mut self, ev: SseEvent, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return self.finish(out);
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            bad(format!(
                "an event of the stream is not a chat-completion chunk ({e}): {}",
                snippet(data.as_bytes())
            ))
        })?;
        if let Some(err) = chunk.error {
            let status = err
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok());
            let (code, retryable) = match status {
                Some(s) if s >= 400 => http::classify_status(s),
                _ => ("model_unavailable", true),
            };
            let message = provider_message(json!({"error": err}).to_string().as_bytes());
            return Err(ModelError::new(
                code,
                format!("the stream reported an error: {message}"),
                retryable,
            ));
        }
        for choice in chunk.choices {
            if choice.index.unwrap_or(0) != 0 {
                continue; // only the first choice is used
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push_back(ModelEvent::Delta(text));
            }
            for d in delta.tool_calls.unwrap_or_default() {
                self.tool_delta(d);
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some((u.prompt_tokens, u.completion_tokens));
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.done
    }

    fn end_marker(&self) -> &'static str {
        "data: [DONE]"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ToolSpec;

    fn run(events: &[&str]) -> Result<Vec<ModelEvent>, ModelError> {
        let mut d = OpenAiDecoder::default();
        let mut out = VecDeque::new();
        for e in events {
            d.event(
                SseEvent {
                    event: String::new(),
                    data: (*e).to_owned(),
                },
                &mut out,
            )?;
        }
        assert!(d.done(), "test streams end with [DONE]");
        Ok(out.into())
    }

    #[test]
    fn text_deltas_then_usage() {
        let ev = run(&[
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(
            ev,
            vec![
                ModelEvent::Delta("Hel".into()),
                ModelEvent::Delta("lo".into()),
                ModelEvent::Usage {
                    input_tokens: 7,
                    output_tokens: 2
                }
            ]
        );
    }

    #[test]
    fn tool_call_fragments_accumulate_by_index() {
        let ev = run(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"current_time","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"memory","arguments":"{\"act"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"timezone\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"ion\":\"list\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"+02:00\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(
            ev,
            vec![
                ModelEvent::ToolCall(ToolCallRequest {
                    id: "call_a".into(),
                    name: "current_time".into(),
                    arguments: json!({"timezone": "+02:00"})
                }),
                ModelEvent::ToolCall(ToolCallRequest {
                    id: "call_b".into(),
                    name: "memory".into(),
                    arguments: json!({"action": "list"})
                }),
            ]
        );
    }

    #[test]
    fn tool_calls_without_index_or_id_or_arguments() {
        let ev = run(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":{"x":1}}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"g"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":2,"function":{"name":"h","arguments":"{}"}}]}}]}"#,
            "[DONE]",
        ])
        .unwrap();
        let calls: Vec<_> = ev
            .into_iter()
            .map(|e| match e {
                ModelEvent::ToolCall(c) => c,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(calls.len(), 3);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].arguments.clone()),
            ("a", json!({"x": 1}))
        );
        assert_eq!(
            (calls[1].name.as_str(), calls[1].arguments.clone()),
            ("g", json!({}))
        );
        assert!(calls[2].id.starts_with("call_"), "a generated id");
    }

    #[test]
    fn invalid_arguments_and_garbage_are_bad_responses() {
        let e = run(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\": "}}]}}]}"#,
            "[DONE]",
        ])
        .unwrap_err();
        assert_eq!((e.code, e.retryable), ("model_bad_response", false));
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = run(&["<html>oops</html>", "[DONE]"]).unwrap_err();
        assert_eq!(e.code, "model_bad_response");
        let e = run(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
            "[DONE]",
        ])
        .unwrap_err();
        assert!(e.message.contains("no function name"), "{e}");
    }

    #[test]
    fn an_error_chunk_is_surfaced() {
        let e = run(&[r#"{"error":{"message":"context too long","code":400}}"#]).unwrap_err();
        assert_eq!((e.code, e.retryable), ("model_rejected", false));
        assert!(e.message.contains("context too long"));
        let e = run(&[r#"{"error":{"message":"overloaded","type":"server_error"}}"#]).unwrap_err();
        assert_eq!((e.code, e.retryable), ("model_unavailable", true));
    }

    #[test]
    fn request_maps_messages_and_tools() {
        let req = ModelRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![
                Message::new(Role::System, "be brief"),
                Message {
                    images: vec!["https://example.com/clock.png".into()],
                    ..Message::new(Role::User, "time?")
                },
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCallRequest {
                        id: "c1".into(),
                        name: "current_time".into(),
                        arguments: json!({}),
                    }],
                    tool_call_id: None,
                    images: vec![],
                },
                Message {
                    role: Role::Tool,
                    content: "{\"iso\":\"x\"}".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("c1".into()),
                    images: vec![],
                },
            ],
            tools: vec![ToolSpec {
                name: "current_time".into(),
                description: "now".into(),
                parameters: Value::Null,
            }],
            temperature: Some(0.2),
            max_tokens: Some(100),
            ..Default::default()
        };
        let b = request_body(&req);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            b["messages"][1]["content"],
            json!([
                {"type": "text", "text": "time?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/clock.png"}}
            ])
        );
        assert_eq!(b["messages"][2]["content"], Value::Null);
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "{\"iso\":\"x\"}"})
        );
        assert_eq!(b["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(
            (b["temperature"].clone(), b["max_tokens"].clone()),
            (json!(0.2), json!(100))
        );
        assert!(b.get("top_p").is_none());
    }
}
