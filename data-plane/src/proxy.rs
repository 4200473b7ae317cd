//! The request path for HTTP/2 requests (our own server, [`crate::h2`]), one phase
//! after another (read top to bottom). HTTP/1.1 takes the same phases in [`crate::h1`].
//!
//! 1–4. **downstream, route, action, upstream selection** — [`crate::routing::decide`],
//!    shared by both engines (400/404/503 and redirects come from there);
//! 5. **upstream request** — rewritten path, hop-by-hop headers out, `x-forwarded-*`,
//!    `Host`, `x-request-id` in;
//! 6. **send** — on the client for the service's protocol ([`crate::upstream`]:
//!    HTTP/1.1 or HTTP/2, plain or TLS; gRPC: `te: trailers` kept, trailers relayed
//!    both ways as body frames), under the deadline (the route's `timeout`, or a
//!    shorter `grpc-timeout`) and `--io-timeout` (502/504, DEADLINE_EXCEEDED);
//! 7. **response** — hop-by-hop headers out, body streamed back under the same limits.
//!
//! [`Proxy::forward`] (phases 5–7) is also what the HTTP/1.1 engine calls for services
//! its own pool does not speak (`h2c`, `h2`, `https`).
//!
//! Every failure is a [`ProxyError`]; [`Proxy::respond`] turns it into a response in one
//! place and always echoes the request id (gRPC requests get a trailers-only gRPC
//! status instead of a text page).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version, header};
use tokio::time::Instant;

use crate::body::{BodyLimits, ProxyBody};
use crate::error::{ProxyError, is_grpc};
use crate::forwarding::{
    X_REQUEST_ID, add_forwarded, apply_filter, request_id, strip_hop_by_hop, te_is_trailers,
};
use crate::h1::request::Rejected;
use crate::observe::TraceContext;
use crate::observe::h2::Facts;
use crate::routing::{Decision, Inbound, Upstream, decide};
use crate::state::ProxyState;
use crate::stats::InFlight;

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
use crate::body::FromUpstream;
use crate::h1::UpstreamPool;
use crate::h1::client::{Outgoing, Target};
use crate::h1::head::{Framing, classify};
use crate::h1::upstream_head;
use crate::mirror::{MirrorQueue, Mirroring};
use crate::observe::metrics::{PairMetrics, ServiceMetrics};
pub use crate::upstream::UpstreamOptions;
use crate::upstream::{Clients, RequestBody, TlsConnectError};
use routemaster_common::model::Protocol;

#[derive(Debug)]
pub struct Proxy {
    state: Arc<ProxyState>,
    /// One pooled client per upstream protocol (HTTP/2 ones multiplexed); shared with
    /// this worker's mirror tasks.
    clients: Arc<Clients>,
    /// This worker's mirror capacity.
    mirrors: MirrorQueue,
    /// The HTTP/1.1 engine's client, for `http1` services when the body is in hand.
    native: Native,
    /// `--io-timeout`: the longest wait for the response head (once the request body
    /// is all sent) and between response body frames, as on the HTTP/1.1 engine.
    io_timeout: Duration,
}

/// The HTTP/1.1 engine's upstream client as the hyper path uses it: this worker's
/// pool, and the largest response head it accepts (`--max-header-bytes`).
#[derive(Debug)]
pub struct Native {
    pub pool: Arc<UpstreamPool>,
    pub max_head: usize,
}

/// Who the request is for, beside the request itself: what phase 5 adds.
#[derive(Debug)]
pub struct Origin<'a> {
    pub client: IpAddr,
    /// `client` as text when the caller made it once for its connection.
    pub client_text: Option<&'a HeaderValue>,
    /// The client's host (its `Host` or `:authority`), sent up as `host` unless the
    /// route rewrites it, and as `x-forwarded-host`.
    pub host: HeaderValue,
    pub request_id: &'a HeaderValue,
    /// The chosen service's upstream connection counters (HTTP/1.1 engine client).
    pub service: Option<&'a Arc<ServiceMetrics>>,
    /// Our trace context, sent up as `traceparent` (`None`: the client's fields
    /// pass as they came).
    pub trace: Option<&'a TraceContext>,
    /// The client's `tracestate` goes up with `trace` (it belongs to the client's trace).
    pub keep_tracestate: bool,
    /// When phase 5 began (deadlines count from it; one clock read fewer per request).
    pub now: Instant,
}

impl Proxy {
    pub fn new(
        state: Arc<ProxyState>,
        options: &UpstreamOptions,
        io_timeout: Duration,
        native: Native,
    ) -> Self {
        Self {
            clients: Arc::new(Clients::new(options)),
            mirrors: MirrorQueue::default(),
            native,
            state,
            io_timeout,
        }
    }

    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    /// This worker's upstream clients (the HTTP/1.1 engine's mirrors send with them).
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// This worker's mirror capacity (shared with the HTTP/1.1 engine's mirrors).
    pub fn mirror_queue(&self) -> &MirrorQueue {
        &self.mirrors
    }

    // Not an async fn: see the comment on the async block.
    #[allow(clippy::manual_async_fn)]
    fn proxy<'a>(
        &'a self,
        req: Request<RequestBody>,
        client: SocketAddr,
        client_text: Option<&'a HeaderValue>,
        request_id: &'a HeaderValue,
        facts: &'a mut Facts,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a {
        // An async block, not an async fn: `req` is its state once (see `forward`).
        async move {
            // 1–4. Normalise, route, act, select (shared with the HTTP/1.1 engine).
            let (parts, body) = req.into_parts();
            // RFC 9113 §8.3.1: a Host naming another entity than :authority is malformed.
            if let (Some(a), Some(h)) = (parts.uri.authority(), parts.headers.get(header::HOST))
                && !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
            {
                return Err(ProxyError::Rejected(Rejected::Malformed(
                    "host differs from :authority",
                )));
            }
            let authority = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            });
            let decision = decide(
                &self.state,
                &Inbound {
                    authority,
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                    method: &parts.method,
                    headers: &parts.headers,
                    request_id: request_id.as_bytes(),
                    tls: parts.extensions.get::<crate::tls::Session>(),
                },
                &mut facts.tag,
            )?;
            let upstream = match decision {
                Decision::Redirect { status, location } => {
                    facts.reason = Some(crate::observe::Reason::Redirect);
                    let mut resp = Response::new(ProxyBody::empty());
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(header::LOCATION, location);
                    resp.headers_mut()
                        .insert(X_REQUEST_ID.clone(), request_id.clone());
                    return Ok(resp);
                }
                Decision::Forward(upstream) => upstream,
            };
            let authority = authority.ok_or(ProxyError::MissingHost)?;
            // Reuse the client's Host value when there is one (a cheap clone, no copy).
            let host = match parts.headers.get(header::HOST) {
                Some(h) if parts.uri.authority().is_none() => h.clone(),
                _ => HeaderValue::from_str(authority)
                    .map_err(|_| ProxyError::Internal("host is not a header value"))?,
            };
            let origin = Origin {
                client: client.ip(),
                client_text,
                host,
                request_id,
                service: facts.tag.as_deref().and_then(PairMetrics::service_arc),
                trace: facts.trace.as_ref(),
                keep_tracestate: facts.keep_tracestate,
                now: Instant::now(),
            };
            if self.state.observe.logging() {
                facts.endpoint = Some(upstream.endpoint.authority().clone());
            }
            let started = origin.now;
            // Boxed: phases 5-7 hold the upstream exchange's state, the bulk of a request's
            // future. Inline, it would be copied whole into this future's state on the way
            // in, and this future's size (that much larger) copied again into the box the
            // HTTP/2 server puts each request's future in.
            let resp = Box::pin(self.forward(parts, body, upstream, origin)).await;
            facts.upstream_time = Some(started.elapsed());
            resp
        }
    }

    /// Phases 5–7 for a routed request, whichever engine read it and whatever the
    /// upstream speaks: the upstream request, the send under the deadline and the I/O
    /// timeout, the response. `parts` is the request as the client sent it (its URI's
    /// path and query are used unless the route rewrote them).
    // Not an async fn: see the comment on the async block.
    #[allow(clippy::manual_async_fn)]
    pub fn forward<'a>(
        &'a self,
        mut parts: http::request::Parts,
        body: RequestBody,
        upstream: Upstream,
        origin: Origin<'a>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a {
        // An async block rather than an async fn: the arguments are its state once, not
        // twice (an async fn keeps each argument and its moved-in local), which keeps
        // the boxed future smaller (copied into its box, and in cache, per request).
        async move {
            // 5. Upstream request.
            let path_and_query = match upstream.path_and_query {
                Some(pq) => PathAndQuery::try_from(pq)
                    .map_err(|_| ProxyError::Internal("rewritten path is not a valid URI"))?,
                None => match parts.uri.path_and_query() {
                    Some(pq) => pq.clone(),
                    None => PathAndQuery::from_static("/"),
                },
            };
            let now = origin.now;
            let grpc = is_grpc(&parts.headers);
            let (deadline, grpc_deadline) = deadline(now, upstream.timeout, grpc, &parts.headers);
            let mut endpoint = upstream.endpoint;
            let retry = upstream.retry;
            let protocol = upstream.protocol;
            let tls = upstream.tls;
            let shadow = upstream.shadow;
            let filters = upstream.filters;
            let http2 = protocol.is_http2();
            let head_only = parts.method == http::Method::HEAD;
            let idempotent_ok = retry
                .as_deref()
                .is_some_and(|r| parts.method.is_idempotent() || r.non_idempotent());
            let tally = |target: &crate::compile::MirrorTarget| {
                self.state.shadow.mirror_tally(&target.route)
            };

            // An `http1` service with the body in hand (and the trace ours): the HTTP/1.1
            // engine's phase 5, the head written as bytes from the client's fields, the
            // map left as it came. Otherwise the head as `http` parts, for hyper's clients.
            let in_hand = match (protocol, origin.trace) {
                (Protocol::Http1, Some(trace)) => body.whole().map(|bytes| (bytes, trace)),
                _ => None,
            };
            let (mut sending, mirroring, mut body, kept) = match in_hand {
                Some((bytes, trace)) => {
                    let head = h1_head(
                        &parts,
                        &path_and_query,
                        upstream.host_rewrite.as_ref(),
                        &origin,
                        trace,
                        filters.as_deref(),
                        retry.is_some(),
                        bytes.len(),
                    );
                    // A sampled request's copy for the route's mirror, taken as sent.
                    let mirroring = upstream.mirror.and_then(|target| {
                        let tally = tally(&target);
                        Mirroring::prepare_head(
                            target,
                            tally,
                            &self.mirrors,
                            &head,
                            !bytes.is_empty(),
                        )
                        .map(Box::new)
                    });
                    let sending = Sending::Bytes {
                        head,
                        idempotent: parts.method.is_idempotent(),
                    };
                    // Written: the client's fields are no longer needed.
                    crate::h1::buffers::give_map(std::mem::take(&mut parts.headers));
                    // The body is kept whatever the policy: it is in hand.
                    (sending, mirroring, None, Some(bytes))
                }
                None => {
                    map_head(
                        &mut parts,
                        path_and_query,
                        protocol,
                        upstream.host_rewrite,
                        endpoint.authority(),
                        &origin,
                        filters.as_deref(),
                    );
                    // A sampled request's copy for the route's mirror, taken as sent.
                    let mirroring = upstream.mirror.and_then(|target| {
                        let tally = tally(&target);
                        let has_body = !http_body::Body::is_end_stream(&body)
                            && http_body::Body::size_hint(&body).exact() != Some(0);
                        Mirroring::prepare(target, tally, &self.mirrors, &parts, has_body)
                            .map(Box::new)
                    });
                    // A body kept for retries: none, or one small enough to hold (bounded buffer).
                    let (body, kept) = match retry.as_deref() {
                        // Boxed: only routes with a retry policy wait here.
                        Some(_) => Box::pin(keep_for_retries(body, deadline)).await?,
                        None => (Some(body), None),
                    };
                    if retry.is_some() {
                        parts
                            .headers
                            .insert(ATTEMPTS.clone(), HeaderValue::from_static("1"));
                    }
                    (Sending::Parts(Some(parts)), mirroring, body, kept)
                }
            };

            // 6. Send: the deadline bounds the whole exchange; the I/O timeout bounds the
            // wait for the head once the request body is all sent. With a retry policy, a
            // failed try is sent again (another endpoint where one exists) while nothing
            // was relayed, the request is safe to repeat and its body was kept.
            let timed_out = if grpc_deadline {
                ProxyError::DeadlineExceeded
            } else {
                ProxyError::UpstreamTimeout
            };
            // A try's body, and the body itself when it is in hand for an `http1`
            // service (sent by the engine's client rather than hyper's).
            let in_hand_if_http1 = |b: RequestBody| {
                let whole = (protocol == Protocol::Http1).then(|| b.whole()).flatten();
                (Some(b), whole)
            };
            let mut tried = 0u64;
            let mut attempt = 1u32;
            let mut _budget = None;
            let resp = loop {
                tried |= endpoint.bit();
                let more = retry
                    .as_deref()
                    .filter(|r| attempt <= r.attempts() && kept.is_some());
                let per_try = more
                    .and_then(|r| r.per_try_timeout())
                    .map(|t| Instant::now() + t);
                // An `http1` service with the whole body in hand: the HTTP/1.1 engine's own
                // client and pool. Otherwise hyper's client for the protocol; the last
                // possible try takes the head itself, one that may be followed by another
                // sends a copy (a `HeaderMap` clone is a dozen allocations).
                let (try_body, whole) = match (&sending, &kept, body.take()) {
                    (Sending::Bytes { .. }, Some(bytes), _) => (None, Some(bytes.clone())),
                    (_, Some(bytes), _) => in_hand_if_http1(RequestBody::full(bytes.clone())),
                    (_, None, Some(b)) => in_hand_if_http1(b),
                    (_, None, None) => {
                        return Err(ProxyError::Internal("request body already sent"));
                    }
                };
                let (hyper_sent, body_finished) = match (&mut sending, &whole, try_body) {
                    (Sending::Bytes { .. }, _, _) | (Sending::Parts(_), Some(_), _) => (None, None),
                    (Sending::Parts(_), None, None) => {
                        return Err(ProxyError::Internal("request body already sent"));
                    }
                    (Sending::Parts(parts), None, Some(try_body)) => {
                        let req = match (more, parts.take()) {
                            (None, Some(mut last)) => {
                                last.extensions.clear();
                                Request::from_parts(last, try_body)
                            }
                            (_, Some(head)) => {
                                let mut req = Request::new(try_body);
                                *req.method_mut() = head.method.clone();
                                *req.uri_mut() = head.uri.clone();
                                *req.version_mut() = head.version;
                                *req.headers_mut() = head.headers.clone();
                                *parts = Some(head);
                                req
                            }
                            (_, None) => {
                                return Err(ProxyError::Internal("request head already sent"));
                            }
                        };
                        let finished = req.body().finished_flag();
                        let sent =
                            self.clients
                                .request(protocol, tls.as_ref(), endpoint.authority(), req);
                        (Some(sent), finished)
                    }
                };
                let outcome: Result<Response<FromUpstream>, Option<ProxyError>> = {
                    let to = Target {
                        authority: endpoint.authority(),
                        service: origin.service,
                        limited: endpoint
                            .cluster()
                            .limits()
                            .map(|_| endpoint.cluster().as_ref()),
                        max_head: self.native.max_head,
                    };
                    let sending = &sending;
                    let sent = async {
                        let native = |out| async {
                            crate::h1::client::send(&self.native.pool, to, out)
                                .await
                                .map(|r| r.map(|body| FromUpstream::H1 { body }))
                        };
                        match (sending, whole, hyper_sent) {
                            (Sending::Bytes { head, idempotent }, Some(body), _) => {
                                let out = Outgoing {
                                    head,
                                    body: &body,
                                    head_method: head_only,
                                    idempotent: *idempotent,
                                };
                                native(out).await
                            }
                            (Sending::Parts(Some(parts)), Some(body), _) => {
                                let mut buf = crate::h1::buffers::take_small();
                                let sent = native(Outgoing::encode(parts, &body, &mut buf)).await;
                                crate::h1::buffers::give(buf);
                                sent
                            }
                            (_, None, Some(sent)) => sent
                                .await
                                .map(|r| r.map(|body| FromUpstream::Hyper { body }))
                                .map_err(upstream_error),
                            _ => Err(ProxyError::Internal("nothing to send")),
                        }
                    };
                    tokio::pin!(sent);
                    // The first try's wait counts from the start of phase 5 (a clock read
                    // fewer); a later one's from now.
                    let mut from = (attempt == 1).then_some(now);
                    loop {
                        let idle_at = from.take().unwrap_or_else(Instant::now) + self.io_timeout;
                        let wake = [Some(idle_at), deadline, per_try]
                            .into_iter()
                            .flatten()
                            .min()
                            .unwrap_or(idle_at);
                        tokio::select! {
                            r = &mut sent => break r.map_err(Some),
                            () = tokio::time::sleep_until(wake) => {
                                let now = Instant::now();
                                if deadline.is_some_and(|d| d <= now) {
                                    endpoint.record(false);
                                    return Err(timed_out);
                                }
                                if per_try.is_some_and(|p| p <= now) {
                                    // A per-try timeout: `None` marks it.
                                    break Err(None);
                                }
                                let streaming = body_finished
                                    .as_ref()
                                    .is_some_and(|f| !f.load(Ordering::Acquire));
                                if !streaming {
                                    endpoint.record(false);
                                    return Err(ProxyError::UpstreamTimeout);
                                }
                            }
                        }
                    }
                };
                match &outcome {
                    Ok(r) => endpoint.record(r.status().as_u16() < 500),
                    Err(None) => endpoint.record(false),
                    Err(Some(e)) => endpoint.record(e.side() != crate::error::Side::Upstream),
                }
                let Some(policy) = more else {
                    break outcome.map_err(|e| e.unwrap_or(ProxyError::UpstreamTimeout))?;
                };
                let wanted = match &outcome {
                    Ok(r) => policy.on_status(r.status().as_u16()) && idempotent_ok,
                    Err(None) => policy.on_per_try_timeout() && idempotent_ok,
                    Err(Some(ProxyError::UpstreamConnect(_))) => policy.on_connect_failure(),
                    Err(Some(ProxyError::UpstreamReset(_))) => policy.on_reset() && idempotent_ok,
                    Err(Some(_)) => false,
                };
                let cluster = Arc::clone(endpoint.cluster());
                if wanted && _budget.is_none() {
                    _budget = cluster.load().try_retry();
                }
                if !wanted || _budget.is_none() || deadline.is_some_and(|d| Instant::now() >= d) {
                    break outcome.map_err(|e| e.unwrap_or(ProxyError::UpstreamTimeout))?;
                }
                back_off(policy, attempt, deadline).await;
                endpoint = match cluster.pick(tried) {
                    Ok(next) => next,
                    // Nowhere to go (limits): the last outcome stands.
                    Err(_) => {
                        break outcome.map_err(|e| e.unwrap_or(ProxyError::UpstreamTimeout))?;
                    }
                };
                attempt += 1;
                cluster
                    .load()
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A try that could be followed by another kept the head.
                match &mut sending {
                    Sending::Bytes { head, .. } => crate::h1::request::set_attempts(head, attempt),
                    Sending::Parts(parts) => {
                        let head = parts
                            .as_mut()
                            .ok_or(ProxyError::Internal("request head already sent"))?;
                        if !http2 {
                            let mut uri_parts = head.uri.clone().into_parts();
                            uri_parts.authority = Some(endpoint.authority().clone());
                            head.uri = Uri::from_parts(uri_parts)
                                .map_err(|_| ProxyError::Internal("cannot build upstream uri"))?;
                        }
                        head.headers
                            .insert(ATTEMPTS.clone(), HeaderValue::from(attempt));
                    }
                }
            };
            if let Sending::Bytes { head, .. } = sending {
                crate::h1::buffers::give(head);
            }

            // 7. Response.
            let (mut rparts, rbody) = resp.into_parts();
            if let Some(probe) = shadow {
                probe.judge_map(rparts.status.as_u16(), &rparts.headers);
            }
            // The copy goes now that the primary has answered; the client's body is only
            // watched on its way (the comparison happens in the mirror's own task).
            let tee = mirroring.and_then(|m| {
                m.launch(
                    Arc::clone(&self.clients),
                    rparts.status.as_u16(),
                    &rparts.headers,
                    head_only,
                )
            });
            strip_hop_by_hop(&mut rparts.headers);
            rparts
                .headers
                .insert(X_REQUEST_ID.clone(), origin.request_id.clone());
            if let Some(f) = filters.as_deref() {
                apply_filter(&mut rparts.headers, f.response_headers());
            }
            let limits = BodyLimits {
                deadline,
                grpc_deadline,
                idle: self.io_timeout,
                grpc,
            };
            Ok(Response::from_parts(
                rparts,
                ProxyBody::upstream(rbody, limits, endpoint).with_tee(tee),
            ))
        }
    }
}

/// The upstream request head as phase 5 made it.
enum Sending {
    /// For an `http1` service with the body in hand: the HTTP/1.1 engine's bytes
    /// ([`crate::h1::upstream_head`]), ending with `x-routemaster-attempts` on routes
    /// with retries.
    Bytes { head: Vec<u8>, idempotent: bool },
    /// For hyper's clients: the parts (taken by the last possible try).
    Parts(Option<http::request::Parts>),
}

/// Phase 5 as bytes, for an `http1` service: the client's fields as they came (an
/// HTTP/2 request's decoded ones) through the HTTP/1.1 engine's writer.
#[allow(clippy::too_many_arguments)]
fn h1_head(
    parts: &http::request::Parts,
    path_and_query: &PathAndQuery,
    host_rewrite: Option<&HeaderValue>,
    origin: &Origin<'_>,
    trace: &TraceContext,
    filters: Option<&routemaster_common::model::Filters>,
    retry: bool,
    body_len: usize,
) -> Vec<u8> {
    // A body, or a method whose request is expected to carry one: the length says
    // where it ends (an empty one included, so the upstream does not wait).
    let expects_body = matches!(
        parts.method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    );
    let ours = upstream_head::Ours {
        method: parts.method.as_str().as_bytes(),
        path_and_query: path_and_query.as_str().as_bytes(),
        host: host_rewrite.unwrap_or(&origin.host).as_bytes(),
        original_host: origin.host.as_bytes(),
        client: origin.client,
        tls: parts.extensions.get::<crate::tls::Session>().is_some(),
        request_id: origin.request_id.as_bytes(),
        trace,
        keep_tracestate: origin.keep_tracestate,
        filter: filters.map(routemaster_common::model::Filters::request_headers),
        retry,
        websocket: false,
        body: if body_len > 0 || expects_body {
            Framing::Length(body_len as u64)
        } else {
            Framing::Empty
        },
        // HTTP/2 has no `Connection` (a request with one is malformed).
        connection: &[],
    };
    let fields = || {
        parts.headers.iter().map(|(name, value)| {
            let name = name.as_str();
            (name, value.as_bytes(), classify(name))
        })
    };
    let mut head = crate::h1::buffers::take_small();
    upstream_head::write(&mut head, &ours, fields);
    head
}

/// Phase 5 on the `http` parts, for hyper's clients (and the HTTP/1.1 engine's client
/// when the body was not in hand at first): the URI for the protocol, hop-by-hop
/// fields out (`te: trailers` kept for HTTP/2), `x-forwarded-*`, `host` (or
/// `:authority`), `x-request-id`, our trace context, then the route's filter.
fn map_head(
    parts: &mut http::request::Parts,
    path_and_query: PathAndQuery,
    protocol: Protocol,
    host_rewrite: Option<HeaderValue>,
    endpoint: &http::uri::Authority,
    origin: &Origin<'_>,
    filters: Option<&routemaster_common::model::Filters>,
) {
    let mut uri_parts = http::uri::Parts::default();
    uri_parts.scheme = Some(if protocol.is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    let http2 = protocol.is_http2();
    // The URI's authority: the endpoint for `http1` (the shared client dials it);
    // for HTTP/2 the `:authority` the upstream sees — the client's host or the
    // route's `host_rewrite` (the pinned client dials the endpoint regardless).
    let upstream_host = host_rewrite.unwrap_or_else(|| origin.host.clone());
    uri_parts.authority = Some(if http2 {
        http::uri::Authority::try_from(upstream_host.as_bytes())
            .unwrap_or_else(|_| endpoint.clone())
    } else {
        endpoint.clone()
    });
    uri_parts.path_and_query = Some(path_and_query);
    // Every part is set and valid: this cannot fail; the old URI stays if it did.
    if let Ok(uri) = Uri::from_parts(uri_parts) {
        parts.uri = uri;
    }
    // `te` is hop-by-hop, but HTTP/2 allows exactly `te: trailers` (RFC 9113
    // §8.2.2) and gRPC servers require it: kept for HTTP/2 upstreams only.
    let te_trailers = http2 && te_is_trailers(&parts.headers);
    parts.version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    strip_hop_by_hop(&mut parts.headers);
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    add_forwarded(
        &mut parts.headers,
        origin.client,
        origin.client_text,
        Some(&origin.host),
    );
    if parts.extensions.get::<crate::tls::Session>().is_some() {
        parts.headers.insert(
            crate::forwarding::X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static("https"),
        );
    }
    if http2 {
        // HTTP/2 carries it in `:authority` (the URI's): a `host` beside it would be
        // redundant at best, malformed if it differed (RFC 9113 §8.3.1).
        parts.headers.remove(header::HOST);
    } else {
        parts.headers.insert(header::HOST, upstream_host);
    }
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), origin.request_id.clone());
    // Trace context: ours goes up (the caller's tracestate only with its trace).
    if let Some(trace) = origin.trace {
        // Unique per request: never indexed by HPACK (see `forwarding::request_id`).
        let mut traceparent = trace.traceparent();
        traceparent.set_sensitive(true);
        parts.headers.insert(TRACEPARENT.clone(), traceparent);
        if !origin.keep_tracestate {
            parts.headers.remove(&TRACESTATE);
        }
    }
    // The route's request filter runs last, over the proxy's own fields too.
    if let Some(f) = filters {
        apply_filter(&mut parts.headers, f.request_headers());
    }
}

/// Waits out a retry's backoff after try `attempt` (both engines): base ×
/// 2^(attempt−1), jittered ×0.5–1.5, never past `deadline`.
pub(crate) async fn back_off(
    policy: &routemaster_common::model::Retry,
    attempt: u32,
    deadline: Option<Instant>,
) {
    let backoff = policy
        .backoff()
        .saturating_mul(1 << (attempt - 1).min(10))
        .mul_f64(0.5 + fastrand::f64());
    if !backoff.is_zero() {
        let wake = Instant::now() + backoff;
        tokio::time::sleep_until(deadline.map_or(wake, |d| d.min(wake))).await;
    }
}

/// The exchange's deadline: the route's `timeout`, or for a gRPC request a shorter
/// `grpc-timeout` (then the second value is true: expiry is DEADLINE_EXCEEDED).
fn deadline(
    now: Instant,
    route: Option<Duration>,
    grpc: bool,
    headers: &HeaderMap,
) -> (Option<Instant>, bool) {
    let client = grpc
        .then(|| headers.get("grpc-timeout").and_then(grpc_timeout))
        .flatten();
    match (route, client) {
        (Some(r), Some(c)) if c < r => (Some(now + c), true),
        (None, Some(c)) => (Some(now + c), true),
        (r, _) => (r.map(|r| now + r), false),
    }
}

/// `grpc-timeout` (gRPC over HTTP/2: 1–8 digits and a unit, `H` `M` `S` `m` `u` `n`).
/// A malformed value is not a deadline (it is passed on as it came).
pub fn grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A hyper client failure as the proxy reports it: TLS, connect, or reset.
/// Which try of the request this is, on routes with `forward.retry`.
static ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-routemaster-attempts");

/// The largest request body kept for retries; a larger (or unknown-length) one is
/// streamed and its request never retried.
const MAX_RETRY_BODY: u64 = 64 * 1024;

/// Takes a small request body whole (within the deadline) so that a retry can send it
/// again: `(None, Some(bytes))`. A large or open-ended one is handed back untouched:
/// `(Some(body), None)`.
async fn keep_for_retries(
    body: RequestBody,
    deadline: Option<Instant>,
) -> Result<(Option<RequestBody>, Option<bytes::Bytes>), ProxyError> {
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    if body.is_end_stream() {
        return Ok((None, Some(bytes::Bytes::new())));
    }
    if body.size_hint().upper().is_none_or(|n| n > MAX_RETRY_BODY) {
        return Ok((Some(body), None));
    }
    let collect = body.collect();
    let collected = match deadline {
        Some(at) => tokio::time::timeout_at(at, collect)
            .await
            .map_err(|_| ProxyError::UpstreamTimeout)?,
        None => collect.await,
    };
    collected
        .map(|c| (None, Some(c.to_bytes())))
        .map_err(|_| ProxyError::ClientTimeout)
}

fn upstream_error(e: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<TlsConnectError>() {
            return ProxyError::UpstreamTls(tls.0.clone().into());
        }
        source = s.source();
    }
    if e.is_connect() {
        ProxyError::UpstreamConnect(e.into())
    } else {
        ProxyError::UpstreamReset(e.into())
    }
}

impl Proxy {
    /// The response to `req` and what the request path learned for the logging hook
    /// (the HTTP/2 server hands both to [`crate::observe::h2::Finish`]; returned beside
    /// the response rather than in its extensions, which would be a map and a box
    /// allocated per request).
    // Not an async fn: see the comment on the async block.
    #[allow(clippy::manual_async_fn)]
    pub fn respond<'a>(
        &'a self,
        req: Request<RequestBody>,
        client: SocketAddr,
        client_text: Option<&'a HeaderValue>,
    ) -> impl Future<Output = (Response<ProxyBody>, Facts)> + Send + 'a {
        // An async block, not an async fn: `req` is its state once, not twice (see
        // `forward`).
        async move {
            let stats = &self.state.stats;
            let _in_flight = InFlight::start(stats);
            let request_id = request_id(req.headers());
            let grpc = is_grpc(req.headers());
            let mut traceparents = req.headers().get_all(&TRACEPARENT).iter();
            let incoming = match (traceparents.next(), traceparents.next()) {
                (Some(one), None) => Some(one.as_bytes()),
                _ => None,
            };
            let (trace, keep_tracestate) =
                TraceContext::for_request(incoming, self.state.observe.sample_threshold());
            let mut facts = Facts {
                trace: Some(trace),
                keep_tracestate,
                request_id: Some(request_id.clone()),
                ..Facts::default()
            };
            // A proxied response has its x-request-id (and the route's response filter)
            // already; our own answers get it here.
            let resp = match self
                .proxy(req, client, client_text, &request_id, &mut facts)
                .await
            {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::debug!(error = %e, side = ?e.side(), request_id = %String::from_utf8_lossy(request_id.as_bytes()), "request failed");
                    facts.reason = Some(crate::observe::Reason::of(&e));
                    facts.upstream_time = None;
                    let mut resp = if grpc {
                        e.into_traced_grpc_response(
                            request_id.as_bytes(),
                            Some(&trace.trace_id_hex()),
                            stats,
                        )
                    } else {
                        e.into_traced_response(
                            request_id.as_bytes(),
                            Some(&trace.trace_id_hex()),
                            stats,
                        )
                    };
                    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
                    resp
                }
            };
            (resp, facts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_by_the_spec() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("30S", Some(Duration::from_secs(30))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None), // nine digits
            ("m", None),
            ("10", None),
            ("10s", None),
            ("-1S", None),
            ("1.5S", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                grpc_timeout(&HeaderValue::from_static(value)),
                *want,
                "{value:?}"
            );
        }
    }

    #[test]
    fn the_shorter_of_route_timeout_and_grpc_timeout_is_the_deadline() {
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("100m"));
        let ms = Duration::from_millis;
        let cases = [
            // (route timeout, grpc request, want deadline, want it to be the client's)
            (Some(ms(5000)), true, Some(now + ms(100)), true),
            (Some(ms(50)), true, Some(now + ms(50)), false),
            (None, true, Some(now + ms(100)), true),
            // Only gRPC requests have a grpc-timeout.
            (Some(ms(5000)), false, Some(now + ms(5000)), false),
            (None, false, None, false),
        ];
        for (route, grpc, want, client) in cases {
            assert_eq!(
                deadline(now, route, grpc, &h),
                (want, client),
                "{route:?} {grpc}"
            );
        }
        assert_eq!(
            deadline(now, Some(ms(10)), true, &HeaderMap::new()),
            (Some(now + ms(10)), false)
        );
    }
}

#[cfg(test)]
mod h1_head_tests {
    use super::*;

    /// An HTTP/2 request's fields, as the decoder leaves them, go up as an HTTP/1.1
    /// head: connection-level and restated fields out, ours in, the order kept.
    #[test]
    fn an_http2_request_goes_up_as_the_http1_engines_head() {
        let client_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut req = Request::new(());
        *req.method_mut() = http::Method::POST;
        *req.version_mut() = Version::HTTP_2;
        for (name, value) in [
            ("accept", "*/*"),
            ("te", "trailers"),
            ("host", "www.example.com"),
            ("content-length", "5"),
            ("cookie", "a=1; b=2"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "client-id"),
            ("traceparent", client_trace),
            ("tracestate", "vendor=1"),
            ("x-routemaster-attempts", "9"),
        ] {
            req.headers_mut().append(
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let (parts, ()) = req.into_parts();
        let (trace, keep) = TraceContext::for_request(Some(client_trace.as_bytes()), 0);
        assert!(keep);
        let mut ours_traceparent = Vec::new();
        trace.put_traceparent(&mut ours_traceparent);
        let ours_traceparent = String::from_utf8(ours_traceparent).unwrap();
        let host = HeaderValue::from_static("www.example.com");
        let id = HeaderValue::from_static("our-id");
        let rewrite = HeaderValue::from_static("internal.example");
        let pq = PathAndQuery::from_static("/v2/x?page=2");
        // (keep tracestate, retry, body length, host rewrite), then the lines that
        // differ: the client's tracestate and attempts, host, length, our attempts.
        let cases = [
            (
                (true, false, 5, None),
                "tracestate: vendor=1\r\nx-routemaster-attempts: 9\r\n",
                "www.example.com",
                "5",
                "",
            ),
            (
                (false, true, 0, Some(&rewrite)),
                "",
                "internal.example",
                "0",
                "x-routemaster-attempts: 1\r\n",
            ),
        ];
        for ((keep_tracestate, retry, len, rewrite), client_lines, host_line, length, attempts) in
            cases
        {
            let origin = Origin {
                client: "127.0.0.1".parse().unwrap(),
                client_text: None,
                host: host.clone(),
                request_id: &id,
                service: None,
                trace: Some(&trace),
                keep_tracestate,
                now: Instant::now(),
            };
            let head = h1_head(&parts, &pq, rewrite, &origin, &trace, None, retry, len);
            let want = format!(
                "POST /v2/x?page=2 HTTP/1.1\r\naccept: */*\r\ncookie: a=1; b=2\r\n{client_lines}\
                 host: {host_line}\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: www.example.com\r\n\
                 x-request-id: our-id\r\ntraceparent: {ours_traceparent}\r\n\
                 content-length: {length}\r\n{attempts}\r\n"
            );
            assert_eq!(String::from_utf8(head).unwrap(), want, "retry {retry}");
        }
    }
}
