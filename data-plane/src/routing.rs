//! Request phases 1–4, shared by both HTTP engines (the HTTP/1.1 engine in [`crate::h1`]
//! and hyper's HTTP/2 in [`crate::proxy`]): normalise the host and path, look up the
//! current table, answer redirects, and pick the upstream endpoint and the path it gets.
//! Everything here is synchronous and engine-neutral; the engines only differ in how
//! they read the request and write the upstream request.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use routemaster_common::headers::RequestHeaders;
use routemaster_common::host::{authority_port, check_authority, normalize_host};
use routemaster_common::model::{
    Action, Filters, Protocol, Retry, Rewrite, Scheme as RedirectScheme,
};
use routemaster_common::path::normalize_path;
use routemaster_common::rewrite::{RequestTarget, redirect_location, replace_prefix};
use routemaster_common::table::RequestHead;

use crate::compile::{EndpointGuard, MirrorTarget};
use crate::error::ProxyError;
use crate::observe::PairMetrics;
use crate::shadow::ShadowProbe;
use crate::state::ProxyState;

/// What routing looks at, as received.
#[allow(missing_debug_implementations)] // `headers` is a trait object; nothing to show.
pub struct Inbound<'a> {
    /// The request's authority: the absolute-form URI's, else the `Host` header.
    pub authority: Option<&'a str>,
    /// The path as received (not normalised), without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a dyn RequestHeaders,
    /// The request's id (the client's `x-request-id`, else ours), for shadow misses.
    pub request_id: &'a [u8],
    /// The TLS session it came on (`None`: plain HTTP).
    pub tls: Option<&'a crate::tls::Session>,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// Answer right here with a redirect.
    Redirect {
        status: StatusCode,
        location: HeaderValue,
    },
    Forward(Upstream),
}

/// Where and how to forward a request.
#[derive(Debug)]
pub struct Upstream {
    /// The chosen endpoint, holding its in-flight slot.
    pub endpoint: EndpointGuard,
    /// The upstream path and query; `None` means "exactly as the client sent them".
    pub path_and_query: Option<String>,
    /// Replaces the client's `Host` when set.
    pub host_rewrite: Option<HeaderValue>,
    /// Bounds the whole exchange, from sending the request to the response's last byte.
    pub timeout: Option<Duration>,
    /// The route's header filters, if it has any (an `Arc` clone, no copy).
    pub filters: Option<Arc<Filters>>,
    /// The chosen service's protocol: HTTP/1.1 or HTTP/2, plain or TLS.
    pub protocol: Protocol,
    /// The service's TLS settings (`h2`, `https`).
    pub tls: Option<Arc<crate::upstream::ServiceTls>>,
    /// The route's retry policy; the endpoint's cluster picks the next tries.
    pub retry: Option<Arc<Retry>>,
    /// A shadow route's expectation, judged against the upstream's response head
    /// (dropped unjudged: `unknown`).
    pub shadow: Option<Box<ShadowProbe>>,
    /// Set when the route mirrors and this request is sampled ([`crate::mirror`]).
    pub mirror: Option<Arc<MirrorTarget>>,
}

/// Phases 1–4 for one request against the table current right now. `tag` gets the
/// counters the request's outcome goes to as soon as a route matched (also when it
/// fails after that), for [`crate::observe`].
pub fn decide(
    state: &ProxyState,
    req: &Inbound<'_>,
    tag: &mut Option<Arc<PairMetrics>>,
) -> Result<Decision, ProxyError> {
    // 1. Downstream: what is being asked for, checked and normalised. Whatever two
    // parsers could read differently is refused, so what we route on is what goes up.
    if *req.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let authority = req.authority.ok_or(ProxyError::MissingHost)?;
    check_authority(authority)?;
    let host = normalize_host(authority);
    if let Some(tls) = req.tls {
        tls.check_host(&host)?;
    }
    let path = normalize_path(req.path)?;

    // 2. Route. The table stays loaded only for this function: the decision owns
    // everything the rest of the request needs.
    let compiled = state.load().ok_or(ProxyError::NotReady)?;
    let found = compiled.table.lookup_shadowed(&RequestHead {
        host: &host,
        path: &path,
        method: req.method,
        headers: req.headers,
        query: req.query,
    });
    let request_target = RequestTarget {
        scheme: if req.tls.is_some() {
            RedirectScheme::Https
        } else {
            RedirectScheme::Http
        },
        host: &host,
        port: authority_port(authority),
        path: &path,
        query: req.query,
    };
    // A shadow route that would have won: its outcome is computed now and judged
    // against what really answers (here for our own answers, else on the upstream's
    // response head).
    let shadow = found.shadow.and_then(|m| {
        let tally = state.shadow.tally(m.route.id().as_str())?;
        let len = m.route.path().replaceable_len().unwrap_or(path.len());
        Some(Box::new(ShadowProbe::new(
            tally,
            m.route,
            &request_target,
            len,
            req.method,
            req.request_id,
        )))
    });
    let Some(matched) = found.active else {
        if let Some(probe) = shadow {
            probe.judge(StatusCode::NOT_FOUND.as_u16(), |_| None);
        }
        return Err(ProxyError::NoRoute);
    };
    let replaceable = matched.route.path().replaceable_len();
    *tag = Some(Arc::clone(&matched.payload.metrics));

    // 3. Action.
    let (forward, target) = match (matched.route.action(), &matched.payload.forward) {
        (Action::Forward(f), Some(target)) => (f, target),
        (Action::Redirect(rule), _) => {
            let location =
                redirect_location(rule, &request_target, replaceable.unwrap_or(path.len()));
            let location = HeaderValue::try_from(location)
                .map_err(|_| ProxyError::Internal("redirect target is not a header value"))?;
            let status = StatusCode::from_u16(rule.code().get())
                .map_err(|_| ProxyError::Internal("bad redirect code"))?;
            if let Some(probe) = shadow {
                probe.judge(status.as_u16(), |name| {
                    (name == "location").then_some(location.as_bytes())
                });
            }
            return Ok(Decision::Redirect { status, location });
        }
        (Action::Forward(_), None) => {
            return Err(ProxyError::Internal("forward route without upstream"));
        }
    };

    // 4. Upstream selection.
    let (cluster, metrics) = target
        .pick_backend()
        .ok_or(ProxyError::Internal("route without backends"))?;
    *tag = Some(Arc::clone(metrics));
    let endpoint = cluster.pick(0).map_err(|e| e.into_error(cluster))?;

    let path_and_query = match (forward.rewrite(), replaceable, path) {
        (Some(Rewrite::Prefix(replacement)), Some(len), path) => Some(with_query(
            replace_prefix(&path, len, replacement),
            req.query,
        )),
        (Some(Rewrite::Path(whole)), _, _) => Some(with_query(whole.to_string(), req.query)),
        (_, _, Cow::Borrowed(_)) => None,
        (_, _, Cow::Owned(normalised)) => Some(with_query(normalised, req.query)),
    };
    Ok(Decision::Forward(Upstream {
        endpoint,
        path_and_query,
        host_rewrite: forward.host_rewrite().cloned(),
        timeout: forward.timeout(),
        filters: matched.route.filters().cloned(),
        protocol: cluster.protocol(),
        tls: cluster.tls().cloned(),
        retry: target.retry().cloned(),
        shadow,
        mirror: target
            .mirror()
            .filter(|m| m.mirror.samples(req.method, req.request_id))
            .cloned(),
    }))
}

fn with_query(mut path: String, query: Option<&str>) -> String {
    if let Some(q) = query {
        path.reserve(1 + q.len());
        path.push('?');
        path.push_str(q);
    }
    path
}
