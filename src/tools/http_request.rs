//! `http_request`: lets a model call HTTP APIs, within limits set by the agent's binding config:
//!
//! ```json
//! {"allowed_hosts": ["api.example.com", "*.example.org"], "allow_private": false,
//!  "timeout_secs": 30, "max_response_bytes": 1048576}
//! ```
//!
//! A model's arguments are untrusted (prompt injection), so the defaults deny: no `allowed_hosts`
//! means no request at all (`"*"` allows any host, explicitly). Server-side request forgery is
//! blocked by resolving the host here, refusing private, loopback, link-local, unique-local,
//! multicast and other non-public addresses (IPv4, IPv6, and IPv4 embedded in IPv6) unless
//! `allow_private`, and then connecting to exactly the addresses that were checked (pinned in the
//! client), so a second DNS answer cannot rebind the name. Redirects are not followed (a 3xx comes
//! back with its `location` for the model to request, through the same checks), proxies are not
//! used, and a `Host` header cannot be set.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError};
use crate::models::http::client_builder;

pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The ceiling of `max_response_bytes`: a tool result is held in memory and sent to the model.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

pub struct HttpRequest;

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    allow_private: bool,
    timeout_secs: Option<f64>,
    max_response_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Args {
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    #[serde(default)]
    body: Value,
}

fn invalid(msg: impl Into<String>) -> ToolError {
    ToolError::new("invalid_arguments", msg)
}

fn forbidden(msg: impl Into<String>) -> ToolError {
    ToolError::new("forbidden", msg)
}

#[tonic::async_trait]
impl Tool for HttpRequest {
    fn name(&self) -> &str {
        "http_request"
    }

    fn description(&self) -> &str {
        "Send an HTTP request to an allowed host and return {status, headers, body}. Redirects are not followed."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"], "default": "GET"},
                "url": {"type": "string", "description": "An http or https URL"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"description": "A string, or JSON sent as application/json"}
            },
            "required": ["url"],
            "additionalProperties": false
        })
    }

    async fn call(&self, ctx: &ToolContext, arguments: Value) -> Result<Value, ToolError> {
        let config = if ctx.config.is_null() {
            json!({})
        } else {
            ctx.config.clone()
        };
        let config: Config = serde_json::from_value(config).map_err(|e| {
            ToolError::new(
                "invalid_config",
                format!("http_request binding config: {e}"),
            )
        })?;
        let args: Args = serde_json::from_value(arguments).map_err(|e| invalid(e.to_string()))?;
        execute(&config, args).await
    }
}

async fn execute(config: &Config, args: Args) -> Result<Value, ToolError> {
    let timeout = match config.timeout_secs {
        Some(t) if t.is_finite() && t > 0.0 && t <= 600.0 => Duration::from_secs_f64(t),
        Some(_) => {
            return Err(ToolError::new(
                "invalid_config",
                "timeout_secs must be between 0 and 600",
            ));
        }
        None => Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
    };
    let max_bytes = config
        .max_response_bytes
        .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES)
        .min(MAX_RESPONSE_BYTES);
    let method = args.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    if !matches!(
        method.as_str(),
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS"
    ) {
        return Err(invalid(format!("method {method:?} is not supported")));
    }
    let url =
        reqwest::Url::parse(&args.url).map_err(|e| invalid(format!("url {:?}: {e}", args.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http and https URLs are supported"));
    }
    let host_name = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("the url has no host"))?
        .to_owned();
    if !host_allowed(&host_name, &config.allowed_hosts) {
        return Err(if config.allowed_hosts.is_empty() {
            forbidden(
                "http_request has no allowed_hosts in this agent's tool binding: every host is refused",
            )
        } else {
            forbidden(format!(
                "host {host_name:?} is not in this agent's allowed_hosts"
            ))
        });
    }
    let client = pinned_client(&url, config.allow_private, timeout)
        .await
        .map_err(|e| match e {
            Refused::Timeout(m) => ToolError::new("timeout", m),
            Refused::Unresolved(m) => ToolError::new("tool_failed", m),
            Refused::Private(m) => forbidden(format!(
                "{m} (set allow_private in the binding to allow it)"
            )),
        })?;
    let mut req = client.request(method.parse().expect("a known method"), url.clone());
    let mut has_content_type = false;
    for (name, value) in &args.headers {
        if name.eq_ignore_ascii_case("host") {
            return Err(forbidden("the Host header cannot be set"));
        }
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            _ => return Err(invalid(format!("header {name:?} must be a string"))),
        };
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("{name:?} is not a valid header name")))?;
        let value = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| invalid(format!("header {name}: invalid value")))?;
        req = req.header(name, value);
    }
    req = match args.body {
        Value::Null => req,
        Value::String(s) => req.body(s),
        json_body => {
            if !has_content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            req.body(json_body.to_string())
        }
    };
    let mut resp = req.send().await.map_err(|e| transport(&host_name, e))?;
    let status = resp.status().as_u16();
    let mut headers = serde_json::Map::new();
    for (name, value) in resp.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    let is_json = headers
        .get("content-type")
        .and_then(Value::as_str)
        .is_some_and(|ct| ct.contains("json"));
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&host_name, e))? {
        let room = max_bytes - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let body = match (is_json && !truncated)
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
    {
        Some(v) => v,
        None => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let mut out = json!({"status": status, "headers": headers, "body": body});
    if truncated {
        out["truncated"] = json!(true);
    }
    Ok(out)
}

fn transport(host: &str, e: reqwest::Error) -> ToolError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        ToolError::new("timeout", format!("request to {host} timed out: {msg}"))
    } else {
        ToolError::new("tool_failed", format!("request to {host} failed: {msg}"))
    }
}

/// Exact host names, `*.suffix` for any subdomain of `suffix` (not `suffix` itself), or `*` for
/// any host. Case-insensitive; a trailing dot and IPv6 brackets are ignored.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    fn norm(s: &str) -> String {
        let s = s.trim();
        let s = s.strip_suffix('.').unwrap_or(s);
        s.strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(s)
            .to_ascii_lowercase()
    }
    let host = norm(host);
    if host.is_empty() {
        return false;
    }
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        if entry == "*" {
            return true;
        }
        match entry.strip_prefix("*.") {
            Some(suffix) => {
                let suffix = norm(suffix);
                !suffix.is_empty()
                    && host.len() > suffix.len() + 1
                    && host.ends_with(&format!(".{suffix}"))
            }
            None => {
                let entry = norm(entry);
                !entry.is_empty() && entry == host
            }
        }
    })
}

/// Why [`pinned_client`] refused a URL.
#[derive(Debug)]
pub enum Refused {
    /// Resolving the host took longer than the timeout.
    Timeout(String),
    /// No host, or it does not resolve.
    Unresolved(String),
    /// The host has a private or reserved address.
    Private(String),
}

/// A client for `url` (http or https) that connects only to the host's public addresses, checked
/// here and pinned so a second DNS answer cannot rebind the name (unless `allow_private`, any address
/// is refused that [`is_blocked`]); no proxy, no redirects, `timeout` overall.
pub async fn pinned_client(
    url: &reqwest::Url,
    allow_private: bool,
    timeout: Duration,
) -> Result<reqwest::Client, Refused> {
    let host_name = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Refused::Unresolved("the url has no host".into()))?;
    // An IP literal (IPv6 in brackets), or a domain name to resolve.
    let literal: Option<IpAddr> = host_name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::time::timeout(timeout, tokio::net::lookup_host((host_name, port)))
            .await
            .map_err(|_| Refused::Timeout(format!("resolving {host_name} timed out")))?
            .map_err(|e| Refused::Unresolved(format!("cannot resolve {host_name}: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refused::Unresolved(format!("{host_name} has no address")));
    }
    if !allow_private && let Some(a) = addrs.iter().find(|a| is_blocked(a.ip())) {
        return Err(Refused::Private(format!(
            "{host_name} resolves to {}, a private or reserved address",
            a.ip()
        )));
    }
    let mut builder = client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)));
    if literal.is_none() {
        // Connect only to the addresses checked above (no second DNS lookup).
        builder = builder.resolve_to_addrs(host_name, &addrs);
    }
    builder
        .build()
        .map_err(|e| Refused::Unresolved(format!("http client: {e}")))
}

/// Whether `ip` is anything but a public unicast address.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => is_blocked_v6(v6),
    }
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || a >= 240 // reserved
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // IPv4 embedded in IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::/96).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_blocked_v4(v4);
    }
    let embedded = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return is_blocked_v4(embedded);
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4] {
        return is_blocked_v4(embedded);
    }
    if seg[0] == 0x2002 {
        // 6to4 carries its IPv4 address in bits 16..48.
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return is_blocked_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo: tunnels to arbitrary IPv4
        || (seg[0] == 0x0100 && seg[1..4] == [0; 3]) // discard-only 100::/64
        || (seg[0] & 0xe000) != 0x2000 // outside global unicast 2000::/3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allow_list_matching() {
        let allowed = hosts(&["api.example.com", "*.example.org", "127.0.0.1", "[::1]"]);
        assert!(host_allowed("api.example.com", &allowed));
        assert!(host_allowed("API.Example.COM.", &allowed));
        assert!(!host_allowed("example.com", &allowed));
        assert!(!host_allowed("evil-api.example.com", &allowed));
        assert!(!host_allowed("api.example.com.evil.net", &allowed));
        assert!(host_allowed("a.example.org", &allowed));
        assert!(host_allowed("a.b.example.org", &allowed));
        assert!(
            !host_allowed("example.org", &allowed),
            "*.suffix does not match the suffix itself"
        );
        assert!(!host_allowed("badexample.org", &allowed));
        assert!(host_allowed("127.0.0.1", &allowed));
        assert!(host_allowed("::1", &allowed));
        assert!(!host_allowed("anything", &[]), "empty: nothing allowed");
        assert!(!host_allowed("x", &hosts(&["", "*."])));
        assert!(host_allowed("anything.at.all", &hosts(&["*"])));
    }

    #[test]
    fn private_ipv4() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(is_blocked(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "172.15.255.255",
        ] {
            assert!(!is_blocked(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn private_ipv6_and_embedded_ipv4() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
        ] {
            assert!(is_blocked(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_blocked(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn refusals_before_any_connection() {
        let ctx = |config: Value| ToolContext {
            config,
            ..Default::default()
        };
        let call = |config: Value, url: &str| {
            let c = ctx(config);
            let args = json!({"url": url});
            async move { HttpRequest.call(&c, args).await.unwrap_err() }
        };
        let e = call(Value::Null, "http://example.com/").await;
        assert_eq!(e.code, "forbidden");
        assert!(e.message.contains("no allowed_hosts"), "{e:?}");
        let e = call(
            json!({"allowed_hosts": ["example.com"]}),
            "http://other.com/",
        )
        .await;
        assert_eq!(e.code, "forbidden");
        let e = call(
            json!({"allowed_hosts": ["127.0.0.1"]}),
            "http://127.0.0.1:9/",
        )
        .await;
        assert_eq!(e.code, "forbidden");
        assert!(e.message.contains("private"), "{e:?}");
        let e = call(
            json!({"allowed_hosts": ["localhost"]}),
            "http://localhost:9/",
        )
        .await;
        assert_eq!(e.code, "forbidden", "a name resolving to loopback: {e:?}");
        let e = call(
            json!({"allowed_hosts": ["*"]}),
            "http://[::ffff:127.0.0.1]:9/",
        )
        .await;
        assert!(
            e.code == "forbidden" && e.message.contains("private"),
            "{e:?}"
        );
        let e = call(json!({"allowed_hosts": ["*"]}), "file:///etc/passwd").await;
        assert_eq!(e.code, "invalid_arguments");
        let e = call(json!({"allowed_hosts": "x"}), "http://x/").await;
        assert_eq!(e.code, "invalid_config");
    }
}
