//! The MCP tool node: one `tools/call` on an MCP server over streamable HTTP, through rmcp's client
//! (the official Rust SDK; it speaks the session, SSE and JSON-RPC details of the protocol). The
//! connection goes through the same guarded client as HTTP nodes: the server's address is resolved,
//! private addresses are refused (unless allowed), and the checked address is pinned.

use std::{collections::HashMap, time::Duration};

use rmcp::{
    ServiceExt,
    model::CallToolRequestParams,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

use super::plan::error;
use crate::{
    pb::ErrorInfo,
    tools::http_request::{Refused, pinned_client},
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Calls `tool` of the MCP server at `server` with `arguments`; the output is the tool's structured
/// content when it has one, else `{"content": [...]}`. A result flagged `isError` fails the attempt.
pub async fn call(
    server: &str,
    tool: &str,
    arguments: Value,
    headers: &HashMap<String, String>,
    allow_private: bool,
    timeout: Option<Duration>,
) -> Result<Value, ErrorInfo> {
    let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
    let url = reqwest::Url::parse(server)
        .map_err(|e| error("invalid_arguments", format!("server {server:?}: {e}")))?;
    let client = pinned_client(&url, allow_private, timeout)
        .await
        .map_err(|e| match e {
            Refused::Timeout(m) => error("timeout", m),
            Refused::Unresolved(m) => error("mcp_failed", m),
            Refused::Private(m) => error(
                "forbidden",
                format!("{m} (start the server with --flows-allow-private to allow it)"),
            ),
        })?;
    let mut custom = HashMap::with_capacity(headers.len());
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| error("invalid_arguments", format!("{k:?} is not a header name")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| error("invalid_arguments", format!("header {k}: invalid value")))?;
        custom.insert(name, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(server).custom_headers(custom);
    let transport = StreamableHttpClientTransport::with_client(client, config);
    let args = match arguments {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        other => {
            return Err(error(
                "invalid_arguments",
                format!("arguments must be an object, got {other}"),
            ));
        }
    };
    let work = async {
        let peer = ()
            .serve(transport)
            .await
            .map_err(|e| error("mcp_failed", format!("MCP server {server}: {e}")))?;
        let res = peer
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await;
        let _ = peer.cancel().await;
        res.map_err(|e| error("mcp_failed", format!("MCP tool {tool}: {e}")))
    };
    let res = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| error("timeout", format!("MCP tool {tool} did not answer in time")))??;
    let content = serde_json::to_value(&res.content).unwrap_or(Value::Null);
    if res.is_error == Some(true) {
        let text: Vec<&str> = res
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect();
        return Err(error(
            "tool_error",
            format!("MCP tool {tool}: {}", text.join(" ")),
        ));
    }
    Ok(match res.structured_content {
        Some(v) => v,
        None => json!({"content": content}),
    })
}
