//! An HTTP/1.1 request head, start to decision, in one synchronous pass: parse it
//! (httparse, headers borrowed from the read buffer), settle its body framing, route it
//! with the shared phases ([`crate::routing::decide`]), and write the upstream request
//! head (phase 5) straight into bytes — no `HeaderMap`, no per-header allocation.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, header};
use routemaster_common::headers::{RequestHeaders, value_str};
use routemaster_common::host::check_authority;
use routemaster_common::model::{Filters, Protocol, Retry};

use super::head::{
    ConnectionOptions, Field, FieldLines, Framing, RequestId, classify, connection_options,
    content_length, named_in, only_chunked, only_member,
};
use crate::body::ProxyBody;
use crate::compile::{EndpointGuard, MirrorTarget};
use crate::error::ProxyError;
use crate::observe::{PairMetrics, Reason, TraceContext};
use crate::routing::{Decision, Inbound, decide};
use crate::shadow::ShadowSlot;
use crate::state::ProxyState;

/// Which try of the request this is (1 for the first), on routes with `forward.retry`.
pub const ATTEMPTS_FIELD: &[u8] = b"x-routemaster-attempts: ";

/// Rewrites the `x-routemaster-attempts` value that ends an upstream head.
pub fn set_attempts(head: &mut Vec<u8>, attempt: u32) {
    let end = head.len().saturating_sub(4);
    let start = head[..end]
        .iter()
        .rposition(|&b| b == b' ')
        .map_or(end, |p| p + 1);
    head.truncate(start);
    super::head::put_u64(head, u64::from(attempt));
    head.extend_from_slice(b"\r\n\r\n");
}

/// Most header fields a request may carry (431 beyond).
pub const MAX_HEADERS: usize = 128;

/// A request we cannot even route: the connection is answered and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("request header block too large")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("unsupported transfer-encoding")]
    UnsupportedCoding,
}

/// A parsed, routed request head.
#[derive(Debug)]
pub struct Request {
    /// Bytes of the head in the read buffer; the body (if any) follows.
    pub head_len: usize,
    pub body: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub http10: bool,
    pub head_method: bool,
    /// Safe to send twice (RFC 9110 §9.2.2): decides whether an unanswered request on a
    /// stale pooled connection may be retried after it was written.
    pub idempotent: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// An HTTP/1.1 `GET` with `Upgrade: websocket` and `Connection: upgrade`: sent up as
    /// an upgrade; a 101 turns the connection into a tunnel.
    pub websocket: bool,
    pub request_id: RequestId,
    /// The route's counters, once a route matched (see [`crate::observe`]).
    pub tag: Option<Arc<PairMetrics>>,
    /// The trace this request is part of; its `traceparent` went upstream.
    pub trace: TraceContext,
    /// Where the method, authority and path are in the head, for the access log.
    pub spans: Spans,
    pub next: Next,
}

/// Byte ranges in the request head (empty when not there, e.g. an absolute-form
/// target's authority).
#[derive(Debug, Clone, Default)]
pub struct Spans {
    pub method: Range<usize>,
    pub authority: Range<usize>,
    pub path: Range<usize>,
}

/// Where `part` lies in `buf`, if it is a piece of it.
fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if start <= buf.len() && part.len() <= buf.len() - start {
        start..start + part.len()
    } else {
        0..0
    }
}

/// What happens next.
#[derive(Debug)]
pub enum Next {
    Forward {
        /// The upstream request head, complete with the final empty line.
        head: Vec<u8>,
        endpoint: EndpointGuard,
        timeout: Option<Duration>,
        /// The route's filters; the response filter is applied to the response head.
        filters: Option<Arc<Filters>>,
        /// A shadow route's expectation, judged on the upstream's response head.
        shadow: Option<ShadowSlot>,
        /// The route's retry policy; the head then ends with
        /// `x-routemaster-attempts: 1` (rewritten for each further try).
        retry: Option<Arc<Retry>>,
        /// The route's mirror when this request is sampled: its copy is taken from
        /// `head` ([`crate::mirror::MirrorSlot::prepare`]).
        mirror: Option<Arc<MirrorTarget>>,
    },
    /// We answer ourselves (redirect, or a routing error already counted).
    Respond(Box<Response<ProxyBody>>, Reason),
    /// For a service this engine's pool does not speak (`h2c`, `h2`, `https`): the
    /// request as `http` types, for [`super::bridge`].
    Bridge(Box<super::bridge::Bridged>),
}

/// The raw fields, as routing sees them.
struct RawHeaders<'h, 'b>(&'h [httparse::Header<'b>]);

impl RequestHeaders for RawHeaders<'_, '_> {
    fn any_value(&self, name: &http::HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name.as_str()))
            .any(|h| pred(h.value))
    }
}

/// Parses and routes the head at the start of `buf`. `Ok(None)`: not complete yet.
pub fn prepare(
    buf: &[u8],
    max_head: usize,
    client: SocketAddr,
    state: &ProxyState,
) -> Result<Option<Request>, Rejected> {
    prepare_on(buf, max_head, client, state, None)
}

/// [`prepare`] for a request that came on a TLS connection (`tls`) or plain HTTP
/// (`None`): the 421 rule, the redirect scheme and `x-forwarded-proto` follow it.
pub fn prepare_on(
    buf: &[u8],
    max_head: usize,
    client: SocketAddr,
    state: &ProxyState,
    tls: Option<&crate::tls::Session>,
) -> Result<Option<Request>, Rejected> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) if n > max_head => return Err(Rejected::TooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Err(Rejected::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Rejected::TooLarge),
        Err(httparse::Error::Version) => return Err(Rejected::Malformed("HTTP version")),
        Err(_) => return Err(Rejected::Malformed("request head")),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Rejected::Malformed("request line"));
    };
    let method_span = span(buf, method.as_bytes());
    let headers: &[httparse::Header<'_>] = req.headers;
    let http10 = version == 0;

    // One pass over the fields: classify each, remember what framing and routing need.
    let mut kinds = [Field::Other; MAX_HEADERS];
    let mut host: Option<&[u8]> = None;
    let mut connection = FieldLines::new();
    let mut coding = FieldLines::new();
    let mut has_length = false;
    let mut expect_continue = false;
    let mut client_id: Option<&[u8]> = None;
    let mut upgrade = FieldLines::new();
    let mut traceparent: Option<Option<&[u8]>> = None;
    for (i, h) in headers.iter().enumerate() {
        let kind = classify(h.name);
        kinds[i] = kind;
        match kind {
            Field::Host if host.is_some() => return Err(Rejected::Malformed("more than one Host")),
            Field::Host => host = Some(h.value),
            Field::Connection => connection
                .push(h.value)
                .map_err(|()| Rejected::Malformed("too many Connection fields"))?,
            Field::TransferEncoding => coding
                .push(h.value)
                .map_err(|()| Rejected::Malformed("too many Transfer-Encoding fields"))?,
            Field::ContentLength => has_length = true,
            Field::Expect => expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue"),
            Field::Upgrade => upgrade
                .push(h.value)
                .map_err(|()| Rejected::Malformed("too many Upgrade fields"))?,
            Field::XRequestId if client_id.is_none() => client_id = Some(h.value),
            // More than one is invalid: a new trace starts.
            Field::TraceParent => {
                traceparent = Some(traceparent.map_or(Some(h.value), |_| None));
            }
            Field::Confusable => {
                return Err(Rejected::Malformed("'_' in the name of a framing field"));
            }
            _ => {}
        }
    }
    let connection = connection.as_slice();
    let coding = coding.as_slice();

    // Body framing (RFC 9112 §6.3), strictly: anything two parsers could read two ways
    // is refused rather than guessed at.
    let body = if !coding.is_empty() {
        if http10 {
            return Err(Rejected::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        if has_length {
            return Err(Rejected::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if !only_chunked(coding) {
            return Err(Rejected::UnsupportedCoding);
        }
        Framing::Chunked
    } else if has_length {
        let values = headers
            .iter()
            .zip(&kinds)
            .filter(|(_, k)| **k == Field::ContentLength)
            .map(|(h, _)| h.value);
        match content_length(values) {
            Some(n) => Framing::Length(n),
            None => return Err(Rejected::Malformed("Content-Length")),
        }
    } else {
        Framing::Empty
    };
    let ConnectionOptions { close, keep_alive } = connection_options(connection);
    // Only WebSocket is switched to (never h2c: RFC 9113 removed it, and relaying it
    // would smuggle HTTP/2 past us); anything else asked for is stripped and the request
    // served as HTTP/1.1.
    let websocket = !http10
        && method == "GET"
        && body == Framing::Empty
        && named_in(connection, "upgrade")
        && only_member(upgrade.as_slice(), b"websocket");
    let keep_alive = if http10 { keep_alive && !close } else { !close };

    // Host (RFC 9112 §3.2): required in HTTP/1.1, and a valid `uri-host [":" port]`
    // even when an absolute-form target's authority is the one routed on.
    match host {
        None if !http10 => return Err(Rejected::Malformed("missing Host")),
        Some(h) if value_str(h).is_none_or(|h| check_authority(h).is_err()) => {
            return Err(Rejected::Malformed("invalid Host"));
        }
        _ => {}
    }
    // The request target: origin-form, or absolute-form (whose authority wins over Host).
    if !target.is_ascii() {
        return Err(Rejected::Malformed("non-ASCII request target"));
    }
    if target.contains('#') {
        return Err(Rejected::Malformed("fragment in request target"));
    }
    if method == "CONNECT" && !is_authority_form(target) {
        return Err(Rejected::Malformed(
            "CONNECT without an authority-form target",
        ));
    }
    let absolute;
    let (authority, path, query, original_pq) = if is_absolute(target) {
        absolute =
            http::Uri::try_from(target).map_err(|_| Rejected::Malformed("request target"))?;
        let pq = absolute.path_and_query().map_or("/", |pq| pq.as_str());
        (
            absolute.authority().map(|a| a.as_str()),
            absolute.path(),
            absolute.query(),
            pq,
        )
    } else {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        (host.and_then(value_str), path, query, target)
    };
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| Rejected::Malformed("method"))?;
    let request_id = RequestId::from_client_or_new(client_id);
    let (trace, keep_tracestate) =
        TraceContext::for_request(traceparent.flatten(), state.observe.sample_threshold());
    let spans = Spans {
        method: method_span,
        authority: host.map_or(0..0, |h| span(buf, h)),
        path: span(buf, path.as_bytes()),
    };
    let mut tag = None;

    let decided = decide(
        state,
        &Inbound {
            authority,
            path,
            query,
            method: &method,
            headers: &RawHeaders(headers),
            request_id: request_id.as_bytes(),
            tls,
        },
        &mut tag,
    );
    let error = |e: ProxyError| {
        let reason = Reason::of(&e);
        let resp = e.into_traced_response(
            request_id.as_bytes(),
            Some(&trace.trace_id_hex()),
            &state.stats,
        );
        Next::Respond(Box::new(resp), reason)
    };
    let next = match decided {
        Err(e) => error(e),
        Ok(Decision::Redirect { status, location }) => {
            let mut resp = Response::new(ProxyBody::empty());
            *resp.status_mut() = status;
            resp.headers_mut().insert(header::LOCATION, location);
            Next::Respond(Box::new(resp), Reason::Redirect)
        }
        // This engine's own pool speaks HTTP/1.1 over TCP; `h2c`, `h2` and `https`
        // services get the request through the shared upstream clients.
        Ok(Decision::Forward(upstream)) if upstream.protocol != Protocol::Http1 => {
            match super::bridge::parts(
                &method,
                original_pq,
                headers,
                &kinds,
                body,
                authority.unwrap_or_default(),
            ) {
                Ok((parts, host)) => Next::Bridge(Box::new(super::bridge::Bridged {
                    parts,
                    upstream,
                    host,
                    keep_tracestate,
                })),
                Err(r) => return Err(r),
            }
        }
        Ok(Decision::Forward(upstream)) => {
            // `decide` refuses requests without an authority, so there is one here.
            let original_host = authority.unwrap_or_default().as_bytes();
            let pq = upstream.path_and_query.as_deref().unwrap_or(original_pq);
            let mut out = super::buffers::take_small();
            let ours = super::upstream_head::Ours {
                method: method.as_str().as_bytes(),
                path_and_query: pq.as_bytes(),
                host: upstream
                    .host_rewrite
                    .as_ref()
                    .map_or(original_host, |h| h.as_bytes()),
                original_host,
                client: client.ip(),
                tls: tls.is_some(),
                request_id: request_id.as_bytes(),
                trace: &trace,
                keep_tracestate,
                filter: upstream.filters.as_deref().map(Filters::request_headers),
                retry: upstream.retry.is_some(),
                websocket,
                body,
                connection,
            };
            let fields = || {
                headers
                    .iter()
                    .zip(&kinds)
                    .map(|(h, kind)| (h.name, h.value, *kind))
            };
            super::upstream_head::write(&mut out, &ours, fields);
            Next::Forward {
                head: out,
                endpoint: upstream.endpoint,
                timeout: upstream.timeout,
                filters: upstream.filters,
                shadow: upstream.shadow.map(ShadowSlot::new),
                retry: upstream.retry,
                mirror: upstream.mirror,
            }
        }
    };
    Ok(Some(Request {
        head_len,
        body,
        keep_alive,
        http10,
        head_method: method == Method::HEAD,
        idempotent: method.is_idempotent(),
        // RFC 9110 §10.1.1: an HTTP/1.0 client's Expect is ignored (it gets no 1xx).
        expect_continue: expect_continue
            && !http10
            && !matches!(body, Framing::Empty | Framing::Length(0)),
        websocket,
        request_id,
        tag,
        trace,
        spans,
        next,
    }))
}

/// `host:port`, as CONNECT takes (RFC 9112 §3.2.3).
fn is_authority_form(target: &str) -> bool {
    !target.starts_with('/') && !is_absolute(target) && check_authority(target).is_ok()
}

fn is_absolute(target: &str) -> bool {
    let b = target.as_bytes();
    b.len() > 7
        && (b[..7].eq_ignore_ascii_case(b"http://")
            || b[..8.min(b.len())].eq_ignore_ascii_case(b"https://"))
}

#[cfg(test)]
mod attempts_tests {
    use super::*;

    #[test]
    fn the_attempts_field_ending_the_head_is_rewritten_in_place() {
        let mut head = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        head.extend_from_slice(ATTEMPTS_FIELD);
        head.extend_from_slice(b"1\r\n\r\n");
        for (attempt, want) in [(2, "2"), (10, "10"), (11, "11"), (3, "3")] {
            set_attempts(&mut head, attempt);
            let text = String::from_utf8(head.clone()).unwrap();
            assert_eq!(
                text,
                format!("GET / HTTP/1.1\r\nhost: a\r\nx-routemaster-attempts: {want}\r\n\r\n")
            );
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut req = httparse::Request::new(&mut fields);
            assert!(req.parse(&head).unwrap().is_complete());
        }
    }
}
