//! routemaster-proxy: the data plane.
//!
//! A snapshot (from a route file or the control plane) goes through one
//! [`state::ProxyState::apply`], which compiles it ([`compile`]) into a route table with
//! upstream clusters attached and swaps it in with arc-swap. Each request is then routed
//! by the shared phases in [`routing`] and carried by the HTTP/1.1 engine in [`h1`] (or,
//! for h2c, by hyper and [`proxy`]); failures are [`error::ProxyError`]s mapped to a
//! status in one place. [`workers`] runs one engine per thread, [`server`] serves the
//! admin API, [`admin`] the admin endpoints, [`file_source`] loading and watching the
//! route file, and [`control_plane`] the discovery stream to the control plane
//! (connected mode), and [`tls`] the certificates `--tls-listen` terminates TLS with. What the proxy shares with the control plane as a process
//! (logging, signals, reading route files) is `routemaster-runtime`.

pub mod admin;
pub mod ascii;
pub mod body;
pub mod compile;
pub mod control_plane;
pub mod dns;
pub mod error;
pub mod file_source;
pub mod forwarding;
pub mod h1;
pub(crate) mod h2;
pub mod health;
pub mod mirror;
pub mod observe;
pub mod proxy;
pub mod responses;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod state;
pub mod stats;
pub mod tls;
pub mod upstream;
pub mod workers;

/// Signals and the stop future, shared with the control plane.
pub use routemaster_runtime::lifecycle;
