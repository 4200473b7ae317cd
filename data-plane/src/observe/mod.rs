//! The logging hook: the one place that sees every proxied request's final outcome,
//! whatever engine carried it. Both engines (the HTTP/1.1 engine in [`crate::h1`] and
//! hyper's HTTP/2 path in [`crate::proxy`]) build one [`Outcome`] when a request ends
//! — its response's last byte, its failure, the end of a WebSocket tunnel or of a gRPC
//! stream — and hand it to [`Observer::observe`]. Metrics ([`metrics`]) and the access
//! log ([`access_log`]) hang off it; so will whatever comes next (shadow counters).
//!
//! Cost on the HTTP/1.1 path: a few relaxed atomic adds on per-worker shards and two
//! clock reads; with the access log on, one line formatted into a per-worker buffer. No
//! lock and no allocation per request.

pub mod access_log;
pub mod h2;
pub mod metrics;
pub mod trace;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::ProxyError;
pub use metrics::{Metrics, PairMetrics};
pub use trace::TraceContext;

/// How the request came in, as counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Protocol {
    Http1 = 0,
    H2 = 1,
    /// An HTTP/1.1 request that became a WebSocket tunnel (logged when it closes).
    Websocket = 2,
    /// An HTTP/2 request with a gRPC content type.
    Grpc = 3,
}

impl Protocol {
    pub const COUNT: usize = 4;
    pub const ALL: [Protocol; Self::COUNT] = [
        Protocol::Http1,
        Protocol::H2,
        Protocol::Websocket,
        Protocol::Grpc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::Websocket => "websocket",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Who answered, and why: the access log's `flags` and the `reason` of
/// `routemaster_proxy_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// The upstream's response, relayed in full.
    Upstream = 0,
    /// The route answered with a redirect.
    Redirect,
    NoRoute,
    /// No snapshot loaded yet.
    NotReady,
    NoInstances,
    UpstreamConnect,
    /// The upstream closed or reset the connection, or sent a malformed response.
    UpstreamReset,
    UpstreamTimeout,
    /// The client sent something the proxy refuses (400, 405, 431, 501).
    BadRequest,
    /// The client stopped sending its request body (408).
    ClientTimeout,
    /// An HTTP/1.1 request to an h2c-only service (502).
    Http2Only,
    Internal,
    /// The response had started and could not be finished (either side went away):
    /// the status is what the client was told.
    Aborted,
    /// The client went away before any response (status 499, as nginx logs it).
    ClientClosed,
}

impl Reason {
    pub const COUNT: usize = 14;
    pub const ALL: [Reason; Self::COUNT] = [
        Reason::Upstream,
        Reason::Redirect,
        Reason::NoRoute,
        Reason::NotReady,
        Reason::NoInstances,
        Reason::UpstreamConnect,
        Reason::UpstreamReset,
        Reason::UpstreamTimeout,
        Reason::BadRequest,
        Reason::ClientTimeout,
        Reason::Http2Only,
        Reason::Internal,
        Reason::Aborted,
        Reason::ClientClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Upstream => "upstream",
            Reason::Redirect => "redirect",
            Reason::NoRoute => "no_route",
            Reason::NotReady => "not_ready",
            Reason::NoInstances => "no_instances",
            Reason::UpstreamConnect => "upstream_connect",
            Reason::UpstreamReset => "upstream_reset",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::BadRequest => "bad_request",
            Reason::ClientTimeout => "client_timeout",
            Reason::Http2Only => "http2_only_upstream",
            Reason::Internal => "internal",
            Reason::Aborted => "aborted",
            Reason::ClientClosed => "client_closed",
        }
    }

    /// Whether the proxy wrote the response itself (counted by reason).
    pub fn is_proxy_generated(self) -> bool {
        !matches!(
            self,
            Reason::Upstream | Reason::Aborted | Reason::ClientClosed
        )
    }

    /// Why the proxy answered with `e`.
    pub fn of(e: &ProxyError) -> Self {
        match e {
            ProxyError::BadPath(_)
            | ProxyError::MissingHost
            | ProxyError::BadHost(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::Rejected(_)
            | ProxyError::MalformedBody => Reason::BadRequest,
            ProxyError::ClientTimeout => Reason::ClientTimeout,
            ProxyError::NoRoute => Reason::NoRoute,
            ProxyError::NotReady => Reason::NotReady,
            ProxyError::NoInstances(_) => Reason::NoInstances,
            ProxyError::UpstreamConnect(_) => Reason::UpstreamConnect,
            ProxyError::UpstreamReset(_) | ProxyError::UpstreamProtocol(_) => Reason::UpstreamReset,
            ProxyError::UpstreamTimeout => Reason::UpstreamTimeout,
            ProxyError::Http2OnlyUpstream => Reason::Http2Only,
            ProxyError::Internal(_) => Reason::Internal,
            // Failures added later: by their status.
            #[allow(unreachable_patterns)]
            other => match other.status().as_u16() {
                504 => Reason::UpstreamTimeout,
                502 => Reason::UpstreamReset,
                400..=499 => Reason::BadRequest,
                _ => Reason::Internal,
            },
        }
    }
}

/// What the client asked for, borrowed from wherever the engine keeps it: bytes as
/// received (the access log escapes what JSON needs; no UTF-8 check per request).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfo<'a> {
    pub method: &'a [u8],
    pub authority: &'a [u8],
    /// The path as received, without the query.
    pub path: &'a [u8],
    /// `TLSv1.2` / `TLSv1.3` on a TLS listener.
    pub tls_version: Option<&'a str>,
    /// The server name the client asked for in its TLS handshake.
    pub tls_sni: Option<&'a [u8]>,
}

/// One request's final outcome: the record both engines fill in at the end.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// When the request head was complete.
    pub started: Instant,
    pub request_id: &'a [u8],
    pub trace: Option<&'a TraceContext>,
    pub client: SocketAddr,
    /// Empty when the access log is off (the engines only capture it when it is on).
    pub request: RequestInfo<'a>,
    pub protocol: Protocol,
    /// The route (and service) the request was counted under; `None` when it matched
    /// no route or could not be routed at all.
    pub tag: Option<&'a PairMetrics>,
    /// The upstream endpoint it went to, if one was chosen (access log only).
    pub endpoint: Option<&'a str>,
    pub status: u16,
    pub reason: Reason,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Until the upstream response head arrived.
    pub upstream_time: Option<Duration>,
}

/// What observes outcomes: metrics, the access log, and the trace settings. One per
/// process, in [`crate::state::ProxyState`].
#[derive(Debug)]
pub struct Observer {
    pub metrics: Metrics,
    /// Off by `--metrics off` (benchmarks of the hook's cost); scrapes still answer.
    record_metrics: AtomicBool,
    access_log: OnceLock<access_log::AccessLog>,
    /// `--trace-sample-ratio` as a threshold over `u64` (0: never, `u64::MAX`: always).
    sample_threshold: std::sync::atomic::AtomicU64,
}

impl Observer {
    pub fn new(workers: usize) -> Self {
        Self {
            metrics: Metrics::new(workers),
            record_metrics: AtomicBool::new(true),
            access_log: OnceLock::new(),
            sample_threshold: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `--metrics on|off`.
    pub fn set_metrics(&self, on: bool) {
        self.record_metrics.store(on, Ordering::Relaxed);
    }

    /// `--trace-sample-ratio`: the share of new traces started sampled.
    pub fn set_trace_sample_ratio(&self, ratio: f64) {
        self.sample_threshold
            .store(trace::threshold(ratio), Ordering::Relaxed);
    }

    pub fn sample_threshold(&self) -> u64 {
        self.sample_threshold.load(Ordering::Relaxed)
    }

    /// Starts the access log (once per process).
    pub fn set_access_log(&self, log: access_log::AccessLog) {
        let _ = self.access_log.set(log);
    }

    pub fn access_log(&self) -> Option<&access_log::AccessLog> {
        self.access_log.get()
    }

    /// Whether the engines should capture what the access log needs.
    pub fn logging(&self) -> bool {
        self.access_log.get().is_some()
    }

    /// The hook: one request's outcome.
    pub fn observe(&self, o: &Outcome<'_>) {
        let elapsed = o.started.elapsed();
        // No status at all: the client got nothing (logged as nginx does, 499).
        let fixed;
        let o = if o.status == 0 {
            fixed = Outcome {
                status: 499,
                reason: Reason::ClientClosed,
                ..*o
            };
            &fixed
        } else {
            o
        };
        if self.record_metrics.load(Ordering::Relaxed) {
            self.metrics.record(o, elapsed);
        }
        if let Some(log) = self.access_log.get() {
            log.write(o, elapsed);
        }
    }
}
