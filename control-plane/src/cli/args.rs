//! Command-line arguments of `routemaster` (clap derive), and the kubectl-style
//! resource arguments (`route/x`, `routes x y`, short names). Only the shape of the
//! command line lives here; what each command does is in [`super::commands`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use routemaster_runtime::logging::LogArgs;

/// Where the CLI looks for the control plane when neither the flag nor the environment
/// variable is set: the control plane's default listen address.
pub const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:7000";

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (diff: no differences; status: etcd connected and the fleet converged)
  1  error (invalid file, server error, control plane unreachable; status: etcd
     unreachable or the fleet not converged)
  2  usage error (unknown command, flag or resource type)
  3  diff: differences found";

const RESOURCES: &str = "\
Resource types (with short names): routes (route, rt), services (service, svc),
nodes (node, no), instances (instance, inst: `get instances SERVICE`). One object:
`TYPE NAME` or `TYPE/NAME`.";

/// Manage Routemaster routes and services through the control plane.
#[derive(Debug, Parser)]
#[command(name = "routemaster", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Control plane gRPC address (plaintext: http://HOST:PORT, usually port 7000).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "ROUTEMASTER_CONTROL_PLANE",
        hide_env_values = true,
        default_value = DEFAULT_CONTROL_PLANE
    )]
    pub control_plane: String,

    // Log lines are diagnostics only (RUST_LOG, default warn): the CLI's own output and
    // errors are not log lines.
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the services and routes of route files (one transaction).
    ///
    /// Each -f is a file, a directory (every *.yaml and *.yml in it, in name order) or
    /// `-` (standard input); a file may hold several YAML documents separated by `---`.
    /// Objects are validated like the proxy's route file before anything is sent.
    #[command(after_help = EXIT_CODES)]
    Apply {
        #[command(flatten)]
        input: Inputs,
        /// Validate and report what would change without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what `apply -f` would change (exit code 3 when it would change anything).
    ///
    /// Objects are compared with the control plane's by service name and route id, after
    /// filling in defaults on both sides. `+` marks an object to create (followed by its
    /// content), `~` one to update (followed by a line diff: `-` the control plane's
    /// version, `+` the file's). Objects only on the control plane are not shown: apply
    /// never deletes.
    #[command(after_help = EXIT_CODES)]
    Diff {
        #[command(flatten)]
        input: Inputs,
    },
    /// Show routes, services or proxy nodes: `get routes`, `get route/x`, `get svc a b`.
    #[command(after_help = RESOURCES)]
    Get {
        /// routes|services|nodes (or route, rt, service, svc, node, no), or TYPE/NAME.
        #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..)]
        args: Vec<String>,
        /// table (default), wide (more columns), name (`kind/name` per line), or json /
        /// yaml (routes and services as a route file `apply -f` accepts; nodes as the
        /// status API's `/v1/nodes`).
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Delete one route, service or node: `delete route x`, `delete svc/lms`, `delete node p1`.
    ///
    /// A service that routes use cannot be deleted (the error lists them). Deleting a
    /// node forgets a lost one before its retention period ends.
    #[command(after_help = RESOURCES)]
    Delete {
        /// route|service|node (or rt, svc, no) and the name, or TYPE/NAME.
        #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Version, object counts, etcd connectivity and fleet convergence.
    ///
    /// Exits 1 when etcd is unreachable or the fleet has not converged (every node that
    /// has not left serving the current version) — after waiting up to
    /// --wait-converged, so CI can block on it.
    #[command(after_help = EXIT_CODES)]
    Status {
        #[arg(short, long, value_enum, default_value_t = StatusFormat::Text)]
        output: StatusFormat,
        /// Poll until etcd is connected and the fleet has converged, for at most this
        /// long (e.g. 30s); without it, status checks once.
        #[arg(long, alias = "timeout", value_name = "DURATION", value_parser = parse_duration, conflicts_with = "watch")]
        wait_converged: Option<Duration>,
        /// Refresh every --interval until interrupted (Ctrl-C exits 0): redrawn in place
        /// on a terminal, one block per refresh otherwise. Errors are shown in the frame
        /// and the watch goes on.
        #[arg(short, long)]
        watch: bool,
        /// Time between refreshes of --watch (at least 200ms).
        #[arg(long, value_name = "DURATION", value_parser = parse_interval, default_value = "2s", requires = "watch")]
        interval: Duration,
    },
    /// Register an instance of SERVICE at ADDR and keep its lease alive until
    /// interrupted (SIGINT/SIGTERM deregister it): run it beside the instance, as a
    /// sidecar. Killed outright, the instance disappears when its lease expires (--ttl).
    Register {
        /// The service (created by `apply`) the instance belongs to.
        service: String,
        /// The instance's address, host:port.
        address: String,
        /// The lease's length, 5s to 300s; a heartbeat goes every third of it.
        #[arg(long, value_name = "DURATION", default_value = "10s")]
        ttl: String,
        /// A label of the instance (repeatable), matched by locality and select.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// The instance id (default: from the address, e.g. 10.0.0.7-8080).
        #[arg(long)]
        id: Option<String>,
        /// The instance's weight, 1 to 10000 (default 1).
        #[arg(long, value_name = "N")]
        weight: Option<u32>,
    },
    /// The route map: host → path → route → service → instances, and the proxies
    /// serving each route (those of the route's group, with their state).
    ///
    /// The same map as the status API's GET /v1/map and the dashboard, built from the
    /// same data read over the admin API.
    Map {
        /// Only what a request for HOST could match: HOST's own entries, the wildcards
        /// that match it and the routes for any host.
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// tree (default) or json (GET /v1/map's document).
        #[arg(short, long, value_enum, default_value_t = MapFormat::Tree)]
        output: MapFormat,
    },
    /// Shadow routes (`mode: shadow`) and their evidence summed over the fleet: requests
    /// seen, hits, misses, unknowns, hit rate and the last miss; with ROUTE, that route's
    /// recent mismatches (request id, method, path, expected, actual).
    ///
    /// Counts are for the route's current declaration: changing the route starts them
    /// again. The hit rate is hits / (hits + misses): `unknown` requests (nothing to
    /// compare, or the upstream failed) do not count either way.
    Shadow {
        /// One shadow route.
        route: Option<String>,
        /// table (default), or json / yaml (GET /v1/shadow's document).
        #[arg(short, long, value_enum, default_value_t = ShadowFormat::Table)]
        output: ShadowFormat,
    },
    /// Make a shadow route active, through the normal write path — only when its
    /// evidence shows a 100% hit rate over at least --min-requests compared requests
    /// (hits + misses), unless --force. Prints the evidence either way.
    Promote {
        route: String,
        /// Fewest compared requests (hits + misses) the evidence must cover.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        min_requests: u64,
        /// Promote whatever the evidence says.
        #[arg(long)]
        force: bool,
    },
}

/// Output format of `shadow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShadowFormat {
    Table,
    Json,
    Yaml,
}

/// Output format of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Name,
    Json,
    Yaml,
}

/// Output format of `map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MapFormat {
    Tree,
    Json,
}

/// Output format of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
    Yaml,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration (e.g. 30s): {e}"))
}

/// `KEY=VALUE` (the value may be empty; the registry validates both).
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < super::watch::MIN_INTERVAL {
        return Err(format!(
            "{s:?} is too short; the shortest interval is {}",
            humantime::format_duration(super::watch::MIN_INTERVAL)
        ));
    }
    Ok(d)
}

/// The kinds of object the CLI shows and deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Route,
    Service,
    Node,
    /// A service's instances (`get instances SVC`).
    Instance,
    /// `tls.certificates` entries.
    Certificate,
}

impl Kind {
    /// `route`, `routes`, `rt`, … (case-insensitive, like kubectl).
    pub fn parse(word: &str) -> Option<Kind> {
        match word.to_ascii_lowercase().as_str() {
            "route" | "routes" | "rt" => Some(Kind::Route),
            "service" | "services" | "svc" => Some(Kind::Service),
            "node" | "nodes" | "no" => Some(Kind::Node),
            "instance" | "instances" | "inst" => Some(Kind::Instance),
            "certificate" | "certificates" | "cert" | "certs" => Some(Kind::Certificate),
            _ => None,
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Kind::Route => "route",
            Kind::Service => "service",
            Kind::Node => "node",
            Kind::Instance => "instance",
            Kind::Certificate => "certificate",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Route => "routes",
            Kind::Service => "services",
            Kind::Node => "nodes",
            Kind::Instance => "instances",
            Kind::Certificate => "certificates",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.singular())
    }
}

/// What `get` or `delete` is about: a kind and the names asked for (none: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub names: Vec<String>,
}

/// A command line that clap accepted but that does not make sense (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn kind_of(word: &str) -> Result<Kind, UsageError> {
    Kind::parse(word).ok_or_else(|| {
        UsageError(format!(
            "unknown resource type {word:?}; expected routes (route, rt), services (service, svc), nodes (node, no), instances (instance, inst) or certificates (certificate, cert)"
        ))
    })
}

/// `TYPE [NAME…]` or `TYPE/NAME…` (all of one type).
pub fn parse_target(args: &[String]) -> Result<Target, UsageError> {
    let Some(first) = args.first() else {
        return Err(UsageError("name a resource type, e.g. `routes`".into()));
    };
    if !first.contains('/') {
        let kind = kind_of(first)?;
        let names = args[1..].to_vec();
        if let Some(bad) = names.iter().find(|n| n.contains('/') || n.is_empty()) {
            return Err(UsageError(format!(
                "{bad:?} is not a {kind} name; use `{} NAME…` or `{kind}/NAME…`",
                kind.plural()
            )));
        }
        return Ok(Target { kind, names });
    }
    let mut kind = None;
    let mut names = Vec::new();
    for arg in args {
        let Some((word, name)) = arg.split_once('/') else {
            return Err(UsageError(format!(
                "{arg:?}: once one argument is TYPE/NAME, all must be"
            )));
        };
        let k = kind_of(word)?;
        if name.is_empty() || name.contains('/') {
            return Err(UsageError(format!("{arg:?} is not TYPE/NAME")));
        }
        if kind.is_some_and(|seen| seen != k) {
            return Err(UsageError(format!(
                "{arg:?}: one command shows one type of object"
            )));
        }
        kind = Some(k);
        names.push(name.to_owned());
    }
    let Some(kind) = kind else {
        return Err(UsageError("name a resource type, e.g. `routes`".into()));
    };
    Ok(Target { kind, names })
}

/// `delete`: exactly one object.
pub fn parse_one(args: &[String]) -> Result<(Kind, String), UsageError> {
    let target = parse_target(args)?;
    match target.names.as_slice() {
        [name] => Ok((target.kind, name.clone())),
        [] => Err(UsageError(format!(
            "name the {} to delete: `delete {} NAME` or `delete {}/NAME`",
            target.kind, target.kind, target.kind
        ))),
        _ => Err(UsageError("delete takes one object at a time".into())),
    }
}

/// The `-f` arguments `apply` and `diff` share.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// Route file, directory of route files, or `-` for standard input (repeatable).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn resource_arguments() {
        let ok = |kind: Kind, names: &[&str]| {
            Ok(Target {
                kind,
                names: names.iter().map(|n| (*n).to_owned()).collect(),
            })
        };
        let cases: Vec<(&str, Result<Target, UsageError>)> = vec![
            ("routes", ok(Kind::Route, &[])),
            ("route x", ok(Kind::Route, &["x"])),
            ("routes x y", ok(Kind::Route, &["x", "y"])),
            ("rt x", ok(Kind::Route, &["x"])),
            ("route/x", ok(Kind::Route, &["x"])),
            ("rt/x route/y", ok(Kind::Route, &["x", "y"])),
            ("svc", ok(Kind::Service, &[])),
            ("Services lms", ok(Kind::Service, &["lms"])),
            ("service/lms", ok(Kind::Service, &["lms"])),
            ("no", ok(Kind::Node, &[])),
            ("node/p1", ok(Kind::Node, &["p1"])),
            ("nodes p1 p2", ok(Kind::Node, &["p1", "p2"])),
        ];
        for (line, want) in cases {
            assert_eq!(parse_target(&words(line)), want, "{line}");
        }
        let bad = [
            ("pods", "unknown resource type \"pods\""),
            ("pod/x", "unknown resource type \"pod\""),
            ("route/", "is not TYPE/NAME"),
            ("route/x svc/y", "one type of object"),
            ("route/x y", "all must be"),
            ("routes a/b", "is not a route name"),
        ];
        for (line, want) in bad {
            let err = parse_target(&words(line)).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
        assert_eq!(
            parse_one(&words("no/p1")),
            Ok((Kind::Node, "p1".to_owned()))
        );
        assert_eq!(
            parse_one(&words("svc lms")),
            Ok((Kind::Service, "lms".to_owned()))
        );
        assert!(parse_one(&words("route")).is_err());
        assert!(parse_one(&words("route/a route/b")).is_err());
    }

    #[test]
    fn parses_the_documented_command_lines() {
        let cases: &[&str] = &[
            "routemaster apply -f r.yaml",
            "routemaster apply -f r.yaml --dry-run",
            "routemaster apply -f - -f dir",
            "routemaster diff -f r.yaml",
            "routemaster get routes -o json",
            "routemaster get route x -o yaml",
            "routemaster get route/x",
            "routemaster get rt -o wide",
            "routemaster get svc -o name",
            "routemaster get nodes",
            "routemaster delete service lms",
            "routemaster delete no/p1",
            "routemaster --control-plane http://h:1 status",
            "routemaster status -o json --wait-converged 30s",
            "routemaster status --timeout 2m",
            "routemaster status --watch",
            "routemaster status -w --interval 500ms -o json",
            "routemaster map",
            "routemaster map --host example.com -o json",
            "routemaster register lms 10.0.0.7:8080",
            "routemaster register lms 10.0.0.7:8080 --ttl 5s --label zone=a --label env= --id i-1 --weight 3",
            "routemaster get instances lms -o yaml",
        ];
        for line in cases {
            Cli::try_parse_from(words(line)).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        let cli = Cli::try_parse_from(words("routemaster status --wait-converged 1m30s")).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status {
                wait_converged: Some(d),
                output: StatusFormat::Text,
                watch: false,
                ..
            } if d == Duration::from_secs(90)
        ));
        let cli = Cli::try_parse_from(words("routemaster apply -f a.yaml -f -")).unwrap();
        assert!(
            matches!(cli.command, Command::Apply { ref input, dry_run: false } if input.files.len() == 2)
        );
        for bad in [
            "routemaster apply",
            "routemaster get",
            "routemaster get routes -o xml",
            "routemaster delete",
            "routemaster delete route a b",
            "routemaster status --wait-converged soon",
            "routemaster status --watch --wait-converged 1s",
            "routemaster status --interval 1s",
            "routemaster status --watch --interval 10ms",
            "routemaster map -o yaml",
            "routemaster register lms",
            "routemaster register lms 10.0.0.7:8080 --label zone",
            "routemaster register lms 10.0.0.7:8080 --label =a",
            "routemaster register lms 10.0.0.7:8080 --weight -1",
        ] {
            assert!(Cli::try_parse_from(words(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_plane_flag_is_global() {
        let cli = Cli::try_parse_from(["routemaster", "status", "--control-plane", "http://x:1"])
            .unwrap();
        assert_eq!(cli.control_plane, "http://x:1");
    }
}
