//! Every way a proxied request can fail, tagged with where it came from, and the one
//! place where a failure becomes a status code and a short body.

use std::sync::atomic::Ordering;

use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use routemaster_common::host::AuthorityError;
use routemaster_common::path::PathError;

use crate::body::{BoxError, ProxyBody};
use crate::h1::request::Rejected;
use crate::stats::Stats;

/// Which side of the proxy a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we cannot route.
    Downstream,
    /// The upstream failed or was too slow.
    Upstream,
    /// Our own configuration or state cannot serve the request.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    #[error("request has no host")]
    MissingHost,
    #[error("bad host: {0}")]
    BadHost(#[from] AuthorityError),
    #[error("method not allowed: Routemaster does not tunnel CONNECT")]
    MethodNotAllowed,
    #[error("{0}")]
    Rejected(#[from] crate::h1::request::Rejected),
    #[error("malformed chunked request body")]
    MalformedBody,
    #[error("the client stopped sending the request body")]
    ClientTimeout,
    #[error("no route matched")]
    NoRoute,
    /// The request's host is served with another certificate than this TLS connection
    /// negotiated (RFC 9110 §15.5.20): the client must connect again for it.
    #[error("misdirected request: this connection's certificate is not the one for that host")]
    Misdirected,
    #[error("no configuration loaded yet")]
    NotReady,
    #[error("service {0:?} has no instances")]
    NoInstances(Box<str>),
    /// The upstream answered with this status, on a try meant to be retried, and the
    /// retry could not happen (budget, deadline): the client gets the same status.
    #[error("upstream answered {0}")]
    UpstreamStatus(u16),
    /// The service's `limits` are reached (503 at once, nothing queued).
    #[error("service {0:?} is at its concurrency limit")]
    Overloaded(Box<str>),
    #[error("upstream connect failed")]
    UpstreamConnect(#[source] BoxError),
    #[error("upstream connection failed")]
    UpstreamReset(#[source] BoxError),
    /// The TLS handshake failed (certificate, name, ALPN) or the service's TLS
    /// settings cannot be used; the detail is in the log, not in the answer.
    #[error("upstream TLS connection failed")]
    UpstreamTls(#[source] BoxError),
    #[error("upstream sent a malformed response")]
    UpstreamProtocol(&'static str),
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The gRPC client's own deadline (`grpc-timeout`, shorter than the route's) passed.
    #[error("the call's grpc-timeout deadline passed before the upstream answered")]
    DeadlineExceeded,
    #[error("upstream speaks HTTP/2 only; use an HTTP/2 client")]
    Http2OnlyUpstream,
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadPath(_)
            | ProxyError::MissingHost
            | ProxyError::BadHost(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::Rejected(_)
            | ProxyError::MalformedBody
            | ProxyError::ClientTimeout
            | ProxyError::NoRoute
            | ProxyError::Misdirected => Side::Downstream,
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamTls(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamStatus(_)
            | ProxyError::DeadlineExceeded => Side::Upstream,
            ProxyError::Http2OnlyUpstream => Side::Downstream,
            ProxyError::NotReady
            | ProxyError::NoInstances(_)
            | ProxyError::Overloaded(_)
            | ProxyError::Internal(_) => Side::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadPath(_)
            | ProxyError::MissingHost
            | ProxyError::BadHost(_)
            | ProxyError::MalformedBody => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Rejected(Rejected::TooLarge) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Rejected(Rejected::Malformed(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Rejected(Rejected::UnsupportedCoding) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NotReady | ProxyError::NoInstances(_) | ProxyError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamTls(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::Http2OnlyUpstream => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout | ProxyError::DeadlineExceeded => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UpstreamStatus(s) => {
                StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The response the client gets: status, and a one-line body naming the reason and
    /// the request id. Counted by side.
    pub fn into_response(self, request_id: &[u8], stats: &Stats) -> Response<ProxyBody> {
        self.into_traced_response(request_id, None, stats)
    }

    /// [`ProxyError::into_response`], with the request's trace id in the body too.
    pub fn into_traced_response(
        self,
        request_id: &[u8],
        trace_id: Option<&[u8]>,
        stats: &Stats,
    ) -> Response<ProxyBody> {
        self.count(stats);
        let status = self.status();
        let body = format!(
            "{} {}: {}; {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self,
            ids(request_id, trace_id)
        );
        crate::responses::text(status, body)
    }

    /// The answer to a gRPC request (`content-type: application/grpc…`) the proxy
    /// fails itself, as Envoy gives it: HTTP 200, `content-type: application/grpc`,
    /// `grpc-status` from [`grpc_status`] and a non-empty `grpc-message`, all in the
    /// headers of an otherwise empty response (trailers-only: one HEADERS frame with
    /// END_STREAM). Counted by side like [`ProxyError::into_response`].
    pub fn into_grpc_response(self, request_id: &[u8], stats: &Stats) -> Response<ProxyBody> {
        self.into_traced_grpc_response(request_id, None, stats)
    }

    /// [`ProxyError::into_grpc_response`], with the trace id in `grpc-message` too.
    pub fn into_traced_grpc_response(
        self,
        request_id: &[u8],
        trace_id: Option<&[u8]>,
        stats: &Stats,
    ) -> Response<ProxyBody> {
        self.count(stats);
        let code = self.grpc_code();
        let message = format!("routemaster: {}; {}", self, ids(request_id, trace_id));
        let mut resp = Response::new(ProxyBody::empty());
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(GRPC_STATUS.clone(), HeaderValue::from(code as u32));
        if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(&message)) {
            headers.insert(GRPC_MESSAGE.clone(), v);
        }
        resp
    }

    /// The gRPC status for this failure: [`grpc_status`] of its HTTP status, except an
    /// expired `grpc-timeout`, which is DEADLINE_EXCEEDED.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            ProxyError::DeadlineExceeded => GrpcCode::DeadlineExceeded,
            _ => grpc_status(self.status()),
        }
    }

    fn count(&self, stats: &Stats) {
        let counter = match self.side() {
            Side::Downstream => &stats.downstream_errors,
            Side::Upstream => &stats.upstream_errors,
            Side::Internal => &stats.internal_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Whether a request is gRPC: its `content-type` is `application/grpc` or
/// `application/grpc+…` / `application/grpc;…` (not gRPC-Web).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) else {
        return false;
    };
    v.get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
        && matches!(v.get(16), None | Some(b'+' | b';'))
}

/// gRPC status codes the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum GrpcCode {
    Internal = 13,
    Unknown = 2,
    DeadlineExceeded = 4,
    Unauthenticated = 16,
    PermissionDenied = 7,
    Unimplemented = 12,
    Unavailable = 14,
}

/// The gRPC status for the HTTP status the proxy would have answered, by gRPC's own
/// HTTP-to-status table (doc/http-grpc-status-mapping.md): 404 (no route) is
/// UNIMPLEMENTED; 429, 502 (upstream refused or reset), 503 (no instances) and 504
/// (route timeout) are UNAVAILABLE; 400 is INTERNAL; anything else UNKNOWN.
pub fn grpc_status(status: StatusCode) -> GrpcCode {
    match status.as_u16() {
        400 => GrpcCode::Internal,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        429 | 502 | 503 | 504 => GrpcCode::Unavailable,
        _ => GrpcCode::Unknown,
    }
}

/// The `grpc-status` / `grpc-message` pair for `code` and `message` (percent-encoded).
pub fn grpc_status_fields(code: GrpcCode, message: &str) -> [(HeaderName, HeaderValue); 2] {
    [
        (GRPC_STATUS.clone(), HeaderValue::from(code as u32)),
        (
            GRPC_MESSAGE.clone(),
            HeaderValue::from_str(&grpc_percent_encode(message))
                .unwrap_or_else(|_| HeaderValue::from_static("routemaster")),
        ),
    ]
}

/// `grpc-message` is percent-encoded: bytes outside visible ASCII and space, and `%`.
fn grpc_percent_encode(message: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `request id X` and, when traced, `; trace id Y`: how the proxy's own answers name
/// the request, in text bodies and in `grpc-message` alike.
fn ids(request_id: &[u8], trace_id: Option<&[u8]>) -> String {
    let mut s = format!("request id {}", String::from_utf8_lossy(request_id));
    if let Some(t) = trace_id {
        s.push_str("; trace id ");
        s.push_str(&String::from_utf8_lossy(t));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(msg: &str) -> BoxError {
        msg.to_owned().into()
    }

    #[test]
    fn proxy_errors_map_to_grpc_status_codes() {
        let cases: Vec<(ProxyError, GrpcCode)> = vec![
            (ProxyError::NoRoute, GrpcCode::Unimplemented),
            (ProxyError::NoInstances("s".into()), GrpcCode::Unavailable),
            (ProxyError::NotReady, GrpcCode::Unavailable),
            (
                ProxyError::UpstreamConnect(boxed("refused")),
                GrpcCode::Unavailable,
            ),
            (
                ProxyError::UpstreamReset(boxed("reset")),
                GrpcCode::Unavailable,
            ),
            (ProxyError::UpstreamProtocol("bad"), GrpcCode::Unavailable),
            (ProxyError::UpstreamTimeout, GrpcCode::Unavailable),
            (ProxyError::DeadlineExceeded, GrpcCode::DeadlineExceeded),
            (ProxyError::Http2OnlyUpstream, GrpcCode::Unavailable),
            (ProxyError::MissingHost, GrpcCode::Internal),
            (ProxyError::MethodNotAllowed, GrpcCode::Unknown),
            (ProxyError::Internal("x"), GrpcCode::Unknown),
        ];
        let stats = Stats::default();
        for (error, want) in cases {
            let name = error.to_string();
            assert_eq!(error.grpc_code(), want, "{name}");
            let resp = error.into_grpc_response(b"rid-1", &stats);
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
            let h = resp.headers();
            assert_eq!(h["content-type"], "application/grpc", "{name}");
            assert_eq!(
                h["grpc-status"],
                (want as u32).to_string().as_str(),
                "{name}"
            );
            let message = h["grpc-message"].to_str().unwrap();
            assert!(message.contains(&name), "{name}: {message}");
            assert!(message.contains("rid-1"), "{name}: {message}");
            // Trailers-only: no body at all.
            assert_eq!(resp.body().as_full(), Some(&[][..]), "{name}");
            assert!(http_body::Body::is_end_stream(resp.body()), "{name}");
        }
    }

    #[test]
    fn grpc_requests_are_recognised_by_content_type() {
        for (ct, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC;charset=x", true),
            ("application/grpc-web", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            let mut h = http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), want, "{ct}");
        }
        assert!(!is_grpc(&http::HeaderMap::new()));
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_percent_encode("no route 100%"), "no route 100%25");
        assert_eq!(grpc_percent_encode("é\n"), "%C3%A9%0A");
    }
}
