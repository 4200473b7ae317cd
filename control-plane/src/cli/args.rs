//! Command-line arguments of `routemaster` (clap derive). Only the shape of the command
//! line lives here; what each command does is in [`super::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where the CLI looks for the control plane when neither the flag nor the environment
/// variable is set: the control plane's default listen address.
pub const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:7000";

const EXIT_CODES: &str = "\
Exit codes:
  0  success (diff: no differences)
  1  error (invalid file, server error, control plane unreachable)
  2  diff: differences found";

/// Manage Routemaster routes and services through the control plane.
#[derive(Debug, Parser)]
#[command(name = "routemaster", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Control plane gRPC address.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "ROUTEMASTER_CONTROL_PLANE",
        hide_env_values = true,
        default_value = DEFAULT_CONTROL_PLANE
    )]
    pub control_plane: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the services and routes of a route file (one transaction).
    Apply {
        /// The YAML route file.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Validate and report what would change without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what `apply -f FILE` would change (exit code 2 when it would change anything).
    ///
    /// Objects are compared with the control plane's by service name and route id, after
    /// filling in defaults on both sides. `+` marks an object to create, `~` one to update
    /// (followed by a line diff: `-` the control plane's version, `+` the file's).
    /// Objects only on the control plane are not shown: apply never deletes.
    #[command(after_help = EXIT_CODES)]
    Diff {
        /// The YAML route file.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
    },
    /// Show routes, services or proxy nodes.
    Get {
        #[command(subcommand)]
        what: GetCommand,
    },
    /// Delete one route or service.
    Delete {
        #[command(subcommand)]
        what: DeleteCommand,
    },
    /// Control plane version, object counts, etcd connectivity and fleet convergence.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// All routes.
    Routes {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// All services.
    Services {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Proxy nodes connected to the control plane.
    Nodes {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One route, by id.
    Route {
        id: String,
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// One service, by name.
    Service {
        name: String,
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeleteCommand {
    /// Delete a route by id.
    Route { id: String },
    /// Delete a service by name.
    Service { name: String },
}

/// Output format of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_command_lines() {
        let cases: &[(&[&str], &str)] = &[
            (&["routemaster", "apply", "-f", "r.yaml"], "apply"),
            (
                &["routemaster", "apply", "-f", "r.yaml", "--dry-run"],
                "apply-dry",
            ),
            (&["routemaster", "diff", "-f", "r.yaml"], "diff"),
            (
                &["routemaster", "get", "routes", "-o", "json"],
                "get-routes-json",
            ),
            (&["routemaster", "get", "route", "x"], "get-route-yaml"),
            (&["routemaster", "get", "nodes"], "get-nodes-table"),
            (
                &["routemaster", "delete", "service", "lms"],
                "delete-service",
            ),
            (
                &["routemaster", "--control-plane", "http://h:1", "status"],
                "status",
            ),
        ];
        for (argv, want) in cases {
            let cli = Cli::try_parse_from(*argv).unwrap();
            let got = match &cli.command {
                Command::Apply { dry_run: false, .. } => "apply",
                Command::Apply { dry_run: true, .. } => "apply-dry",
                Command::Diff { .. } => "diff",
                Command::Get {
                    what:
                        GetCommand::Routes {
                            output: Format::Json,
                        },
                } => "get-routes-json",
                Command::Get {
                    what:
                        GetCommand::Route {
                            output: Format::Yaml,
                            ..
                        },
                } => "get-route-yaml",
                Command::Get {
                    what:
                        GetCommand::Nodes {
                            output: Format::Table,
                        },
                } => "get-nodes-table",
                Command::Delete {
                    what: DeleteCommand::Service { .. },
                } => "delete-service",
                Command::Status if cli.control_plane == "http://h:1" => "status",
                other => panic!("{argv:?} parsed as {other:?}"),
            };
            assert_eq!(got, *want, "{argv:?}");
        }
    }

    #[test]
    fn control_plane_flag_is_global() {
        let cli = Cli::try_parse_from(["routemaster", "status", "--control-plane", "http://x:1"])
            .unwrap();
        assert_eq!(cli.control_plane, "http://x:1");
    }
}
