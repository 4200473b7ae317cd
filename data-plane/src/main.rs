//! `routemaster-proxy`: flags, runtime, wiring. All behaviour lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use routemaster_data_plane::admin::Admin;
use routemaster_data_plane::file_source;
use routemaster_data_plane::proxy::{Proxy, UpstreamOptions};
use routemaster_data_plane::server::{ServerOptions, serve};
use routemaster_data_plane::state::ProxyState;
use tokio::sync::watch;

/// Routemaster's data plane: an HTTP/1.1 + h2c reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "routemaster-proxy", version)]
struct Args {
    /// Route file (YAML) to serve; reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address for proxied traffic.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address for /healthz, /readyz, /config, /stats.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin_listen: SocketAddr,
    /// Worker threads (default: number of cores).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Time a client has to send its request headers.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// On SIGTERM, time allowed for in-flight requests to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How often the route file is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    watch_interval: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    routemaster_common::duration::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("routemaster-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Load before anything else: an invalid file at start is a clean non-zero exit.
    let config = file_source::load(&args.config)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        anyhow::ensure!(n > 0, "--workers must be at least 1");
        runtime.worker_threads(n);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let state = Arc::new(ProxyState::new());
        let applied = state.apply(file_source::snapshot(&args.config, 1, config));
        tracing::info!(
            routes = applied.routes,
            services = applied.services,
            compile_ms = applied.compile_time.as_secs_f64() * 1e3,
            "route file loaded"
        );

        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
        // One machine-readable line on stdout, so scripts and tests that bind port 0
        // learn the real addresses.
        println!(
            "routemaster-proxy listening on {} admin {}",
            listener.local_addr()?,
            admin_listener.local_addr()?
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let server_options = ServerOptions {
            header_read_timeout: args.header_read_timeout,
            drain_timeout: args.drain_timeout,
            ..ServerOptions::default()
        };
        let proxy = Arc::new(Proxy::new(Arc::clone(&state), &UpstreamOptions::default()));
        let proxy_server = tokio::spawn(serve(listener, proxy, server_options.clone(), stopped()));
        let admin_server = tokio::spawn(serve(
            admin_listener,
            Arc::new(Admin::new(Arc::clone(&state))),
            server_options,
            stopped(),
        ));
        let watcher = tokio::spawn(file_source::watch(
            args.config.clone(),
            Arc::clone(&state),
            1,
            args.watch_interval,
            stopped(),
        ));

        shutdown_signal().await?;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
        let _ = proxy_server.await;
        let _ = admin_server.await;
        let _ = watcher.await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
