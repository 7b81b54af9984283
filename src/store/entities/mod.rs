//! sea-orm entities, one per table of `migration/`. Protobuf-shaped payloads are stored as encoded
//! bytes in `spec` columns; the columns beside them exist for filtering, ordering and joins.

pub mod agent;
pub mod agent_version;
pub mod api_key;
pub mod flow;
pub mod flow_event;
pub mod flow_run;
pub mod flow_run_event;
pub mod flow_trigger;
pub mod flow_version;
pub mod hire;
pub mod memory;
pub mod run;
pub mod run_event;
pub mod webhook;
pub mod webhook_delivery;
pub mod workspace;
