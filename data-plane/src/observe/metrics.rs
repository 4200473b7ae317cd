//! The proxy's Prometheus metrics: per-worker counters and histograms written on the
//! request path with relaxed atomics (no lock, no allocation, no label lookup), summed
//! at scrape time by [`ProxyCollector`] and written in the classic text format 0.0.4.
//!
//! Labelled series hang off objects resolved at snapshot apply time
//! ([`Metrics::route`], [`Metrics::pair`], [`Metrics::service`]): a route's compiled
//! payload holds `Arc`s to its series, so a request only indexes an array with its
//! worker number. The objects are kept by name in [`Metrics`] across snapshots, so a
//! counter never goes backwards when a table is swapped; label values are route ids
//! and service names from the configuration only (bounded cardinality; a route or
//! service removed from the configuration keeps its last values until restart).
//!
//! Adding a per-route counter (say `routemaster_shadow_total{route,result}`): a field
//! in [`RouteShard`], a method on [`RouteMetrics`] that bumps it, and a family in
//! [`ProxyCollector::collect`].

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::{Protocol, Reason};
use crate::state::{Connection, ProxyState};

/// Histogram bucket upper bounds, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKET_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Status classes counted: 1xx to 5xx.
const CLASSES: usize = 5;
const CLASS_NAMES: [&str; CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

thread_local! {
    /// This thread's shard: its worker number, or `usize::MAX` off the workers.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Marks the calling thread as worker `i`: its counters go to shard `i`.
pub fn set_worker(i: usize) {
    SHARD.with(|s| s.set(i));
}

/// Keeps one shard per cache line pair, so workers never write the same line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// One shard per worker, each allocated by its worker's first use: a series nobody
/// has counted into (most routes of a large table) costs a pointer per worker, not a
/// block of counters. After the first use a shard is one atomic load away.
#[derive(Debug)]
struct Shards<T>(Box<[OnceLock<Box<Padded<T>>>]>);

impl<T> Shards<T> {
    /// The shards in use.
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().filter_map(OnceLock::get).map(|p| &p.0)
    }
}

fn sharded<T: Default>(n: usize) -> Shards<T> {
    Shards((0..n).map(|_| OnceLock::new()).collect())
}

fn pick<T: Default>(shards: &Shards<T>) -> &T {
    let i = SHARD.with(Cell::get).min(shards.0.len() - 1);
    &shards.0[i].get_or_init(|| Box::new(Padded(T::default()))).0
}

fn sum<T>(shards: &Shards<T>, f: impl Fn(&T) -> u64) -> u64 {
    shards.iter().map(f).sum()
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One worker's part of a histogram: non-cumulative bucket counts (the last is
/// `+Inf`) and the sum in nanoseconds.
#[derive(Debug, Default)]
struct Histo {
    buckets: [AtomicU64; 15],
    sum_nanos: AtomicU64,
}

impl Histo {
    fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKET_NANOS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(BUCKET_NANOS.len());
        bump(&self.buckets[i], 1);
        bump(&self.sum_nanos, nanos);
    }
}

fn histogram<T>(shards: &Shards<T>, f: impl Fn(&T) -> &Histo) -> Histogram {
    let mut counts = [0u64; 15];
    let mut sum_nanos = 0u64;
    for s in shards.iter() {
        let h = f(s);
        for (c, b) in counts.iter_mut().zip(&h.buckets) {
            *c += get(b);
        }
        sum_nanos = sum_nanos.wrapping_add(get(&h.sum_nanos));
    }
    let mut cumulative = 0;
    let buckets = BUCKETS
        .iter()
        .zip(counts)
        .map(|(&upper, c)| {
            cumulative += c;
            let mut b = Bucket::default();
            b.set_upper_bound(upper);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(sum_nanos as f64 / 1e9);
    h
}

/// Per-route series, one shard per worker.
#[derive(Debug, Default)]
struct RouteShard {
    duration: Histo,
    upstream: Histo,
}

/// A route's histograms (by route id).
#[derive(Debug)]
pub struct RouteMetrics {
    id: Box<str>,
    shards: Shards<RouteShard>,
}

/// Per (route, service) counters on one worker.
#[derive(Debug, Default)]
struct PairShard {
    requests: [[AtomicU64; CLASSES]; Protocol::COUNT],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// What a request that matched a route carries to the end: its (route, service)
/// counters, and through them the route's histograms and the service's series. The
/// service is empty for redirects and for requests that failed before a backend was
/// chosen.
#[derive(Debug)]
pub struct PairMetrics {
    route: Arc<RouteMetrics>,
    service: Option<Arc<ServiceMetrics>>,
    shards: Shards<PairShard>,
    /// The access log's `route` and `service` fields, escaped once.
    log_fields: Box<[u8]>,
}

impl PairMetrics {
    pub fn route_id(&self) -> &str {
        &self.route.id
    }

    pub fn service_name(&self) -> &str {
        self.service.as_deref().map_or("", |s| &s.name)
    }

    /// `,"route":"…","service":"…"` for the access log's line.
    pub fn log_fields(&self) -> &[u8] {
        &self.log_fields
    }

    pub fn service(&self) -> Option<&ServiceMetrics> {
        self.service.as_deref()
    }

    /// The service's series, to keep beyond the request (an open connection).
    pub fn service_arc(&self) -> Option<&Arc<ServiceMetrics>> {
        self.service.as_ref()
    }
}

/// Upstream connection counters of one service on one worker.
#[derive(Debug, Default)]
struct ServiceShard {
    opened: AtomicU64,
    reused: AtomicU64,
    failed: AtomicU64,
    /// Connections opened here less those closed here (a sum across shards is exact).
    open: AtomicI64,
}

/// A service's upstream connection counters (by service name).
#[derive(Debug)]
pub struct ServiceMetrics {
    name: Box<str>,
    shards: Shards<ServiceShard>,
}

impl ServiceMetrics {
    /// An upstream connection for one exchange: `reused` from the pool, or new.
    pub fn connection(&self, reused: bool) {
        let s = pick(&self.shards);
        bump(if reused { &s.reused } else { &s.opened }, 1);
    }

    /// A connection attempt to one of its endpoints failed.
    pub fn connect_failed(&self) {
        bump(&pick(&self.shards).failed, 1);
    }

    /// Its upstream connections open now (the gauge's value).
    pub fn open_connections(&self) -> i64 {
        self.shards
            .iter()
            .map(|x| x.open.load(Ordering::Relaxed))
            .sum()
    }
}

/// One open upstream connection, counted in its service's
/// `routemaster_upstream_connections_open` until dropped (it travels with the
/// connection through the pool).
#[derive(Debug, Default)]
pub struct OpenConn(Option<Arc<ServiceMetrics>>);

impl OpenConn {
    pub fn new(service: Option<&Arc<ServiceMetrics>>) -> Self {
        if let Some(s) = service {
            pick(&s.shards).open.fetch_add(1, Ordering::Relaxed);
        }
        Self(service.cloned())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            pick(&s.shards).open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Process-wide counters on one worker.
#[derive(Debug, Default)]
struct GlobalShard {
    reasons: [AtomicU64; Reason::COUNT],
    /// Requests that matched no route (or could not be routed at all), by class and
    /// protocol.
    unrouted: [[AtomicU64; CLASSES]; Protocol::COUNT],
    unrouted_in: AtomicU64,
    unrouted_out: AtomicU64,
    connections: AtomicU64,
}

#[derive(Debug, Default)]
struct Names {
    routes: HashMap<Box<str>, Arc<RouteMetrics>>,
    services: HashMap<Box<str>, Arc<ServiceMetrics>>,
    /// Route id → service name → counters (looked up without allocating).
    pairs: HashMap<Box<str>, HashMap<Box<str>, Arc<PairMetrics>>>,
}

/// Every metric of the proxy's request path. One per process (in [`ProxyState`]).
#[derive(Debug)]
pub struct Metrics {
    shards: usize,
    global: Shards<GlobalShard>,
    /// Only taken at snapshot apply time and at scrape time.
    names: Mutex<Names>,
    pub nacks: AtomicU64,
}

fn lock(m: &Mutex<Names>) -> MutexGuard<'_, Names> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// For `workers` worker threads (one more shard takes everything else).
    pub fn new(workers: usize) -> Self {
        let shards = workers.max(1) + 1;
        Self {
            shards,
            global: sharded(shards),
            names: Mutex::new(Names::default()),
            nacks: AtomicU64::new(0),
        }
    }

    /// The series of route `id` (created on first use; apply time only).
    pub fn route(&self, id: &str) -> Arc<RouteMetrics> {
        let mut names = lock(&self.names);
        self.route_locked(&mut names, id)
    }

    fn route_locked(&self, names: &mut Names, id: &str) -> Arc<RouteMetrics> {
        if let Some(r) = names.routes.get(id) {
            return Arc::clone(r);
        }
        let r = Arc::new(RouteMetrics {
            id: id.into(),
            shards: sharded(self.shards),
        });
        names.routes.insert(id.into(), Arc::clone(&r));
        r
    }

    /// The series of service `name` (apply time only).
    pub fn service(&self, name: &str) -> Arc<ServiceMetrics> {
        let mut names = lock(&self.names);
        self.service_locked(&mut names, name)
    }

    fn service_locked(&self, names: &mut Names, name: &str) -> Arc<ServiceMetrics> {
        if let Some(s) = names.services.get(name) {
            return Arc::clone(s);
        }
        let s = Arc::new(ServiceMetrics {
            name: name.into(),
            shards: sharded(self.shards),
        });
        names.services.insert(name.into(), Arc::clone(&s));
        s
    }

    /// The counters of route `route` sending to `service` (`""`: no service).
    pub fn pair(&self, route: &str, service: &str) -> Arc<PairMetrics> {
        let mut names = lock(&self.names);
        if let Some(p) = names.pairs.get(route).and_then(|m| m.get(service)) {
            return Arc::clone(p);
        }
        let pair = Arc::new(PairMetrics {
            route: self.route_locked(&mut names, route),
            service: (!service.is_empty()).then(|| self.service_locked(&mut names, service)),
            shards: sharded(self.shards),
            log_fields: super::access_log::route_fields(route, service),
        });
        names
            .pairs
            .entry(route.into())
            .or_default()
            .insert(service.into(), Arc::clone(&pair));
        pair
    }

    /// A downstream connection was accepted.
    pub fn connection_accepted(&self) {
        bump(&pick(&self.global).connections, 1);
    }

    /// One request's (or tunnel's, or stream's) outcome.
    pub(super) fn record(&self, o: &super::Outcome<'_>, elapsed: Duration) {
        let class = usize::from(o.status / 100).clamp(1, CLASSES) - 1;
        let proto = o.protocol as usize;
        let global = pick(&self.global);
        if o.reason.is_proxy_generated() {
            bump(&global.reasons[o.reason as usize], 1);
        }
        match o.tag {
            Some(pair) => {
                let s = pick(&pair.shards);
                bump(&s.requests[proto][class], 1);
                bump(&s.bytes_in, o.bytes_in);
                bump(&s.bytes_out, o.bytes_out);
                let r = pick(&pair.route.shards);
                r.duration.observe(elapsed);
                if let Some(up) = o.upstream_time {
                    r.upstream.observe(up);
                }
            }
            None => {
                bump(&global.unrouted[proto][class], 1);
                bump(&global.unrouted_in, o.bytes_in);
                bump(&global.unrouted_out, o.bytes_out);
            }
        }
    }
}

/// Scrapes [`Metrics`] and the rest of [`ProxyState`] into metric families.
#[derive(Debug)]
pub struct ProxyCollector {
    state: Arc<ProxyState>,
    descs: Vec<Desc>,
}

impl ProxyCollector {
    pub fn new(state: Arc<ProxyState>) -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, labels)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
                .ok()
            })
            .collect();
        Self { state, descs }
    }
}

/// Every family the proxy exports: name, help, labels. The README's table lists the
/// same (a test checks a scrape against it).
pub const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "routemaster_shadow_total",
        "Shadow mode verdicts for each route's current declaration: shadow rules (hit, miss, unknown) and comparing mirrors (match, miss, noise, error, dropped).",
        &["route", "result"],
    ),
    (
        "routemaster_requests_total",
        "Requests (WebSocket tunnels and gRPC streams count once) by route, service, status class and protocol.",
        &["route", "service", "code_class", "protocol"],
    ),
    (
        "routemaster_request_bytes_total",
        "Bytes received from clients (HTTP/1.1: heads and bodies; HTTP/2: declared content-length).",
        &["route", "service"],
    ),
    (
        "routemaster_response_bytes_total",
        "Bytes sent to clients (HTTP/1.1: heads and bodies; HTTP/2: body data).",
        &["route", "service"],
    ),
    (
        "routemaster_request_duration_seconds",
        "Time from a request's head to its response's last byte, by route.",
        &["route"],
    ),
    (
        "routemaster_upstream_response_seconds",
        "Time from a request's head to the upstream response head, by route.",
        &["route"],
    ),
    (
        "routemaster_proxy_responses_total",
        "Responses the proxy made itself (not the upstream's), by reason.",
        &["reason"],
    ),
    (
        "routemaster_requests_in_flight",
        "Requests in progress.",
        &[],
    ),
    (
        "routemaster_downstream_connections_active",
        "Open client connections.",
        &[],
    ),
    (
        "routemaster_downstream_connections_total",
        "Client connections accepted.",
        &[],
    ),
    (
        "routemaster_downstream_connections_refused_total",
        "Client connections turned away by --max-connections.",
        &[],
    ),
    (
        "routemaster_upstream_connections_total",
        "Upstream HTTP/1.1 connections used for an exchange, by service and result (new, reused, failed).",
        &["service", "result"],
    ),
    (
        "routemaster_upstream_connections_open",
        "Upstream HTTP/1.1 connections open (in use or idle in a pool), by the service that opened them.",
        &["service"],
    ),
    (
        "routemaster_endpoint_in_flight",
        "Requests in progress per endpoint of the serving table.",
        &["service", "endpoint"],
    ),
    (
        "routemaster_endpoint_healthy",
        "1 if the endpoint takes new requests (health check up and not ejected), else 0.",
        &["service", "endpoint"],
    ),
    (
        "routemaster_upstream_panic",
        "1 while fewer than half the service's endpoints are healthy (panic mode: balancing over all), else 0.",
        &["service"],
    ),
    (
        "routemaster_upstream_events_total",
        "Resilience events per service: retry, retry_over_budget (a retry the budget refused), ejection (outlier detection), limit_overflow (503 from limits), panic_pick (an endpoint picked in panic mode).",
        &["service", "event"],
    ),
    (
        "routemaster_snapshot_version",
        "Version of the serving snapshot (absent before the first).",
        &[],
    ),
    (
        "routemaster_snapshot_applied_timestamp_seconds",
        "When the serving snapshot was applied (Unix time).",
        &[],
    ),
    (
        "routemaster_snapshot_nacks_total",
        "Snapshots from the control plane refused (NACKed).",
        &[],
    ),
    (
        "routemaster_control_plane_state",
        "Connection to the control plane: 1 for the current state (connected mode only).",
        &["state"],
    ),
    (
        "routemaster_dns_lookup_failures_total",
        "discovery: dns lookups that failed or found nothing (the last good set was kept).",
        &[],
    ),
    (
        "routemaster_access_log_lines_total",
        "Access log lines written.",
        &[],
    ),
    (
        "routemaster_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind.",
        &[],
    ),
    (
        "routemaster_build_info",
        "Always 1; the labels say which build this is.",
        &["version"],
    ),
];

fn family(name: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let help = FAMILIES.iter().find(|f| f.0 == name).map_or("", |f| f.1);
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_owned());
    mf.set_help(help.to_owned());
    mf.set_field_type(kind);
    mf.set_metric(metrics);
    mf
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn counter(l: &[(&str, &str)], v: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::from_label(labels(l));
    m.set_counter(c);
    m
}

fn gauge(l: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels(l));
    m.set_gauge(g);
    m
}

fn hist(l: &[(&str, &str)], h: Histogram) -> Metric {
    let mut m = Metric::from_label(labels(l));
    m.set_histogram(h);
    m
}

impl Collector for ProxyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use MetricType::{COUNTER, GAUGE, HISTOGRAM};
        let state = &self.state;
        let m = &state.observe.metrics;
        let (pairs, routes, services) = {
            let names = lock(&m.names);
            let mut pairs: Vec<_> = names
                .pairs
                .values()
                .flat_map(HashMap::values)
                .cloned()
                .collect();
            pairs.sort_by(|a, b| {
                (a.route_id(), a.service_name()).cmp(&(b.route_id(), b.service_name()))
            });
            let mut routes: Vec<_> = names.routes.values().cloned().collect();
            routes.sort_by(|a, b| a.id.cmp(&b.id));
            let mut services: Vec<_> = names.services.values().cloned().collect();
            services.sort_by(|a, b| a.name.cmp(&b.name));
            (pairs, routes, services)
        };

        let mut requests = Vec::new();
        let mut bytes_in = Vec::new();
        let mut bytes_out = Vec::new();
        let mut add_requests =
            |route: &str, service: &str, counts: [[u64; CLASSES]; Protocol::COUNT]| {
                for (p, by_class) in counts.iter().enumerate() {
                    for (c, &n) in by_class.iter().enumerate() {
                        if n > 0 {
                            requests.push(counter(
                                &[
                                    ("route", route),
                                    ("service", service),
                                    ("code_class", CLASS_NAMES[c]),
                                    ("protocol", Protocol::ALL[p].as_str()),
                                ],
                                n,
                            ));
                        }
                    }
                }
            };
        // A series appears once something was counted into it: a large table whose
        // routes are mostly idle does not make a large scrape.
        for pair in pairs.iter().filter(|p| p.shards.iter().next().is_some()) {
            let mut counts = [[0u64; CLASSES]; Protocol::COUNT];
            for s in pair.shards.iter() {
                for (p, by_class) in s.requests.iter().enumerate() {
                    for (c, n) in by_class.iter().enumerate() {
                        counts[p][c] += get(n);
                    }
                }
            }
            add_requests(pair.route_id(), pair.service_name(), counts);
            let l = [("route", pair.route_id()), ("service", pair.service_name())];
            bytes_in.push(counter(&l, sum(&pair.shards, |s| get(&s.bytes_in))));
            bytes_out.push(counter(&l, sum(&pair.shards, |s| get(&s.bytes_out))));
        }
        let mut counts = [[0u64; CLASSES]; Protocol::COUNT];
        for s in m.global.iter() {
            for (p, by_class) in s.unrouted.iter().enumerate() {
                for (c, n) in by_class.iter().enumerate() {
                    counts[p][c] += get(n);
                }
            }
        }
        add_requests("", "", counts);
        let l = [("route", ""), ("service", "")];
        bytes_in.push(counter(&l, sum(&m.global, |s| get(&s.unrouted_in))));
        bytes_out.push(counter(&l, sum(&m.global, |s| get(&s.unrouted_out))));

        let mut duration = Vec::new();
        let mut upstream = Vec::new();
        for r in routes.iter().filter(|r| r.shards.iter().next().is_some()) {
            duration.push(hist(
                &[("route", &r.id)],
                histogram(&r.shards, |s| &s.duration),
            ));
            upstream.push(hist(
                &[("route", &r.id)],
                histogram(&r.shards, |s| &s.upstream),
            ));
        }

        let reasons = Reason::ALL
            .iter()
            .filter(|r| r.is_proxy_generated())
            .map(|r| {
                counter(
                    &[("reason", r.as_str())],
                    sum(&m.global, |s| get(&s.reasons[*r as usize])),
                )
            })
            .collect();

        let mut connections = Vec::new();
        let mut open = Vec::new();
        for s in &services {
            let name: &str = &s.name;
            let n: i64 = s
                .shards
                .iter()
                .map(|x| x.open.load(Ordering::Relaxed))
                .sum();
            open.push(gauge(&[("service", name)], n.max(0) as f64));
            for (result, n) in [
                ("new", sum(&s.shards, |x| get(&x.opened))),
                ("reused", sum(&s.shards, |x| get(&x.reused))),
                ("failed", sum(&s.shards, |x| get(&x.failed))),
            ] {
                connections.push(counter(&[("service", name), ("result", result)], n));
            }
        }

        let mut in_flight = Vec::new();
        let mut healthy = Vec::new();
        let mut panic = Vec::new();
        let mut events = Vec::new();
        let now_ms = crate::health::now_ms();
        if let Some(compiled) = state.load() {
            for cluster in compiled.clusters() {
                let service = [("service", cluster.name())];
                panic.push(gauge(
                    &service,
                    f64::from(u8::from(cluster.in_panic(now_ms))),
                ));
                let l = cluster.load();
                for (event, n) in [
                    ("retry", &l.retries),
                    ("retry_over_budget", &l.retries_over_budget),
                    ("ejection", &l.ejections),
                    ("limit_overflow", &l.overflows),
                    ("panic_pick", &l.panic_picks),
                ] {
                    events.push(counter(
                        &[("service", cluster.name()), ("event", event)],
                        n.load(Ordering::Relaxed),
                    ));
                }
                for e in cluster.endpoints() {
                    let endpoint = e.authority.as_str();
                    let l = [("service", cluster.name()), ("endpoint", endpoint)];
                    in_flight.push(gauge(&l, e.in_flight() as f64));
                    healthy.push(gauge(&l, f64::from(u8::from(e.health.available(now_ms)))));
                }
            }
        }

        let mut snapshot_version = Vec::new();
        let mut applied = Vec::new();
        let (snapshot, meta) = state.current_with_meta();
        if let Some(s) = snapshot {
            snapshot_version.push(gauge(&[], s.version() as f64));
        }
        if let Some(at) = meta.at {
            let t = at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            applied.push(gauge(&[], t));
        }
        let control_plane = state
            .control_plane()
            .map(|c| {
                [
                    Connection::Connecting,
                    Connection::Connected,
                    Connection::Disconnected,
                ]
                .iter()
                .map(|s| gauge(&[("state", s.as_str())], f64::from(u8::from(*s == c.state))))
                .collect()
            })
            .unwrap_or_default();

        let stats = &state.stats;
        let log = state.observe.access_log();
        let mut shadow: Vec<Metric> = state
            .shadow
            .counts()
            .iter()
            .flat_map(|c| {
                [("hit", c.hit), ("miss", c.miss), ("unknown", c.unknown)]
                    .map(|(result, n)| counter(&[("route", &c.route), ("result", result)], n))
            })
            .collect();
        for c in state.shadow.mirror_counts() {
            for (result, n) in crate::mirror::RESULTS.iter().zip(c.counts) {
                shadow.push(counter(&[("route", &c.route), ("result", result)], n));
            }
        }
        vec![
            family("routemaster_shadow_total", COUNTER, shadow),
            family("routemaster_requests_total", COUNTER, requests),
            family("routemaster_request_bytes_total", COUNTER, bytes_in),
            family("routemaster_response_bytes_total", COUNTER, bytes_out),
            family("routemaster_request_duration_seconds", HISTOGRAM, duration),
            family("routemaster_upstream_response_seconds", HISTOGRAM, upstream),
            family("routemaster_proxy_responses_total", COUNTER, reasons),
            family(
                "routemaster_requests_in_flight",
                GAUGE,
                vec![gauge(&[], get(&stats.in_flight) as f64)],
            ),
            family(
                "routemaster_downstream_connections_active",
                GAUGE,
                vec![gauge(&[], state.connections.open() as f64)],
            ),
            family(
                "routemaster_downstream_connections_total",
                COUNTER,
                vec![counter(&[], sum(&m.global, |s| get(&s.connections)))],
            ),
            family(
                "routemaster_downstream_connections_refused_total",
                COUNTER,
                vec![counter(&[], state.connections.refused())],
            ),
            family(
                "routemaster_upstream_connections_total",
                COUNTER,
                connections,
            ),
            family("routemaster_upstream_connections_open", GAUGE, open),
            family("routemaster_endpoint_in_flight", GAUGE, in_flight),
            family("routemaster_endpoint_healthy", GAUGE, healthy),
            family("routemaster_upstream_panic", GAUGE, panic),
            family("routemaster_upstream_events_total", COUNTER, events),
            family("routemaster_snapshot_version", GAUGE, snapshot_version),
            family(
                "routemaster_snapshot_applied_timestamp_seconds",
                GAUGE,
                applied,
            ),
            family(
                "routemaster_snapshot_nacks_total",
                COUNTER,
                vec![counter(&[], get(&m.nacks))],
            ),
            family("routemaster_control_plane_state", GAUGE, control_plane),
            family(
                "routemaster_dns_lookup_failures_total",
                COUNTER,
                vec![counter(
                    &[],
                    state
                        .dns
                        .failures
                        .load(std::sync::atomic::Ordering::Relaxed),
                )],
            ),
            family(
                "routemaster_access_log_lines_total",
                COUNTER,
                vec![counter(&[], log.map_or(0, |l| l.written()))],
            ),
            family(
                "routemaster_access_log_dropped_total",
                COUNTER,
                vec![counter(&[], log.map_or(0, |l| l.dropped()))],
            ),
            family(
                "routemaster_build_info",
                GAUGE,
                vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
            ),
        ]
    }
}

/// `GET /metrics`: the classic text format 0.0.4, whatever `Accept` says (an
/// OpenMetrics-only scraper is answered in the format every Prometheus reads).
pub fn render(state: &Arc<ProxyState>) -> Result<String, prometheus::Error> {
    let registry = prometheus::Registry::new();
    registry.register(Box::new(ProxyCollector::new(Arc::clone(state))))?;
    let mut out = String::new();
    prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use routemaster_common::Config;
    use routemaster_common::snapshot::{Snapshot, Source};
    use routemaster_common::spec::ConfigSpec;

    use super::super::{Outcome, Reason, RequestInfo};
    use super::*;

    fn state() -> Arc<ProxyState> {
        let state = Arc::new(ProxyState::with_limits(usize::MAX, 2));
        let config = Config::try_from(
            ConfigSpec::from_yaml(
                "services: [{ name: s, instances: [{ address: 127.0.0.1:1 }] }]\n\
                 routes: [{ id: r, forward: { service: s } }]\n",
            )
            .unwrap(),
        )
        .unwrap();
        state.apply(Arc::new(Snapshot::new(
            7,
            Source::File("r.yaml".into()),
            config,
        )));
        state
    }

    fn outcome(tag: Option<&PairMetrics>, status: u16, reason: Reason) -> Outcome<'_> {
        Outcome {
            started: Instant::now(),
            request_id: b"id",
            trace: None,
            client: "127.0.0.1:2".parse().unwrap(),
            request: RequestInfo::default(),
            protocol: Protocol::Http1,
            tag,
            endpoint: None,
            status,
            reason,
            bytes_in: 10,
            bytes_out: 100,
            upstream_time: Some(Duration::from_micros(700)),
        }
    }

    fn value(scrape: &str, series: &str) -> f64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn workers_counters_are_summed_at_scrape_time() {
        let state = state();
        let pair = state.observe.metrics.pair("r", "s");
        // Two workers and a thread that is none.
        std::thread::scope(|scope| {
            for worker in [Some(0), Some(1), None] {
                let (state, pair) = (&state, &pair);
                scope.spawn(move || {
                    if let Some(w) = worker {
                        set_worker(w);
                    }
                    for status in [200, 201, 503] {
                        state
                            .observe
                            .observe(&outcome(Some(pair), status, Reason::Upstream));
                    }
                    state.observe.observe(&outcome(None, 404, Reason::NoRoute));
                });
            }
        });
        let scrape = render(&state).unwrap();
        let cases = [
            (
                r#"routemaster_requests_total{route="r",service="s",code_class="2xx",protocol="http1"}"#,
                6.0,
            ),
            (
                r#"routemaster_requests_total{route="r",service="s",code_class="5xx",protocol="http1"}"#,
                3.0,
            ),
            (
                r#"routemaster_requests_total{route="",service="",code_class="4xx",protocol="http1"}"#,
                3.0,
            ),
            (
                r#"routemaster_proxy_responses_total{reason="no_route"}"#,
                3.0,
            ),
            (
                r#"routemaster_proxy_responses_total{reason="redirect"}"#,
                0.0,
            ),
            (
                r#"routemaster_request_bytes_total{route="r",service="s"}"#,
                90.0,
            ),
            (
                r#"routemaster_response_bytes_total{route="r",service="s"}"#,
                900.0,
            ),
            // 0.7 ms: above the 0.5 ms bucket, in the 1 ms one; cumulative after.
            (
                r#"routemaster_upstream_response_seconds_bucket{route="r",le="0.0005"}"#,
                0.0,
            ),
            (
                r#"routemaster_upstream_response_seconds_bucket{route="r",le="0.001"}"#,
                9.0,
            ),
            (
                r#"routemaster_upstream_response_seconds_bucket{route="r",le="+Inf"}"#,
                9.0,
            ),
            (
                r#"routemaster_upstream_response_seconds_count{route="r"}"#,
                9.0,
            ),
            (
                r#"routemaster_request_duration_seconds_count{route="r"}"#,
                9.0,
            ),
            ("routemaster_snapshot_version", 7.0),
            (
                r#"routemaster_endpoint_in_flight{service="s",endpoint="127.0.0.1:1"}"#,
                0.0,
            ),
        ];
        for (series, want) in cases {
            assert_eq!(value(&scrape, series), want, "{series}");
        }
        let sum = value(
            &scrape,
            r#"routemaster_upstream_response_seconds_sum{route="r"}"#,
        );
        assert!((sum - 9.0 * 0.0007).abs() < 1e-9, "{sum}");
        assert!(!scrape.contains("# EOF"), "classic format, not OpenMetrics");
    }

    #[test]
    fn counters_survive_a_new_snapshot_and_metrics_off_stops_them() {
        let state = state();
        let pair = state.observe.metrics.pair("r", "s");
        state
            .observe
            .observe(&outcome(Some(&pair), 200, Reason::Upstream));
        // The same route in a new table reaches the same counters.
        let snapshot = state.current_snapshot().unwrap();
        state.apply(Arc::new(Snapshot::new(
            8,
            snapshot.source().clone(),
            snapshot.config().clone(),
        )));
        let again = state.observe.metrics.pair("r", "s");
        assert!(Arc::ptr_eq(&pair, &again));
        state
            .observe
            .observe(&outcome(Some(&again), 200, Reason::Upstream));
        state.observe.set_metrics(false);
        state
            .observe
            .observe(&outcome(Some(&again), 200, Reason::Upstream));
        let scrape = render(&state).unwrap();
        assert_eq!(
            value(
                &scrape,
                r#"routemaster_requests_total{route="r",service="s",code_class="2xx",protocol="http1"}"#
            ),
            2.0
        );
    }
}
