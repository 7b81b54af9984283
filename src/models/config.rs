//! Model providers and prices from the `--config` file:
//!
//! ```toml
//! [providers.openai]                      # optional: these are the defaults
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"
//!
//! [providers.vllm]                        # models "vllm/<model>"
//! kind = "openai"
//! base_url = "http://127.0.0.1:8000/v1"   # no api_key_env: no Authorization header
//! timeout_secs = 300
//!
//! [prices."vllm/llama3"]
//! input_per_mtok = 0.0
//! output_per_mtok = 0.0
//! ```
//!
//! The key itself never sits in the file, only the name of the variable that holds it. `openai` and
//! `anthropic` exist without a file entry (their public endpoints, keys from `OPENAI_API_KEY` /
//! `ANTHROPIC_API_KEY`); any other name needs `kind` and `base_url`, and gets no key unless it names
//! one, so a local server never receives a cloud key by accident.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use super::{Models, Price, anthropic::Anthropic, http::CallSettings, openai::OpenAiCompatible};
use crate::{config::FileConfig, error::Error};

pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
    Anthropic,
}

/// One `[providers.<name>]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Defaults to the table's name when that is `openai` or `anthropic`.
    pub kind: Option<ProviderKind>,
    /// The API root; defaults to the public endpoint for `openai` and `anthropic`.
    pub base_url: Option<String>,
    /// The environment variable holding the API key. A variable that is unset means no auth header.
    pub api_key_env: Option<String>,
    /// One attempt, from the request to the end of the streamed answer.
    #[serde(default = "defaults::timeout")]
    pub timeout_secs: f64,
    /// TCP and TLS connect.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout_secs: f64,
    /// Silence on the connection: the wait for the first byte, or a stalled stream.
    #[serde(default = "defaults::read_timeout")]
    pub read_timeout_secs: f64,
    /// Retries after the first attempt (connect errors, timeouts, 429, 5xx; never mid-answer).
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// The first backoff; each retry doubles it (with jitter), up to 20 s.
    #[serde(default = "defaults::backoff_initial")]
    pub backoff_initial_ms: u64,
}

mod defaults {
    pub fn timeout() -> f64 {
        120.0
    }
    pub fn connect_timeout() -> f64 {
        10.0
    }
    pub fn read_timeout() -> f64 {
        60.0
    }
    pub fn max_retries() -> u32 {
        3
    }
    pub fn backoff_initial() -> u64 {
        500
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: None,
            base_url: None,
            api_key_env: None,
            timeout_secs: defaults::timeout(),
            connect_timeout_secs: defaults::connect_timeout(),
            read_timeout_secs: defaults::read_timeout(),
            max_retries: defaults::max_retries(),
            backoff_initial_ms: defaults::backoff_initial(),
        }
    }
}

fn invalid(name: &str, field: &str, msg: impl Into<String>) -> Error {
    Error::invalid(format!("config.providers.{name}.{field}"), msg)
}

fn secs(name: &str, field: &str, v: f64) -> Result<Duration, Error> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(invalid(
            name,
            field,
            "must be a number of seconds between 0 and 86400",
        ))
    }
}

impl ProviderConfig {
    pub fn kind(&self, name: &str) -> Result<ProviderKind, Error> {
        match (self.kind, name) {
            (Some(k), _) => Ok(k),
            (None, "openai") => Ok(ProviderKind::Openai),
            (None, "anthropic") => Ok(ProviderKind::Anthropic),
            (None, _) => Err(invalid(
                name,
                "kind",
                "set kind = \"openai\" or \"anthropic\"",
            )),
        }
    }

    pub fn base_url(&self, name: &str) -> Result<String, Error> {
        let url = match (&self.base_url, name) {
            (Some(u), _) => u.trim().trim_end_matches('/').to_owned(),
            (None, "openai") => OPENAI_BASE_URL.to_owned(),
            (None, "anthropic") => ANTHROPIC_BASE_URL.to_owned(),
            (None, _) => {
                return Err(invalid(
                    name,
                    "base_url",
                    "required for a provider other than openai or anthropic",
                ));
            }
        };
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(url),
            _ => Err(invalid(
                name,
                "base_url",
                format!("{url:?} is not an http(s) URL"),
            )),
        }
    }

    /// The variable holding the key: the configured one, else the default of `openai`/`anthropic`.
    pub fn api_key_env(&self, name: &str) -> Option<String> {
        self.api_key_env.clone().or_else(|| match name {
            "openai" => Some("OPENAI_API_KEY".into()),
            "anthropic" => Some("ANTHROPIC_API_KEY".into()),
            _ => None,
        })
    }

    pub fn call_settings(&self, name: &str) -> Result<CallSettings, Error> {
        if self.max_retries > 10 {
            return Err(invalid(name, "max_retries", "at most 10"));
        }
        let auth_hint = self
            .api_key_env(name)
            .filter(|v| std::env::var_os(v).is_none_or(|k| k.is_empty()))
            .map(|v| format!("no API key was sent: the environment variable {v} is not set"));
        Ok(CallSettings {
            provider: name.to_owned(),
            timeout: secs(name, "timeout_secs", self.timeout_secs)?,
            connect_timeout: secs(name, "connect_timeout_secs", self.connect_timeout_secs)?,
            read_timeout: secs(name, "read_timeout_secs", self.read_timeout_secs)?,
            max_retries: self.max_retries,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms.min(60_000)),
            backoff_max: Duration::from_secs(20),
            auth_hint,
        })
    }
}

/// Prices (USD per million tokens) of a few well-known models at the time of writing; the config
/// file's `[prices."provider/model"]` overrides or extends them.
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("openai/gpt-4o", 2.50, 10.00),
    ("openai/gpt-4o-mini", 0.15, 0.60),
    ("openai/gpt-4.1", 2.00, 8.00),
    ("openai/gpt-4.1-mini", 0.40, 1.60),
    ("openai/gpt-4.1-nano", 0.10, 0.40),
    ("openai/o3-mini", 1.10, 4.40),
    ("anthropic/claude-3-5-haiku-latest", 0.80, 4.00),
    ("anthropic/claude-3-7-sonnet-latest", 3.00, 15.00),
    ("anthropic/claude-sonnet-4-0", 3.00, 15.00),
    ("anthropic/claude-opus-4-0", 15.00, 75.00),
];

/// The built-in registry plus the file's providers (and the default `openai`/`anthropic`) and prices.
pub fn build_models(file: &FileConfig) -> Result<Models, Error> {
    let mut models = Models::builtin();
    let mut providers = file.providers.clone();
    for name in ["openai", "anthropic"] {
        providers.entry(name.to_owned()).or_default();
    }
    for (name, cfg) in &providers {
        if name == "scripted" {
            return Err(invalid(
                name,
                "",
                "scripted is built in and cannot be configured",
            ));
        }
        if name.is_empty() || name.contains('/') {
            return Err(Error::invalid(
                "config.providers",
                format!("{name:?} is not a valid provider name"),
            ));
        }
        let settings = cfg.call_settings(name)?;
        let base_url = cfg.base_url(name)?;
        let key = cfg
            .api_key_env(name)
            .and_then(|v| std::env::var(v).ok())
            .filter(|k| !k.is_empty());
        let built = match cfg.kind(name)? {
            ProviderKind::Openai => OpenAiCompatible::new(settings, &base_url, key)
                .map(|p| Arc::new(p) as Arc<dyn super::ModelProvider>),
            ProviderKind::Anthropic => {
                Anthropic::new(settings, &base_url, key).map(|p| Arc::new(p) as _)
            }
        };
        let provider = built.map_err(|e| invalid(name, "", e.message))?;
        models.register(name, provider);
    }
    for (model, input, output) in DEFAULT_PRICES {
        models.set_price(
            model,
            Price {
                input_per_mtok: *input,
                output_per_mtok: *output,
            },
        );
    }
    for (model, price) in &file.prices {
        if !price.input_per_mtok.is_finite()
            || price.input_per_mtok < 0.0
            || !price.output_per_mtok.is_finite()
            || price.output_per_mtok < 0.0
        {
            return Err(Error::invalid(
                format!("config.prices.{model}"),
                "prices must be non-negative numbers",
            ));
        }
        models.set_price(model, *price);
    }
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> FileConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_without_a_file() {
        let m = build_models(&FileConfig::default()).unwrap();
        for model in [
            "scripted/echo",
            "openai/gpt-4o",
            "anthropic/claude-sonnet-4-0",
        ] {
            assert!(m.resolve(model).is_ok(), "{model}");
        }
        assert!(m.resolve("vllm/llama3").is_err());
        assert!((m.cost("openai/gpt-4o", 1_000_000, 0) - 2.5).abs() < 1e-9);
    }

    #[test]
    fn named_providers_and_prices() {
        let file = parse(
            r#"
            [providers.vllm]
            kind = "openai"
            base_url = "http://127.0.0.1:8000/v1/"
            timeout_secs = 0.5
            max_retries = 0

            [providers.claude]
            kind = "anthropic"
            base_url = "http://127.0.0.1:9000"
            api_key_env = "AGENTRY_TEST_NO_SUCH_VAR"

            [prices."vllm/llama3"]
            input_per_mtok = 1
            output_per_mtok = 2.5

            [prices."openai/gpt-4o"]
            input_per_mtok = 0
            output_per_mtok = 0
            "#,
        );
        let cfg = &file.providers["vllm"];
        assert_eq!(cfg.base_url("vllm").unwrap(), "http://127.0.0.1:8000/v1");
        assert_eq!(
            cfg.api_key_env("vllm"),
            None,
            "no cloud key for a local server"
        );
        let s = cfg.call_settings("vllm").unwrap();
        assert_eq!(
            (s.timeout, s.max_retries, s.connect_timeout),
            (Duration::from_millis(500), 0, Duration::from_secs(10))
        );
        let m = build_models(&file).unwrap();
        assert!(
            m.resolve("vllm/llama3").is_ok()
                && m.resolve("claude/x").is_ok()
                && m.resolve("openai/x").is_ok()
        );
        assert!((m.cost("vllm/llama3", 1_000_000, 1_000_000) - 3.5).abs() < 1e-9);
        assert_eq!(
            m.cost("openai/gpt-4o", 1000, 1000),
            0.0,
            "the file overrides a default price"
        );
        let hint = file.providers["claude"]
            .call_settings("claude")
            .unwrap()
            .auth_hint
            .unwrap();
        assert!(hint.contains("AGENTRY_TEST_NO_SUCH_VAR"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |text: &str| {
            build_models(&parse(text))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err("[providers.local]\nbase_url = \"http://x\"")
                .contains("config.providers.local.kind")
        );
        assert!(
            err("[providers.local]\nkind = \"openai\"").contains("config.providers.local.base_url")
        );
        assert!(err("[providers.openai]\nbase_url = \"ftp://x\"").contains("base_url"));
        assert!(err("[providers.openai]\ntimeout_secs = -1").contains("timeout_secs"));
        assert!(err("[providers.scripted]\nkind = \"openai\"").contains("built in"));
        assert!(
            toml::from_str::<FileConfig>("[providers.openai]\napi_key = \"sk-...\"").is_err(),
            "keys never in the file"
        );
        assert!(toml::from_str::<FileConfig>("[providers.x]\nkind = \"gemini\"").is_err());
    }
}
