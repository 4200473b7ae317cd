//! The logging hook on hyper's path (HTTP/2 and gRPC): [`crate::proxy`] notes what it
//! learned about a request in [`Facts`] (returned beside the response), and the HTTP/2
//! server wraps the response body in an [`ObservedBody`] that counts the data frames and
//! reports the [`Outcome`] when hyper drops it — after the last frame (a gRPC
//! stream's trailers included) or when the stream is reset.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};

use super::{Outcome, PairMetrics, Protocol, Reason, RequestInfo, TraceContext};
use crate::body::{BoxError, ProxyBody};
use crate::state::ProxyState;

/// What the request path learned, handed to the server with the response.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub tag: Option<Arc<PairMetrics>>,
    pub trace: Option<TraceContext>,
    /// The caller's `tracestate` goes up (its `traceparent` was valid).
    pub keep_tracestate: bool,
    pub reason: Option<Reason>,
    /// Kept only when the access log is on.
    pub endpoint: Option<http::uri::Authority>,
    pub upstream_time: Option<Duration>,
    /// The request's id (a response filter may hide it from the response).
    pub request_id: Option<HeaderValue>,
}

/// The request as the access log shows it (owned: the request is gone by the end).
#[derive(Debug)]
pub struct RequestCopy {
    pub method: Method,
    pub authority: Option<HeaderValue>,
    pub uri: Uri,
    pub tls: Option<TlsCopy>,
}

/// The TLS session's version and SNI, taken once per connection.
#[derive(Debug, Clone)]
pub struct TlsCopy {
    pub version: &'static str,
    pub sni: Option<Arc<str>>,
}

impl TlsCopy {
    pub fn of(info: Option<(&'static str, Option<&str>)>) -> Option<Self> {
        info.map(|(version, sni)| Self {
            version,
            sni: sni.map(Arc::from),
        })
    }
}

impl RequestCopy {
    pub fn of<B>(req: &http::Request<B>, tls: Option<&TlsCopy>) -> Self {
        Self {
            method: req.method().clone(),
            authority: req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| req.headers().get(http::header::HOST).cloned()),
            uri: req.uri().clone(),
            tls: tls.cloned(),
        }
    }
}

/// Reports the outcome when dropped.
#[derive(Debug)]
pub struct Finish {
    state: Arc<ProxyState>,
    started: Instant,
    client: SocketAddr,
    /// Boxed: only the access log wants it, and the body that carries this is moved
    /// a few times per request.
    request: Option<Box<RequestCopy>>,
    request_id: Option<HeaderValue>,
    protocol: Protocol,
    status: u16,
    facts: Facts,
    bytes_in: u64,
    bytes_out: u64,
    failed: bool,
}

impl Finish {
    /// `bytes_in` is the request's declared `content-length` (0 without one); `facts`
    /// what the request path learned ([`crate::proxy::Proxy::respond`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: Arc<ProxyState>,
        started: Instant,
        client: SocketAddr,
        request: Option<Box<RequestCopy>>,
        grpc: bool,
        bytes_in: u64,
        resp: &http::Response<ProxyBody>,
        mut facts: Facts,
    ) -> Self {
        let request_id = facts.request_id.take().or_else(|| {
            resp.headers()
                .get(&crate::forwarding::X_REQUEST_ID)
                .cloned()
        });
        Self {
            state,
            started,
            client,
            request,
            request_id,
            protocol: if grpc { Protocol::Grpc } else { Protocol::H2 },
            status: resp.status().as_u16(),
            facts,
            bytes_in,
            bytes_out: 0,
            failed: false,
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let reason = match self.facts.reason {
            Some(Reason::Upstream) | None if self.failed => Reason::Aborted,
            Some(r) => r,
            None => Reason::Upstream,
        };
        let request = self
            .request
            .as_ref()
            .map_or_else(RequestInfo::default, |r| RequestInfo {
                method: r.method.as_str().as_bytes(),
                authority: r
                    .authority
                    .as_ref()
                    .and_then(|a| a.to_str().ok())
                    .unwrap_or_default()
                    .as_bytes(),
                path: r.uri.path().as_bytes(),
                tls_version: r.tls.as_ref().map(|t| t.version),
                tls_sni: r
                    .tls
                    .as_ref()
                    .and_then(|t| t.sni.as_deref())
                    .map(str::as_bytes),
            });
        self.state.observe.observe(&Outcome {
            started: self.started,
            request_id: self.request_id.as_ref().map_or(&[][..], |v| v.as_bytes()),
            trace: self.facts.trace.as_ref(),
            client: self.client,
            request,
            protocol: self.protocol,
            tag: self.facts.tag.as_deref(),
            endpoint: self
                .facts
                .endpoint
                .as_ref()
                .map(http::uri::Authority::as_str),
            status: self.status,
            reason,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            upstream_time: self.facts.upstream_time,
        });
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports its request's outcome when it is dropped.
    #[derive(Debug)]
    pub struct ObservedBody {
        #[pin]
        inner: ProxyBody,
        finish: Finish,
    }
}

impl ObservedBody {
    pub fn new(inner: ProxyBody, finish: Finish) -> Self {
        Self { inner, finish }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.finish.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish.failed = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
