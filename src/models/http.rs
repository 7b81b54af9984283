//! The HTTP side shared by the OpenAI-compatible and Anthropic providers: one way to build clients
//! (one TLS stack), timeouts, retries and the streaming driver.
//!
//! Why one driver: both APIs are "POST JSON, read server-sent events", and the hard parts are the
//! same — a call is retried (exponential backoff with jitter, `Retry-After` honoured) on connect
//! errors, timeouts, 429 and 5xx, but only while nothing has reached the caller, so a half-streamed
//! answer is never replayed; a stream that stops before its end marker is a failure, never a short
//! answer. The providers only say how to build the request and how to decode its events.
//!
//! Timeouts: `connect_timeout` bounds TCP+TLS connect; `read_timeout` bounds any silence on the
//! connection (the wait for the first byte, and a stalled stream); `timeout` bounds one attempt from
//! request to the end of the stream.

use std::{
    collections::VecDeque,
    sync::{Arc, Once},
    time::Duration,
};

use rand::Rng;
use tokio::time::{Instant, timeout_at};

use super::{
    ModelError, ModelEvent, ModelStream,
    sse::{SseEvent, SseParser},
};

/// A `Retry-After` longer than this is not waited for: the call fails (retryable) instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// At most this much of an error body is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Installs rustls' `ring` provider as the process default (once). reqwest is built with
/// `rustls-no-provider` so that aws-lc (and its C toolchain needs) stays out of the tree; it panics
/// when building a client without a default provider, so every client is built via [`client_builder`].
pub fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: that one is used, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The starting point of every HTTP client of the server.
pub fn client_builder() -> reqwest::ClientBuilder {
    ensure_crypto_provider();
    reqwest::Client::builder().user_agent(concat!("agentry/", env!("CARGO_PKG_VERSION")))
}

/// How one provider calls its endpoint.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// The provider's configured name, prefixed to every error message.
    pub provider: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Appended to 401/403 errors, e.g. "no API key was sent: OPENAI_API_KEY is not set".
    pub auth_hint: Option<String>,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            provider: "model".into(),
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_retries: 3,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(20),
            auth_hint: None,
        }
    }
}

impl CallSettings {
    /// A client for these settings: no redirects (a moved endpoint is a configuration error to show,
    /// not to follow with the API key).
    pub fn client(&self) -> Result<reqwest::Client, ModelError> {
        client_builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ModelError::new(
                    "model_config",
                    format!("{}: cannot build the HTTP client: {e}", self.provider),
                    false,
                )
            })
    }

    /// The wait before retry number `attempt + 1`: exponential, capped, with jitter in [d/2, d].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_initial
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
        let d = exp.min(self.backoff_max);
        let half = d / 2;
        half + Duration::from_nanos(
            rand::rng().random_range(0..=half.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

/// A failed attempt, with the server's `Retry-After` if it sent one.
#[derive(Debug)]
pub struct Failure {
    pub error: ModelError,
    pub retry_after: Option<Duration>,
}

impl From<ModelError> for Failure {
    fn from(error: ModelError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// `Retry-After` (seconds or an HTTP date) or OpenAI's `retry-after-ms`.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = get("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// The error code and retryability of an HTTP status.
pub fn classify_status(status: u16) -> (&'static str, bool) {
    match status {
        429 => ("model_rate_limited", true),
        408 => ("model_timeout", true),
        500..=599 => ("model_unavailable", true),
        401 | 403 => ("model_auth", false),
        400..=499 => ("model_rejected", false),
        _ => ("model_bad_response", false),
    }
}

/// A transport error: timeouts and broken connections may pass on a retry.
pub fn classify_transport(e: &reqwest::Error) -> ModelError {
    let chain = error_chain(e);
    let msg = if chain.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {chain}")
    };
    if e.is_timeout() {
        ModelError::new("model_timeout", format!("timed out: {msg}"), true)
    } else if e.is_decode() {
        ModelError::new("model_bad_response", msg, false)
    } else {
        ModelError::new("model_unavailable", msg, true)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

/// The provider's own words from an error body: `{"error":{"message"}}` (OpenAI, Anthropic),
/// `{"error":"..."}`, `{"message"}` (vLLM), `{"detail"}` (FastAPI servers), else the text itself.
pub fn provider_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = [
            v.pointer("/error/message"),
            v.get("error").filter(|e| e.is_string()),
            v.get("message"),
            v.get("detail"),
        ];
        if let Some(m) = found.into_iter().flatten().next() {
            return match m.as_str() {
                Some(s) => s.to_owned(),
                None => m.to_string(),
            };
        }
    }
    snippet(body)
}

/// At most 300 characters of `body`, for messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = text.chars().take(300).collect();
    if s.len() < text.len() {
        s.push_str("...");
    }
    s
}

/// Decodes one provider's events into [`ModelEvent`]s.
pub trait Decoder: Send + 'static {
    fn event(&mut self, ev: SseEvent, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError>;
    /// The end marker was seen: the answer is complete.
    fn done(&self) -> bool;
    /// The end marker, for the message when a stream stops before it.
    fn end_marker(&self) -> &'static str;
}

pub type RequestFn = Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>;

/// The request of a streamed call: `body` POSTed as JSON to `url` asking for an event stream, with
/// the provider's own headers (its key, its API version) added by `headers`.
pub fn sse_post(
    url: &str,
    body: &serde_json::Value,
    headers: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> Result<RequestFn, ModelError> {
    let body = serde_json::to_vec(body).map_err(|e| {
        ModelError::new(
            "model_config",
            format!("cannot encode the request: {e}"),
            false,
        )
    })?;
    let url = url.to_owned();
    Ok(Arc::new(move |c: &reqwest::Client| {
        headers(
            c.post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .body(body.clone()),
        )
    }))
}

/// A lazily started, retried streaming call: nothing happens until the stream is polled, and
/// dropping the stream aborts the request in flight.
pub fn stream<D: Decoder>(
    client: reqwest::Client,
    settings: Arc<CallSettings>,
    url: String,
    request: RequestFn,
    decoder: fn() -> D,
) -> ModelStream {
    let driver = Driver {
        client,
        settings,
        url,
        request,
        new_decoder: decoder,
        decoder: decoder(),
        parser: SseParser::new(),
        response: None,
        deadline: Instant::now(),
        queue: VecDeque::new(),
        attempt: 0,
        yielded: false,
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(driver, |mut d| async move {
        d.next().await.map(|item| (item, d))
    }))
}

struct Driver<D> {
    client: reqwest::Client,
    settings: Arc<CallSettings>,
    url: String,
    request: RequestFn,
    new_decoder: fn() -> D,
    decoder: D,
    parser: SseParser,
    response: Option<reqwest::Response>,
    deadline: Instant,
    queue: VecDeque<ModelEvent>,
    /// Retries done so far.
    attempt: u32,
    /// An event reached the caller: from now on a failure is final.
    yielded: bool,
    finished: bool,
}

impl<D: Decoder> Driver<D> {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                self.yielded = true;
                return Some(Ok(ev));
            }
            if self.finished {
                return None;
            }
            let Err(f) = self.step().await else { continue };
            self.response = None;
            self.queue.clear();
            let s = &self.settings;
            if f.error.retryable && !self.yielded && self.attempt < s.max_retries {
                let wait = match f.retry_after {
                    Some(d) if d > MAX_RETRY_AFTER => None,
                    Some(d) => Some(d),
                    None => Some(s.backoff(self.attempt)),
                };
                if let Some(wait) = wait {
                    tracing::warn!(provider = %s.provider, attempt = self.attempt + 1, wait_ms = wait.as_millis() as u64,
                        error = %f.error, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                    self.attempt += 1;
                    continue;
                }
            }
            self.finished = true;
            let mut e = f.error;
            e.message = format!("{}: {}", s.provider, e.message);
            if self.attempt > 0 {
                e.message
                    .push_str(&format!(" (gave up after {} attempts)", self.attempt + 1));
            } else if let Some(d) = f.retry_after.filter(|d| *d > MAX_RETRY_AFTER) {
                e.message.push_str(&format!(
                    " (the server asks to retry after {}s)",
                    d.as_secs()
                ));
            }
            return Some(Err(e));
        }
    }

    /// One step of the current attempt: send the request, or read one chunk.
    async fn step(&mut self) -> Result<(), Failure> {
        let Some(resp) = self.response.as_mut() else {
            return self.start().await;
        };
        let chunk = match timeout_at(self.deadline, resp.chunk()).await {
            Err(_) => return Err(self.timed_out().into()),
            Ok(Err(e)) if e.is_timeout() => {
                let secs = self.settings.read_timeout.as_secs_f64();
                let msg = format!(
                    "the event stream from {} stalled: nothing received for {secs}s",
                    self.url
                );
                return Err(ModelError::new("model_timeout", msg, true).into());
            }
            Ok(Err(e)) => {
                let mut err = classify_transport(&e);
                err.message = format!(
                    "reading the event stream from {} failed: {}",
                    self.url, err.message
                );
                return Err(err.into());
            }
            Ok(Ok(c)) => c,
        };
        let events = match chunk {
            Some(bytes) => self
                .parser
                .feed(&bytes)
                .map_err(|e| ModelError::new("model_bad_response", e.0, false))?,
            None => {
                self.response = None;
                if let Some(ev) = self.parser.finish() {
                    self.decoder.event(ev, &mut self.queue)?;
                }
                if self.decoder.done() {
                    self.finished = true;
                    return Ok(());
                }
                let msg = format!(
                    "the event stream from {} ended before {}",
                    self.url,
                    self.decoder.end_marker()
                );
                return Err(ModelError::new("model_bad_response", msg, true).into());
            }
        };
        for ev in events {
            self.decoder.event(ev, &mut self.queue)?;
            if self.decoder.done() {
                // Anything after the end marker is ignored; dropping the response closes it.
                self.response = None;
                self.finished = true;
                break;
            }
        }
        Ok(())
    }

    async fn start(&mut self) -> Result<(), Failure> {
        self.deadline = Instant::now() + self.settings.timeout;
        let send = (self.request)(&self.client).send();
        let resp = match timeout_at(self.deadline, send).await {
            Err(_) => return Err(self.timed_out().into()),
            Ok(Err(e)) if e.is_timeout() => {
                let s = &self.settings;
                let msg = if e.is_connect() {
                    format!(
                        "cannot connect to {} within {}s",
                        self.url,
                        s.connect_timeout.as_secs_f64()
                    )
                } else {
                    format!(
                        "no response from {} within {}s",
                        self.url,
                        s.read_timeout.as_secs_f64()
                    )
                };
                return Err(ModelError::new("model_timeout", msg, true).into());
            }
            Ok(Err(e)) => {
                let mut err = classify_transport(&e);
                err.message = format!("request to {} failed: {}", self.url, err.message);
                return Err(err.into());
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json") && !ct.contains("event-stream"));
        if !status.is_success() || json {
            let retry_after = retry_after(resp.headers());
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = read_error_body(self.deadline, resp).await;
            let (code, retryable, message) = if status.is_success() {
                (
                    "model_bad_response",
                    false,
                    format!(
                        "expected an event stream from {}, got JSON: {}",
                        self.url,
                        provider_message(&body)
                    ),
                )
            } else {
                let (code, retryable) = classify_status(status.as_u16());
                let mut m = format!(
                    "HTTP {} from {}: {}",
                    status.as_u16(),
                    self.url,
                    provider_message(&body)
                );
                if let Some(l) = location {
                    m.push_str(&format!(" (redirects to {l}: configure that base URL)"));
                }
                if code == "model_auth"
                    && let Some(hint) = &self.settings.auth_hint
                {
                    m.push_str(&format!(" ({hint})"));
                }
                (code, retryable, m)
            };
            return Err(Failure {
                error: ModelError::new(code, message, retryable),
                retry_after,
            });
        }
        self.parser = SseParser::new();
        self.decoder = (self.new_decoder)();
        self.response = Some(resp);
        Ok(())
    }

    fn timed_out(&self) -> ModelError {
        let secs = self.settings.timeout.as_secs_f64();
        ModelError::new(
            "model_timeout",
            format!("no complete answer from {} within {secs}s", self.url),
            true,
        )
    }
}

/// At most [`MAX_ERROR_BODY`] bytes of a failed response, for its message.
async fn read_error_body(deadline: Instant, mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    body
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn status_classification() {
        assert_eq!(classify_status(429), ("model_rate_limited", true));
        assert_eq!(classify_status(500), ("model_unavailable", true));
        assert_eq!(classify_status(503), ("model_unavailable", true));
        assert_eq!(
            classify_status(529),
            ("model_unavailable", true),
            "Anthropic's overloaded"
        );
        assert_eq!(classify_status(408), ("model_timeout", true));
        assert_eq!(classify_status(401), ("model_auth", false));
        assert_eq!(classify_status(400), ("model_rejected", false));
        assert_eq!(classify_status(404), ("model_rejected", false));
        assert_eq!(classify_status(302), ("model_bad_response", false));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let s = CallSettings {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..50 {
            let b0 = s.backoff(0);
            assert!(
                b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100),
                "{b0:?}"
            );
            let b2 = s.backoff(2);
            assert!(
                b2 >= Duration::from_millis(200) && b2 <= Duration::from_millis(400),
                "{b2:?}"
            );
            let b9 = s.backoff(40);
            assert!(
                b9 >= Duration::from_millis(500) && b9 <= Duration::from_secs(1),
                "{b9:?}"
            );
        }
    }

    #[test]
    fn provider_messages() {
        assert_eq!(
            provider_message(br#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(
            provider_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(
            provider_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(
            provider_message(br#"{"object":"error","message":"too long"}"#),
            "too long"
        );
        assert_eq!(provider_message(br#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(
            provider_message(b"<html>502 Bad Gateway</html>"),
            "<html>502 Bad Gateway</html>"
        );
        assert_eq!(provider_message(b""), "(empty body)");
        assert!(provider_message("x".repeat(1000).as_bytes()).ends_with("..."));
    }
}
