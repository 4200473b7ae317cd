//! The `Registry` gRPC service (what `routemaster register` and Rust applications use):
//! a thin shell over [`Registrar`] and [`registry::instances`].

use std::sync::Arc;

use routemaster_common::registry::RegistrationSpec;
use routemaster_proto::v1;
use tonic::{Request, Response, Status};

use crate::controller::{CATCH_UP, ChangeKind, Controller};
use crate::registry::{self, Registrar, RegistryError, RegistryOp, RegistryOutcome};

#[derive(Debug)]
pub struct RegistryService {
    controller: Arc<Controller>,
    registrar: Arc<Registrar>,
}

impl RegistryService {
    pub fn new(controller: Arc<Controller>, registrar: Arc<Registrar>) -> Self {
        Self {
            controller,
            registrar,
        }
    }

    async fn call(&self, op: RegistryOp) -> Result<Response<v1::RegisterResponse>, Status> {
        let outcome = self.registrar.submit(op).await.map_err(status)?;
        Ok(Response::new(response(&outcome)))
    }
}

/// The gRPC status of a registry error; the message names the field.
pub fn status(e: RegistryError) -> Status {
    let msg = e.to_string();
    match e {
        RegistryError::Invalid(_) => Status::invalid_argument(msg),
        RegistryError::UnknownService(_) | RegistryError::NotRegistered { .. } => {
            Status::not_found(msg)
        }
        RegistryError::AddressTaken { .. } => Status::already_exists(msg),
        RegistryError::Unavailable(_) | RegistryError::Busy => Status::unavailable(msg),
        RegistryError::Rejected(_) => Status::resource_exhausted(msg),
    }
}

fn response(o: &RegistryOutcome) -> v1::RegisterResponse {
    v1::RegisterResponse {
        change: match o.change {
            ChangeKind::Created => v1::Change::Created,
            ChangeKind::Updated => v1::Change::Updated,
            ChangeKind::Unchanged => v1::Change::Unchanged,
            ChangeKind::Deleted => v1::Change::Deleted,
        } as i32,
        version: o.version,
        ttl: routemaster_common::duration::format(o.ttl),
    }
}

#[tonic::async_trait]
impl v1::registry_server::Registry for RegistryService {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = request.into_inner();
        self.call(RegistryOp::Register {
            service: r.service,
            id: r.id,
            spec: RegistrationSpec {
                address: r.address,
                weight: r.weight,
                labels: r.labels.into_iter().collect(),
                ttl: (!r.ttl.is_empty()).then_some(r.ttl),
            },
        })
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<v1::InstanceRef>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = request.into_inner();
        self.call(RegistryOp::Heartbeat {
            service: r.service,
            id: r.id,
        })
        .await
    }

    async fn deregister(
        &self,
        request: Request<v1::InstanceRef>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = request.into_inner();
        self.call(RegistryOp::Deregister {
            service: r.service,
            id: r.id,
        })
        .await
    }

    async fn list_instances(
        &self,
        request: Request<v1::ListInstancesRequest>,
    ) -> Result<Response<v1::ListInstancesResponse>, Status> {
        let service = request.into_inner().service;
        let freshness = self.controller.catch_up(CATCH_UP).await;
        let version = self.controller.catalog().version;
        let Some(list) = registry::instances(&self.controller, &service).await else {
            return Err(Status::not_found(format!("service {service:?} not found")));
        };
        Ok(Response::new(v1::ListInstancesResponse {
            version,
            instances: list
                .into_iter()
                .map(|i| v1::InstanceStatus {
                    address: i.address,
                    weight: i.weight,
                    labels: i.labels.into_iter().collect(),
                    source: i.source.to_owned(),
                    id: i.id.unwrap_or_default(),
                    ttl: i.ttl.unwrap_or_default(),
                    expires_in_seconds: i.expires_in_seconds.unwrap_or(-1),
                })
                .collect(),
            stale_reason: freshness.reason(),
        }))
    }
}
