//! `routemaster-control`: flags and process wiring for one control-plane replica.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use routemaster_control_plane::server::{ControlPlaneOptions, run};
use routemaster_runtime::lifecycle;
use routemaster_runtime::logging::{self, LogArgs};

/// Routemaster's control plane: stores routes in etcd and streams snapshots to proxies.
#[derive(Debug, Parser)]
#[command(name = "routemaster-control", version)]
struct Args {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        value_name = "URL[,URL…]",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// gRPC address (CLI admin API and proxy discovery streams).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    grpc_listen: SocketAddr,
    /// HTTP status API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7001")]
    http_listen: SocketAddr,
    /// etcd key prefix.
    #[arg(long, default_value = "/routemaster")]
    prefix: String,
    /// A node that has not reported for this long is shown as `lost` (about 3 proxy
    /// health intervals).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    node_ttl: Duration,
    /// How long a lost node stays listed (and counts against convergence) before it is
    /// forgotten; `routemaster delete node ID` forgets it at once.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    node_retention: Duration,
    /// Flood control: at most this many snapshots a second to each proxy (so to each
    /// group); versions published faster (a registration flood) are coalesced and the
    /// newest is sent.
    #[arg(long, value_name = "N", default_value_t = routemaster_control_plane::discovery::DEFAULT_MAX_SNAPSHOTS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_snapshots_per_second: u32,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    routemaster_common::duration::parse(s).map_err(|e| e.to_string())
}

const PROGRAM: &str = "routemaster-control";

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            logging::fatal(PROGRAM, format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::fatal(PROGRAM, format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.prefix.starts_with('/'), "--prefix must start with '/'");
    let grpc = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc_listen))?;
    let http = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_listen))?;
    // Machine-readable first stdout line (tests and scripts bind port 0).
    println!(
        "routemaster-control listening on {} http {}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(run(
        ControlPlaneOptions {
            etcd: args.etcd,
            prefix: args.prefix,
            node_ttl: args.node_ttl,
            node_retention: args.node_retention,
            max_snapshots_per_second: args.max_snapshots_per_second,
        },
        grpc,
        http,
        stop_rx,
    ));
    tokio::select! {
        result = lifecycle::shutdown_signal() => {
            result.context("cannot install signal handlers")?
        }
        finished = &mut server => {
            return finished.context("control plane task failed")?;
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    server.await.context("control plane task failed")?
}
