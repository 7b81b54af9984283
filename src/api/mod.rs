//! The gRPC services: thin adapters that authorize the caller, validate request-level fields, call
//! the domain, and convert the result. No SQL and no business rule lives here. The REST shim calls these
//! same implementations in-process.

mod admin;
mod agents;
mod flows;
mod runs;

use std::sync::Arc;

pub use admin::AdminApi;
pub use agents::AgentApi;
pub use flows::FlowApi;
pub use runs::RunApi;

use crate::{
    agents::Agents,
    auth::Authenticator,
    flows::Flows,
    models::Models,
    runs::Runs,
    store::{Db, invalidate::Invalidation},
    tools::Tools,
};

/// What every service shares.
pub struct AppState {
    pub db: Db,
    pub agents: Agents,
    pub runs: Runs,
    pub flows: Arc<Flows>,
    pub models: Models,
    pub tools: Tools,
    pub auth: Arc<Authenticator>,
}

impl AppState {
    pub fn new(db: Db, models: Models) -> Arc<AppState> {
        let runs = Runs::new(db.clone());
        Arc::new(AppState {
            agents: Agents::new(db.clone(), models.provider_names()),
            flows: Arc::new(Flows::new(db.clone(), runs.deliveries_queued())),
            runs,
            models,
            tools: crate::tools::builtin_tools(db.clone()),
            auth: Arc::new(Authenticator::new(db.clone())),
            db,
        })
    }

    /// Applies a change announced by another process to this one's caches.
    pub fn forget(&self, what: Invalidation) {
        match what {
            Invalidation::ApiKey { key_id } => self.auth.invalidate_key(&key_id),
            Invalidation::Agent {
                workspace_id,
                agent_id,
            } => self.agents.forget(Some((&workspace_id, &agent_id))),
            Invalidation::All => {
                self.auth.clear();
                self.agents.forget(None);
            }
        }
    }
}

/// `Result` of a handler: domain errors become `Status` through `?` and `From<Error>`.
type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

fn ok<T>(v: T) -> Reply<T> {
    Ok(tonic::Response::new(v))
}
