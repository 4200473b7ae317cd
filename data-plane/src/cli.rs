//! `routemaster-proxy`'s flags, and turning them into a snapshot source: a route file,
//! or the control plane (connected mode). Everything here is about the command line;
//! behaviour lives in the library.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Parser};
use routemaster_common::name::Name;
use routemaster_data_plane::control_plane::{self, ControlPlaneConfig};
use routemaster_runtime::logging::LogArgs;

/// Routemaster's data plane: an HTTP/1.1 + h2c reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "routemaster-proxy", version)]
#[command(group(ArgGroup::new("source").required(true).args(["config", "control_plane"])))]
pub struct Args {
    /// Route file (YAML), or a directory whose *.yaml / *.yml files are merged, to
    /// serve; reloaded when it changes.
    #[arg(long, value_name = "FILE|DIR")]
    pub config: Option<PathBuf>,
    /// Control plane(s) to get routes from, comma-separated or repeated; the first
    /// reachable one is used and the others take over when it fails.
    #[arg(long, value_name = "URL", value_delimiter = ',', value_parser = parse_url)]
    pub control_plane: Vec<String>,
    /// This proxy's name in the control plane's status (default: the hostname).
    #[arg(long, value_name = "ID", conflicts_with = "config", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// The route group this proxy serves.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        conflicts_with = "config",
        value_parser = parse_group
    )]
    pub group: String,
    /// A label reported to the control plane (repeatable).
    #[arg(
        long = "label",
        value_name = "KEY=VALUE",
        conflicts_with = "config",
        value_parser = parse_label
    )]
    pub labels: Vec<(String, String)>,
    /// How often a health report is sent to the control plane.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        conflicts_with = "config",
        value_parser = parse_positive_duration
    )]
    pub health_interval: Duration,
    /// Save every applied snapshot in DIR (atomically, with a checksum) and, at start,
    /// serve the saved one if no control plane answers within --bootstrap-timeout.
    /// One directory per proxy; created if missing.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
    /// With --state-dir: how long a starting proxy waits for a control plane's snapshot
    /// before serving the saved one (counted from process start).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        conflicts_with = "config",
        value_parser = parse_duration
    )]
    pub bootstrap_timeout: Duration,
    /// Address for proxied traffic.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address for HTTPS traffic (TLS 1.2/1.3; HTTP/1.1 or HTTP/2 by ALPN), with the
    /// route file's `tls.certificates`. Off when not given.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// Address for /healthz, /readyz, /config, /stats.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    pub admin_listen: SocketAddr,
    /// Worker threads (default: number of cores).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Time a client has to send its request headers.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// An HTTP/1.1 client connection idle between requests is closed after this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// A request in progress fails when one read or write (upstream response, request
    /// or response body, writing to the client) makes no progress for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub io_timeout: Duration,
    /// On SIGTERM, time allowed for in-flight requests to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// A WebSocket tunnel with no traffic in either direction for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub tunnel_idle_timeout: Duration,
    /// On SIGTERM, how long to keep serving with /readyz failing (and responses saying
    /// `connection: close`) before the listener closes, so a load balancer's health
    /// check takes the proxy out first. Set it above the LB's check interval × fall.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// Most client connections open at once (all workers); beyond it a new connection
    /// gets a 503 and is closed. Default: half the open-file limit, less 32.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Access log: one JSON line per proxied request (per WebSocket tunnel, per gRPC
    /// stream) to standard output or appended to a file (reopened on SIGHUP). Lines are
    /// dropped (and counted) rather than ever slowing requests.
    #[arg(long, value_name = "stdout|PATH|off", default_value = "off", value_parser = parse_access_log)]
    pub access_log: AccessLogArg,
    /// Share of new traces (requests without a valid `traceparent`) started with the
    /// sampled flag set, 0 to 1. Incoming sampled flags are always kept.
    #[arg(long, value_name = "RATIO", default_value = "0", value_parser = parse_ratio)]
    pub trace_sample_ratio: f64,
    /// Record request metrics (`off` only to measure what they cost; /metrics still
    /// answers, without per-request series moving).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off)]
    pub metrics: OnOff,
    /// How often the route file is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub watch_interval: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `--access-log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogArg {
    Off,
    Stdout,
    File(PathBuf),
}

impl AccessLogArg {
    pub fn target(&self) -> Option<routemaster_data_plane::observe::access_log::Target> {
        use routemaster_data_plane::observe::access_log::Target;
        match self {
            AccessLogArg::Off => None,
            AccessLogArg::Stdout => Some(Target::Stdout),
            AccessLogArg::File(p) => Some(Target::File(p.clone())),
        }
    }
}

fn parse_access_log(s: &str) -> Result<AccessLogArg, String> {
    match s {
        "" => Err("expected stdout, off or a file path".into()),
        "off" => Ok(AccessLogArg::Off),
        "stdout" | "-" => Ok(AccessLogArg::Stdout),
        path => Ok(AccessLogArg::File(PathBuf::from(path))),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }
}

fn parse_on_off(s: &str) -> Result<OnOff, String> {
    match s {
        "on" => Ok(OnOff::On),
        "off" => Ok(OnOff::Off),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// Where snapshots come from.
#[derive(Debug)]
pub enum Source {
    File(PathBuf),
    ControlPlane(ControlPlaneConfig),
}

impl Args {
    /// The snapshot source the flags describe. Clap has already enforced that exactly
    /// one of `--config` / `--control-plane` is given.
    pub fn source(&self) -> anyhow::Result<Source> {
        if let Some(path) = &self.config {
            return Ok(Source::File(path.clone()));
        }
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => hostname().context("cannot determine the hostname; pass --node-id")?,
        };
        let mut labels = HashMap::new();
        for (key, value) in &self.labels {
            // A map on the wire would keep one silently; say so instead.
            anyhow::ensure!(
                labels.insert(key.clone(), value.clone()).is_none(),
                "--label {key} is given more than once"
            );
        }
        let mut config =
            ControlPlaneConfig::new(self.control_plane.clone(), node_id, self.group.clone());
        config.labels = labels;
        config.health_interval = self.health_interval;
        config.state_dir = self.state_dir.clone();
        config.bootstrap_timeout = self.bootstrap_timeout;
        Ok(Source::ControlPlane(config))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    routemaster_common::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    control_plane::parse_url(s).map_err(|e| e.to_string())
}

fn parse_node_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(s.to_owned())
}

/// Groups are names in the route model; checking here turns a typo into a startup
/// error rather than a proxy that silently never gets a snapshot.
fn parse_group(s: &str) -> Result<String, String> {
    Name::new(s)
        .map(|n| n.to_string())
        .map_err(|e| format!("group {e}"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {s:?}"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!(
            "expected KEY=VALUE with a non-empty KEY, got {s:?}"
        ));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!("label key {key:?} contains whitespace"));
    }
    Ok((key.to_owned(), value.trim().to_owned()))
}

/// The kernel's hostname, or `$HOSTNAME` where /proc is not available.
fn hostname() -> Option<String> {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_proc
        .into_iter()
        .chain(std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("routemaster-proxy").chain(args.iter().copied()))
    }

    fn control_plane(args: &[&str]) -> ControlPlaneConfig {
        match parse(args).map_err(|e| e.to_string()).map(|a| a.source()) {
            Ok(Ok(Source::ControlPlane(c))) => c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn labels_parse_key_value() {
        assert_eq!(parse_label("zone=eu-1"), Ok(("zone".into(), "eu-1".into())));
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_label("zone").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_label("=eu").unwrap_err().contains("non-empty KEY"));
        assert!(parse_label("a b=c").unwrap_err().contains("whitespace"));
    }

    #[test]
    fn bad_label_is_a_clap_error_naming_the_flag() {
        let err = parse(&["--control-plane", "http://cp:7000", "--label", "zone"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains("--label") && text.contains("KEY=VALUE"),
            "{text}"
        );
    }

    #[test]
    fn connected_mode_flags() {
        let c = control_plane(&[
            "--control-plane",
            "http://cp-1:7000,cp-2:7000",
            "--control-plane",
            "http://cp-3:7000",
            "--node-id",
            "edge-1",
            "--group",
            "edge",
            "--label",
            "zone=eu-1",
            "--label",
            "tier=front",
            "--health-interval",
            "2s",
            "--state-dir",
            "/var/lib/routemaster",
            "--bootstrap-timeout",
            "1500ms",
        ]);
        assert_eq!(
            c.urls,
            ["http://cp-1:7000", "http://cp-2:7000", "http://cp-3:7000"]
        );
        assert_eq!(c.node_id, "edge-1");
        assert_eq!(c.group, "edge");
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("eu-1"));
        assert_eq!(c.health_interval, Duration::from_secs(2));
        assert_eq!(
            c.state_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/routemaster"))
        );
        assert_eq!(c.bootstrap_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn connected_mode_defaults() {
        let c = control_plane(&["--control-plane", "http://cp:7000"]);
        assert_eq!(c.group, "default");
        assert!(c.labels.is_empty());
        assert_eq!(c.health_interval, Duration::from_secs(5));
        assert_eq!(c.state_dir, None);
        assert_eq!(c.bootstrap_timeout, Duration::from_secs(5));
        assert_eq!(Some(c.node_id), hostname());
    }

    #[test]
    fn exactly_one_source() {
        let err = parse(&[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let err = parse(&["--config", "r.yaml", "--control-plane", "http://cp:7000"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let args = parse(&["--config", "r.yaml"]).unwrap();
        assert!(
            matches!(args.source(), Ok(Source::File(p)) if p == std::path::Path::new("r.yaml"))
        );
    }

    #[test]
    fn connected_only_flags_conflict_with_config() {
        for flags in [
            &["--node-id", "n"][..],
            &["--group", "edge"],
            &["--label", "a=b"],
            &["--health-interval", "1s"],
            &["--state-dir", "/tmp/s"],
            &["--bootstrap-timeout", "1s"],
        ] {
            let mut args = vec!["--config", "r.yaml"];
            args.extend_from_slice(flags);
            let err = parse(&args).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{flags:?}");
        }
    }

    #[test]
    fn invalid_values_are_rejected() {
        for flags in [
            &["--control-plane", "https://cp:7000"][..],
            &["--control-plane", "http://cp:7000", "--group", "Edge"],
            &["--control-plane", "http://cp:7000", "--node-id", " "],
            &[
                "--control-plane",
                "http://cp:7000",
                "--health-interval",
                "0s",
            ],
        ] {
            let err = parse(flags).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{flags:?}");
        }
        let args = parse(&[
            "--control-plane",
            "http://cp:7000",
            "--label",
            "a=1",
            "--label",
            "a=2",
        ])
        .unwrap();
        let err = args.source().unwrap_err().to_string();
        assert!(err.contains("--label a"), "{err}");
    }
}
