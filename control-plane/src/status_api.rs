//! The read-only HTTP/JSON status API for dashboards:
//! `/healthz`, `/readyz`, `/v1/status`, `/v1/nodes`, `/v1/routes`, `/v1/services`.
//! Routes and services use the route file's field names.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use routemaster_data_plane::body::ProxyBody;
use routemaster_data_plane::responses::{json, read_only, text};
use routemaster_data_plane::server::Handler;
use serde::Serialize;

use crate::controller::Controller;
use crate::nodes::Nodes;

#[derive(Debug)]
pub struct StatusApi {
    controller: Arc<Controller>,
    nodes: Arc<Nodes>,
}

impl StatusApi {
    pub fn new(controller: Arc<Controller>, nodes: Arc<Nodes>) -> Self {
        Self { controller, nodes }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub version: u64,
    pub routes: usize,
    pub services: usize,
    pub etcd: EtcdView,
    pub nodes: FleetView,
}

#[derive(Debug, Serialize)]
pub struct EtcdView {
    pub connected: bool,
}

#[derive(Debug, Serialize)]
pub struct FleetView {
    pub total: usize,
    /// Live nodes whose applied version is the current one.
    pub converged: usize,
}

impl Handler for StatusApi {
    async fn handle(&self, req: Request<Incoming>, _client: SocketAddr) -> Response<ProxyBody> {
        if let Some(refused) = read_only(req.method()) {
            return refused;
        }
        let catalog = self.controller.catalog();
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if catalog.is_loaded() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "configuration not loaded yet\n",
            ),
            "/v1/status" => {
                let nodes = self.nodes.list().await;
                let converged = nodes
                    .iter()
                    .filter(|n| n.healthy && n.applied_version == catalog.version)
                    .count();
                json(&StatusView {
                    version: catalog.version,
                    routes: catalog.route_count(),
                    services: catalog.service_count(),
                    etcd: EtcdView {
                        connected: self.controller.etcd_connected(),
                    },
                    nodes: FleetView {
                        total: nodes.len(),
                        converged,
                    },
                })
            }
            "/v1/nodes" => json(&self.nodes.list().await),
            "/v1/routes" => json(&catalog.spec().routes),
            "/v1/services" => json(&catalog.spec().services),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /v1/status, /v1/nodes, /v1/routes, /v1/services\n",
            ),
        }
    }
}
