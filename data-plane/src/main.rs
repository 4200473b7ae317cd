//! `routemaster-proxy`: flags, runtime, wiring. All behaviour lives in the library.

mod cli;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use routemaster_data_plane::admin::Admin;
use routemaster_data_plane::observe::access_log::AccessLog;
use routemaster_data_plane::proxy::UpstreamOptions;
use routemaster_data_plane::server::{
    ServerOptions, default_max_connections, raise_file_limit, serve,
};
use routemaster_data_plane::state::ProxyState;
use routemaster_data_plane::workers::{self, Workers};
use routemaster_data_plane::{control_plane, file_source};
use routemaster_runtime::{lifecycle, logging};
use tokio::sync::watch;

use crate::cli::{Args, Source};

/// jemalloc: per-thread caches and cheap aligned allocations (every tokio task is a
/// 128-byte-aligned allocation; glibc serves those through its slow memalign path).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init("info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::fatal("routemaster-proxy", format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let source = args.source()?;
    // Load before anything else: an invalid file at start is a clean non-zero exit. In
    // connected mode there is nothing to load: the proxy starts empty (503 and /readyz
    // 503) until the control plane sends the first snapshot.
    let initial = match &source {
        Source::File(path) => Some(file_source::load(path)?),
        Source::ControlPlane(_) => None,
    };
    // A state directory that cannot even be created is a configuration error: say so now
    // rather than discover it at the first snapshot.
    if let Source::ControlPlane(control_plane::ControlPlaneConfig {
        state_dir: Some(dir),
        ..
    }) = &source
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--state-dir {}: cannot create it", dir.display()))?;
    }
    let workers = match args.workers {
        Some(0) => anyhow::bail!("--workers must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if let Err(e) = raise_file_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let max_connections = args
        .max_connections
        .map_or_else(default_max_connections, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let (listeners, listen_addr) = workers::bind(args.listen, workers)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (tls_listeners, tls_addr) = match args.tls_listen {
        Some(addr) => {
            let (l, a) = workers::bind(addr, workers)
                .with_context(|| format!("--tls-listen: cannot listen on {addr}"))?;
            (l, Some(a))
        }
        None => (Vec::new(), None),
    };
    // The main runtime only runs the admin API, the snapshot source and signal handling;
    // proxied traffic runs on the worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (workers, state) = runtime.block_on(async move {
        let state = Arc::new(ProxyState::with_limits(max_connections, workers));
        // `discovery: dns`: recompile the table when a name's addresses change.
        tokio::spawn(Arc::clone(&state).run_dns_refresher());
        state.observe.set_metrics(args.metrics.is_on());
        state
            .observe
            .set_trace_sample_ratio(args.trace_sample_ratio);
        if let Some(target) = args.access_log.target() {
            let log = AccessLog::start(target).context("--access-log: cannot open it")?;
            state.observe.set_access_log(log);
        }
        // SIGHUP reopens the access log (logrotate); it never stops the proxy.
        let hangups = {
            let state = Arc::clone(&state);
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot install the SIGHUP handler")?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match state.observe.access_log() {
                        Some(log) => log.reopen(),
                        None => tracing::info!("SIGHUP: no access log to reopen"),
                    }
                }
            })
        };
        let initial_hash = initial.as_ref().map_or(0, |l| l.hash);
        if let (Source::File(path), Some(loaded)) = (&source, initial) {
            let applied = routemaster_data_plane::tls::apply(
                &state,
                file_source::snapshot(path, 1, loaded.config),
            )
            .with_context(|| format!("{}", path.display()))?;
            tracing::info!(
                routes = applied.routes,
                services = applied.services,
                compile_ms = applied.compile_time.as_secs_f64() * 1e3,
                "route file loaded"
            );
        }

        let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
        // One machine-readable line on stdout, so scripts and tests that bind port 0
        // learn the real addresses.
        // Tests and scripts read this line: `tls ADDR` is appended with --tls-listen.
        println!(
            "routemaster-proxy listening on {} admin {}{}",
            listen_addr,
            admin_listener.local_addr()?,
            tls_addr.map(|a| format!(" tls {a}")).unwrap_or_default()
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = || lifecycle::stopped(&stop_rx);
        // The drain starts (SIGTERM) before the listeners stop (after --drain-delay): the
        // control-plane client says Goodbye at the start, so the control plane forgets
        // this node while it is still serving, never sees it `lost`.
        let (drain_tx, drain_rx) = watch::channel(false);
        let server_options = ServerOptions {
            header_read_timeout: args.header_read_timeout,
            keepalive_timeout: args.keepalive_timeout,
            io_timeout: args.io_timeout,
            drain_timeout: args.drain_timeout,
            tunnel_idle_timeout: args.tunnel_idle_timeout,
            ..ServerOptions::default()
        };
        let workers = Workers::spawn(
            listeners,
            tls_listeners,
            &state,
            &UpstreamOptions::default(),
            &server_options,
            &stop_rx,
        )
        .context("cannot start the worker threads")?;
        tracing::info!(workers = workers.len(), "serving");
        let admin_server = tokio::spawn(serve(
            admin_listener,
            Arc::new(Admin::new(Arc::clone(&state))),
            server_options,
            stopped(),
        ));
        // Certificate files are watched like the route file (in either mode).
        let _certificate_files = tokio::spawn(routemaster_data_plane::tls::watch(
            Arc::clone(&state),
            args.watch_interval,
            stopped(),
        ));
        let snapshots = match source {
            Source::File(path) => tokio::spawn(file_source::watch(
                path,
                Arc::clone(&state),
                1,
                initial_hash,
                args.watch_interval,
                stopped(),
            )),
            Source::ControlPlane(config) => {
                tracing::info!(
                    control_planes = %config.urls.join(","),
                    node_id = %config.node_id,
                    group = %config.group,
                    state_dir = ?config.state_dir,
                    bootstrap_timeout = ?config.state_dir.as_ref().map(|_| config.bootstrap_timeout),
                    "connected mode: waiting for the first snapshot"
                );
                tokio::spawn(control_plane::run(
                    config,
                    Arc::clone(&state),
                    lifecycle::stopped(&drain_rx),
                ))
            }
        };

        lifecycle::shutdown_signal()
            .await
            .context("cannot install signal handlers")?;
        state.start_draining();
        let _ = drain_tx.send(true);
        if !args.drain_delay.is_zero() {
            tracing::info!(delay = ?args.drain_delay, "shutting down: not ready, still serving");
            // A second signal cuts the delay short.
            tokio::select! {
                () = tokio::time::sleep(args.drain_delay) => {}
                _ = lifecycle::shutdown_signal() => {}
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
        let _ = admin_server.await;
        let _ = snapshots.await;
        hangups.abort();
        Ok::<_, anyhow::Error>((workers, state))
    })?;
    workers.join();
    // The workers handed over their last lines as they stopped: write them out.
    if let Some(log) = state.observe.access_log() {
        log.sync(std::time::Duration::from_secs(5));
    }
    tracing::info!("stopped");
    Ok(())
}
