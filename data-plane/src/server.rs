//! Listeners: accept loop, per-connection HTTP/1.1 + h2c (prior knowledge) serving with
//! header limits and a header-read timeout, and graceful drain on shutdown. Servers take
//! an already-bound listener and a shutdown future, so tests bind port 0.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
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
    /// A tunnel (WebSocket) with no traffic either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Half the open-file limit (each proxied connection may hold an upstream one too),
/// less a reserve for listeners, the control-plane stream and logs.
pub fn default_max_connections() -> usize {
    let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(files.saturating_sub(64) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Raises the soft open-file limit to the hard one (as Go's runtime and nginx's
/// `worker_rlimit_nofile` do): a proxy's connections are its files. Returns the limit.
pub fn raise_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Counts open client connections across workers against `--max-connections`.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    refused: AtomicU64,
}

/// One open client connection's place under the limit, given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionLimit>);

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            refused: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection, or `None` when `max` are already open.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(ConnectionSlot(Arc::clone(self)))
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Turns away a connection over the limit: one non-blocking write of a 503 and close.
/// Nothing is awaited, so a flood of refused connections holds no file descriptors.
pub fn refuse_overloaded(stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 45\r\nconnection: close\r\n\r\n503 Service Unavailable: too many connections\n";
    let _ = stream.try_write(BUSY);
}

/// The next connection, with Nagle off (we write whole heads). Accept errors (EMFILE
/// when out of file descriptors, ENOBUFS…) back off, from 5 ms doubling to 1 s, instead
/// of spinning, and are logged at most once per [`ACCEPT_LOG_INTERVAL`] with a count.
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

/// One log line per interval for accept errors, process-wide (every worker's listener
/// fails at once when the process is out of descriptors): the last log time and how
/// many errors it did not show.
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

/// A response to HEAD carries its headers (`content-length` included) and no body:
/// hyper sends what the body holds, and over HTTP/2 DATA after a HEAD is a protocol
/// error the client sees as a reset stream.
pub fn head_has_no_body(head: bool, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if !head {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    if !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && let Some(n) = http_body::Body::size_hint(&body).exact()
    {
        parts.headers.insert(http::header::CONTENT_LENGTH, n.into());
    }
    Response::from_parts(parts, ProxyBody::empty())
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
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = Arc::clone(&handler);
                    let head = req.method() == Method::HEAD;
                    async move { Ok::<_, Infallible>(head_has_no_body(head, handler.handle(req, client).await)) }
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
