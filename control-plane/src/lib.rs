//! routemaster-control (the control plane) and the `routemaster` CLI.
//!
//! Data flow: CLI → gRPC admin ([`admin_api`]) → [`controller::Controller::dispatch`]
//! (validate against a fresh etcd read, one fenced transaction) → etcd → watch
//! ([`controller::Controller::run_watch`]) → [`catalog::Catalog`] per version → every
//! proxy's discovery stream ([`discovery`]) → proxy ACK/NACK and health → node status in
//! etcd ([`nodes`]) → status API ([`status_api`]). [`store`] owns the etcd key layout.

pub mod admin_api;
pub mod catalog;
pub mod cli;
pub mod controller;
pub mod dashboard;
pub mod discovery;
pub mod map;
pub mod metrics;
pub mod nodes;
pub mod registry;
pub mod registry_api;
pub mod registry_http;
pub mod server;
pub mod shadow;
pub mod status_api;
pub mod store;
