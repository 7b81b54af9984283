//! The tower layer in front of every gRPC service: one span per RPC (method, workspace, status code,
//! latency), and authentication before the handler runs. Health checks and reflection are public.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use futures_util::future::BoxFuture;
use tonic::Status;
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};

use super::Authenticator;

const PUBLIC_PREFIXES: &[&str] = &["/grpc.health.", "/grpc.reflection."];

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one to call; keep a fresh clone for next time.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let method = req.uri().path().to_owned();
        let span = tracing::info_span!("rpc", method = %method, workspace = Empty, code = Empty, latency_us = Empty);
        Box::pin(
            async move {
                let start = Instant::now();
                let public = PUBLIC_PREFIXES.iter().any(|p| method.starts_with(p));
                if !public {
                    match auth.authenticate(req.headers()).await {
                        Ok(caller) => {
                            tracing::Span::current()
                                .record("workspace", caller.workspace_name.as_str());
                            req.extensions_mut().insert(caller);
                        }
                        Err(e) => {
                            let status = Status::from(e);
                            finish(start, status.code() as i32);
                            return Ok(status.into_http());
                        }
                    }
                }
                let resp = inner.call(req).await?;
                // Errors are sent trailers-only (status in the headers); success puts it in the trailers.
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                finish(start, code);
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

fn finish(start: Instant, code: i32) {
    let span = tracing::Span::current();
    span.record("code", code);
    span.record("latency_us", start.elapsed().as_micros() as u64);
    if code == 0 {
        tracing::debug!("rpc done");
    } else {
        tracing::info!("rpc failed");
    }
}
