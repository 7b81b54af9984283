//! FlowService over gRPC. The contract is complete in `proto/agentry/v1/flows.proto`; the flow executor
//! is later work, so until then every RPC answers UNIMPLEMENTED (after authentication).

use crate::pb::flow_service_server::FlowService;

pub struct FlowApi;

#[tonic::async_trait]
impl FlowService for FlowApi {}
