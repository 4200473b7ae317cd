//! Process lifecycle shared by the Routemaster binaries: logging to stderr (filtered by
//! `RUST_LOG`, default `info`), waiting for SIGTERM or SIGINT, and the one-to-many stop
//! signal handed to every server and background task.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// A future that resolves once `stop` turns true (or its sender is gone): the shutdown
/// future each server and task takes.
pub fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + use<> {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}
