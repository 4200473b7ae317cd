//! What Routemaster's programs share as processes, and what may not live in the pure
//! `routemaster-common`: [`http`] (the accept loop with backoff and the small admin/status
//! HTTP server), [`logging`] (`--log-format`, `RUST_LOG`, colour only on a
//! terminal), [`lifecycle`] (SIGTERM/SIGINT and the stop future every server and task
//! takes) and [`route_files`] (reading a route file or a directory of them from disk into
//! `common`'s [`Sources`](routemaster_common::spec::Sources) and
//! [`Config`](routemaster_common::Config)) and [`tls`] (the workspace's one rustls crypto
//! provider).
//!
//! Both planes depend on this crate; it depends only on `common`, so the control plane
//! can share these with the proxy without depending on the data plane.

pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod route_files;
pub mod tls;
