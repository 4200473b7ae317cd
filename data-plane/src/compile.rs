//! Snapshot → [`Compiled`]: the route table with each route's upstream clusters
//! resolved, so the request path does no name lookups.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use routemaster_common::balance::Balancer;
use routemaster_common::model::{Action, LoadBalancing, Protocol, Service};
use routemaster_common::snapshot::Snapshot;
use routemaster_common::table::RouteTable;

/// One applied snapshot, ready to serve.
#[derive(Debug)]
pub struct Compiled {
    pub table: RouteTable<Option<ForwardTarget>>,
}

/// Where a forwarding route sends traffic: one or more clusters, split by weight.
#[derive(Debug)]
pub struct ForwardTarget {
    clusters: Vec<Arc<Cluster>>,
    /// `None` for a single backend.
    split: Option<Balancer>,
}

impl ForwardTarget {
    pub fn pick_cluster(&self) -> Option<&Cluster> {
        let i = match &self.split {
            Some(b) => b.pick(|i| self.clusters.get(i).map_or(0, |c| c.in_flight())),
            None => 0,
        };
        self.clusters.get(i).map(|c| &**c)
    }
}

/// A service's instances with their balancer and in-flight counts.
#[derive(Debug)]
pub struct Cluster {
    name: Box<str>,
    endpoints: Vec<Arc<Endpoint>>,
    /// `None` when the service has no instance with a positive weight.
    balancer: Option<Balancer>,
    /// How its instances are spoken to (HTTP/1.1 or h2c).
    protocol: Protocol,
}

#[derive(Debug)]
pub struct Endpoint {
    pub authority: http::uri::Authority,
    in_flight: AtomicUsize,
}

impl Cluster {
    fn new(service: &Service) -> Self {
        let weights: Vec<u32> = service.instances().iter().map(|i| i.weight()).collect();
        Self {
            name: service.name().as_str().into(),
            endpoints: service
                .instances()
                .iter()
                .map(|i| {
                    Arc::new(Endpoint {
                        authority: i.address().clone(),
                        in_flight: AtomicUsize::new(0),
                    })
                })
                .collect(),
            balancer: Balancer::new(service.load_balancing(), &weights),
            protocol: service.protocol(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The endpoint for the next request, counted in flight until the guard drops.
    pub fn pick(&self) -> Option<EndpointGuard> {
        let balancer = self.balancer.as_ref()?;
        let i = balancer.pick(|i| self.endpoints[i].in_flight.load(Ordering::Relaxed));
        let endpoint = Arc::clone(&self.endpoints[i]);
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(EndpointGuard(endpoint))
    }

    fn in_flight(&self) -> usize {
        self.endpoints
            .iter()
            .map(|e| e.in_flight.load(Ordering::Relaxed))
            .sum()
    }
}

/// Holds one in-flight slot on an endpoint (for least-request) until dropped, which
/// happens when the response body ends or the request fails.
#[derive(Debug)]
pub struct EndpointGuard(Arc<Endpoint>);

impl EndpointGuard {
    pub fn authority(&self) -> &http::uri::Authority {
        &self.0.authority
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn compile(snapshot: Arc<Snapshot>) -> Compiled {
    let clusters: std::collections::HashMap<&str, Arc<Cluster>> = snapshot
        .config()
        .services()
        .iter()
        .map(|s| (s.name().as_str(), Arc::new(Cluster::new(s))))
        .collect();
    // A route naming an undeclared service cannot pass validation; should one slip
    // through, it behaves like a service with no instances (503), never a panic.
    let missing = Arc::new(Cluster {
        name: "unknown".into(),
        endpoints: Vec::new(),
        balancer: None,
        protocol: Protocol::Http1,
    });
    let snap = Arc::clone(&snapshot);
    let table = RouteTable::build(snap, |route| match route.action() {
        Action::Redirect(_) => None,
        Action::Forward(f) => {
            let targets: Vec<Arc<Cluster>> = f
                .backends()
                .iter()
                .map(|b| {
                    clusters
                        .get(b.service().as_str())
                        .cloned()
                        .unwrap_or_else(|| Arc::clone(&missing))
                })
                .collect();
            let split = (targets.len() > 1)
                .then(|| {
                    let weights: Vec<u32> = f.backends().iter().map(|b| b.weight()).collect();
                    Balancer::new(LoadBalancing::RoundRobin, &weights)
                })
                .flatten();
            Some(ForwardTarget {
                clusters: targets,
                split,
            })
        }
    });
    Compiled { table }
}
