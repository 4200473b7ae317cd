//! The read-only HTTP/JSON status API for dashboards:
//! `/healthz`, `/readyz`, `/v1/status`, `/v1/nodes`, `/v1/nodes/{id}`, `/v1/routes`,
//! `/v1/services`.
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
use crate::nodes::{Convergence, NodeView, Nodes, NodesView, convergence};

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
    /// `total` counts lost nodes (they are still owed the configuration) and not those
    /// that left; `converged` the connected ones serving the current version.
    pub nodes: Convergence,
}

#[derive(Debug, Serialize)]
pub struct EtcdView {
    pub connected: bool,
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
                json(&StatusView {
                    version: catalog.version,
                    routes: catalog.route_count(),
                    services: catalog.service_count(),
                    etcd: EtcdView {
                        connected: self.controller.etcd_connected(),
                    },
                    nodes: convergence(&nodes, catalog.version),
                })
            }
            "/v1/nodes" => json(&NodesView::new(&self.nodes.list().await, catalog.version)),
            path if path.starts_with("/v1/nodes/") => {
                let id = &path["/v1/nodes/".len()..];
                match self.nodes.get(id).await {
                    Some(node) => json(&NodeView::new(&node, catalog.version)),
                    None => text(StatusCode::NOT_FOUND, format!("node {id:?} not found\n")),
                }
            }
            "/v1/routes" => json(&catalog.spec().routes),
            "/v1/services" => json(&catalog.spec().services),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /v1/status, /v1/nodes, /v1/nodes/{id}, /v1/routes, /v1/services\n",
            ),
        }
    }
}
