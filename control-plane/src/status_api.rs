//! The read-only HTTP/JSON status API for dashboards, an axum [`Router`]:
//! `/healthz`, `/readyz`, `/v1/status`, `/v1/nodes`, `/v1/nodes/{id}`, `/v1/routes`,
//! `/v1/services`, `/v1/map` (the route map, [`crate::map`]), `/v1/changes` (versions
//! this replica published recently), `/metrics` (Prometheus, [`crate::metrics`]), and
//! the dashboard at `/` ([`crate::dashboard`]: static assets compiled in, a client of
//! the `/v1` API like any other). JSON is pretty-printed with a trailing newline; errors are one line
//! of `text/plain`; anything but GET/HEAD is `405 read-only: use GET`, on every path.
//! Routes and services use the route file's field names.
//!
//! [`serve`] runs it on a bound listener until a shutdown future resolves, over
//! HTTP/1.1 and h2c (prior knowledge: a gRPC client pointed here by mistake gets an
//! HTTP 405 it can recognise, and the CLI names the port for what it is).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use hyper_util::service::TowerToHyperService;
use routemaster_runtime::http::HttpOptions;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::controller::Controller;
use crate::map::RouteMap;
use crate::nodes::{Convergence, NodeView, Nodes, NodesView, convergence};

#[derive(Debug)]
pub struct StatusApi {
    controller: Arc<Controller>,
    nodes: Arc<Nodes>,
    /// The registry's write routes ([`crate::registry_http`]), when served here.
    registry: Option<crate::registry_http::RegistryHttp>,
}

impl StatusApi {
    pub fn new(controller: Arc<Controller>, nodes: Arc<Nodes>) -> Self {
        Self {
            controller,
            nodes,
            registry: None,
        }
    }

    /// Serves the registry's routes too (the status port's only writes).
    pub fn with_registry(mut self, registry: crate::registry_http::RegistryHttp) -> Self {
        self.registry = Some(registry);
        self
    }
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub version: u64,
    pub routes: usize,
    pub services: usize,
    pub etcd: EtcdView,
    /// `total` counts lost nodes (they are still owed the configuration) and not those
    /// that left; `converged` the connected ones serving the current version.
    pub nodes: Convergence,
}

#[derive(Debug, Serialize)]
pub struct EtcdView {
    pub connected: bool,
}

const NODE_PREFIX: &str = "/v1/nodes/";

/// The status API: its routes (GET routes also answer HEAD, without the body) behind
/// one read-only gate.
pub fn router(api: Arc<StatusApi>) -> Router {
    let registry = api.registry.clone();
    let routes = Router::new()
        .route("/healthz", get(async || text(StatusCode::OK, "ok\n")))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/nodes", get(nodes))
        // The id is the rest of the path exactly as sent (slashes included, escapes not
        // decoded); `/v1/nodes/` asks for the empty id, which is never a node.
        .route(NODE_PREFIX, get(node))
        .route("/v1/nodes/{*id}", get(node))
        .route("/v1/routes", get(routes))
        .route("/v1/services", get(services))
        .route("/v1/certificates", get(certificates))
        .route("/v1/map", get(route_map))
        .route("/v1/changes", get(changes))
        .route("/v1/shadow", get(shadow))
        .route("/v1/shadow/{route}", get(shadow_route))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::router())
        .fallback(async || {
            text(
                StatusCode::NOT_FOUND,
                "not found; try /v1/status, /v1/nodes, /v1/nodes/{id}, /v1/routes, /v1/services, /v1/map, /v1/changes, /metrics, or / for the dashboard\n",
            )
        })
        .with_state(api);
    // The gate wraps the whole router, so it runs before routing: every method but
    // GET/HEAD gets the same answer on every path (a `Router::layer` would run per route,
    // after axum's own method matching).
    let gated = Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn(read_only));
    // The registry's paths are routed first; everything else meets the gate.
    match registry {
        Some(r) => crate::registry_http::router(r).fallback_service(gated),
        None => gated,
    }
}

type Api = State<Arc<StatusApi>>;

async fn read_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        next.run(req).await
    } else {
        text(StatusCode::METHOD_NOT_ALLOWED, "read-only: use GET\n")
    }
}

async fn readyz(State(api): Api) -> Response {
    if api.controller.catalog().is_loaded() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "configuration not loaded yet\n",
        )
    }
}

async fn status(State(api): Api) -> Response {
    let catalog = api.controller.catalog();
    let nodes = api.nodes.list().await;
    json(&StatusView {
        version: catalog.version,
        routes: catalog.route_count(),
        services: catalog.service_count(),
        etcd: EtcdView {
            connected: api.controller.etcd_connected(),
        },
        nodes: convergence(&nodes, catalog.version),
    })
}

async fn nodes(State(api): Api) -> Response {
    let version = api.controller.catalog().version;
    json(&NodesView::new(&api.nodes.list().await, version))
}

async fn node(State(api): Api, uri: Uri) -> Response {
    let version = api.controller.catalog().version;
    let id = uri.path().strip_prefix(NODE_PREFIX).unwrap_or_default();
    match api.nodes.get(id).await {
        Some(node) => json(&NodeView::new(&node, version)),
        None => text(StatusCode::NOT_FOUND, format!("node {id:?} not found\n")),
    }
}

async fn routes(State(api): Api) -> Response {
    json(&api.controller.catalog().spec().routes)
}

/// `tls.certificates` as the route file has them, `key_pem` read `<redacted>`.
async fn certificates(State(api): Api) -> Response {
    let spec = api.controller.catalog().spec();
    json(&spec.tls.map(|t| t.certificates).unwrap_or_default())
}

/// The services as the route file has them, each with `health`: its instances as every
/// proxy that serves it reports them (`seen_by`), and the proxies in panic mode for it.
async fn services(State(api): Api) -> Response {
    let spec = api.controller.catalog().spec();
    let nodes = api.nodes.list().await;
    let views: Vec<ServiceView<'_>> = spec
        .services
        .iter()
        .map(|s| ServiceView {
            registered: crate::registry::registered_views(&api.controller, &s.name),
            ..ServiceView::new(s, &nodes)
        })
        .collect();
    json(&views)
}

/// A `/v1/services` object: the service's fields, then `health`, then `registered`:
/// its registered instances (source, id, ttl).
#[derive(Debug, Serialize)]
struct ServiceView<'a> {
    #[serde(flatten)]
    spec: &'a routemaster_common::spec::ServiceSpec,
    health: ServiceHealth,
    registered: Vec<crate::registry::InstanceView>,
}

#[derive(Debug, Serialize)]
struct ServiceHealth {
    /// Every endpoint some proxy reports, in address order.
    instances: Vec<InstanceHealth>,
    /// Nodes in panic mode for this service.
    panic: Vec<String>,
}

#[derive(Debug, Serialize)]
struct InstanceHealth {
    address: String,
    /// True when every reporting proxy sends it new requests.
    healthy: bool,
    seen_by: Vec<SeenBy>,
}

#[derive(Debug, Serialize)]
struct SeenBy {
    node: String,
    healthy: bool,
    active: String,
    ejected: bool,
}

impl<'a> ServiceView<'a> {
    fn new(spec: &'a routemaster_common::spec::ServiceSpec, nodes: &[crate::nodes::Node]) -> Self {
        let mut instances: std::collections::BTreeMap<String, Vec<SeenBy>> = Default::default();
        let mut panic = Vec::new();
        for node in nodes.iter().filter(|n| n.healthy()) {
            for up in node
                .record
                .upstreams
                .iter()
                .filter(|u| u.service == spec.name)
            {
                if up.panic {
                    panic.push(node.record.id.clone());
                }
                for e in &up.endpoints {
                    instances
                        .entry(e.address.clone())
                        .or_default()
                        .push(SeenBy {
                            node: node.record.id.clone(),
                            healthy: e.healthy,
                            active: e.active.clone(),
                            ejected: e.ejected,
                        });
                }
            }
        }
        ServiceView {
            spec,
            health: ServiceHealth {
                instances: instances
                    .into_iter()
                    .map(|(address, seen_by)| InstanceHealth {
                        address,
                        healthy: seen_by.iter().all(|s| s.healthy),
                        seen_by,
                    })
                    .collect(),
                panic,
            },
            registered: Vec::new(),
        }
    }
}

/// `GET /v1/map[?host=H]`: the route map ([`RouteMap`]), all hosts or as a request for
/// `H` sees it.
async fn route_map(State(api): Api, uri: Uri) -> Response {
    let catalog = api.controller.catalog();
    let map = RouteMap::build(catalog.version, &catalog.spec(), &api.nodes.list().await)
        .with_registered(&crate::map::registered_in(&catalog));
    let host = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("host="));
    match host {
        Some(h) if !h.is_empty() => json(&map.for_host(h)),
        _ => json(&map),
    }
}

/// `GET /v1/shadow`: every shadow route with its fleet-wide evidence
/// ([`crate::shadow::ShadowView`]).
async fn shadow(State(api): Api) -> Response {
    shadow_view(&api, None).await
}

/// `GET /v1/shadow/{route}`: one shadow route (404 when there is no such shadow route).
async fn shadow_route(
    State(api): Api,
    axum::extract::Path(route): axum::extract::Path<String>,
) -> Response {
    shadow_view(&api, Some(&route)).await
}

async fn shadow_view(api: &StatusApi, only: Option<&str>) -> Response {
    let catalog = api.controller.catalog();
    let Some(config) = catalog.config.as_ref() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "configuration not loaded yet\n".to_owned(),
        );
    };
    let routes = crate::shadow::fleet(config, &api.nodes.list().await, only);
    if let Some(id) = only
        && routes.is_empty()
    {
        return text(StatusCode::NOT_FOUND, format!("no shadow route {id:?}\n"));
    }
    json(&crate::shadow::ShadowView {
        version: catalog.version,
        routes,
    })
}

/// `GET /v1/changes`: the versions this replica published recently, newest first.
async fn changes(State(api): Api) -> Response {
    #[derive(Serialize)]
    struct Changes {
        version: u64,
        changes: Vec<crate::controller::Published>,
    }
    json(&Changes {
        version: api.controller.catalog().version,
        changes: api.controller.recent_changes(),
    })
}

/// `GET /metrics`: the fleet gauges are set from the node list, then everything is
/// encoded in the Prometheus text format 0.0.4.
async fn metrics(State(api): Api) -> Response {
    let catalog = api.controller.catalog();
    let fleet = convergence(&api.nodes.list().await, catalog.version);
    let metrics = api.controller.metrics();
    metrics.set_fleet(catalog.version, api.controller.etcd_connected(), fleet);
    match metrics.render() {
        Ok(body) => with_type(StatusCode::OK, crate::metrics::CONTENT_TYPE, body.into()),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics could not be encoded: {e}\n"),
        ),
    }
}

/// A `text/plain` response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

/// A pretty-printed JSON response with a trailing newline (200), or a 500 if `value`
/// cannot be serialised.
fn json(value: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            with_type(StatusCode::OK, "application/json", Bytes::from(body))
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed\n"),
    }
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        Body::from(body),
    )
        .into_response()
}

/// Serves `router` on `listener` (HTTP/1.1, and h2c with prior knowledge) until
/// `shutdown` resolves, with the header limits, header-read timeout and bounded drain
/// (5 s) of `routemaster_runtime::http::serve`, which the proxy's admin API shares.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let options = HttpOptions {
        drain_timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    };
    let make = move |_client| TowerToHyperService::new(router.clone());
    routemaster_runtime::http::serve(listener, make, options, shutdown).await;
}
