//! Every way a proxied request can fail, tagged with where it came from, and the one
//! place where a failure becomes a status code and a short body.

use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
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
    #[error("no configuration loaded yet")]
    NotReady,
    #[error("service {0:?} has no instances")]
    NoInstances(Box<str>),
    #[error("upstream connect failed")]
    UpstreamConnect(#[source] BoxError),
    #[error("upstream connection failed")]
    UpstreamReset(#[source] BoxError),
    #[error("upstream sent a malformed response")]
    UpstreamProtocol(&'static str),
    #[error("upstream timed out")]
    UpstreamTimeout,
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
            | ProxyError::NoRoute => Side::Downstream,
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamTimeout => Side::Upstream,
            ProxyError::NotReady | ProxyError::NoInstances(_) | ProxyError::Internal(_) => {
                Side::Internal
            }
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
            ProxyError::NotReady | ProxyError::NoInstances(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response the client gets: status, and a one-line body naming the reason and
    /// the request id. Counted by side.
    pub fn into_response(self, request_id: &[u8], stats: &Stats) -> Response<ProxyBody> {
        let counter = match self.side() {
            Side::Downstream => &stats.downstream_errors,
            Side::Upstream => &stats.upstream_errors,
            Side::Internal => &stats.internal_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let status = self.status();
        let body = format!(
            "{} {}: {}; request id {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self,
            String::from_utf8_lossy(request_id)
        );
        crate::responses::text(status, body)
    }
}
