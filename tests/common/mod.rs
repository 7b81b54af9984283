//! Test harness: starts the real server (the same `Server` that `agentry serve` runs) on ephemeral
//! ports against a real database, and talks to it over the network with the generated tonic clients.
//!
//! Every test runs on SQLite (a file in a temporary directory) and on PostgreSQL (a fresh database per
//! test, dropped afterwards). PostgreSQL comes from `AGENTRY_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); when it is unreachable the PostgreSQL half is skipped
//! with a message, unless `AGENTRY_TEST_POSTGRES=required` (as CI sets), which makes it a failure.
#![allow(dead_code)]

use std::time::Duration;

use agentry::{
    auth::keys,
    config::{FileConfig, Settings},
    pb::{
        admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
        flow_service_client::FlowServiceClient, run_service_client::RunServiceClient,
    },
    server::Server,
};
use sea_orm::sqlx::{Connection, PgConnection};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres { admin_url: String },
}

impl Backend {
    /// PostgreSQL when reachable; `None` (skip) otherwise, or a panic when it is required.
    pub async fn postgres() -> Option<Backend> {
        let url = std::env::var("AGENTRY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        match PgConnection::connect(&url).await {
            Ok(c) => {
                let _ = c.close().await;
                Some(Backend::Postgres { admin_url: url })
            }
            Err(e) => {
                if std::env::var("AGENTRY_TEST_POSTGRES").is_ok_and(|v| v == "required") {
                    panic!(
                        "PostgreSQL is required (AGENTRY_TEST_POSTGRES=required) but unreachable at {url}: {e}"
                    );
                }
                eprintln!("SKIPPED: PostgreSQL unreachable at {url}: {e}");
                None
            }
        }
    }
}

/// A fresh, empty database for one test, removed on drop (SQLite) or by [`TestDb::drop_db`] (PostgreSQL).
pub struct TestDb {
    pub url: String,
    dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: &Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("agentry.db").display()
                );
                TestDb {
                    url,
                    dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres { admin_url } => {
                let name = format!("agentry_test_{}", uuid::Uuid::now_v7().simple());
                let mut c = PgConnection::connect(admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                // `name` is generated above from a UUID: no injection.
                sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE {name}"
                )))
                .execute(&mut c)
                .await
                .expect("create db");
                let _ = c.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(admin_url);
                TestDb {
                    url: format!("{base}/{name}"),
                    dir: None,
                    pg: Some((admin_url.clone(), name)),
                }
            }
        }
    }

    /// Another handle on the same database (for a second server on it); dropping it drops nothing.
    pub fn share(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            dir: None,
            pg: None,
        }
    }

    pub async fn drop_db(&mut self) {
        if let Some((admin_url, name)) = self.pg.take()
            && let Ok(mut c) = PgConnection::connect(&admin_url).await
        {
            let _ = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
            let _ = c.close().await;
        }
    }
}

/// A running server and the admin key of its `default` workspace.
pub struct TestServer {
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub admin_key: String,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on a fresh database of `backend`.
    pub async fn start(backend: &Backend) -> TestServer {
        let db = TestDb::new(backend).await;
        let key = keys::generate();
        Self::start_on(db, key).await
    }

    /// A server on `db`, bootstrapping `admin_key` if the database is empty.
    pub async fn start_on(db: TestDb, admin_key: String) -> TestServer {
        Self::start_configured(db, admin_key, &Default::default()).await
    }

    /// A server on a fresh database of `backend` with the model providers and prices of `config`
    /// (the `[providers.*]` and `[prices.*]` tables of a `--config` file), as `agentry serve` builds them.
    pub async fn start_with_config(backend: &Backend, config: &FileConfig) -> TestServer {
        let db = TestDb::new(backend).await;
        Self::start_configured(db, keys::generate(), config).await
    }

    async fn start_configured(db: TestDb, admin_key: String, config: &FileConfig) -> TestServer {
        let settings = Settings {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone(),
            bootstrap_key: Some(admin_key.clone()),
            cors_origins: Vec::new(),
            // As `agentry serve` builds them: scripted, openai and anthropic, plus the file's providers.
            models: agentry::models::config::build_models(config).expect("models from the config"),
            run_concurrency: 256,
            // Tests receive webhooks on 127.0.0.1.
            webhooks_allow_private: true,
            flows_allow_private: true,
        };
        let server = Server::bind(&settings).await.expect("server starts");
        let (grpc_addr, http_addr) = (server.grpc_addr(), server.http_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs and stops cleanly");
        });
        TestServer {
            grpc_addr,
            http_addr,
            admin_key,
            db,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and returns its database, to start another server on it.
    pub async fn stop(mut self) -> TestDb {
        self.shutdown().await;
        std::mem::replace(
            &mut self.db,
            TestDb {
                url: String::new(),
                dir: None,
                pg: None,
            },
        )
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops in time")
                .expect("clean stop");
        }
    }

    /// Stops the server and drops its database.
    pub async fn finish(mut self) {
        self.shutdown().await;
        self.db.drop_db().await;
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn agents(&self, key: &str) -> AgentServiceClient<InterceptedService<Channel, Auth>> {
        AgentServiceClient::with_interceptor(self.channel().await, Auth::bearer(key))
    }

    pub async fn admin(&self, key: &str) -> AdminServiceClient<InterceptedService<Channel, Auth>> {
        AdminServiceClient::with_interceptor(self.channel().await, Auth::bearer(key))
    }

    pub async fn runs(&self, key: &str) -> RunServiceClient<InterceptedService<Channel, Auth>> {
        RunServiceClient::with_interceptor(self.channel().await, Auth::bearer(key))
    }

    pub async fn flows(&self, key: &str) -> FlowServiceClient<InterceptedService<Channel, Auth>> {
        FlowServiceClient::with_interceptor(self.channel().await, Auth::bearer(key))
    }

    /// A new workspace `name` with an admin-scoped key (through the CLI's code path), for isolation tests.
    pub async fn workspace_key(&self, name: &str, scopes: &str) -> String {
        let db = agentry::store::Db::connect(&self.db.url).await.expect("db");
        let ws = agentry::admin::ensure_workspace(db.writer(), name)
            .await
            .expect("workspace");
        let (_, secret) = agentry::admin::keys::create(
            db.writer(),
            &ws.id,
            "test",
            scopes.parse().expect("scopes"),
            None,
        )
        .await
        .expect("key");
        db.close().await;
        secret
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Adds an API key header to every request: `authorization: Bearer|Token <key>` or `x-api-key`.
#[derive(Clone)]
pub struct Auth {
    header: &'static str,
    value: Option<MetadataValue<Ascii>>,
}

impl Auth {
    pub fn bearer(key: &str) -> Auth {
        Auth {
            header: "authorization",
            value: format!("Bearer {key}").parse().ok(),
        }
    }
    pub fn token(key: &str) -> Auth {
        Auth {
            header: "authorization",
            value: format!("Token {key}").parse().ok(),
        }
    }
    pub fn x_api_key(key: &str) -> Auth {
        Auth {
            header: "x-api-key",
            value: key.parse().ok(),
        }
    }
    pub fn none() -> Auth {
        Auth {
            header: "authorization",
            value: None,
        }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert(self.header, v.clone());
        }
        Ok(req)
    }
}

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(b) = $crate::common::Backend::postgres().await {
                        super::$name(b).await
                    }
                }
            )*
        }
    };
}

/// A minimal valid agent.
pub fn agent(id: &str) -> agentry::pb::Agent {
    agentry::pb::Agent {
        id: id.to_owned(),
        name: format!("Agent {id}"),
        template: "You are {{ input.role }}.".to_owned(),
        model: "scripted/echo".to_owned(),
        ..Default::default()
    }
}

/// Asserts `res` failed with `code`, and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    res: Result<tonic::Response<T>, Status>,
    code: tonic::Code,
) -> Status {
    match res {
        Ok(r) => panic!("expected {code:?}, got Ok({:?})", r.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}
