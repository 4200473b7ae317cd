//! Routemaster's pure core, shared by the proxy, the control plane and the CLI.
//!
//! This crate owns the route model and everything that can be decided without I/O:
//! the file/wire format ([`spec`]), validation into types that cannot hold bad states
//! ([`model`]), path and host normalisation ([`path`], [`host`]), the compiled route
//! table and its matching rules ([`table`], over any engine's [`headers`]), prefix rewrites and redirect targets
//! ([`rewrite`]) and the load-balancing choices ([`balance`]).
//!
//! It deliberately depends on no runtime, transport or storage crate (no tokio, hyper,
//! tonic or etcd), so every rule here is unit-testable and reused verbatim at the edges.

pub mod balance;
pub mod duration;
pub mod headers;
pub mod host;
pub mod locality;
pub mod mirror;
pub mod model;
pub mod name;
pub mod path;
pub mod registry;
pub mod rewrite;
pub mod shadow;
pub mod snapshot;
pub mod spec;
pub mod table;
pub mod time;
pub mod tls;
mod validate;

pub use model::{Config, Route, Service};
pub use snapshot::Snapshot;
pub use validate::{ObjectRef, ValidationError, ValidationErrors};
