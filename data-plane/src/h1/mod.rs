//! The HTTP/1.1 engine: Routemaster's own HTTP/1.1 server and upstream client, built
//! for the proxy's one job. A request head is parsed in place (httparse), routed by the
//! shared phases ([`crate::routing`]), rewritten straight into the upstream head, and
//! sent on a pooled upstream connection; the response head is rewritten the same way
//! and bodies are relayed in their own framing. No `HeaderMap`, no per-request task or
//! channel, buffers from a worker-local free list, one `writev` per head.
//!
//! Code map: [`connection`] (keep-alive loop, exchange, failure → response),
//! [`request`] / [`response`] (heads), [`head`] (field rules shared by both),
//! [`chunked`] (strict chunked framing), [`relay`] (bodies), [`pool`] (upstream
//! connections), [`tunnel`] (WebSocket after a 101), [`h2`] (hands HTTP/2
//! connections to our HTTP/2 session, [`crate::h2`]), [`stream`] (the client stream: TCP or TLS)
//! and [`secure`] (a `--tls-listen` connection: handshake, then h2 or HTTP/1.1 by
//! ALPN).
//!
//! Invariants: a message whose framing two parsers could read differently is refused
//! (no smuggling through us); a reused upstream connection is retried only when the
//! whole request is still in hand and no response byte arrived; an idle client
//! connection holds no buffer.

mod bridge;
pub(crate) mod buffers;
mod chunked;
pub mod client;
mod connection;
mod h2;
pub(crate) mod head;
mod io;
mod pool;
#[cfg(test)]
mod properties;
mod relay;
pub mod request;
mod response;
mod secure;
mod stream;
mod tunnel;
pub(crate) mod upstream_head;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::proxy::{Native, Proxy, UpstreamOptions};
use crate::server::{ServerOptions, accept, refuse_overloaded};
use crate::state::ProxyState;

pub use pool::UpstreamPool;

/// One worker's HTTP engine: the shared state plus everything per worker (upstream
/// pool, drain signal, the HTTP/2 fallback).
#[derive(Debug)]
pub struct Engine {
    state: Arc<ProxyState>,
    pool: Arc<UpstreamPool>,
    options: ServerOptions,
    h2_proxy: Arc<Proxy>,
    drain: Drain,
    /// Requests (and HTTP/2 connections) in progress on this worker.
    busy: AtomicUsize,
}

#[derive(Debug, Default)]
struct Drain {
    flag: AtomicBool,
    /// Tells HTTP/2 connections to shut down gracefully.
    notify: Notify,
    /// Signalled when the last busy request ends during a drain.
    all_done: Notify,
}

impl Drain {
    fn is_draining(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

impl Engine {
    pub fn new(state: Arc<ProxyState>, upstream: &UpstreamOptions, options: ServerOptions) -> Self {
        let pool = Arc::new(UpstreamPool::new(
            upstream.connect_timeout,
            upstream.idle_timeout,
        ));
        Self {
            h2_proxy: Arc::new(Proxy::new(
                Arc::clone(&state),
                upstream,
                options.io_timeout,
                Native {
                    pool: Arc::clone(&pool),
                    max_head: options.max_header_bytes,
                },
            )),
            state,
            pool,
            options,
            drain: Drain::default(),
            busy: AtomicUsize::new(0),
        }
    }
}

/// Accepts on `listener`, or never when there is none.
async fn accept_if(
    listener: Option<&TcpListener>,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    match listener {
        Some(l) => accept(l).await,
        None => std::future::pending().await,
    }
}

/// Serves `listener` (and `tls`, the `--tls-listen` one) until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish (their responses say `connection: close`) and returns when none is
/// left or the drain timeout passes. Idle connections are not waited for: the worker's
/// runtime drops (closes) them when this returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TcpListener>,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
) {
    let sweeper = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let period = (engine.pool.idle_timeout() / 2).max(Duration::from_millis(100));
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                engine.pool.sweep();
            }
        })
    };
    // The access log: this worker's lines go to the writer at least this often.
    // The task ends with the worker's runtime; the worker flushes once more after the
    // drain.
    let _log_flusher = engine.state.observe.access_log().map(|_| {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::observe::access_log::FLUSH_EVERY);
            loop {
                tick.tick().await;
                if let Some(log) = engine.state.observe.access_log() {
                    log.flush_local();
                }
            }
        })
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, client) = accept(&listener) => {
                match engine.state.connections.try_acquire() {
                    Some(slot) => {
                        engine.state.observe.metrics.connection_accepted();
                        let conn = connection::Conn::new(Arc::clone(&engine), stream, client, slot);
                        tokio::spawn(conn.run());
                    }
                    None => refuse_overloaded(stream),
                }
            }
            (stream, client) = accept_if(tls.as_ref()) => {
                match engine.state.connections.try_acquire() {
                    Some(slot) => {
                        tokio::spawn(secure::run(Arc::clone(&engine), stream, client, slot));
                    }
                    // Over the limit: closed before the handshake costs anything.
                    None => drop(stream),
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(tls);
    sweeper.abort();
    let all_done = engine.drain.all_done.notified();
    tokio::pin!(all_done);
    all_done.as_mut().enable();
    engine.drain.flag.store(true, Ordering::Release);
    engine.drain.notify.notify_waiters();
    if engine.busy.load(Ordering::Acquire) == 0 {
        return;
    }
    tokio::select! {
        () = all_done => tracing::debug!("in-flight requests drained"),
        () = tokio::time::sleep(engine.options.drain_timeout) => {
            tracing::warn!(timeout = ?engine.options.drain_timeout, "drain timed out; closing remaining connections");
        }
    }
}
