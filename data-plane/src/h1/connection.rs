//! One client connection on the HTTP/1.1 engine: the keep-alive loop, reading heads
//! under the header-read and keep-alive timeouts, and per request the exchange with the
//! upstream (phase 6) with its retry rule and its one place where a failure becomes a
//! response ([`Conn::forward`]).
//!
//! Buffers are borrowed from the worker's free list while a request is in progress and
//! returned as soon as the connection goes idle, so an idle keep-alive connection holds
//! no buffer at all.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Engine;
use super::buffers;
use super::chunked::Chunked;
use super::head::{Framing, RequestId};
use super::io::{Counted, lingering_close, within, write_all_2};
use super::relay::{self, Failure, ResponseCtx, Seen};
use super::request::{self, Next, Rejected, Request, Spans, set_attempts};
use super::response::{ClientSide, write_own};
use super::stream::ClientStream;
use crate::compile::{Cluster, EndpointGuard};
use crate::error::ProxyError;
use crate::health::RetrySlot;
use crate::mirror::MirrorSlot;
use crate::observe::metrics::{OpenConn, ServiceMetrics};
use crate::observe::{Outcome, PairMetrics, Protocol, Reason, RequestInfo, TraceContext};
use crate::server::ConnectionSlot;
use crate::shadow::ShadowSlot;
use crate::stats::InFlight;
use routemaster_common::model::{Filters, Retry};

/// A connection that starts with the HTTP/2 preface is handed to our HTTP/2 session.
use crate::h2::PREFACE;

/// Generic over the client stream ([`ClientStream`]: plain TCP, or TLS from
/// `--tls-listen`), monomorphised: plain TCP pays nothing for TLS.
pub(super) struct Conn<S = TcpStream> {
    engine: Arc<Engine>,
    stream: S,
    client: SocketAddr,
    /// Bytes read from the client not yet consumed; no capacity while idle.
    inbuf: Vec<u8>,
    first: bool,
    /// This connection's place under `--max-connections`, held until it closes.
    _slot: ConnectionSlot,
    /// What the TLS handshake settled (`None`: plain HTTP).
    tls: Option<crate::tls::Session>,
}

/// Why reading the next request stopped without one.
enum Stop {
    /// Clean end: the client closed, idled out, or we are draining.
    Close,
    /// The head did not arrive in time.
    Timeout {
        partial: bool,
    },
    Rejected(Rejected),
    /// The connection speaks HTTP/2 (prior knowledge).
    H2,
}

/// How far an exchange got, for deciding what a failure means.
#[derive(Debug, Default)]
struct Progress {
    /// The response head went to the client: a failure now can only close.
    response_started: bool,
    /// The whole request body was taken from the client.
    request_done: bool,
    /// Bytes at the start of `inbuf` that belong to this request and are still there.
    undrained: usize,
}

impl<S: ClientStream> Conn<S> {
    pub(super) fn new(
        engine: Arc<Engine>,
        stream: S,
        client: SocketAddr,
        slot: ConnectionSlot,
    ) -> Self {
        Self {
            engine,
            stream,
            client,
            inbuf: Vec::new(),
            first: true,
            _slot: slot,
            tls: None,
        }
    }

    /// This connection came through a TLS handshake that settled `session`.
    pub(super) fn with_tls(mut self, session: crate::tls::Session) -> Self {
        self.tls = Some(session);
        self
    }

    /// Serves requests until the connection ends.
    pub(super) async fn run(mut self) {
        // One timer for the connection's life: resetting it to a later deadline is a
        // lock-free update in tokio, so the idle wait costs no timer-wheel work.
        let timer = tokio::time::sleep(self.engine.options.header_read_timeout);
        tokio::pin!(timer);
        loop {
            let req = match self.read_request(timer.as_mut()).await {
                Ok(req) => req,
                Err(Stop::Close) => break,
                Err(Stop::Timeout { partial }) => {
                    const TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    if partial {
                        let started = std::time::Instant::now();
                        let written = self.stream.write_all(TIMEOUT).await.is_ok();
                        {
                            // Scoped: nothing of this lives across the await below.
                            let id = RequestId::from_client_or_new(None);
                            let sent = if written { TIMEOUT.len() as u64 } else { 0 };
                            let bytes_in = self.inbuf.len() as u64;
                            self.observe_unrouted(
                                started,
                                &id,
                                408,
                                Reason::ClientTimeout,
                                bytes_in,
                                sent,
                            );
                        }
                        if written {
                            lingering_close(&mut self.stream).await;
                        }
                    }
                    break;
                }
                Err(Stop::Rejected(r)) => {
                    self.reject(r).await;
                    break;
                }
                Err(Stop::H2) => {
                    let Conn {
                        engine,
                        stream,
                        client,
                        inbuf,
                        _slot,
                        tls,
                        ..
                    } = self;
                    // Boxed: hyper's connection state would otherwise enlarge every
                    // HTTP/1.1 connection's future too.
                    Box::pin(super::h2::serve(&engine, stream, inbuf, client, tls)).await;
                    return;
                }
            };
            self.first = false;
            // Boxed so that an idle connection carries only the small reading state;
            // the request's larger state exists while the request does.
            if !Box::pin(self.handle(req, timer.as_mut())).await {
                break;
            }
            if self.inbuf.is_empty() {
                buffers::give(std::mem::take(&mut self.inbuf));
            }
        }
        buffers::give(std::mem::take(&mut self.inbuf));
    }

    async fn read_request(&mut self, mut timer: Pin<&mut Sleep>) -> Result<Request, Stop> {
        let options = &self.engine.options;
        // The header-read deadline runs from accept for the first request, and from
        // the first byte of a head that did not arrive whole for the others.
        let mut armed = self.first;
        let mut idle = !self.first && self.inbuf.is_empty();
        // Whether the read below is bounded by the timer: always, except right after
        // a complete request, when the keep-alive wait sets it.
        let mut bounded = armed;
        loop {
            if !self.inbuf.is_empty() {
                if self.first
                    && PREFACE.starts_with(&self.inbuf[..self.inbuf.len().min(PREFACE.len())])
                {
                    if self.inbuf.len() >= PREFACE.len() {
                        return Err(Stop::H2);
                    }
                } else if let Some(req) = request::prepare_on(
                    &self.inbuf,
                    options.max_header_bytes,
                    self.client,
                    &self.engine.state,
                    self.tls.as_ref(),
                )
                .map_err(Stop::Rejected)?
                {
                    return Ok(req);
                }
                if !armed {
                    timer
                        .as_mut()
                        .reset(Instant::now() + options.header_read_timeout);
                    armed = true;
                    bounded = true;
                }
            }
            if idle {
                // Between requests: no buffer, just readiness and the keep-alive
                // timeout. A drain does not wait for idle connections: they are dropped
                // with the worker's runtime once the busy ones are done.
                idle = false;
                if self.engine.drain.is_draining() {
                    return Err(Stop::Close);
                }
                timer
                    .as_mut()
                    .reset(Instant::now() + options.keepalive_timeout);
                tokio::select! {
                    biased;
                    ready = self.stream.readable() => ready.map_err(|_| Stop::Close)?,
                    () = &mut timer => return Err(Stop::Close),
                }
                // Readiness can be stale (the last read filled the buffer exactly):
                // the keep-alive deadline keeps bounding the read that follows.
                bounded = true;
            }
            if self.inbuf.capacity() == 0 {
                self.inbuf = buffers::take();
            } else if self.inbuf.len() == self.inbuf.capacity() {
                self.inbuf.reserve(self.inbuf.capacity());
            }
            let read = tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.inbuf) => r,
                () = &mut timer, if bounded => {
                    return Err(Stop::Timeout { partial: !self.inbuf.is_empty() });
                }
            };
            match read {
                Ok(0) | Err(_) => return Err(Stop::Close),
                Ok(_) => {}
            }
        }
    }

    /// Phases 1–7 for one request. Returns whether the connection stays open.
    async fn handle(&mut self, req: Request, timer: Pin<&mut Sleep>) -> bool {
        let engine = Arc::clone(&self.engine);
        let _busy = Busy::enter(&engine);
        let _in_flight = InFlight::start(&engine.state.stats);
        let observer = &engine.state.observe;
        // What the access log shows of the request, copied while the head is here.
        let line = observer
            .logging()
            .then(|| RequestLine::copy(&self.inbuf, &req.spans, self.stream.tls_info()));
        let client = ClientSide {
            http10: req.http10,
            head_method: req.head_method,
            keep_alive: req.keep_alive
                && !self.engine.drain.is_draining()
                && !self.engine.state.is_draining(),
            websocket: req.websocket,
        };
        let Request {
            head_len,
            body,
            request_id,
            next,
            expect_continue,
            idempotent,
            tag,
            trace,
            ..
        } = req;
        let mut facts = Facts {
            started: std::time::Instant::now(),
            status: 499,
            reason: Reason::ClientClosed,
            bytes_in: head_len as u64,
            bytes_out: 0,
            upstream_time: None,
            protocol: Protocol::Http1,
            endpoint: None,
        };
        let keep = match next {
            Next::Respond(resp, reason) => {
                // A body we do not read would be taken for the next request: close.
                let keep = client.keep_alive && matches!(body, Framing::Empty | Framing::Length(0));
                let client = ClientSide {
                    keep_alive: keep,
                    ..client
                };
                facts.status = resp.status().as_u16();
                facts.reason = reason;
                let keep = self
                    .answer(&resp, &request_id, client, &mut facts.bytes_out)
                    .await;
                if keep {
                    self.inbuf.drain(..head_len);
                }
                keep
            }
            // Services this engine's pool does not speak: the shared upstream clients.
            Next::Bridge(bridged) => {
                let exchange = super::bridge::Exchange {
                    proxy: &engine.h2_proxy,
                    client_ip: self.client.ip(),
                    client,
                    request_id: &request_id,
                    trace: &trace,
                    head_len,
                    body,
                    expect_continue,
                    io_timeout: engine.options.io_timeout,
                };
                let outcome = bridge(&mut self.stream, &mut self.inbuf, *bridged, exchange).await;
                facts.status = outcome.status;
                // The bridge does not say who answered yet: the upstream, unless cut.
                if outcome.status != 0 {
                    facts.reason = Reason::Upstream;
                }
                if outcome.keep_alive {
                    self.inbuf.drain(..outcome.consumed);
                }
                outcome.keep_alive
            }
            Next::Forward {
                head,
                endpoint,
                timeout,
                filters,
                shadow,
                retry,
                mirror,
            } => {
                // A sampled request's copy, taken from the head as written for the
                // primary (only routes with a mirror get here with one).
                let mirror = mirror.and_then(|target| {
                    let has_body = !matches!(body, Framing::Empty | Framing::Length(0));
                    MirrorSlot::prepare(target, &engine.h2_proxy, &head, has_body)
                });
                let pending = endpoint
                    .cluster()
                    .limits()
                    .map(|_| Arc::clone(endpoint.cluster()));
                let forward = Forward {
                    head_len,
                    body,
                    expect_continue,
                    idempotent,
                    upstream_head: head,
                    timeout,
                    filters,
                    shadow,
                    retry,
                    pending,
                    mirror,
                };
                let exchange = Exchange {
                    client,
                    request_id: &request_id,
                    trace: &trace,
                    tag: tag.as_deref(),
                    log: line.is_some(),
                };
                self.forward(forward, endpoint, exchange, timer, &mut facts)
                    .await
            }
        };
        observer.observe(&Outcome {
            started: facts.started,
            request_id: request_id.as_bytes(),
            trace: Some(&trace),
            client: self.client,
            request: line
                .as_ref()
                .map_or_else(RequestInfo::default, RequestLine::info),
            protocol: facts.protocol,
            tag: tag.as_deref(),
            endpoint: facts.endpoint.as_ref().map(http::uri::Authority::as_str),
            status: facts.status,
            reason: facts.reason,
            bytes_in: facts.bytes_in,
            bytes_out: facts.bytes_out,
            upstream_time: facts.upstream_time,
        });
        if let Some(line) = line {
            buffers::give(line.buf);
        }
        keep
    }

    /// Phase 6–7 and the one place where an exchange failure becomes a response. With a
    /// retry policy, failed tries are retried here (on another endpoint where one
    /// exists) as long as nothing was relayed, the request is safe to send again and its
    /// body is all in hand, the budget allows and the route deadline has not passed.
    async fn forward(
        &mut self,
        mut fwd: Forward,
        endpoint: EndpointGuard,
        ex: Exchange<'_>,
        mut timer: Pin<&mut Sleep>,
        facts: &mut Facts,
    ) -> bool {
        let Exchange {
            client,
            request_id,
            trace,
            tag,
            log,
        } = ex;
        let mut progress = Progress::default();
        let seen = Seen::new(facts.started);
        let started = Instant::now();
        let deadline = fwd.timeout.map(|t| started + t);
        let retry = fwd.retry.take();
        // Retries need the whole request in hand: a body that came with the head.
        let body_kept = match fwd.body {
            Framing::Empty => true,
            Framing::Length(n) => self.inbuf.len().saturating_sub(fwd.head_len) as u64 >= n,
            Framing::Chunked | Framing::UntilClose => false,
        };
        let mut endpoint = endpoint;
        let mut tried = 0u64;
        let mut attempt = 1u32;
        let mut _budget: Option<RetrySlot> = None;
        let result = loop {
            tried |= endpoint.bit();
            if log {
                facts.endpoint = Some(endpoint.authority().clone());
            }
            let more = retry
                .as_deref()
                .filter(|r| attempt <= r.attempts() && body_kept && !client.websocket);
            let idempotent_ok = more.is_some_and(|r| fwd.idempotent || r.non_idempotent());
            let per_try = more
                .and_then(Retry::per_try_timeout)
                .map(|p| Instant::now() + p);
            let limit = match (deadline, per_try) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            };
            let exchange = self.exchange(
                &fwd,
                endpoint.authority().as_str(),
                client,
                request_id,
                &mut progress,
                timer.as_mut(),
                Observed {
                    seen: &seen,
                    service: tag.and_then(PairMetrics::service_arc),
                    facts: &mut *facts,
                },
                more.filter(|_| idempotent_ok),
            );
            let result = match limit {
                Some(at) => tokio::time::timeout_at(at, exchange)
                    .await
                    .unwrap_or_else(|_| {
                        Err(if deadline.is_some_and(|d| at >= d) {
                            Failure::Respond(ProxyError::UpstreamTimeout)
                        } else {
                            Failure::PerTryTimeout
                        })
                    }),
                None => exchange.await,
            };
            // Outlier detection hears every try's outcome from the upstream.
            match &result {
                Ok(_) => endpoint.record(seen.status().is_none_or(|s| s < 500)),
                Err(Failure::Status(s)) => endpoint.record(*s < 500),
                Err(Failure::PerTryTimeout) => endpoint.record(false),
                Err(Failure::Respond(e) | Failure::Retryable(e))
                    if e.side() == crate::error::Side::Upstream =>
                {
                    endpoint.record(false)
                }
                Err(_) => {}
            }
            let Some(policy) = more else { break result };
            if progress.response_started {
                break result;
            }
            let wanted = match &result {
                Err(Failure::Status(_)) => true,
                Err(Failure::PerTryTimeout) => policy.on_per_try_timeout() && idempotent_ok,
                // Nothing was sent: safe whatever the method.
                Err(Failure::Respond(ProxyError::UpstreamConnect(_))) => {
                    policy.on_connect_failure()
                }
                Err(
                    Failure::Respond(
                        ProxyError::UpstreamReset(_) | ProxyError::UpstreamProtocol(_),
                    )
                    | Failure::Retryable(ProxyError::UpstreamReset(_)),
                ) => policy.on_reset() && idempotent_ok,
                _ => false,
            };
            if !wanted || deadline.is_some_and(|d| Instant::now() >= d) {
                break result;
            }
            let cluster = Arc::clone(endpoint.cluster());
            if _budget.is_none() {
                _budget = cluster.load().try_retry();
                if _budget.is_none() {
                    break result;
                }
            }
            crate::proxy::back_off(policy, attempt, deadline).await;
            // Assigning releases the previous endpoint's slot.
            endpoint = match cluster.pick(tried) {
                Ok(next) => next,
                // Nowhere to go (limits): the last outcome stands.
                Err(_) => break result,
            };
            attempt += 1;
            cluster.load().retries.fetch_add(1, Ordering::Relaxed);
            set_attempts(&mut fwd.upstream_head, attempt);
            tracing::debug!(
                request_id = ?request_id,
                attempt,
                endpoint = %endpoint.authority(),
                "retrying"
            );
        };
        // A status given back for a retry that then could not happen is answered with
        // the same status (the body is gone with its connection).
        let result = match result {
            Err(Failure::Status(s)) => Err(Failure::Respond(ProxyError::UpstreamStatus(s))),
            Err(Failure::PerTryTimeout) => Err(Failure::Respond(ProxyError::UpstreamTimeout)),
            other => other,
        };
        drop(endpoint);
        buffers::give(fwd.upstream_head);
        facts.upstream_time = seen.upstream_time();
        match (&result, seen.status()) {
            (Ok(_), Some(status)) => {
                facts.status = status;
                facts.reason = Reason::Upstream;
            }
            (Err(Failure::Respond(e) | Failure::Retryable(e)), _) if !progress.response_started => {
                facts.status = e.status().as_u16();
                facts.reason = Reason::of(e);
            }
            (_, Some(status)) => {
                facts.status = status;
                facts.reason = Reason::Aborted;
            }
            (_, None) => {}
        }
        let keep = match result {
            Ok(keep) if progress.request_done => keep,
            Ok(_) => {
                // The upstream answered before the body was all in: the client may
                // still be sending, and closing on unread input would reset the
                // connection under the response it has not read yet.
                lingering_close(&mut self.stream).await;
                false
            }
            Err(Failure::Abort) => false,
            Err(Failure::Respond(e) | Failure::Retryable(e)) if !progress.response_started => {
                tracing::debug!(error = %e, side = ?e.side(), request_id = ?request_id, "request failed");
                let resp = e.into_traced_response(
                    request_id.as_bytes(),
                    Some(&trace.trace_id_hex()),
                    &self.engine.state.stats,
                );
                let client = ClientSide {
                    keep_alive: client.keep_alive && progress.request_done,
                    ..client
                };
                self.answer(&resp, request_id, client, &mut facts.bytes_out)
                    .await
            }
            Err(_) => false,
        };
        if keep {
            self.inbuf.drain(..progress.undrained);
        }
        keep
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        fwd: &Forward,
        authority: &str,
        client: ClientSide,
        request_id: &RequestId,
        progress: &mut Progress,
        mut timer: Pin<&mut Sleep>,
        obs: Observed<'_>,
        retry_on: Option<&Retry>,
    ) -> Result<bool, Failure> {
        let Observed {
            seen,
            service,
            facts,
        } = obs;
        let service_arc = service;
        let pool = &self.engine.pool;
        let io_timeout = self.engine.options.io_timeout;
        let ctx = ResponseCtx {
            shadow: fwd.shadow.as_ref(),
            mirror: fwd.mirror.as_deref(),
            seen,
            side: client,
            request_id,
            filter: fwd
                .filters
                .as_deref()
                .map(Filters::response_headers)
                .filter(|f| !f.is_empty()),
            max_head: self.engine.options.max_header_bytes,
            io_timeout,
            body_sent: None,
            body_streaming: None,
            retry_on,
        };
        // What of the body is here already.
        let avail = &self.inbuf[fwd.head_len..];
        let (initial, body_done, chunked) = match fwd.body {
            Framing::Empty | Framing::UntilClose => (0, true, None),
            Framing::Length(n) => {
                let k = usize::try_from(n).unwrap_or(usize::MAX).min(avail.len());
                (k, k as u64 == n, None)
            }
            Framing::Chunked => {
                let mut c = Chunked::new();
                let p = c
                    .scan(avail, |_| {})
                    .map_err(|_| Failure::Respond(ProxyError::MalformedBody))?;
                (p.compact(&mut self.inbuf, fwd.head_len), p.done, Some(c))
            }
        };
        let sent_len = fwd.head_len + initial;
        facts.bytes_in = sent_len as u64;
        if body_done {
            // Set before anything can fail: a 502 for an unreachable upstream need not
            // cost the client its connection.
            progress.request_done = true;
            progress.undrained = sent_len;
        }
        // `limits.max_pending`: requests waiting for an upstream connection (a pooled
        // one is taken at once; a new one waits for its connect).
        let pending = match &fwd.pending {
            Some(cluster) => {
                let max = cluster.limits().map(|l| l.max_pending());
                Some(cluster.load().try_pending(max).ok_or_else(|| {
                    Failure::Respond(ProxyError::Overloaded(cluster.name().into()))
                })?)
            }
            None => None,
        };
        let checkout = pool.checkout_for(authority, service_arc).await;
        drop(pending);
        if let Some(s) = service {
            match &checkout {
                Ok(up) => s.connection(up.reused),
                Err(_) => s.connect_failed(),
            }
        }
        let mut up = checkout.map_err(Failure::Respond)?;
        if body_done {
            // Everything is in hand: an upstream that closed an idle connection under
            // us gets the request again on a fresh one — if it could not have been
            // received (the write failed), or if receiving it twice is harmless.
            loop {
                let body = &self.inbuf[fwd.head_len..sent_len];
                let write = write_all_2(&mut up.stream, &fwd.upstream_head, body);
                let mut down = Counted::new(&mut self.stream);
                let outcome = match within(io_timeout, write).await {
                    Ok(()) => relay::response(
                        &mut up.stream,
                        &mut down,
                        ResponseCtx {
                            body_sent: None,
                            body_streaming: None,
                            ..ctx
                        },
                        &mut progress.response_started,
                        Some(timer.as_mut()),
                    )
                    .await
                    .map_err(|f| match f {
                        Failure::Retryable(e) if !fwd.idempotent => Failure::Respond(e),
                        other => other,
                    }),
                    Err(e) => Err(Failure::Retryable(ProxyError::UpstreamReset(e.into()))),
                };
                facts.bytes_out += down.written;
                match outcome {
                    Err(Failure::Retryable(_)) if up.reused => {
                        let fresh = pool.connect(authority).await;
                        if let Some(s) = service {
                            match &fresh {
                                Ok(_) => s.connection(false),
                                Err(_) => s.connect_failed(),
                            }
                        }
                        up.stream = fresh.map_err(Failure::Respond)?;
                        up.open = OpenConn::new(service_arc);
                        up.reused = false;
                    }
                    Ok(done) if done.switched => {
                        // One outcome for the whole tunnel, logged when it closes.
                        facts.protocol = Protocol::Websocket;
                        let options = &self.engine.options;
                        let early = &self.inbuf[sent_len..];
                        let mut client = Counted::new(&mut self.stream);
                        super::tunnel::run(
                            &mut client,
                            &mut up.stream,
                            early,
                            options.tunnel_idle_timeout,
                            io_timeout,
                        )
                        .await;
                        facts.bytes_in += early.len() as u64 + client.read;
                        facts.bytes_out += client.written;
                        return Ok(false);
                    }
                    Ok(done) => {
                        if done.upstream_reusable {
                            pool.checkin(authority, up.stream, up.open);
                        }
                        return Ok(done.client_keep_alive);
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        // The body is still coming: 100 Continue if asked, then stream it up while the
        // response streams down (an upstream may answer before it has read it all).
        if fwd.expect_continue {
            within(
                io_timeout,
                self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"),
            )
            .await
            .map_err(|_| Failure::Abort)?;
        }
        within(
            io_timeout,
            write_all_2(
                &mut up.stream,
                &fwd.upstream_head,
                &self.inbuf[fwd.head_len..sent_len],
            ),
        )
        .await
        .map_err(|e| Failure::Respond(ProxyError::UpstreamReset(e.into())))?;
        self.inbuf.drain(..sent_len);
        let left = match fwd.body {
            Framing::Length(n) => relay::BodyLeft::Length(n - initial as u64),
            _ => relay::BodyLeft::Chunked(chunked.unwrap_or_default()),
        };
        // Read by the response side: until the body is all sent, the client is told
        // the connection will close (an early answer means we stop reading it).
        let sent = AtomicBool::new(false);
        let streaming = AtomicBool::new(true);
        let mut send_failed = false;
        let (done, read, written) = {
            let (client_read, client_write) = self.stream.split();
            let mut client_read = Counted::new(client_read);
            let mut client_write = Counted::new(client_write);
            let (mut up_read, mut up_write) = up.stream.split();
            let done = {
                let send = relay::request_body(
                    &mut client_read,
                    &mut up_write,
                    &mut self.inbuf,
                    left,
                    ctx.io_timeout,
                );
                let recv = relay::response(
                    &mut up_read,
                    &mut client_write,
                    ResponseCtx {
                        body_sent: Some(&sent),
                        body_streaming: Some(&streaming),
                        ..ctx
                    },
                    &mut progress.response_started,
                    None,
                );
                tokio::pin!(send, recv);
                loop {
                    let pending = !sent.load(Ordering::Relaxed) && !send_failed;
                    // The body side first: when a stalled client and the upstream's wait
                    // for it time out together, the client is the one to blame (408).
                    tokio::select! {
                        biased;
                        s = &mut send, if pending => match s {
                            Ok(()) => {
                                sent.store(true, Ordering::Relaxed);
                                streaming.store(false, Ordering::Relaxed);
                            }
                            // The upstream stopped reading: its answer (or its failure,
                            // a 502) still comes through `recv`.
                            Err(relay::SendError::Upstream) => {
                                send_failed = true;
                                streaming.store(false, Ordering::Relaxed);
                            }
                            Err(relay::SendError::ClientTimeout) => {
                                return Err(Failure::Respond(ProxyError::ClientTimeout));
                            }
                            Err(relay::SendError::Client) => return Err(Failure::Abort),
                        },
                        r = &mut recv => break r,
                    }
                }
            };
            (done, client_read.read, client_write.written)
        };
        facts.bytes_in += read;
        facts.bytes_out += written;
        let sent = sent.into_inner();
        let done = done.map_err(|f| match f {
            Failure::Retryable(e) => Failure::Respond(e),
            other => other,
        })?;
        progress.request_done = sent;
        if sent && done.upstream_reusable {
            pool.checkin(authority, up.stream, up.open);
        }
        Ok(done.client_keep_alive && sent)
    }

    /// Answers a request we could not parse, then closes.
    async fn reject(&mut self, r: Rejected) {
        let started = std::time::Instant::now();
        let e = ProxyError::Rejected(r);
        let reason = Reason::of(&e);
        let id = RequestId::from_client_or_new(None);
        let resp = e.into_response(id.as_bytes(), &self.engine.state.stats);
        let client = ClientSide {
            http10: false,
            head_method: false,
            keep_alive: false,
            websocket: false,
        };
        let bytes_in = self.inbuf.len() as u64;
        let mut bytes_out = 0;
        self.answer(&resp, &id, client, &mut bytes_out).await;
        let status = resp.status().as_u16();
        self.observe_unrouted(started, &id, status, reason, bytes_in, bytes_out);
    }

    /// The outcome of a request that never got as far as routing: counted under no
    /// route, logged without request fields.
    fn observe_unrouted(
        &self,
        started: std::time::Instant,
        id: &RequestId,
        status: u16,
        reason: Reason,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.engine.state.observe.observe(&Outcome {
            started,
            request_id: id.as_bytes(),
            trace: None,
            client: self.client,
            request: RequestInfo::default(),
            protocol: Protocol::Http1,
            tag: None,
            endpoint: None,
            status,
            reason,
            bytes_in,
            bytes_out,
            upstream_time: None,
        });
    }

    /// Writes a response of our own. Unless the connection stays open, closes it
    /// gently (the client may still be sending). Returns whether it stays open.
    async fn answer(
        &mut self,
        resp: &http::Response<crate::body::ProxyBody>,
        request_id: &RequestId,
        client: ClientSide,
        bytes_out: &mut u64,
    ) -> bool {
        let mut out = buffers::take_small();
        write_own(&mut out, resp, request_id, client);
        let written = within(self.engine.options.io_timeout, self.stream.write_all(&out)).await;
        if written.is_ok() {
            *bytes_out += out.len() as u64;
        }
        buffers::give(out);
        match (written.is_ok(), client.keep_alive) {
            (true, true) => true,
            (true, false) => {
                lingering_close(&mut self.stream).await;
                false
            }
            (false, _) => false,
        }
    }
}

/// The exchange with a service this engine's pool does not speak, boxed where it is
/// made: a sync fn, so that hyper's client state (kilobytes) is never part of the
/// HTTP/1.1 request's own future — an async fn would keep the unboxed future's
/// storage in its state even when it is boxed before the await, and every request's
/// future is boxed and moved (see [`Conn::run`]).
fn bridge<'a, S>(
    stream: &'a mut S,
    inbuf: &'a mut Vec<u8>,
    bridged: super::bridge::Bridged,
    exchange: super::bridge::Exchange<'a>,
) -> Pin<Box<impl Future<Output = super::bridge::Outcome> + 'a>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    Box::pin(super::bridge::run(stream, inbuf, bridged, exchange))
}

/// What the request's outcome is made of, filled in as the exchange goes.
#[derive(Debug)]
struct Facts {
    started: std::time::Instant,
    status: u16,
    reason: Reason,
    bytes_in: u64,
    bytes_out: u64,
    upstream_time: Option<Duration>,
    protocol: Protocol,
    /// Only kept for the access log.
    endpoint: Option<http::uri::Authority>,
}

/// Who the exchange is for.
#[derive(Debug, Clone, Copy)]
struct Exchange<'a> {
    client: ClientSide,
    request_id: &'a RequestId,
    trace: &'a TraceContext,
    tag: Option<&'a PairMetrics>,
    /// The access log is on: keep what it shows.
    log: bool,
}

/// What the exchange reports into.
struct Observed<'a> {
    seen: &'a Seen,
    service: Option<&'a Arc<ServiceMetrics>>,
    facts: &'a mut Facts,
}

/// The request line's parts the access log shows, copied out of the read buffer (into
/// a buffer from the worker's free list) before the head is consumed.
#[derive(Debug)]
struct RequestLine {
    buf: Vec<u8>,
    method: std::ops::Range<usize>,
    authority: std::ops::Range<usize>,
    path: std::ops::Range<usize>,
    tls_version: Option<&'static str>,
    /// In `buf` too; `None` without TLS or without SNI.
    sni: Option<std::ops::Range<usize>>,
}

impl RequestLine {
    fn copy(inbuf: &[u8], spans: &Spans, tls: Option<(&'static str, Option<&str>)>) -> Self {
        let mut buf = buffers::take_small();
        buf.clear();
        let mut put = |b: &[u8]| {
            let start = buf.len();
            buf.extend_from_slice(b);
            start..buf.len()
        };
        let part = |r: &std::ops::Range<usize>| inbuf.get(r.clone()).unwrap_or_default();
        let method = put(part(&spans.method));
        let authority = put(part(&spans.authority));
        let path = put(part(&spans.path));
        let sni = tls.and_then(|(_, sni)| sni).map(|s| put(s.as_bytes()));
        Self {
            buf,
            method,
            authority,
            path,
            tls_version: tls.map(|(v, _)| v),
            sni,
        }
    }

    fn info(&self) -> RequestInfo<'_> {
        let part = |r: &std::ops::Range<usize>| self.buf.get(r.clone()).unwrap_or_default();
        RequestInfo {
            method: part(&self.method),
            authority: part(&self.authority),
            path: part(&self.path),
            tls_version: self.tls_version,
            tls_sni: self.sni.as_ref().map(part),
        }
    }
}

/// What the exchange needs from the parsed request.
struct Forward {
    head_len: usize,
    body: Framing,
    expect_continue: bool,
    idempotent: bool,
    upstream_head: Vec<u8>,
    timeout: Option<Duration>,
    filters: Option<Arc<Filters>>,
    shadow: Option<ShadowSlot>,
    /// The route's retry policy (taken by [`Conn::forward`]).
    retry: Option<Arc<Retry>>,
    /// The service when it has `limits` (for `max_pending`).
    pending: Option<Arc<Cluster>>,
    /// A sampled request's mirror, launched by the try whose response is relayed.
    mirror: Option<Box<MirrorSlot>>,
}

/// Counts a request (or an HTTP/2 connection) in progress, so a drain can wait for
/// exactly those.
pub(super) struct Busy<'e>(&'e Engine);

impl<'e> Busy<'e> {
    pub(super) fn enter(engine: &'e Engine) -> Self {
        engine.busy.fetch_add(1, Ordering::AcqRel);
        Self(engine)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.drain.is_draining() {
            self.0.drain.all_done.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open client connection is one of these futures, busy or idle: the
    /// idle-memory goal (≤ 4 KB per idle keep-alive connection, with the socket and the
    /// task) depends on it staying small. The per-request state is boxed separately.
    #[tokio::test]
    async fn an_idle_connection_is_a_small_future() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let state = Arc::new(crate::state::ProxyState::new());
        let slot = state.connections.try_acquire().unwrap();
        let engine = Arc::new(Engine::new(state, &Default::default(), Default::default()));
        let conn = Conn::new(engine, stream, "127.0.0.1:1".parse().unwrap(), slot);
        let run = conn.run();
        let size = std::mem::size_of_val(&run);
        assert!(size <= 2048, "connection future is {size} bytes");
    }
}
