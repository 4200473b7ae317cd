//! Snapshot → [`Compiled`]: the route table with each route's upstream clusters
//! resolved, so the request path does no name lookups. Each route also gets its metric
//! series ([`crate::observe::metrics`]) here: a request finds its counters through the
//! route it matched, never by name. A `discovery: dns` instance becomes one endpoint
//! per address its name last resolved to ([`crate::dns`]), or its address as written
//! until the first lookup succeeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use routemaster_common::balance::Balancer;
use routemaster_common::model::{
    Action, Discovery, HealthCheck, Instance, Limits, LoadBalancing, Outlier, Protocol, Retry,
    Service,
};
use routemaster_common::snapshot::Snapshot;
use routemaster_common::table::RouteTable;

use crate::dns::Resolved;
use crate::error::ProxyError;
use crate::health::{EndpointHealth, HealthRegistry, ServiceLoad, Wanted, now_ms};
use crate::observe::metrics::{Metrics, PairMetrics, ServiceMetrics};
use routemaster_common::mirror::Mirror;

/// One applied snapshot, ready to serve.
#[derive(Debug)]
pub struct Compiled {
    pub table: RouteTable<RouteEntry>,
    /// Every service's cluster, by name (for the metrics' endpoint gauges).
    clusters: Vec<Arc<Cluster>>,
}

impl Compiled {
    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.iter().map(|c| &**c)
    }

    /// Every service's cluster, in name order.
    pub fn all_clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.iter()
    }
}

/// A route's compiled payload.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route's counters for requests with no service (redirects, failures before
    /// a backend is chosen).
    pub metrics: Arc<PairMetrics>,
    /// `None` for a redirect route.
    pub forward: Option<ForwardTarget>,
}

/// Where a forwarding route sends traffic: one or more clusters, split by weight.
#[derive(Debug)]
pub struct ForwardTarget {
    clusters: Vec<Arc<Cluster>>,
    /// The route's counters per backend, beside `clusters`.
    metrics: Vec<Arc<PairMetrics>>,
    /// `None` for a single backend.
    split: Option<Balancer>,
    /// The route's `forward.retry`, shared by its requests.
    retry: Option<Arc<Retry>>,
    /// The route's `forward.mirror`, its clusters resolved.
    mirror: Option<Arc<MirrorTarget>>,
}

/// Where a route mirrors to (shadow mode's mirrored comparison, [`crate::mirror`]).
#[derive(Debug)]
pub struct MirrorTarget {
    pub route: Box<str>,
    pub mirror: Mirror,
    pub candidate: Arc<Cluster>,
    /// `compare.baseline`: a second call to the primary's service, to learn noise.
    pub baseline: Option<Arc<Cluster>>,
}

impl MirrorTarget {
    /// Route `route`'s mirror `m`, its services' clusters found by `cluster`.
    fn new(route: &str, m: &Mirror, cluster: impl Fn(&str) -> Arc<Cluster>) -> Self {
        Self {
            route: route.into(),
            candidate: cluster(m.service().as_str()),
            baseline: m
                .compare()
                .and_then(|c| c.baseline())
                .map(|b| cluster(b.as_str())),
            mirror: m.clone(),
        }
    }
}

impl ForwardTarget {
    pub fn pick_cluster(&self) -> Option<&Cluster> {
        let i = match &self.split {
            Some(b) => b.pick(|i| self.clusters.get(i).map_or(0, |c| c.in_flight())),
            None => 0,
        };
        self.clusters.get(i).map(|c| &**c)
    }

    pub fn retry(&self) -> Option<&Arc<Retry>> {
        self.retry.as_ref()
    }

    pub fn mirror(&self) -> Option<&Arc<MirrorTarget>> {
        self.mirror.as_ref()
    }

    /// [`ForwardTarget::pick_cluster`], with the route's counters for that backend.
    pub fn pick_backend(&self) -> Option<(&Arc<Cluster>, &Arc<PairMetrics>)> {
        let i = match &self.split {
            Some(b) => b.pick(|i| self.clusters.get(i).map_or(0, |c| c.in_flight())),
            None => 0,
        };
        Some((self.clusters.get(i)?, self.metrics.get(i)?))
    }
}

/// A service's instances with their balancer and in-flight counts.
#[derive(Debug)]
pub struct Cluster {
    name: Box<str>,
    endpoints: Vec<Arc<Endpoint>>,
    /// `None` when the service has no instance with a positive weight.
    balancer: Option<Balancer>,
    /// How its instances are spoken to (HTTP/1.1 or HTTP/2, plain or TLS).
    protocol: Protocol,
    /// For `h2`/`https`: the rustls config and server name, built once per snapshot.
    tls: Option<Arc<crate::upstream::ServiceTls>>,
    metrics: Arc<ServiceMetrics>,
    /// Counters across workers and snapshots (limits, retry budget, panic picks).
    load: Arc<ServiceLoad>,
    outlier: Option<Outlier>,
    limits: Option<Limits>,
    health_check: Option<HealthCheck>,
    /// Health can take endpoints out (a health check or outlier detection is set):
    /// without it, picking reads no health at all.
    guarded: bool,
    /// Requests in flight are counted in `load.active` (the service has `limits`, or a
    /// route with `retry` uses it: the budget reads it). Otherwise a pick touches no
    /// per-service counter.
    counted: bool,
    /// `locality` with health: the next level (this level's endpoints and those of the
    /// next, same `Endpoint`s at the same indices), used while none of this level's
    /// endpoints is available. `None`: the last level, or no locality.
    spill: Option<Arc<Cluster>>,
    /// To build a level's balancer.
    load_balancing: LoadBalancing,
}

#[derive(Debug)]
pub struct Endpoint {
    pub authority: http::uri::Authority,
    in_flight: AtomicUsize,
    weight: u32,
    /// Shared with every snapshot that has this endpoint (see [`crate::health`]).
    pub health: Arc<EndpointHealth>,
}

/// Why no endpoint was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// No instance with a positive weight.
    NoInstances,
    /// `limits.max_connections` requests are in flight already.
    Overloaded,
}

impl PickError {
    pub fn into_error(self, cluster: &Cluster) -> ProxyError {
        match self {
            PickError::NoInstances => ProxyError::NoInstances(cluster.name().into()),
            PickError::Overloaded => ProxyError::Overloaded(cluster.name().into()),
        }
    }
}

/// A service's endpoints in instance order, each with its instance's index: one per
/// instance, or for a `discovery: dns` instance that has resolved, one per address it
/// resolved to (same weight and labels). An address with `${node.NAME}` placeholders is
/// filled in when a control plane's snapshot is applied (`locality::localize`); one
/// still here (a route file: a proxy without labels) has no address to connect to and
/// is left out.
fn expand<'a>(
    service: &'a Service,
    resolved: &Resolved,
) -> Vec<(usize, &'a Instance, http::uri::Authority)> {
    let mut out = Vec::with_capacity(service.instances().len());
    for (k, i) in service.instances().iter().enumerate() {
        if i.template().is_some() {
            continue;
        }
        let addrs = match i.discovery() {
            Discovery::Dns { .. } => resolved.get(i.address().as_str()),
            Discovery::Static => None,
        };
        match addrs {
            Some(addrs) => out.extend(addrs.iter().filter_map(|a| {
                match a.to_string().parse::<http::uri::Authority>() {
                    Ok(authority) => Some((k, i, authority)),
                    Err(_) => {
                        // An IPv6 address with a zone (`fe80::1%eth0`) has no URI form.
                        tracing::warn!(service = %service.name(), instance = %i.address(), address = %a, "DNS discovery: an address that cannot be an endpoint left out");
                        None
                    }
                }
            })),
            None => out.push((k, i, i.address().clone())),
        }
    }
    out
}

impl Cluster {
    fn new(
        service: &Service,
        metrics: &Metrics,
        health: &HealthRegistry,
        retried: bool,
        resolved: &Resolved,
    ) -> Self {
        if service.instances().iter().any(|i| i.template().is_some()) {
            tracing::error!(
                service = %service.name(),
                "instances with ${{node.NAME}} addresses left out: only proxies of a control plane (with --label) fill them in"
            );
        }
        let instances = expand(service, resolved);
        let weights: Vec<u32> = instances.iter().map(|(_, i, _)| i.weight()).collect();
        let name = service.name().as_str();
        Self {
            name: name.into(),
            endpoints: instances
                .iter()
                .map(|(_, i, authority)| {
                    Arc::new(Endpoint {
                        health: health.endpoint(name, authority.as_str()),
                        authority: authority.clone(),
                        in_flight: AtomicUsize::new(0),
                        weight: i.weight(),
                    })
                })
                .collect(),
            balancer: Balancer::new(service.load_balancing(), &weights),
            protocol: service.protocol(),
            tls: service
                .protocol()
                .is_tls()
                .then(|| crate::upstream::ServiceTls::build(service)),
            metrics: metrics.service(name),
            load: health.service(name),
            outlier: service.outlier().cloned(),
            limits: service.limits().cloned(),
            health_check: service.health_check().cloned(),
            guarded: service.health_check().is_some() || service.outlier().is_some(),
            counted: retried || service.limits().is_some(),
            spill: None,
            load_balancing: service.load_balancing(),
        }
    }

    /// The service's cluster with `locality` levels (instances sorted by level, see
    /// `common::locality`): without health guarding, only the first usable level; with
    /// it, a chain of levels, each spilling over to the next while none of its
    /// endpoints is available. Panic mode is computed within a level, so traffic never
    /// crosses a `fallback: none` line (those instances are not in any level).
    fn leveled(
        service: &Service,
        metrics: &Metrics,
        health: &HealthRegistry,
        retried: bool,
        resolved: &Resolved,
    ) -> Self {
        let all = Self::new(service, metrics, health, retried, resolved);
        let expanded = expand(service, resolved);
        let level_of = |k: usize| {
            expanded
                .get(k)
                .map_or(u8::MAX, |(_, i, _)| i.locality_level())
        };
        // The end of each level's prefix, lowest level first.
        let mut ends: Vec<usize> = (1..=expanded.len())
            .filter(|&end| end == expanded.len() || level_of(end) != level_of(end - 1))
            .collect();
        if !all.guarded {
            let first = routemaster_common::locality::first_level(service.instances()).len();
            let end = expanded.iter().filter(|(k, _, _)| *k < first).count();
            ends = vec![end.min(all.endpoints.len())];
        }
        let mut next: Option<Arc<Cluster>> = None;
        let mut top = None;
        for (k, &end) in ends.iter().enumerate().rev() {
            let level = all.level(end, next.take());
            if k == 0 {
                top = Some(level);
            } else {
                next = Some(Arc::new(level));
            }
        }
        top.unwrap_or(all)
    }

    /// This cluster cut to its first `end` endpoints, spilling over to `spill`.
    fn level(&self, end: usize, spill: Option<Arc<Cluster>>) -> Self {
        let endpoints: Vec<Arc<Endpoint>> = self.endpoints.iter().take(end).cloned().collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Self {
            name: self.name.clone(),
            balancer: Balancer::new(self.load_balancing, &weights),
            endpoints,
            protocol: self.protocol,
            tls: self.tls.clone(),
            metrics: Arc::clone(&self.metrics),
            load: Arc::clone(&self.load),
            outlier: self.outlier.clone(),
            limits: self.limits.clone(),
            health_check: self.health_check.clone(),
            guarded: self.guarded,
            counted: self.counted,
            spill,
            load_balancing: self.load_balancing,
        }
    }

    /// The last level: every endpoint of the service.
    fn deepest(&self) -> &Cluster {
        let mut c = self;
        while let Some(next) = &c.spill {
            c = next;
        }
        c
    }

    /// Per-service counters (limits, retry budget, panic picks).
    pub fn load(&self) -> &Arc<ServiceLoad> {
        &self.load
    }

    pub fn limits(&self) -> Option<&Limits> {
        self.limits.as_ref()
    }

    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.health_check.as_ref()
    }

    /// What [`HealthRegistry::reconcile`] needs about each endpoint.
    pub fn wanted(&self) -> impl Iterator<Item = Wanted<'_>> {
        self.deepest().endpoints.iter().map(|e| Wanted {
            service: &self.name,
            authority: &e.authority,
            check: self.health_check.as_ref(),
            protocol: self.protocol,
            tls: self.tls.as_ref(),
            health: &e.health,
        })
    }

    /// Panic mode: fewer than half the endpoints (with a positive weight) are healthy,
    /// so health is ignored and every endpoint takes its share (Envoy's panic threshold).
    pub fn in_panic(&self, now: u64) -> bool {
        if !self.guarded {
            return false;
        }
        let mut total = 0usize;
        let mut healthy = 0usize;
        for e in self.endpoints.iter().filter(|e| e.weight > 0) {
            total += 1;
            healthy += usize::from(e.health.available(now));
        }
        healthy * 2 < total
    }

    /// A real request's outcome at endpoint `i`, for outlier detection.
    pub fn record(&self, i: usize, ok: bool) {
        let (Some(outlier), Some(endpoint)) = (&self.outlier, self.endpoints.get(i)) else {
            return;
        };
        let now = now_ms();
        let may_eject = || {
            let ejected = self
                .endpoints
                .iter()
                .filter(|e| e.health.ejected(now))
                .count();
            (ejected + 1) * 100 <= outlier.max_ejected_percent() as usize * self.endpoints.len()
        };
        if let Some(period) = endpoint.health.record(
            ok,
            outlier.consecutive_failures(),
            outlier.base_ejection(),
            now,
            may_eject,
        ) {
            self.load.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                service = %self.name,
                endpoint = %endpoint.authority,
                ejected_for_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
                ejections = endpoint.health.ejections(),
                "outlier detection: endpoint ejected"
            );
        }
    }

    /// Every endpoint of the service (all `locality` levels).
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.deepest().endpoints.iter().map(|e| &**e)
    }

    /// Its upstream connection counters.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.metrics
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn tls(&self) -> Option<&Arc<crate::upstream::ServiceTls>> {
        self.tls.as_ref()
    }

    /// The endpoint for the next request, counted in flight until the guard drops.
    /// Healthy endpoints only, unless in panic mode; `tried` (bit `i` for endpoint `i`,
    /// the first 64) are avoided while an untried healthy one exists. Only atomics.
    pub fn pick(self: &Arc<Self>, tried: u64) -> Result<EndpointGuard, PickError> {
        if let Some(next) = &self.spill {
            // `locality`: the next level while none of this one's endpoints is usable.
            let now = now_ms();
            if !self
                .endpoints
                .iter()
                .any(|e| e.weight > 0 && e.health.available(now))
            {
                return next.pick(tried);
            }
        }
        let balancer = self.balancer.as_ref().ok_or(PickError::NoInstances)?;
        if let Some(limits) = &self.limits
            && self.load.active.load(Ordering::Relaxed) >= limits.max_connections() as usize
        {
            self.load.overflows.fetch_add(1, Ordering::Relaxed);
            return Err(PickError::Overloaded);
        }
        let load = |i: usize| self.endpoints[i].in_flight.load(Ordering::Relaxed);
        let mut i = balancer.pick(load);
        let untried = |i: usize| i >= 64 || tried & (1 << i) == 0;
        if self.guarded || tried != 0 {
            let now = if self.guarded { now_ms() } else { 0 };
            let panic = self.in_panic(now);
            if panic {
                self.load.panic_picks.fetch_add(1, Ordering::Relaxed);
            }
            let healthy = |i: usize| {
                let e = &self.endpoints[i];
                e.weight > 0 && (!self.guarded || panic || e.health.available(now))
            };
            if !(healthy(i) && untried(i)) {
                let n = self.endpoints.len();
                let start = fastrand::usize(..n.max(1));
                let scan =
                    |ok: &dyn Fn(usize) -> bool| (0..n).map(|k| (start + k) % n).find(|&j| ok(j));
                // The balancer's own choice first (weights, load), then any endpoint.
                i = (0..n)
                    .map(|_| balancer.pick(load))
                    .find(|&j| healthy(j) && untried(j))
                    .or_else(|| scan(&|j| healthy(j) && untried(j)))
                    .or_else(|| scan(&healthy))
                    .unwrap_or(i);
            }
        }
        self.endpoints[i].in_flight.fetch_add(1, Ordering::Relaxed);
        if self.counted {
            self.load.active.fetch_add(1, Ordering::Relaxed);
        }
        Ok(EndpointGuard {
            cluster: Arc::clone(self),
            index: i,
        })
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
pub struct EndpointGuard {
    cluster: Arc<Cluster>,
    index: usize,
}

impl Endpoint {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Its instance's `weight`.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

impl EndpointGuard {
    pub fn authority(&self) -> &http::uri::Authority {
        &self.cluster.endpoints[self.index].authority
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The endpoint's bit for [`Cluster::pick`]'s `tried` (0 past the first 64).
    pub fn bit(&self) -> u64 {
        if self.index < 64 { 1 << self.index } else { 0 }
    }

    /// This request's outcome here, for outlier detection: `ok` unless the endpoint
    /// failed to connect, reset, timed out or answered 5xx.
    pub fn record(&self, ok: bool) {
        self.cluster.record(self.index, ok);
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.cluster.endpoints[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        if self.cluster.counted {
            self.cluster.load.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `resolved`: the current sets of `discovery: dns` names ([`crate::dns`]).
pub fn compile(
    snapshot: Arc<Snapshot>,
    metrics: &Metrics,
    health: &HealthRegistry,
    resolved: &Resolved,
) -> Compiled {
    // Services some route retries on: their requests in flight are counted (the budget).
    let retried: std::collections::HashSet<&str> = snapshot
        .config()
        .routes()
        .iter()
        .filter_map(|r| match r.action() {
            Action::Forward(f) if f.retry().is_some() => Some(f.backends()),
            _ => None,
        })
        .flatten()
        .map(|b| b.service().as_str())
        .collect();
    let clusters: std::collections::HashMap<&str, Arc<Cluster>> = snapshot
        .config()
        .services()
        .iter()
        .map(|s| {
            let name = s.name().as_str();
            let retried = retried.contains(name);
            let cluster = if s.locality().is_some() {
                Cluster::leveled(s, metrics, health, retried, resolved)
            } else {
                Cluster::new(s, metrics, health, retried, resolved)
            };
            (name, Arc::new(cluster))
        })
        .collect();
    // A route naming an undeclared service cannot pass validation; should one slip
    // through, it behaves like a service with no instances (503), never a panic.
    let missing = Arc::new(Cluster {
        name: "unknown".into(),
        endpoints: Vec::new(),
        balancer: None,
        protocol: Protocol::Http1,
        tls: None,
        metrics: metrics.service("unknown"),
        load: Arc::default(),
        outlier: None,
        limits: None,
        health_check: None,
        guarded: false,
        counted: false,
        spill: None,
        load_balancing: LoadBalancing::default(),
    });
    let snap = Arc::clone(&snapshot);
    let table = RouteTable::build(snap, |route| RouteEntry {
        metrics: metrics.pair(route.id().as_str(), ""),
        forward: forward_target(route, &clusters, &missing, metrics),
    });
    let mut all: Vec<Arc<Cluster>> = clusters.values().cloned().collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Compiled {
        clusters: all,
        table,
    }
}

fn forward_target(
    route: &routemaster_common::model::Route,
    clusters: &std::collections::HashMap<&str, Arc<Cluster>>,
    missing: &Arc<Cluster>,
    metrics: &Metrics,
) -> Option<ForwardTarget> {
    match route.action() {
        Action::Redirect(_) => None,
        Action::Forward(f) => {
            let targets: Vec<Arc<Cluster>> = f
                .backends()
                .iter()
                .map(|b| {
                    clusters
                        .get(b.service().as_str())
                        .cloned()
                        .unwrap_or_else(|| Arc::clone(missing))
                })
                .collect();
            let split = (targets.len() > 1)
                .then(|| {
                    let weights: Vec<u32> = f.backends().iter().map(|b| b.weight()).collect();
                    Balancer::new(LoadBalancing::RoundRobin, &weights)
                })
                .flatten();
            let pairs = targets
                .iter()
                .map(|c| metrics.pair(route.id().as_str(), c.name()))
                .collect();
            let cluster = |name: &str| {
                clusters
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| Arc::clone(missing))
            };
            let mirror = f
                .mirror()
                .map(|m| Arc::new(MirrorTarget::new(route.id().as_str(), m, cluster)));
            Some(ForwardTarget {
                clusters: targets,
                metrics: pairs,
                split,
                retry: f.retry().cloned().map(Arc::new),
                mirror,
            })
        }
    }
}

/// For tests elsewhere: the mirror of `yaml`'s first route, its services' clusters built
/// as [`compile`] builds them.
#[cfg(test)]
pub fn mirror_target_for_tests(yaml: &str) -> Arc<MirrorTarget> {
    let spec = routemaster_common::spec::ConfigSpec::from_yaml(yaml).unwrap();
    let config = routemaster_common::Config::try_from(spec).unwrap();
    let metrics = Metrics::new(1);
    let health = HealthRegistry::default();
    let cluster = |name: &str| {
        let service = config.services().iter().find(|s| s.name().as_str() == name);
        let service = service.unwrap();
        Arc::new(Cluster::new(
            service,
            &metrics,
            &health,
            false,
            &Resolved::default(),
        ))
    };
    let route = &config.routes()[0];
    let Action::Forward(f) = route.action() else {
        panic!("not a forward route")
    };
    Arc::new(MirrorTarget::new(
        route.id().as_str(),
        f.mirror().unwrap(),
        cluster,
    ))
}

#[cfg(test)]
mod pick_tests {
    use super::*;
    use routemaster_common::spec::ConfigSpec;

    /// A cluster for `yaml`'s first service, with its health in `registry`.
    fn cluster(yaml: &str, registry: &HealthRegistry) -> Arc<Cluster> {
        let spec = ConfigSpec::from_yaml(yaml).unwrap();
        let config = routemaster_common::Config::try_from(spec).unwrap();
        Arc::new(Cluster::new(
            &config.services()[0],
            &Metrics::new(1),
            registry,
            true,
            &Resolved::default(),
        ))
    }

    fn eject(c: &Cluster, i: usize) {
        for _ in 0..3 {
            c.record(i, false);
        }
    }

    fn picks(c: &Arc<Cluster>, tried: u64, n: usize) -> Vec<usize> {
        let mut seen = vec![0; c.endpoints.len()];
        for _ in 0..n {
            seen[c.pick(tried).unwrap().index] += 1;
        }
        seen
    }

    const THREE: &str = "services:\n  - name: s\n    instances: [{ address: \"10.0.0.1:1\" }, { address: \"10.0.0.2:1\" }, { address: \"10.0.0.3:1\" }]\n    outlier: { consecutive_failures: 3, max_ejected_percent: 100 }\n";

    #[test]
    fn ejected_endpoints_get_nothing_until_fewer_than_half_are_healthy() {
        let registry = HealthRegistry::default();
        let c = cluster(THREE, &registry);
        assert_eq!(picks(&c, 0, 300), vec![100, 100, 100]);
        eject(&c, 2);
        assert!(!c.in_panic(now_ms()));
        let seen = picks(&c, 0, 300);
        assert_eq!(seen[2], 0, "{seen:?}");
        // Two of three ejected: panic mode, all take traffic again.
        eject(&c, 1);
        assert!(c.in_panic(now_ms()));
        let seen = picks(&c, 0, 300);
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(c.load().panic_picks.load(Ordering::Relaxed), 300);
    }

    #[test]
    fn a_retry_avoids_tried_endpoints_while_a_healthy_one_is_left() {
        let registry = HealthRegistry::default();
        let c = cluster(THREE, &registry);
        let seen = picks(&c, 0b001, 100);
        assert_eq!(seen[0], 0, "{seen:?}");
        assert_eq!(picks(&c, 0b011, 50), vec![0, 0, 50]);
        // Everything tried: any healthy one rather than none.
        eject(&c, 2);
        let seen = picks(&c, 0b111, 100);
        assert_eq!(seen[2], 0, "{seen:?}");
        assert_eq!(seen[0] + seen[1], 100);
    }

    #[test]
    fn health_survives_a_new_snapshot_of_the_same_endpoints() {
        let registry = HealthRegistry::default();
        let c = cluster(THREE, &registry);
        eject(&c, 0);
        let again = cluster(THREE, &registry);
        assert!(again.endpoints[0].health.ejected(now_ms()));
        assert!(Arc::ptr_eq(&again.load, &c.load));
        assert_eq!(picks(&again, 0, 60)[0], 0);
    }

    #[test]
    fn max_ejected_percent_caps_ejections() {
        let registry = HealthRegistry::default();
        let capped = THREE.replace("max_ejected_percent: 100", "max_ejected_percent: 50");
        let c = cluster(&capped, &registry);
        eject(&c, 0);
        eject(&c, 1);
        let now = now_ms();
        let ejected = c.endpoints.iter().filter(|e| e.health.ejected(now)).count();
        assert_eq!(ejected, 1, "50% of 3 allows one");
    }

    #[test]
    fn limits_refuse_picks_over_max_connections() {
        let registry = HealthRegistry::default();
        let c = cluster(
            "services:\n  - { name: s, instances: [{ address: \"10.0.0.1:1\" }], limits: { max_connections: 2 } }\n",
            &registry,
        );
        let a = c.pick(0).unwrap();
        let _b = c.pick(0).unwrap();
        assert_eq!(c.pick(0).unwrap_err(), PickError::Overloaded);
        drop(a);
        assert!(c.pick(0).is_ok());
    }
}
