//! Wiring of one control-plane replica: the etcd watch loop, the gRPC services (admin +
//! discovery) and the HTTP status API, each on a listener bound by the caller and all
//! stopped by one shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use routemaster_proto::{shared, v1};
use routemaster_runtime::lifecycle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::admin_api::AdminService;
use crate::controller::Controller;
use crate::discovery::DiscoveryService;
use crate::metrics::Metrics;
use crate::nodes::Nodes;
use crate::registry::Registrar;
use crate::registry_api::RegistryService;
use crate::registry_http::RegistryHttp;
use crate::status_api::{self, StatusApi};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub etcd: Vec<String>,
    pub prefix: String,
    /// A node silent for this long is `lost` (about three proxy health intervals).
    pub node_ttl: Duration,
    /// A lost node stays listed this long after it was last seen.
    pub node_retention: Duration,
    /// Flood control: snapshots sent to each proxy per second at most
    /// (`--max-snapshots-per-second`).
    pub max_snapshots_per_second: u32,
}

/// Runs until `shutdown` flips to true.
pub async fn run(
    options: ControlPlaneOptions,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    let store = Store::connect(&options.etcd, &options.prefix, metrics).await?;
    let controller = Controller::new(store.clone());
    let nodes = Arc::new(Nodes::new(store, options.node_ttl, options.node_retention));
    let replica = grpc.local_addr()?.to_string();
    let stopped = || lifecycle::stopped(&shutdown);

    let watcher = tokio::spawn(Arc::clone(&controller).run_watch(stopped()));
    let registrar = Registrar::start(Arc::clone(&controller), stopped());
    let convergence = tokio::spawn(crate::metrics::track_convergence(
        Arc::clone(&controller),
        Arc::clone(&nodes),
        stopped(),
    ));
    let status = tokio::spawn(status_api::serve(
        http,
        status_api::router(Arc::new(
            StatusApi::new(Arc::clone(&controller), Arc::clone(&nodes)).with_registry(
                RegistryHttp {
                    controller: Arc::clone(&controller),
                    registrar: Arc::clone(&registrar),
                },
            ),
        )),
        stopped(),
    ));
    let grpc_server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(
            v1::admin_server::AdminServer::new(AdminService::new(
                Arc::clone(&controller),
                Arc::clone(&nodes),
            ))
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024),
        )
        .add_service(v1::registry_server::RegistryServer::new(
            RegistryService::new(Arc::clone(&controller), registrar),
        ))
        .add_service(
            shared::discovery_server::DiscoveryServer::new(
                DiscoveryService::new(Arc::clone(&controller), Arc::clone(&nodes), replica)
                    .with_max_snapshots_per_second(options.max_snapshots_per_second),
            )
            .max_encoding_message_size(256 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(TcpIncoming::from(grpc).with_nodelay(Some(true)), stopped());
    let result = grpc_server.await;
    let _ = watcher.await;
    let _ = convergence.await;
    let _ = status.await;
    result?;
    Ok(())
}
