//! The gRPC admin service the CLI talks to. Writes go through
//! [`Controller::dispatch`] and answer once this replica's catalog has them; reads are
//! answered from the published catalog after it has caught up with etcd
//! ([`Controller::catch_up`]): a read on any replica sees every write acknowledged before
//! it began. While etcd is away reads still answer, from the last snapshot, and say so
//! (`stale_reason`).

use std::sync::Arc;

use routemaster_proto::v1;
use tonic::{Request, Response, Status};

use crate::controller::{
    CATCH_UP, ChangeKind, Command, Controller, DispatchError, Kind, ObjectChange,
};
use crate::nodes::Nodes;

#[derive(Debug)]
pub struct AdminService {
    controller: Arc<Controller>,
    nodes: Arc<Nodes>,
}

impl AdminService {
    pub fn new(controller: Arc<Controller>, nodes: Arc<Nodes>) -> Self {
        Self { controller, nodes }
    }
}

/// A route whose `forward.mirror` compares responses (it has shadow evidence too).
fn compares_mirror(r: &routemaster_common::Route) -> bool {
    matches!(r.action(), routemaster_common::model::Action::Forward(f) if f.mirror().and_then(|m| m.compare()).is_some())
}

fn status(e: DispatchError) -> Status {
    let msg = e.to_string();
    match e {
        DispatchError::Invalid(_) | DispatchError::Duplicate { .. } => {
            Status::invalid_argument(msg)
        }
        DispatchError::InUse { .. } => Status::failed_precondition(msg),
        DispatchError::NotFound { .. } => Status::not_found(msg),
        DispatchError::Unavailable(_) => Status::unavailable(msg),
        DispatchError::Contended => Status::aborted(msg),
        DispatchError::TooLarge(_) => Status::resource_exhausted(msg),
    }
}

fn change(c: &ObjectChange) -> v1::ObjectChange {
    v1::ObjectChange {
        kind: match c.kind {
            Kind::Service => v1::Kind::Service,
            Kind::Route => v1::Kind::Route,
            Kind::Certificate => v1::Kind::Certificate,
        } as i32,
        name: c.name.clone(),
        change: match c.change {
            ChangeKind::Created => v1::Change::Created,
            ChangeKind::Updated => v1::Change::Updated,
            ChangeKind::Unchanged => v1::Change::Unchanged,
            ChangeKind::Deleted => v1::Change::Deleted,
        } as i32,
    }
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn apply(
        &self,
        request: Request<v1::ApplyRequest>,
    ) -> Result<Response<v1::ApplyResponse>, Status> {
        let req = request.into_inner();
        let spec = routemaster_proto::config_spec_with_certificates(
            req.services,
            req.routes,
            req.certificates,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let outcome = self
            .controller
            .dispatch(Command::Apply {
                services: spec.services,
                routes: spec.routes,
                certificates: spec.tls.map(|t| t.certificates).unwrap_or_default(),
                dry_run: req.dry_run,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ApplyResponse {
            changes: outcome.changes.iter().map(change).collect(),
            version: outcome.version,
            dry_run: req.dry_run,
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let req = request.into_inner();
        let command = match v1::Kind::try_from(req.kind) {
            Ok(v1::Kind::Service) => Command::DeleteService(req.name),
            Ok(v1::Kind::Route) => Command::DeleteRoute(req.name),
            Ok(v1::Kind::Certificate) => Command::DeleteCertificate(req.name),
            _ => {
                return Err(Status::invalid_argument(
                    "kind must be SERVICE, ROUTE or CERTIFICATE",
                ));
            }
        };
        let outcome = self.controller.dispatch(command).await.map_err(status)?;
        Ok(Response::new(v1::DeleteResponse {
            version: outcome.version,
        }))
    }

    async fn list(
        &self,
        _request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let freshness = self.controller.catch_up(CATCH_UP).await;
        let catalog = self.controller.catalog();
        let Some(config) = catalog.config.as_ref() else {
            return Err(Status::unavailable(
                "the control plane has not loaded the configuration from etcd yet",
            ));
        };
        let parts = routemaster_proto::ListParts::from(config);
        Ok(Response::new(v1::ListResponse {
            version: catalog.version,
            services: parts.services,
            routes: parts.routes,
            // Never the key: `key_pem` reads <redacted> (apply keeps the stored key).
            certificates: config
                .certificates()
                .iter()
                .map(|c| {
                    let spec = routemaster_common::spec::CertificateSpec::from(c);
                    v1::Certificate::from(&spec.redacted())
                })
                .collect(),
            stale_reason: freshness.reason(),
        }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let freshness = self.controller.catch_up(CATCH_UP).await;
        let catalog = self.controller.catalog();
        let nodes = self.nodes.list().await;
        Ok(Response::new(v1::StatusResponse {
            version: catalog.version,
            routes: catalog.route_count() as u32,
            services: catalog.service_count() as u32,
            etcd_connected: self.controller.etcd_connected(),
            nodes: nodes.into_iter().map(v1::NodeStatus::from).collect(),
            stale_reason: freshness.reason(),
        }))
    }

    async fn delete_node(
        &self,
        request: Request<v1::DeleteNodeRequest>,
    ) -> Result<Response<v1::DeleteNodeResponse>, Status> {
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("node id must not be empty"));
        }
        let existed = self
            .nodes
            .forget(&id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if !existed {
            return Err(Status::not_found(format!("node {id:?} not found")));
        }
        Ok(Response::new(v1::DeleteNodeResponse { existed }))
    }

    async fn shadow(
        &self,
        request: Request<v1::ShadowRequest>,
    ) -> Result<Response<v1::ShadowResponse>, Status> {
        let only = request.into_inner().route;
        self.controller.catch_up(CATCH_UP).await;
        let catalog = self.controller.catalog();
        let Some(config) = catalog.config.as_ref() else {
            return Err(Status::unavailable(
                "the control plane has not loaded the configuration from etcd yet",
            ));
        };
        if let Some(id) = &only {
            match config.routes().iter().find(|r| r.id().as_str() == id) {
                None => return Err(Status::not_found(format!("route {id:?} not found"))),
                Some(r) if !r.is_shadow() && !compares_mirror(r) => {
                    return Err(Status::failed_precondition(format!(
                        "route {id:?} is not a shadow route (mode: {}) and has no compared mirror",
                        r.mode().as_str()
                    )));
                }
                Some(_) => {}
            }
        }
        let nodes = self.nodes.list().await;
        let routes = crate::shadow::fleet(config, &nodes, only.as_deref());
        Ok(Response::new(v1::ShadowResponse {
            version: catalog.version,
            routes: routes.iter().map(v1::ShadowRoute::from).collect(),
        }))
    }
}
