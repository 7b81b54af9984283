//! Configuration: command-line flags, each also readable from an `AGENTRY_*` environment variable, over
//! an optional TOML file (`--config`), over built-in defaults. Flags and env win over the file.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://agentry.db?mode=rwc";

#[derive(Debug, Parser)]
#[command(
    name = "agentry",
    version,
    about = "Hosts AI agents and the flows that chain them."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (with health and reflection) and HTTP.
    Serve(ServeArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apply database migrations and exit.
    Migrate(DbArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key (and its workspace if new); prints the key alone on stdout.
    Create {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        workspace: String,
        /// Comma-separated: agents:read agents:write agents:trigger agents:approve flows:read flows:write flows:trigger admin
        #[arg(long)]
        scopes: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Print a new random key without storing it (for AGENTRY_BOOTSTRAP_KEY).
    Generate,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DbArgs {
    /// `sqlite://path?mode=rwc` (default `sqlite://agentry.db?mode=rwc`) or `postgres://user@host/db`.
    #[arg(long, env = "AGENTRY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A TOML file with `grpc_addr`, `http_addr`, `database_url`.
    #[arg(long, env = "AGENTRY_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// gRPC listen address (default 127.0.0.1:50051).
    #[arg(long, env = "AGENTRY_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address (default 127.0.0.1:8080).
    #[arg(long, env = "AGENTRY_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Runs executing at once in this process.
    #[arg(long, env = "AGENTRY_RUN_CONCURRENCY", default_value_t = 256)]
    pub run_concurrency: usize,
    /// The admin key created on an empty database, instead of a random one.
    #[arg(long, env = "AGENTRY_BOOTSTRAP_KEY", hide_env_values = true)]
    pub bootstrap_key: Option<String>,
    /// Origins allowed to call the REST API from a browser (CORS): a comma-separated list, or `*`.
    /// Default: none (no CORS headers).
    #[arg(long, env = "AGENTRY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Deliver webhooks to private, loopback and link-local addresses too (refused by default:
    /// webhook URLs are chosen by workspace admins).
    #[arg(long, env = "AGENTRY_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
    /// Let the HTTP nodes of flows reach private, loopback and link-local addresses too (refused by
    /// default: a flow's URLs may be rendered from event payloads).
    #[arg(long, env = "AGENTRY_FLOWS_ALLOW_PRIVATE")]
    pub flows_allow_private: bool,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub database_url: Option<String>,
    /// Model providers by name (`[providers.<name>]`), see `models::config`.
    #[serde(default)]
    pub providers: std::collections::HashMap<String, crate::models::config::ProviderConfig>,
    /// Per-model prices (`[prices."provider/model"]`), USD per million tokens.
    #[serde(default)]
    pub prices: std::collections::HashMap<String, crate::models::Price>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub bootstrap_key: Option<String>,
    /// `--cors-origins`: exact origins, or `*`; empty: no CORS.
    pub cors_origins: Vec<String>,
    /// Model providers and prices (built-in `scripted` plus the config file's).
    pub models: crate::models::Models,
    /// Runs executing at once in this process.
    pub run_concurrency: usize,
    /// Webhooks may target private addresses.
    pub webhooks_allow_private: bool,
    /// Flow HTTP nodes may target private addresses.
    pub flows_allow_private: bool,
}

impl FileConfig {
    pub fn load(path: Option<&PathBuf>) -> Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("config", format!("cannot read {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))
    }
}

impl DbArgs {
    pub fn database_url(&self) -> Result<String> {
        let file = FileConfig::load(self.config.as_ref())?;
        Ok(self
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()))
    }
}

impl ServeArgs {
    pub fn settings(&self) -> Result<Settings> {
        let file = FileConfig::load(self.db.config.as_ref())?;
        Ok(Settings {
            grpc_addr: self
                .grpc_addr
                .or(file.grpc_addr)
                .unwrap_or_else(|| DEFAULT_GRPC_ADDR.parse().expect("valid")),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| DEFAULT_HTTP_ADDR.parse().expect("valid")),
            database_url: self
                .db
                .database_url
                .clone()
                .or(file.database_url.clone())
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            bootstrap_key: self.bootstrap_key.clone().filter(|k| !k.is_empty()),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            models: crate::models::config::build_models(&file)?,
            run_concurrency: self.run_concurrency,
            webhooks_allow_private: self.webhooks_allow_private,
            flows_allow_private: self.flows_allow_private,
        })
    }
}
