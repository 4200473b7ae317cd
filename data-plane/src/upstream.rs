//! The upstream connector for requests sent with hyper's client — every request of an
//! HTTP/2 client, and HTTP/1.1 clients' requests to `h2c`, `h2` and `https` services
//! (the HTTP/1.1 engine keeps its own pool for `http1`): one pooled client per upstream
//! protocol, TLS to upstreams (rustls, the workspace's one crypto provider from
//! [`routemaster_runtime::tls`]), and the request body type they all take.
//!
//! HTTP/2 upstreams (`h2c`, `h2`) get one multiplexed connection per endpoint and
//! worker (hyper-util's pool shares an HTTP/2 connection between requests and lets only
//! one connect race per endpoint; past the server's `MAX_CONCURRENT_STREAMS` requests
//! wait for a free stream), hyper's flow-control windows (2 MiB per stream, 5 MiB per
//! connection) and a keep-alive ping so a dead connection is noticed while idle.
//!
//! TLS settings are compiled per snapshot ([`ServiceTls`], built in [`crate::compile`]):
//! each TLS service's rustls config (ALPN `h2` or `http/1.1`; `ca_pem` or the system
//! roots) and server name. Each TLS service gets its own client (so its own pool):
//! two services on one address with different roots never share a connection, and a
//! service whose settings are unchanged keeps its connections across snapshots.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use routemaster_common::model::{Protocol, Service};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::body::BoxError;

/// Upstream connection settings.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The hyper clients: one shared client for `http1` services, and for `h2c`, `h2` and
/// `https` one client per endpoint (and TLS settings) whose connector always dials that
/// endpoint. So the request's URI can carry the authority the upstream should see —
/// for HTTP/2 the `:authority`, which is the client's host (or the route's
/// `host_rewrite`), as an HTTP/1.1 upstream sees it in `host` — while the connection
/// goes to the endpoint picked; two TLS services on one address with different roots
/// never share a connection.
#[derive(Debug)]
pub struct Clients {
    http1: Client<HttpConnector, RequestBody>,
    /// This worker's own map: the lock is never contended. Cleared when it grows past
    /// [`MAX_PINNED`] (endpoints that come and go): idle connections then reconnect.
    pinned: Mutex<HashMap<PinKey, Client<Pinned, RequestBody>>>,
    tcp: HttpConnector,
    idle_timeout: Duration,
    /// What these clients were built from, for [`Clients::sibling`].
    options: UpstreamOptions,
}

/// (protocol, TLS settings' key or 0, endpoint).
type PinKey = (Protocol, u64, http::uri::Authority);

/// Pinned clients kept per worker before the map is cleared.
const MAX_PINNED: usize = 4096;

impl Clients {
    pub fn new(options: &UpstreamOptions) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(options.connect_timeout));
        let http1 = builder(false, options.idle_timeout).build(tcp.clone());
        // Pinned connectors dial `http://endpoint` whatever the request's scheme.
        tcp.enforce_http(false);
        Self {
            http1,
            pinned: Mutex::new(HashMap::new()),
            tcp,
            idle_timeout: options.idle_timeout,
            options: options.clone(),
        }
    }

    /// What these clients were built from.
    pub fn options(&self) -> &UpstreamOptions {
        &self.options
    }

    /// Clients with the same settings and no connections, for another runtime (the
    /// mirror thread's).
    pub fn sibling(&self) -> Self {
        Self::new(&self.options)
    }

    /// Sends `req` with the client for `protocol` to `endpoint`. The URI's scheme is
    /// `https` for TLS protocols; its authority is the endpoint for `http1` (the shared
    /// client dials it) and the authority the upstream should see for the others.
    pub fn request(
        &self,
        protocol: Protocol,
        tls: Option<&Arc<ServiceTls>>,
        endpoint: &http::uri::Authority,
        req: http::Request<RequestBody>,
    ) -> ResponseFuture {
        if protocol == Protocol::Http1 {
            return self.http1.request(req);
        }
        let key = (protocol, tls.map_or(0, |t| t.key), endpoint.clone());
        let client = {
            let mut clients = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
            if clients.len() >= MAX_PINNED && !clients.contains_key(&key) {
                clients.clear();
            }
            clients
                .entry(key)
                .or_insert_with(|| {
                    builder(protocol.is_http2(), self.idle_timeout).build(Pinned::new(
                        self.tcp.clone(),
                        protocol,
                        endpoint,
                        tls.cloned(),
                    ))
                })
                .clone()
        };
        client.request(req)
    }
}

fn builder(http2: bool, idle_timeout: Duration) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout);
    if http2 {
        b.http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10));
    }
    b
}

/// The request body sent upstream: an HTTP/2 client's stream, a body the HTTP/1.1
/// engine already holds whole, or one it is still reading (handed over a channel).
/// `finished` turns true once the last byte has been handed to hyper: until then an
/// upstream owes no answer, so the wait for the response head is not timed out.
#[derive(Debug)]
pub struct RequestBody {
    kind: BodyKind,
    finished: Option<Arc<AtomicBool>>,
}

#[derive(Debug)]
enum BodyKind {
    /// A stream of our own HTTP/2 server ([`crate::h2`]).
    H2(crate::h2::RequestStream),
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Chunk>),
}

/// What the HTTP/1.1 engine sends over a body channel. The body ends only at `End`: a
/// channel closed without it (the client went away) is an error, so a cut-off body is
/// never taken for a complete one.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    End,
}

impl RequestBody {
    pub(crate) fn h2(stream: crate::h2::RequestStream) -> Self {
        Self::new(BodyKind::H2(stream))
    }

    pub fn full(data: Bytes) -> Self {
        Self::new(BodyKind::Full((!data.is_empty()).then_some(data)))
    }

    /// A body fed through the returned sender.
    pub fn channel() -> (Self, mpsc::Sender<Chunk>) {
        let (tx, rx) = mpsc::channel(4);
        (Self::new(BodyKind::Channel(rx)), tx)
    }

    fn new(kind: BodyKind) -> Self {
        let mut body = Self {
            kind,
            finished: None,
        };
        if !body.is_end_stream() {
            body.finished = Some(Arc::new(AtomicBool::new(false)));
        }
        body
    }

    /// The whole body when it is all in hand (an ended client stream: empty), for a
    /// client that sends head and body in one write.
    pub fn whole(&self) -> Option<Bytes> {
        match &self.kind {
            BodyKind::Full(data) => Some(data.clone().unwrap_or_default()),
            _ => None,
        }
    }

    /// Whether the whole body has been taken (always true for an empty one).
    pub fn finished_flag(&self) -> Option<Arc<AtomicBool>> {
        self.finished.clone()
    }

    fn finish(&self) {
        if let Some(f) = &self.finished {
            f.store(true, Ordering::Release);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the client stopped sending the request body")]
struct BodyAborted;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            BodyKind::H2(s) => s.poll_frame(cx),
            BodyKind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyKind::Channel(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Chunk::Data(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
                Poll::Ready(Some(Chunk::End)) => {
                    rx.close();
                    Poll::Ready(None)
                }
                Poll::Ready(None) => Poll::Ready(Some(Err(BodyAborted.into()))),
                Poll::Pending => Poll::Pending,
            },
        };
        if matches!(polled, Poll::Ready(None)) || this.is_end_stream() {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::H2(s) => s.is_end_stream(),
            BodyKind::Full(data) => data.is_none(),
            BodyKind::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::H2(s) => s.size_hint(),
            BodyKind::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Channel(_) => SizeHint::default(),
        }
    }
}

// ---- TLS ----

/// A TLS service's settings, built once per snapshot ([`crate::compile`]): its rustls
/// config (ALPN by protocol; `ca_pem` or the system roots) and `tls.server_name` — or
/// why they cannot be used (every connection then fails with that reason).
#[derive(Debug)]
pub struct ServiceTls {
    /// Which client (and so which pool) the service's requests take: the same service
    /// with the same settings in the next snapshot keeps its connections.
    key: u64,
    service: Box<str>,
    settings: Result<(Arc<rustls::ClientConfig>, Option<ServerName<'static>>), String>,
}

impl ServiceTls {
    /// Equal for the same service with the same TLS settings, across snapshots.
    pub fn key(&self) -> u64 {
        self.key
    }

    pub fn build(service: &Service) -> Arc<Self> {
        use std::hash::{Hash, Hasher};
        let tls = service.tls();
        let mut h = std::hash::DefaultHasher::new();
        (
            service.name().as_str(),
            service.protocol(),
            tls.and_then(|t| t.server_name()),
            tls.and_then(|t| t.ca_pem()),
        )
            .hash(&mut h);
        let settings = client_config(service).and_then(|config| {
            let name = match tls.and_then(|t| t.server_name()) {
                Some(n) => Some(
                    ServerName::try_from(n.to_owned())
                        .map_err(|_| format!("tls.server_name {n:?} is not a valid name"))?,
                ),
                None => None,
            };
            Ok((config, name))
        });
        if let Err(e) = &settings {
            tracing::warn!(service = %service.name(), error = %e, "upstream TLS settings cannot be used");
        }
        Arc::new(Self {
            key: h.finish(),
            service: service.name().as_str().into(),
            settings,
        })
    }
}

/// The rustls client config for a TLS service: TLS 1.2/1.3 with the workspace's
/// provider, `ca_pem` (replacing the system roots) or the system roots, ALPN by
/// protocol.
fn client_config(service: &Service) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match service.tls().and_then(|t| t.ca_pem()) {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("tls.ca_pem: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.ca_pem: not a usable root certificate: {e}"))?;
            }
            Arc::new(roots)
        }
        None => Arc::clone(system_roots()),
    };
    let mut config =
        rustls::ClientConfig::builder_with_provider(routemaster_runtime::tls::provider())
            .with_protocol_versions(routemaster_runtime::tls::PROTOCOL_VERSIONS)
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = match service.protocol() {
        Protocol::H2 => vec![b"h2".to_vec()],
        _ => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// The operating system's trust store (rustls-native-certs: `/etc/ssl/certs` on Debian,
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` when set), read once on first use.
fn system_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's root certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                ignored,
                "no system root certificates found: TLS upstreams without tls.ca_pem will fail verification"
            );
        }
        Arc::new(roots)
    })
}

/// Why a TLS upstream connection failed; the request gets a 502 naming TLS.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsConnectError(pub String);

/// Dials one endpoint, whatever the request's URI says; then TLS with its service's
/// settings (SNI: `tls.server_name`, else the endpoint's host) for `h2`/`https`.
#[derive(Debug, Clone)]
pub struct Pinned {
    tcp: HttpConnector,
    protocol: Protocol,
    endpoint: http::uri::Authority,
    target: Uri,
    tls: Option<Arc<ServiceTls>>,
}

impl Pinned {
    fn new(
        tcp: HttpConnector,
        protocol: Protocol,
        endpoint: &http::uri::Authority,
        tls: Option<Arc<ServiceTls>>,
    ) -> Self {
        let target = Uri::builder()
            .scheme("http")
            .authority(endpoint.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Self {
            tcp,
            protocol,
            endpoint: endpoint.clone(),
            target,
            tls,
        }
    }
}

impl tower_service::Service<Uri> for Pinned {
    type Response = UpConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(self.target.clone());
        let (protocol, endpoint, tls) = (self.protocol, self.endpoint.clone(), self.tls.clone());
        Box::pin(async move {
            let tls = match tls {
                None if protocol.is_tls() => {
                    return Err(TlsConnectError(format!("no TLS settings for {endpoint}")).into());
                }
                None => return Ok(UpConn::Plain(connecting.await?)),
                Some(tls) => tls,
            };
            let service = &tls.service;
            let (config, name) = tls.settings.clone().map_err(|e| {
                tracing::warn!(%service, upstream = %endpoint, error = %e, "upstream TLS connection refused");
                TlsConnectError(e)
            })?;
            let name = match name {
                Some(n) => n,
                None => {
                    let host = endpoint.host();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    ServerName::try_from(host.to_owned()).map_err(|_| {
                        tracing::warn!(%service, upstream = %endpoint, "the instance's host is not a TLS server name; set tls.server_name");
                        TlsConnectError(format!("{host:?} is not a TLS server name"))
                    })?
                }
            };
            let tcp = connecting.await?.into_inner();
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
                tracing::warn!(
                    %service,
                    upstream = %endpoint,
                    server_name = ?name,
                    error = %e,
                    "upstream TLS handshake failed"
                );
                TlsConnectError(format!("TLS handshake with {endpoint} failed: {e}"))
            })?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if protocol == Protocol::H2 && !h2 {
                tracing::warn!(%service, upstream = %endpoint, "upstream did not agree to HTTP/2 (ALPN h2)");
                return Err(TlsConnectError(format!(
                    "{endpoint} did not agree to HTTP/2 in the TLS handshake (ALPN h2)"
                ))
                .into());
            }
            Ok(UpConn::Tls(Box::new(TlsConn {
                io: TokioIo::new(stream),
                h2,
            })))
        })
    }
}

/// An upstream connection of a pinned client: plain TCP or TLS.
#[derive(Debug)]
pub enum UpConn {
    Plain(TokioIo<TcpStream>),
    // Boxed: a TLS session is far larger than a socket.
    Tls(Box<TlsConn>),
}

impl Connection for UpConn {
    fn connected(&self) -> Connected {
        match self {
            UpConn::Plain(io) => io.connected(),
            UpConn::Tls(io) => io.connected(),
        }
    }
}

impl hyper::rt::Read for UpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpConn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            UpConn::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpConn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            UpConn::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpConn::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpConn::Tls(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpConn::Plain(io) => io.is_write_vectored(),
            UpConn::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpConn::Plain(io) => Pin::new(io).poll_flush(cx),
            UpConn::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpConn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            UpConn::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

/// A TLS connection to an upstream, as hyper's client takes it.
#[derive(Debug)]
pub struct TlsConn {
    io: TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    h2: bool,
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let connected = self.io.inner().get_ref().0.connected();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
