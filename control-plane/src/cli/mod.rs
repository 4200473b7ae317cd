//! `routemaster`, the operator CLI of the control plane.
//!
//! - [`args`]: the command line (clap derive) and kubectl-style resource arguments;
//! - [`input`]: the `-f` inputs (files, directories, stdin; several YAML documents each);
//! - [`commands`]: the thin I/O layer — read route files, call the `Admin` gRPC
//!   service, write what the renderers produce;
//! - [`output`] and [`diff`]: pure rendering (tables, JSON/YAML, apply/status summaries,
//!   the file-vs-server diff), unit-tested without a server;
//! - [`error`]: one-line errors, and the mapping from tonic statuses and transport
//!   failures to them.
//!
//! Exit codes (see `routemaster --help`): 0 success, 1 error (for `status`: etcd
//! unreachable or the fleet not converged), 2 usage error, 3 `diff` found differences.

pub mod args;
pub mod commands;
pub mod diff;
pub mod error;
pub mod input;
pub mod output;
pub mod register;
pub mod shadow;
pub mod watch;

pub use args::Cli;
pub use commands::{Io, Outcome, run};
pub use error::CliError;
