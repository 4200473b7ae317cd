//! Process lifecycle: waiting for SIGTERM or SIGINT, and the one-to-many stop signal
//! handed to every server and background task.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

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
pub fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + use<> {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stopped_resolves_on_true_or_when_the_sender_is_gone() {
        // (what the sender does: send this value and stay, or None: go away; resolves?)
        let cases = [
            ("sends true", Some(true), true),
            ("sends false", Some(false), false),
            ("is dropped", None, true),
        ];
        for (what, send, resolves) in cases {
            let (tx, rx) = watch::channel(false);
            let fut = stopped(&rx);
            let _kept = send.map(|value| {
                tx.send_replace(value);
                tx
            });
            let done = tokio::time::timeout(Duration::from_millis(100), fut)
                .await
                .is_ok();
            assert_eq!(done, resolves, "sender {what}");
        }
    }
}
