//! The server: gRPC (the four services, health, reflection v1 and v1alpha) and HTTP on two listeners,
//! sharing one [`AppState`]. Shutdown is graceful: health turns NOT_SERVING first, then both servers stop
//! accepting and drain the requests in flight.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get, serve::ListenerExt};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::Layer as _;

use crate::{
    api::{AdminApi, AgentApi, AppState, FlowApi, RunApi},
    auth::AuthLayer,
    config::Settings,
    error::{Error, Result},
    pb::{
        FILE_DESCRIPTOR_SET, admin_service_server::AdminServiceServer,
        agent_service_server::AgentServiceServer, flow_service_server::FlowServiceServer,
        run_service_server::RunServiceServer,
    },
    store::{Db, invalidate},
};

/// How long shutdown waits for requests in flight before closing them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Largest request accepted (4 MiB). tonic refuses a larger one with OUT_OF_RANGE ("decoded message
/// length too large"), before any handler runs.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
const SERVICES: &[&str] = &[
    "agentry.v1.AgentService",
    "agentry.v1.RunService",
    "agentry.v1.FlowService",
    "agentry.v1.AdminService",
];

pub struct Server {
    grpc: TcpListener,
    http: TcpListener,
    state: Arc<AppState>,
    bootstrap_secret: Option<String>,
    cors_origins: Vec<String>,
    run_concurrency: usize,
    webhooks_allow_private: bool,
    flows_allow_private: bool,
}

impl Server {
    /// Opens the database (applying migrations), bootstraps an empty one, and binds both listeners.
    pub async fn bind(settings: &Settings) -> Result<Server> {
        let db = Db::connect(&settings.database_url).await?;
        let bootstrap_secret =
            crate::admin::bootstrap(&db, settings.bootstrap_key.as_deref()).await?;
        let grpc = TcpListener::bind(settings.grpc_addr).await.map_err(|e| {
            Error::Unavailable(format!("cannot listen on {}: {e}", settings.grpc_addr))
        })?;
        let http = TcpListener::bind(settings.http_addr).await.map_err(|e| {
            Error::Unavailable(format!("cannot listen on {}: {e}", settings.http_addr))
        })?;
        Ok(Server {
            grpc,
            http,
            state: AppState::new(db, settings.models.clone()),
            bootstrap_secret,
            cors_origins: settings.cors_origins.clone(),
            run_concurrency: settings.run_concurrency,
            webhooks_allow_private: settings.webhooks_allow_private,
            flows_allow_private: settings.flows_allow_private,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin key created on an empty database (None when the database had data).
    pub fn bootstrap_secret(&self) -> Option<&str> {
        self.bootstrap_secret.as_deref()
    }

    /// Serves until `shutdown` completes, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let (mut health, health_service) = tonic_health::server::health_reporter();
        for s in SERVICES {
            health.set_service_status(*s, ServingStatus::Serving).await;
        }
        health.set_service_status("", ServingStatus::Serving).await;
        let reflection_v1 = reflection().build_v1().map_err(Error::internal)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(Error::internal)?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let state = self.state.clone();
        let forget_state = state.clone();
        let forget = Arc::new(move |w| forget_state.forget(w));
        let listener = invalidate::listen(&state.db, forget, stop_rx.clone());
        let engine = state.runs.engine(
            state.models.clone(),
            state.tools.clone(),
            self.run_concurrency,
        );
        let engine_task = engine.spawn(stop_rx.clone());
        let run_notices = state.runs.listen(stop_rx.clone());
        let flow_engine =
            crate::flows::executor::FlowEngine::new(state.clone(), self.flows_allow_private)
                .spawn(stop_rx.clone());
        let flow_notices = state.flows.listen(stop_rx.clone());
        let deliveries = crate::admin::delivery::spawn(
            state.db.clone(),
            state.runs.deliveries_queued(),
            self.webhooks_allow_private,
            stop_rx.clone(),
        );
        // The builder's tcp_nodelay does not apply to a listener we bind ourselves: without TCP_NODELAY
        // on accepted sockets, Nagle's algorithm holds multi-segment responses for the peer's delayed
        // ACK (a flat ~40 ms per ListAgents call).
        let incoming = TcpIncoming::from(self.grpc)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        // The services are built once: the gRPC listener serves them, and the REST shim calls the same
        // ones in-process, behind the same auth layer.
        let api = api_routes(&state);
        let grpc = tonic::transport::Server::builder()
            // Without keepalive a peer that vanished keeps its streams open forever.
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(AuthLayer::new(state.auth.clone()))
            .add_routes(api.clone())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));

        let draining = stop_rx.clone();
        let http_app = Router::new().route(
            "/healthz",
            get(move || {
                let draining = *draining.borrow();
                async move {
                    if draining {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        );
        let rest = crate::rest::router(AuthLayer::new(state.auth.clone()).layer(api))?;
        let http_app = crate::rest::layers(http_app.merge(rest), &self.cors_origins)?;
        let http_listener = self.http.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let http = axum::serve(http_listener, http_app).with_graceful_shutdown(stopped(stop_rx));

        let grpc_task = tokio::spawn(grpc);
        let http_task = tokio::spawn(async move { http.await });
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, draining requests in flight");
        for s in SERVICES {
            health
                .set_service_status(*s, ServingStatus::NotServing)
                .await;
        }
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // Open WatchRun streams end (clients resume from their last seq); the engine hands its runs
        // back to the queue; the servers drain.
        state.runs.close();
        state.flows.close();
        let _ = stop_tx.send(true);
        // A health Watch stream never ends on its own and would hold the drain open forever: with the
        // statuses removed, each watcher gets the NOT_SERVING above, then the end of its stream.
        for s in SERVICES.iter().copied().chain([""]) {
            health.clear_service_status(s).await;
        }
        let _ = engine_task.await;
        let _ = flow_engine.await;
        // Requests in flight get DRAIN_DEADLINE to finish; a stream still open then (a client that
        // never hangs up) is cut, so that shutdown always completes.
        let grpc_abort = grpc_task.abort_handle();
        let http_abort = http_task.abort_handle();
        let drained =
            tokio::time::timeout(DRAIN_DEADLINE, async { (grpc_task.await, http_task.await) })
                .await;
        let (grpc_res, http_res) = match drained {
            Ok((g, h)) => (g.map_err(Error::internal)?, h.map_err(Error::internal)?),
            Err(_) => {
                tracing::warn!("requests still open after {DRAIN_DEADLINE:?}: closing them");
                grpc_abort.abort();
                http_abort.abort();
                (Ok(()), Ok(()))
            }
        };
        for task in [listener, run_notices, flow_notices, Some(deliveries)]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        state.db.clone().close().await;
        grpc_res.map_err(|e| Error::internal(format!("gRPC server: {e}")))?;
        http_res.map_err(|e| Error::internal(format!("HTTP server: {e}")))?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The four API services (not health or reflection), for the gRPC listener and the REST shim.
fn api_routes(state: &Arc<AppState>) -> tonic::service::Routes {
    tonic::service::Routes::new(
        AgentServiceServer::new(AgentApi::new(state.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        RunServiceServer::new(RunApi::new(state.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        FlowServiceServer::new(FlowApi::new(state.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        AdminServiceServer::new(AdminApi::new(state.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .prepare()
}

/// A reflection builder knowing every service this server exposes, so that both protocol versions list
/// them all (grpcurl 1.8 speaks only v1alpha; newer clients use v1).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
