//! The proxy's side of serving: the server options every listener shares, the
//! client-connection limit, and the admin API's server (the accept loop and the HTTP
//! server itself are `routemaster_runtime::http`, shared with the control plane).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use routemaster_runtime::http::HttpOptions;
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

pub use routemaster_runtime::http::{ACCEPT_LOG_INTERVAL, accept};

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

/// Serves `listener` with `handler` until `shutdown` resolves, then drains (up to the
/// drain timeout); the loop is [`routemaster_runtime::http::serve`].
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let http = HttpOptions {
        max_header_bytes: options.max_header_bytes,
        header_read_timeout: options.header_read_timeout,
        drain_timeout: options.drain_timeout,
    };
    let make = move |client: SocketAddr| {
        let handler = Arc::clone(&handler);
        service_fn(move |req: Request<Incoming>| {
            let handler = Arc::clone(&handler);
            let head = req.method() == Method::HEAD;
            async move { Ok::<_, Infallible>(head_has_no_body(head, handler.handle(req, client).await)) }
        })
    };
    routemaster_runtime::http::serve(listener, make, http, shutdown).await;
}
