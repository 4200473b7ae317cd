//! The small HTTP servers both planes run beside their main work (the proxy's admin API,
//! the control plane's status API): an accept loop that backs off instead of spinning
//! when out of descriptors, HTTP/1.1 and h2c (prior knowledge) with header limits and a
//! header-read timeout, and a drain bounded in time on shutdown. Servers take a bound
//! listener and a shutdown future, so tests bind port 0.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

/// Limits and the drain bound of a [`serve`]d server.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request header block (431 beyond it over HTTP/1.1).
    pub max_header_bytes: usize,
    /// A client must send its whole header block within this time.
    pub header_read_timeout: Duration,
    /// On shutdown, requests in progress get this long to finish.
    pub drain_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The next connection, with Nagle off. Accept errors (EMFILE when out of file
/// descriptors, ENOBUFS…) back off, from 5 ms doubling to 1 s, instead of spinning, and
/// are logged at most once per [`ACCEPT_LOG_INTERVAL`] with a count.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut pause = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                return (stream, client);
            }
            Err(e) => {
                log_accept_error(&e);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One log line per interval for accept errors, process-wide (every listener fails at
/// once when the process is out of descriptors): the last log time and how many errors
/// it did not show.
fn log_accept_error(e: &std::io::Error) {
    static LAST: LazyLock<Mutex<(Option<Instant>, u64)>> = LazyLock::new(|| Mutex::new((None, 0)));
    let Ok(mut last) = LAST.lock() else { return };
    let now = Instant::now();
    if last
        .0
        .is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_INTERVAL)
    {
        last.1 += 1;
        return;
    }
    tracing::warn!(error = %e, suppressed = last.1, "accept failed; backing off (logged once per 10s)");
    *last = (Some(now), 0);
}

/// Serves `listener` until `shutdown` resolves: each connection gets the service
/// `make(client)` returns. Then stops accepting, closes idle connections and gives
/// requests in progress up to the drain timeout.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    make: M,
    options: HttpOptions,
    shutdown: impl Future<Output = ()>,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // hyper answers 431 when the header block outgrows its read buffer.
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, client) = accept(&listener) => {
                let conn = builder
                    .serve_connection(TokioIo::new(stream), make(client))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %client, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections drained"),
        () = tokio::time::sleep(options.drain_timeout) => {
            tracing::warn!(timeout = ?options.drain_timeout, "drain timed out; closing remaining connections");
        }
    }
}
