//! The request path for hyper-served requests (HTTP/2 with prior knowledge), one phase
//! after another (read top to bottom). HTTP/1.1 takes the same phases in [`crate::h1`].
//!
//! 1–4. **downstream, route, action, upstream selection** — [`crate::routing::decide`],
//!    shared by both engines (400/404/503 and redirects come from there);
//! 5. **upstream request** — rewritten path, hop-by-hop headers out, `x-forwarded-*`,
//!    `Host`, `x-request-id` in;
//! 6. **send** — pooled HTTP/1.1, or HTTP/2 with prior knowledge for `h2c` services
//!    (gRPC: `te: trailers` kept, trailers relayed both ways as body frames), with the
//!    route deadline (502/504 on failure);
//! 7. **response** — hop-by-hop headers out, body streamed back under the same deadline.
//!
//! Every failure is a [`ProxyError`]; [`Proxy::handle`] turns it into a response in one
//! place and always echoes the request id (gRPC requests get a trailers-only gRPC
//! status instead of a text page).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use routemaster_common::model::Protocol;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::{ProxyError, is_grpc};
use crate::forwarding::{
    X_REQUEST_ID, add_forwarded, apply_filter, request_id, strip_hop_by_hop, te_is_trailers,
};
use crate::h1::request::Rejected;
use crate::routing::{Decision, Inbound, decide};
use crate::server::Handler;
use crate::state::ProxyState;
use crate::stats::InFlight;

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

#[derive(Debug, Clone)]
pub struct Proxy {
    state: Arc<ProxyState>,
    /// HTTP/1.1 upstreams (`protocol: http1`).
    client: Client<HttpConnector, Incoming>,
    /// HTTP/2 with prior knowledge (`protocol: h2c`): multiplexed, one connection per
    /// endpoint.
    h2c: Client<HttpConnector, Incoming>,
}

impl Proxy {
    pub fn new(state: Arc<ProxyState>, options: &UpstreamOptions) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(options.idle_timeout)
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(options.idle_timeout)
            .http2_only(true)
            .build(connector);
        Self { state, client, h2c }
    }

    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    async fn proxy(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        request_id: &HeaderValue,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // 1–4. Normalise, route, act, select (shared with the HTTP/1.1 engine).
        let (mut parts, body) = req.into_parts();
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
                tls: parts.extensions.get::<crate::tls::Session>(),
            },
        )?;
        let upstream = match decision {
            Decision::Redirect { status, location } => {
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

        // 5. Upstream request.
        let path_and_query = match upstream.path_and_query {
            Some(pq) => PathAndQuery::try_from(pq)
                .map_err(|_| ProxyError::Internal("rewritten path is not a valid URI"))?,
            None => match parts.uri.path_and_query() {
                Some(pq) => pq.clone(),
                None => PathAndQuery::from_static("/"),
            },
        };
        // Reuse the client's Host value when there is one (a cheap clone, no copy).
        let original_host = match parts.headers.get(header::HOST) {
            Some(h) if parts.uri.authority().is_none() => h.clone(),
            _ => HeaderValue::from_str(authority)
                .map_err(|_| ProxyError::Internal("host is not a header value"))?,
        };
        let deadline = upstream.timeout.map(|t| Instant::now() + t);
        let endpoint = upstream.endpoint;

        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTP);
        uri_parts.authority = Some(endpoint.authority().clone());
        uri_parts.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri_parts)
            .map_err(|_| ProxyError::Internal("cannot build upstream uri"))?;
        let h2c = upstream.protocol == Protocol::H2c;
        // `te` is hop-by-hop, but HTTP/2 allows exactly `te: trailers` (RFC 9113
        // §8.2.2) and gRPC servers require it: kept for h2c upstreams only.
        let te_trailers = h2c && te_is_trailers(&parts.headers);
        parts.version = if h2c {
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
        add_forwarded(&mut parts.headers, client.ip(), Some(&original_host));
        if parts.extensions.get::<crate::tls::Session>().is_some() {
            parts.headers.insert(
                crate::forwarding::X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static("https"),
            );
        }
        let upstream_host = upstream.host_rewrite.unwrap_or(original_host);
        parts.headers.insert(header::HOST, upstream_host);
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        // The route's request filter runs last, over the proxy's own fields too.
        let filters = upstream.filters;
        if let Some(f) = filters.as_deref() {
            apply_filter(&mut parts.headers, f.request_headers());
        }

        // 6. Send.
        let client = if h2c { &self.h2c } else { &self.client };
        let sent = client.request(Request::from_parts(parts, body));
        let result = match deadline {
            Some(at) => tokio::time::timeout_at(at, sent)
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)?,
            None => sent.await,
        };
        let resp = result.map_err(|e| {
            if e.is_connect() {
                ProxyError::UpstreamConnect(e.into())
            } else {
                ProxyError::UpstreamReset(e.into())
            }
        })?;

        // 7. Response.
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        rparts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        if let Some(f) = filters.as_deref() {
            apply_filter(&mut rparts.headers, f.response_headers());
        }
        let deadline = deadline.map(tokio::time::sleep_until);
        Ok(Response::from_parts(
            rparts,
            ProxyBody::upstream(rbody, deadline, endpoint),
        ))
    }
}

impl Handler for Proxy {
    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let stats = &self.state.stats;
        let _in_flight = InFlight::start(stats);
        let request_id = request_id(req.headers());
        let grpc = is_grpc(req.headers());
        // A proxied response has its x-request-id (and the route's response filter)
        // already; our own answers get it here.
        match self.proxy(req, client, &request_id).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, side = ?e.side(), request_id = ?request_id, "request failed");
                let mut resp = if grpc {
                    e.into_grpc_response(request_id.as_bytes(), stats)
                } else {
                    e.into_response(request_id.as_bytes(), stats)
                };
                resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
                resp
            }
        }
    }
}
