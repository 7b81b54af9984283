//! RunService over gRPC. The contract is complete in `proto/agentry/v1/runs.proto`; the run engine that
//! fills it in is the next piece of work, so until then every RPC answers UNIMPLEMENTED (after
//! authentication, like any other RPC).

use crate::pb::run_service_server::RunService;

pub struct RunApi;

#[tonic::async_trait]
impl RunService for RunApi {}
