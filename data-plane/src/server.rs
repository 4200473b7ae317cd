//! Listeners: accept loop, per-connection HTTP/1.1 + h2c (prior knowledge) serving with
//! header limits and a header-read timeout, and graceful drain on shutdown. Servers take
//! an already-bound listener and a shutdown future, so tests bind port 0.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::body::ProxyBody;

/// Something that answers requests (the proxy, the admin API).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request header block; bigger ones get 431.
    pub max_header_bytes: usize,
    /// A client must send its whole header block within this time.
    pub header_read_timeout: Duration,
    /// An HTTP/1.1 connection idle between requests is closed after this long.
    pub keepalive_timeout: Duration,
    /// Longest wait for progress on one read or write of a request in progress
    /// (upstream response, bodies, writes to a client that does not read).
    pub io_timeout: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The next connection, with Nagle off (we write whole heads). Accept errors (typically
/// EMFILE) are logged and retried after a short pause instead of spinning.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                return (stream, client);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits (up to
/// the drain timeout) for open connections to finish their requests.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
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
                let handler = Arc::clone(&handler);
                let service = service_fn(move |req| {
                    let handler = Arc::clone(&handler);
                    async move { Ok::<_, Infallible>(handler.handle(req, client).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
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
