//! The registry over HTTP on the status port, for applications without a gRPC client
//! (the only paths there that are not read-only):
//!
//! - `PUT /v1/services/{svc}/instances/{id}` with JSON `{address, weight, labels, ttl}`
//!   registers (201 created) or updates / renews (200) the instance;
//! - `POST /v1/services/{svc}/instances/{id}/heartbeat` renews its lease (200; 404
//!   once it has expired: register again);
//! - `DELETE /v1/services/{svc}/instances/{id}` deregisters it (200);
//! - `GET /v1/services/{svc}/instances` lists the service's instances, static and
//!   registered ([`InstanceView`]).
//!
//! Successes answer JSON `{service, id, change, version, ttl}`; errors one line of
//! `text/plain` naming the field: 400 invalid body or field, 404 unknown service or
//! instance, 409 address held by another instance, 503 etcd unreachable or too busy
//! (with `retry-after`).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::{HeaderValue, StatusCode, header};
use routemaster_common::registry::RegistrationSpec;
use serde::Serialize;

use crate::controller::{ChangeKind, Controller};
use crate::registry::{self, InstanceView, Registrar, RegistryError, RegistryOp};

/// What the registry routes need.
#[derive(Debug, Clone)]
pub struct RegistryHttp {
    pub controller: Arc<Controller>,
    pub registrar: Arc<Registrar>,
}

/// The registry routes (their own state; merged in front of the read-only status API).
pub fn router(state: RegistryHttp) -> Router {
    Router::new()
        .route(
            "/v1/services/{svc}/instances/{id}",
            put(register).delete(deregister),
        )
        .route(
            "/v1/services/{svc}/instances/{id}/heartbeat",
            post(heartbeat),
        )
        .route("/v1/services/{svc}/instances", get(list))
        .with_state(state)
}

type St = State<RegistryHttp>;

#[derive(Debug, Serialize)]
struct Answer<'a> {
    service: &'a str,
    id: &'a str,
    change: &'static str,
    version: u64,
    ttl: String,
}

#[derive(Debug, Serialize)]
struct Listing<'a> {
    service: &'a str,
    version: u64,
    instances: Vec<InstanceView>,
}

async fn register(State(st): St, Path((svc, id)): Path<(String, String)>, body: Bytes) -> Response {
    let spec: RegistrationSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "instance {id:?} of service {svc:?}: the body is not a registration ({e}); expected JSON {{\"address\": \"host:port\", \"weight\": 1, \"labels\": {{}}, \"ttl\": \"10s\"}}\n"
                ),
            );
        }
    };
    let op = RegistryOp::Register {
        service: svc.clone(),
        id: id.clone(),
        spec,
    };
    answer(&st, &svc, &id, op).await
}

async fn heartbeat(State(st): St, Path((svc, id)): Path<(String, String)>) -> Response {
    let op = RegistryOp::Heartbeat {
        service: svc.clone(),
        id: id.clone(),
    };
    answer(&st, &svc, &id, op).await
}

async fn deregister(State(st): St, Path((svc, id)): Path<(String, String)>) -> Response {
    let op = RegistryOp::Deregister {
        service: svc.clone(),
        id: id.clone(),
    };
    answer(&st, &svc, &id, op).await
}

async fn list(State(st): St, Path(svc): Path<String>) -> Response {
    let version = st.controller.catalog().version;
    match registry::instances(&st.controller, &svc).await {
        Some(instances) => json(
            StatusCode::OK,
            &Listing {
                service: &svc,
                version,
                instances,
            },
        ),
        None => text(
            StatusCode::NOT_FOUND,
            format!("service {svc:?} not found\n"),
        ),
    }
}

async fn answer(st: &RegistryHttp, svc: &str, id: &str, op: RegistryOp) -> Response {
    match st.registrar.submit(op).await {
        Ok(o) => {
            let status = if o.change == ChangeKind::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json(
                status,
                &Answer {
                    service: svc,
                    id,
                    change: match o.change {
                        ChangeKind::Created => "created",
                        ChangeKind::Updated => "updated",
                        ChangeKind::Unchanged => "unchanged",
                        ChangeKind::Deleted => "deleted",
                    },
                    version: o.version,
                    ttl: routemaster_common::duration::format(o.ttl),
                },
            )
        }
        Err(e) => error(&e),
    }
}

/// The HTTP status of a registry error.
pub fn status_of(e: &RegistryError) -> StatusCode {
    match e {
        RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
        RegistryError::UnknownService(_) | RegistryError::NotRegistered { .. } => {
            StatusCode::NOT_FOUND
        }
        RegistryError::AddressTaken { .. } => StatusCode::CONFLICT,
        RegistryError::Unavailable(_) | RegistryError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        RegistryError::Rejected(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(e: &RegistryError) -> Response {
    let status = status_of(e);
    let mut response = text(status, format!("{e}\n"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        Body::from(body),
    )
        .into_response()
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                Body::from(body),
            )
                .into_response()
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "serialisation failed\n".into(),
        ),
    }
}
