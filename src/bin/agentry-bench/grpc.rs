//! The gRPC side: channels, the bearer-key interceptor, the clients, and error text.

use std::time::Duration;

use agentry::pb::{
    agent_service_client::AgentServiceClient, flow_service_client::FlowServiceClient,
    run_service_client::RunServiceClient,
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::Res;

pub type Client = AgentServiceClient<InterceptedService<Channel, Auth>>;
pub type RunClient = RunServiceClient<InterceptedService<Channel, Auth>>;
pub type FlowClient = FlowServiceClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <key>` to every request.
#[derive(Clone)]
pub struct Auth(pub MetadataValue<Ascii>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// The error and its sources, on one line (tonic's transport errors say little at the top).
pub fn chain(e: &dyn std::error::Error) -> String {
    let all: Vec<String> = std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect();
    all.join(": ")
}

pub fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

pub async fn connect(addr: &str) -> Res<Channel> {
    Endpoint::from_shared(addr.to_owned())
        .map_err(|e| format!("invalid address {addr:?}: {}", chain(&e)))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {}", chain(&e)))
}
