//! `routemaster`, the operator CLI of the control plane.
//!
//! - [`args`]: the command line (clap derive);
//! - [`commands`]: the thin I/O layer — read the route file, call the `Admin` gRPC
//!   service, write what the renderers produce;
//! - [`output`] and [`diff`]: pure rendering (tables, JSON/YAML, apply/status summaries,
//!   the file-vs-server diff), unit-tested without a server;
//! - [`error`]: one-line errors, and the mapping from tonic statuses and transport
//!   failures to them.
//!
//! Exit codes (see `routemaster --help`): 0 success, 1 error, 2 `diff` found differences.

pub mod args;
pub mod commands;
pub mod diff;
pub mod error;
pub mod output;

pub use args::Cli;
pub use commands::{Outcome, run};
pub use error::CliError;
