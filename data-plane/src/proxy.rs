//! The request path, one phase after another (read top to bottom):
//!
//! 1. **downstream** — normalise the path and host; malformed requests stop here (400);
//! 2. **route** — look up the current table (404 when nothing matches);
//! 3. **action** — a redirect is answered right here;
//! 4. **upstream selection** — backend split, then instance (503 when none);
//! 5. **upstream request** — rewritten path, hop-by-hop headers out, `x-forwarded-*`,
//!    `Host`, `x-request-id` in;
//! 6. **send** — pooled HTTP/1.1 with the route deadline (502/504 on failure);
//! 7. **response** — hop-by-hop headers out, body streamed back under the same deadline.
//!
//! Every failure is a [`ProxyError`]; [`Proxy::handle`] turns it into a response in one
//! place and always echoes the request id.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use routemaster_common::host::{authority_port, normalize_host};
use routemaster_common::model::{Action, Scheme as RedirectScheme};
use routemaster_common::path::normalize_path;
use routemaster_common::rewrite::{RequestTarget, redirect_location, replace_prefix};
use routemaster_common::table::RequestHead;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forwarding::{X_REQUEST_ID, add_forwarded, request_id, strip_hop_by_hop};
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
    client: Client<HttpConnector, Incoming>,
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
            .build(connector);
        Self { state, client }
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
        // 1. Downstream: what is being asked for, normalised.
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .ok_or(ProxyError::MissingHost)?;
        let host = normalize_host(authority);
        let path = normalize_path(parts.uri.path())?;

        // 2. Route.
        let compiled = self.state.load().ok_or(ProxyError::NotReady)?;
        let matched = compiled
            .table
            .lookup(&RequestHead {
                host: &host,
                path: &path,
                method: &parts.method,
                headers: &parts.headers,
            })
            .ok_or(ProxyError::NoRoute)?;
        let replaceable = matched.route.path().replaceable_len();

        // 3. Action.
        let (forward, target) = match (matched.route.action(), matched.payload) {
            (Action::Forward(f), Some(target)) => (f, target),
            (Action::Redirect(rule), _) => {
                let location = redirect_location(
                    rule,
                    &RequestTarget {
                        scheme: RedirectScheme::Http,
                        host: &host,
                        port: authority_port(authority),
                        path: &path,
                        query: parts.uri.query(),
                    },
                    replaceable.unwrap_or(path.len()),
                );
                let location = HeaderValue::try_from(location)
                    .map_err(|_| ProxyError::Internal("redirect target is not a header value"))?;
                let mut resp = Response::new(ProxyBody::empty());
                *resp.status_mut() = StatusCode::from_u16(rule.code().get())
                    .map_err(|_| ProxyError::Internal("bad redirect code"))?;
                resp.headers_mut().insert(header::LOCATION, location);
                return Ok(resp);
            }
            (Action::Forward(_), None) => {
                return Err(ProxyError::Internal("forward route without upstream"));
            }
        };

        // 4. Upstream selection.
        let cluster = target
            .pick_cluster()
            .ok_or(ProxyError::Internal("route without backends"))?;
        let endpoint = cluster
            .pick()
            .ok_or_else(|| ProxyError::NoInstances(cluster.name().into()))?;

        // 5. Upstream request.
        let path_and_query = match (forward.rewrite_prefix(), replaceable, &path) {
            (Some(replacement), Some(len), _) => {
                with_query(&replace_prefix(&path, len, replacement), parts.uri.query())?
            }
            (_, _, Cow::Borrowed(_)) => match parts.uri.path_and_query() {
                Some(pq) => pq.clone(),
                None => PathAndQuery::from_static("/"),
            },
            (_, _, Cow::Owned(normalised)) => with_query(normalised, parts.uri.query())?,
        };
        // Reuse the client's Host value when there is one (a cheap clone, no copy).
        let original_host = match parts.headers.get(header::HOST) {
            Some(h) if parts.uri.authority().is_none() => h.clone(),
            _ => HeaderValue::from_str(authority)
                .map_err(|_| ProxyError::Internal("host is not a header value"))?,
        };
        let deadline = forward.timeout().map(|t| Instant::now() + t);
        drop(path);
        drop(host);

        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTP);
        uri_parts.authority = Some(endpoint.authority().clone());
        uri_parts.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri_parts)
            .map_err(|_| ProxyError::Internal("cannot build upstream uri"))?;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        add_forwarded(&mut parts.headers, client.ip(), Some(&original_host));
        let upstream_host = forward.host_rewrite().cloned().unwrap_or(original_host);
        parts.headers.insert(header::HOST, upstream_host);
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        drop(compiled);

        // 6. Send.
        let sent = self.client.request(Request::from_parts(parts, body));
        let result = match deadline {
            Some(at) => tokio::time::timeout_at(at, sent)
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)?,
            None => sent.await,
        };
        let resp = result.map_err(|e| {
            if e.is_connect() {
                ProxyError::UpstreamConnect(e)
            } else {
                ProxyError::UpstreamReset(e)
            }
        })?;

        // 7. Response.
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        let deadline = deadline.map(tokio::time::sleep_until);
        Ok(Response::from_parts(
            rparts,
            ProxyBody::upstream(rbody, deadline, endpoint),
        ))
    }
}

fn with_query(path: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let pq = match query {
        Some(q) => {
            let mut s = String::with_capacity(path.len() + 1 + q.len());
            s.push_str(path);
            s.push('?');
            s.push_str(q);
            s
        }
        None => path.to_owned(),
    };
    PathAndQuery::try_from(pq)
        .map_err(|_| ProxyError::Internal("rewritten path is not a valid URI"))
}

impl Handler for Proxy {
    async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let stats = &self.state.stats;
        let _in_flight = InFlight::start(stats);
        let request_id = request_id(req.headers());
        let mut resp = match self.proxy(req, client, &request_id).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, side = ?e.side(), request_id = ?request_id, "request failed");
                e.into_response(&request_id, stats)
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        resp
    }
}
