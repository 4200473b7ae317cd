//! Phase 5 for an HTTP/1.1 upstream, written once for both engines: the upstream
//! request head as bytes, straight from the client's fields — an HTTP/1.1 request's raw
//! lines, or an HTTP/2 request's decoded fields — with the proxy's own fields and the
//! route's request filter. No `HeaderMap` is built or changed on the way.
//!
//! The rules: hop-by-hop fields (and those `Connection` names) stay behind, framing is
//! restated from the body, `host` is the client's (or the route's `host_rewrite`),
//! `x-forwarded-for` appends the client to any list it came with, `x-forwarded-proto`
//! and `x-forwarded-host` and `x-request-id` are ours, the trace context is ours (the
//! client's `tracestate` only with its trace), the route's filter runs last over all of
//! it, and on routes with retries the head ends with `x-routemaster-attempts`
//! ([`super::request::set_attempts`] rewrites it per try).

use std::net::IpAddr;

use routemaster_common::model::HeaderFilter;

use super::head::{Field, Framing, named_in, put_field, put_u64};
use super::request::ATTEMPTS_FIELD;
use crate::forwarding::put_ip;
use crate::observe::TraceContext;

/// What phase 5 adds to the client's fields.
#[derive(Debug)]
pub struct Ours<'a> {
    pub method: &'a [u8],
    /// The path and query sent up (the route's rewrite, or the client's).
    pub path_and_query: &'a [u8],
    /// Sent as `host`: the client's host, or the route's `host_rewrite`.
    pub host: &'a [u8],
    /// The client's host, sent as `x-forwarded-host`.
    pub original_host: &'a [u8],
    pub client: IpAddr,
    /// The request came over TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    pub request_id: &'a [u8],
    /// Our trace context, sent as `traceparent`.
    pub trace: &'a TraceContext,
    /// The client's `tracestate` goes with it (it belongs to the client's trace).
    pub keep_tracestate: bool,
    /// The route's request filter, when it has one.
    pub filter: Option<&'a HeaderFilter>,
    /// The route retries: the head ends with `x-routemaster-attempts: 1`.
    pub retry: bool,
    /// Sent up as a WebSocket upgrade.
    pub websocket: bool,
    pub body: Framing,
    /// The client's `Connection` lines: the fields they name are hop-by-hop too.
    pub connection: &'a [&'a [u8]],
}

/// Appends the upstream request head, through its final empty line, to `out`.
/// `fields` yields the client's fields, each with its [`Field`] kind; it is called
/// twice only for a client's `x-forwarded-for` list.
pub fn write<'f, I>(out: &mut Vec<u8>, ours: &Ours<'_>, fields: impl Fn() -> I)
where
    I: Iterator<Item = (&'f str, &'f [u8], Field)>,
{
    out.extend_from_slice(ours.method);
    out.push(b' ');
    out.extend_from_slice(ours.path_and_query);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The route's request filter runs last: what it sets or removes does not pass from
    // the client, nor from us.
    let filter = ours.filter.filter(|f| !f.is_empty());
    let mine = |name: &str| filter.is_none_or(|f| !f.overrides(name));
    let mut forwarded_for = false;
    for (name, value, kind) in fields() {
        match kind {
            Field::Other
                if (ours.connection.is_empty() || !named_in(ours.connection, name))
                    && mine(name)
                    && (!ours.retry || !name.eq_ignore_ascii_case("x-routemaster-attempts")) =>
            {
                put_field(out, name.as_bytes(), value);
            }
            Field::XForwardedFor if !value.trim_ascii().is_empty() => forwarded_for = true,
            Field::TraceState if ours.keep_tracestate && mine(name) => {
                put_field(out, name.as_bytes(), value);
            }
            _ => {}
        }
    }
    put_field(out, b"host", ours.host);
    // Several x-forwarded-for lines form one list (RFC 9110 §5.3): keep them all.
    if mine("x-forwarded-for") {
        out.extend_from_slice(b"x-forwarded-for: ");
        if forwarded_for {
            for (_, value, kind) in fields() {
                if kind == Field::XForwardedFor && !value.trim_ascii().is_empty() {
                    out.extend_from_slice(value.trim_ascii());
                    out.extend_from_slice(b", ");
                }
            }
        }
        put_ip(out, ours.client);
        out.extend_from_slice(b"\r\n");
    }
    if mine("x-forwarded-proto") {
        out.extend_from_slice(if ours.tls {
            b"x-forwarded-proto: https\r\n"
        } else {
            b"x-forwarded-proto: http\r\n"
        });
    }
    if mine("x-forwarded-host") {
        put_field(out, b"x-forwarded-host", ours.original_host);
    }
    if mine("x-request-id") {
        put_field(out, b"x-request-id", ours.request_id);
    }
    if mine("traceparent") {
        out.extend_from_slice(b"traceparent: ");
        ours.trace.put_traceparent(out);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in filter.into_iter().flat_map(|f| f.lines()) {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if ours.websocket {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n");
    }
    match ours.body {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    // Last, so that a retry rewrites only the tail of the head.
    if ours.retry {
        out.extend_from_slice(ATTEMPTS_FIELD);
        out.extend_from_slice(b"1\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
