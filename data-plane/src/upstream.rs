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
use hyper::body::Incoming;
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

/// One hyper client per upstream protocol; for TLS ones, one per service (each has
/// its own roots and server name, and hyper's pool is keyed by scheme and address only).
#[derive(Debug)]
pub struct Clients {
    http1: Client<HttpConnector, RequestBody>,
    h2c: Client<HttpConnector, RequestBody>,
    /// TLS clients by [`ServiceTls`] key, made on a service's first request. This
    /// worker's own map: the lock is never contended.
    tls: Mutex<HashMap<u64, Client<TlsConnector, RequestBody>>>,
    tls_tcp: HttpConnector,
    idle_timeout: Duration,
}

impl Clients {
    pub fn new(options: &UpstreamOptions) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(options.connect_timeout));
        let mut tls_tcp = tcp.clone();
        // The TLS connector hands this connector `https://` URIs.
        tls_tcp.enforce_http(false);
        Self {
            http1: builder(false, options.idle_timeout).build(tcp.clone()),
            h2c: builder(true, options.idle_timeout).build(tcp),
            tls: Mutex::new(HashMap::new()),
            tls_tcp,
            idle_timeout: options.idle_timeout,
        }
    }

    /// Sends `req` (its URI: `http://` for plain protocols, `https://` for TLS ones, and
    /// the endpoint's authority) with the client for `protocol` (and `tls`, for TLS).
    pub fn request(
        &self,
        protocol: Protocol,
        tls: Option<&Arc<ServiceTls>>,
        req: http::Request<RequestBody>,
    ) -> ResponseFuture {
        match (protocol, tls) {
            (Protocol::H2c, _) => self.h2c.request(req),
            (Protocol::Https | Protocol::H2, Some(tls)) => {
                let client = {
                    let mut clients = self.tls.lock().unwrap_or_else(|e| e.into_inner());
                    clients
                        .entry(tls.key)
                        .or_insert_with(|| {
                            builder(tls.protocol == Protocol::H2, self.idle_timeout).build(
                                TlsConnector {
                                    tcp: self.tls_tcp.clone(),
                                    tls: Arc::clone(tls),
                                },
                            )
                        })
                        .clone()
                };
                client.request(req)
            }
            _ => self.http1.request(req),
        }
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
    Incoming(Incoming),
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
    pub fn incoming(body: Incoming) -> Self {
        Self::new(BodyKind::Incoming(body))
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
            BodyKind::Incoming(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
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
            BodyKind::Incoming(b) => b.is_end_stream(),
            BodyKind::Full(data) => data.is_none(),
            BodyKind::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Incoming(b) => b.size_hint(),
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
    protocol: Protocol,
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
            protocol: service.protocol(),
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

/// Connects TCP, then TLS with one service's settings (SNI: `tls.server_name`, else
/// the instance's host).
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tcp: HttpConnector,
    tls: Arc<ServiceTls>,
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = Arc::clone(&self.tls);
        let connecting = self.tcp.call(uri.clone());
        Box::pin(async move {
            let service = &tls.service;
            let (config, name) = tls.settings.clone().map_err(|e| {
                tracing::warn!(%service, upstream = %uri, error = %e, "upstream TLS connection refused");
                TlsConnectError(e)
            })?;
            let name = match name {
                Some(n) => n,
                None => {
                    let host = uri.host().unwrap_or_default();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    ServerName::try_from(host.to_owned()).map_err(|_| {
                        tracing::warn!(%service, upstream = %uri, "the instance's host is not a TLS server name; set tls.server_name");
                        TlsConnectError(format!("{host:?} is not a TLS server name"))
                    })?
                }
            };
            let tcp = connecting.await?.into_inner();
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
                tracing::warn!(
                    %service,
                    upstream = %uri,
                    server_name = ?name,
                    error = %e,
                    "upstream TLS handshake failed"
                );
                TlsConnectError(format!("TLS handshake with {uri} failed: {e}"))
            })?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if tls.protocol == Protocol::H2 && !h2 {
                tracing::warn!(%service, upstream = %uri, "upstream did not agree to HTTP/2 (ALPN h2)");
                return Err(TlsConnectError(format!(
                    "{uri} did not agree to HTTP/2 in the TLS handshake (ALPN h2)"
                ))
                .into());
            }
            Ok(TlsConn {
                io: TokioIo::new(stream),
                h2,
            })
        })
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
