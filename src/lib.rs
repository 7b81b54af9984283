//! Agentry: a gRPC-first server that hosts AI agents and the flows that chain them.
//!
//! Layers, outside in: `proto/` (the contract) → [`api`] (thin tonic services: authorize, validate,
//! convert) → domain modules ([`agents`], [`runs`], [`flows`], [`admin`]) → [`store`] (sea-orm entities, migrations, queries).
//! [`auth`] decides the caller once per request; [`error`] is the one error type, mapped once to
//! `tonic::Status`.

pub mod admin;
pub mod agents;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod flows;
pub mod models;
pub mod pb;
pub mod rest;
pub mod runs;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tools;
