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
use super::io::{lingering_close, within, write_all_2};
use super::relay::{self, Failure, ResponseCtx};
use super::request::{self, Next, Rejected, Request};
use super::response::{ClientSide, write_own};
use super::stream::ClientStream;
use crate::compile::EndpointGuard;
use crate::error::ProxyError;
use crate::server::ConnectionSlot;
use crate::stats::InFlight;
use routemaster_common::model::Filters;

/// The HTTP/2 connection preface; a connection starting with it is handed to hyper.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
                    if partial
                        && self
                            .stream
                            .write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await
                            .is_ok()
                    {
                        lingering_close(&mut self.stream).await;
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
                if self.first && H2_PREFACE.starts_with(&self.inbuf[..self.inbuf.len().min(24)]) {
                    if self.inbuf.len() >= H2_PREFACE.len() {
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
            ..
        } = req;
        match next {
            Next::Respond(resp) => {
                // A body we do not read would be taken for the next request: close.
                let keep = client.keep_alive && matches!(body, Framing::Empty | Framing::Length(0));
                let client = ClientSide {
                    keep_alive: keep,
                    ..client
                };
                let keep = self.answer(&resp, &request_id, client).await;
                if keep {
                    self.inbuf.drain(..head_len);
                }
                keep
            }
            Next::Forward {
                head,
                endpoint,
                timeout,
                filters,
            } => {
                let forward = Forward {
                    head_len,
                    body,
                    expect_continue,
                    idempotent,
                    upstream_head: head,
                    timeout,
                    filters,
                };
                self.forward(forward, endpoint, client, &request_id, timer)
                    .await
            }
        }
    }

    /// Phase 6–7 and the one place where an exchange failure becomes a response.
    async fn forward(
        &mut self,
        fwd: Forward,
        endpoint: EndpointGuard,
        client: ClientSide,
        request_id: &RequestId,
        timer: Pin<&mut Sleep>,
    ) -> bool {
        let mut progress = Progress::default();
        let exchange = self.exchange(
            &fwd,
            endpoint.authority().as_str(),
            client,
            request_id,
            &mut progress,
            timer,
        );
        let result = match fwd.timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .unwrap_or(Err(Failure::Respond(ProxyError::UpstreamTimeout))),
            None => exchange.await,
        };
        drop(endpoint);
        buffers::give(fwd.upstream_head);
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
                let resp = e.into_response(request_id.as_bytes(), &self.engine.state.stats);
                let client = ClientSide {
                    keep_alive: client.keep_alive && progress.request_done,
                    ..client
                };
                self.answer(&resp, request_id, client).await
            }
            Err(_) => false,
        };
        if keep {
            self.inbuf.drain(..progress.undrained);
        }
        keep
    }

    async fn exchange(
        &mut self,
        fwd: &Forward,
        authority: &str,
        client: ClientSide,
        request_id: &RequestId,
        progress: &mut Progress,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<bool, Failure> {
        let pool = &self.engine.pool;
        let io_timeout = self.engine.options.io_timeout;
        let ctx = ResponseCtx {
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
        if body_done {
            // Set before anything can fail: a 502 for an unreachable upstream need not
            // cost the client its connection.
            progress.request_done = true;
            progress.undrained = sent_len;
        }
        let mut up = pool.checkout(authority).await.map_err(Failure::Respond)?;
        if body_done {
            // Everything is in hand: an upstream that closed an idle connection under
            // us gets the request again on a fresh one — if it could not have been
            // received (the write failed), or if receiving it twice is harmless.
            loop {
                let body = &self.inbuf[fwd.head_len..sent_len];
                let write = write_all_2(&mut up.stream, &fwd.upstream_head, body);
                let outcome = match within(io_timeout, write).await {
                    Ok(()) => relay::response(
                        &mut up.stream,
                        &mut self.stream,
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
                match outcome {
                    Err(Failure::Retryable(_)) if up.reused => {
                        up.stream = pool.connect(authority).await.map_err(Failure::Respond)?;
                        up.reused = false;
                    }
                    Ok(done) if done.switched => {
                        let options = &self.engine.options;
                        super::tunnel::run(
                            &mut self.stream,
                            &mut up.stream,
                            &self.inbuf[sent_len..],
                            options.tunnel_idle_timeout,
                            io_timeout,
                        )
                        .await;
                        return Ok(false);
                    }
                    Ok(done) => {
                        if done.upstream_reusable {
                            pool.checkin(authority, up.stream);
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
        let done = {
            let (mut client_read, mut client_write) = self.stream.split();
            let (mut up_read, mut up_write) = up.stream.split();
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
        let sent = sent.into_inner();
        let done = done.map_err(|f| match f {
            Failure::Retryable(e) => Failure::Respond(e),
            other => other,
        })?;
        progress.request_done = sent;
        if sent && done.upstream_reusable {
            pool.checkin(authority, up.stream);
        }
        Ok(done.client_keep_alive && sent)
    }

    /// Answers a request we could not parse, then closes.
    async fn reject(&mut self, r: Rejected) {
        let e = ProxyError::Rejected(r);
        let id = RequestId::from_client_or_new(None);
        let resp = e.into_response(id.as_bytes(), &self.engine.state.stats);
        let client = ClientSide {
            http10: false,
            head_method: false,
            keep_alive: false,
            websocket: false,
        };
        self.answer(&resp, &id, client).await;
    }

    /// Writes a response of our own. Unless the connection stays open, closes it
    /// gently (the client may still be sending). Returns whether it stays open.
    async fn answer(
        &mut self,
        resp: &http::Response<crate::body::ProxyBody>,
        request_id: &RequestId,
        client: ClientSide,
    ) -> bool {
        let mut out = buffers::take_small();
        write_own(&mut out, resp, request_id, client);
        let written = within(self.engine.options.io_timeout, self.stream.write_all(&out)).await;
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

/// What the exchange needs from the parsed request.
struct Forward {
    head_len: usize,
    body: Framing,
    expect_continue: bool,
    idempotent: bool,
    upstream_head: Vec<u8>,
    timeout: Option<Duration>,
    filters: Option<Arc<Filters>>,
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
