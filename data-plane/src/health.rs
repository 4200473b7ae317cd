//! Upstream health, per proxy: what the active checks and the passive outlier
//! detection know about each endpoint, and the per-service counters behind `limits` and
//! the retry budget.
//!
//! The state lives in [`HealthRegistry`] (one per [`crate::state::ProxyState`]), keyed by
//! service name and endpoint address, so it survives snapshot swaps for every endpoint
//! that is still there: [`crate::compile`] takes each endpoint's [`EndpointHealth`] (an
//! `Arc`) from the registry when it builds a cluster, and the request path only ever
//! reads and writes atomics in it. The registry's mutex is taken at apply time and by
//! the admin/report readers, never per request.
//!
//! Active checks: one task per endpoint per proxy (not per worker) on the main runtime,
//! started and stopped by [`HealthRegistry::reconcile`] after each apply. Each sends
//! `GET path` every `interval` (±10 % jitter, the first one at a random point of the
//! first interval) over HTTP/1.1, or HTTP/2 prior knowledge for `h2c` services;
//! `unhealthy` failures in a row mark the endpoint down, `healthy` successes in a row
//! mark it up again. Endpoints start up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use routemaster_common::model::{HealthCheck, Protocol};
use serde::Serialize;

use crate::upstream::{Clients, RequestBody, ServiceTls, UpstreamOptions};

/// Milliseconds since the process's first look at the clock (never 0 once read: ejection
/// deadlines use 0 for "not ejected").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_millis(1)).unwrap_or(now)
    });
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One endpoint's health as this proxy sees it. Only atomics: read on every pick.
#[derive(Debug)]
pub struct EndpointHealth {
    /// The active checks' verdict; true until they say otherwise (and always without
    /// checks).
    up: AtomicBool,
    /// An active check has concluded at least once.
    checked: AtomicBool,
    /// Passive: failures in a row from real requests.
    consecutive_failures: AtomicU32,
    /// Passive: ejected until this [`now_ms`]; 0 when not ejected.
    ejected_until: AtomicU64,
    /// How many times it was ejected (the ejection time is base × this, capped at 10).
    ejections: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

/// The most an ejection time grows: base × 10.
const MAX_EJECTION_MULTIPLIER: u32 = 10;

impl EndpointHealth {
    /// Whether new requests may go here: up and not ejected.
    pub fn available(&self, now: u64) -> bool {
        self.up.load(Ordering::Relaxed) && !self.ejected(now)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// A real request's outcome. Returns the ejection time when this failure ejected
    /// the endpoint; `may_eject` says whether the cluster's `max_ejected_percent` leaves
    /// room for one more (asked only when it would be needed).
    pub fn record(
        &self,
        ok: bool,
        threshold: u32,
        base: Duration,
        now: u64,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        if ok {
            // Written only when there is something to clear: a success is the common
            // case and must not bounce the cache line between workers.
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < threshold || self.ejected(now) || !may_eject() {
            return None;
        }
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let period = base.saturating_mul(times.min(MAX_EJECTION_MULTIPLIER));
        let until = now.saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until.max(1), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        Some(period)
    }

    /// An active check's result; returns the new verdict when it changed.
    fn check_result(&self, ok: bool, streak: u32, check: &HealthCheck) -> Option<bool> {
        self.checked.store(true, Ordering::Relaxed);
        let up = self.up.load(Ordering::Relaxed);
        let flip = if up {
            !ok && streak >= check.unhealthy()
        } else {
            ok && streak >= check.healthy()
        };
        if flip {
            self.up.store(!up, Ordering::Relaxed);
            Some(!up)
        } else {
            None
        }
    }

    /// What reports and `/config` show.
    pub fn view(&self, now: u64) -> HealthView {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let ejected = until != 0 && now < until;
        HealthView {
            healthy: self.available(now),
            active: if !self.checked.load(Ordering::Relaxed) {
                ActiveState::Unknown
            } else if self.is_up() {
                ActiveState::Up
            } else {
                ActiveState::Down
            },
            ejected,
            ejected_for_ms: if ejected { until - now } else { 0 },
            ejections: self.ejections(),
        }
    }
}

/// An endpoint's health for `/config` and the health report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HealthView {
    /// New requests may go to it (up and not ejected).
    pub healthy: bool,
    pub active: ActiveState,
    pub ejected: bool,
    pub ejected_for_ms: u64,
    pub ejections: u32,
}

/// The active checks' verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveState {
    /// No check configured, or none concluded yet.
    Unknown,
    Up,
    Down,
}

impl ActiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveState::Unknown => "unknown",
            ActiveState::Up => "up",
            ActiveState::Down => "down",
        }
    }
}

/// Per service, across workers and snapshot swaps: the counters `limits` and the retry
/// budget read, and what is shown about them.
#[derive(Debug, Default)]
pub struct ServiceLoad {
    /// Requests in flight to the service (each holds one upstream connection).
    pub active: AtomicUsize,
    /// Requests waiting for a new upstream connection to open.
    pub pending: AtomicUsize,
    /// Requests on a retry right now (the budget).
    pub retrying: AtomicUsize,
    /// Picks made in panic mode (fewer than half the endpoints healthy).
    pub panic_picks: AtomicU64,
    /// Requests refused with 503 by `limits`.
    pub overflows: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Retries a condition asked for but the budget refused.
    pub retries_over_budget: AtomicU64,
    /// Ejections made by outlier detection.
    pub ejections: AtomicU64,
}

/// The retry budget: concurrent retries ≤ 20 % of the requests in flight, never fewer
/// than 3.
pub const RETRY_BUDGET_PERCENT: usize = 20;
pub const RETRY_BUDGET_MIN: usize = 3;

impl ServiceLoad {
    /// Takes a place in the retry budget, if there is one (held by a request through
    /// all its retries).
    pub fn try_retry(self: &Arc<Self>) -> Option<RetrySlot> {
        let active = self.active.load(Ordering::Relaxed);
        let budget = (active * RETRY_BUDGET_PERCENT / 100).max(RETRY_BUDGET_MIN);
        let now = self.retrying.fetch_add(1, Ordering::Relaxed);
        if now >= budget {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            self.retries_over_budget.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot(Arc::clone(self)))
    }

    /// Counts a request waiting for a new connection until the guard drops, unless
    /// `max` are waiting already.
    pub fn try_pending(&self, max: Option<u32>) -> Option<PendingSlot<'_>> {
        let now = self.pending.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|m| now >= m as usize) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.overflows.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(PendingSlot(self))
    }
}

/// One place in the retry budget, held while the request retries.
#[derive(Debug)]
pub struct RetrySlot(Arc<ServiceLoad>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request waiting for a new upstream connection.
#[derive(Debug)]
pub struct PendingSlot<'a>(&'a ServiceLoad);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

type Key = (Box<str>, Box<str>);

/// Health and load state by service and endpoint, kept across snapshots.
#[derive(Debug, Default)]
pub struct HealthRegistry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: HashMap<Key, Arc<EndpointHealth>>,
    services: HashMap<Box<str>, Arc<ServiceLoad>>,
    checkers: HashMap<Key, Checker>,
}

#[derive(Debug)]
struct Checker {
    check: HealthCheck,
    protocol: Protocol,
    /// The TLS settings' identity (`h2`/`https`): a change restarts the checker.
    tls: Option<u64>,
    task: tokio::task::AbortHandle,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a compiled snapshot wants checked: (service, endpoint, check, protocol).
#[derive(Debug)]
pub struct Wanted<'a> {
    pub service: &'a str,
    pub authority: &'a http::uri::Authority,
    pub check: Option<&'a HealthCheck>,
    pub protocol: Protocol,
    /// For `h2`/`https`: the service's TLS settings (probes go over TLS with them).
    pub tls: Option<&'a Arc<ServiceTls>>,
    pub health: &'a Arc<EndpointHealth>,
}

impl HealthRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The endpoint's state, shared with every earlier snapshot that had it.
    pub fn endpoint(&self, service: &str, authority: &str) -> Arc<EndpointHealth> {
        let mut inner = self.lock();
        Arc::clone(
            inner
                .endpoints
                .entry((service.into(), authority.into()))
                .or_default(),
        )
    }

    pub fn service(&self, service: &str) -> Arc<ServiceLoad> {
        let mut inner = self.lock();
        Arc::clone(inner.services.entry(service.into()).or_default())
    }

    /// After an apply: forget endpoints and services no longer served, start a checker
    /// for every endpoint whose service has a `health_check` (restarting it when the
    /// check changed) and stop the others. Without a tokio runtime (unit tests) no
    /// checker starts.
    pub fn reconcile<'a>(&self, wanted: impl Iterator<Item = Wanted<'a>>) {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut inner = self.lock();
        let mut keep_endpoints = HashMap::new();
        let mut keep_services = std::collections::HashSet::new();
        let mut checkers = HashMap::new();
        for w in wanted {
            let key: Key = (w.service.into(), w.authority.as_str().into());
            keep_services.insert(Box::<str>::from(w.service));
            if let Some(check) = w.check {
                let existing = inner.checkers.remove(&key);
                let checker = match existing {
                    Some(c)
                        if c.check == *check
                            && c.protocol == w.protocol
                            && c.tls == w.tls.map(|t| t.key()) =>
                    {
                        Some(c)
                    }
                    _ => runtime.as_ref().map(|rt| {
                        let task = rt.spawn(run_checker(
                            w.service.into(),
                            w.authority.clone(),
                            check.clone(),
                            w.protocol,
                            w.tls.cloned(),
                            Arc::clone(w.health),
                        ));
                        Checker {
                            check: check.clone(),
                            protocol: w.protocol,
                            tls: w.tls.map(|t| t.key()),
                            task: task.abort_handle(),
                        }
                    }),
                };
                if let Some(c) = checker {
                    checkers.insert(key.clone(), c);
                }
            } else {
                // No active check: whatever an earlier one concluded no longer holds.
                w.health.up.store(true, Ordering::Relaxed);
                w.health.checked.store(false, Ordering::Relaxed);
            }
            keep_endpoints.insert(key, Arc::clone(w.health));
        }
        // Dropping the rest aborts their tasks.
        inner.checkers = checkers;
        inner.endpoints = keep_endpoints;
        inner.services.retain(|s, _| keep_services.contains(s));
    }
}

/// Checks one endpoint until aborted.
async fn run_checker(
    service: Box<str>,
    authority: http::uri::Authority,
    check: HealthCheck,
    protocol: Protocol,
    tls: Option<Arc<ServiceTls>>,
    health: Arc<EndpointHealth>,
) {
    // TLS services (`h2`, `https`) are probed over TLS with their own settings, through
    // the same connector their requests take.
    let tls_client = protocol.is_tls().then(|| {
        Clients::new(&UpstreamOptions {
            connect_timeout: check.timeout(),
            idle_timeout: check.interval().saturating_mul(2),
        })
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(check.timeout()));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_max_idle_per_host(1)
        .http2_only(protocol == Protocol::H2c);
    let client: Client<HttpConnector, Empty<Bytes>> = builder.build(connector);
    let uri = http::Uri::builder()
        .scheme(if protocol.is_tls() { "https" } else { "http" })
        .authority(authority.clone())
        .path_and_query(check.path())
        .build();
    let Ok(uri) = uri else {
        tracing::warn!(service = %service, endpoint = %authority, "health check path is not a URI; not checking");
        return;
    };
    let interval = check.interval();
    // The first check at a random point of the first interval: proxies started
    // together do not probe in step.
    tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
    let mut streak = 0u32;
    let mut last_ok: Option<bool> = None;
    loop {
        let req = http::Request::get(uri.clone())
            .header(http::header::USER_AGENT, "routemaster-health-check");
        let sent = match &tls_client {
            Some(c) => req
                .body(RequestBody::full(Bytes::new()))
                .map(|req| c.request(protocol, tls.as_ref(), &authority, req)),
            None => req
                .body(Empty::<Bytes>::new())
                .map(|req| client.request(req)),
        };
        let ok = match sent {
            Ok(sent) => match tokio::time::timeout(check.timeout(), sent).await {
                Ok(Ok(resp)) => check.expects(resp.status().as_u16()),
                Ok(Err(_)) | Err(_) => false,
            },
            Err(_) => false,
        };
        streak = if last_ok == Some(ok) {
            streak.saturating_add(1)
        } else {
            1
        };
        last_ok = Some(ok);
        if let Some(up) = health.check_result(ok, streak, &check) {
            if up {
                tracing::info!(service = %service, endpoint = %authority, "health check: endpoint up");
            } else {
                tracing::warn!(service = %service, endpoint = %authority, failures = streak, "health check: endpoint down");
            }
        }
        // ±10 % jitter.
        tokio::time::sleep(interval.mul_f64(0.9 + 0.2 * fastrand::f64())).await;
    }
}

/// One service's health as this proxy sees it: `/config`'s `upstreams` and the health
/// report to the control plane.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamView {
    pub service: String,
    /// Fewer than half the endpoints are healthy: every endpoint takes traffic.
    pub panic: bool,
    pub healthy_endpoints: usize,
    /// Requests in flight to the service, and waiting for a connection.
    pub active_requests: usize,
    pub pending_requests: usize,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub address: String,
    #[serde(flatten)]
    pub health: HealthView,
    pub in_flight: usize,
}

/// `/stats`' `upstreams`: counters per service since the proxy started.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStats {
    pub service: String,
    pub panic_picks: u64,
    pub overflows: u64,
    pub retries: u64,
    pub retries_over_budget: u64,
    pub ejections: u64,
}

/// What the table being served says about its upstreams.
pub fn upstream_views(compiled: &crate::compile::Compiled) -> Vec<UpstreamView> {
    let now = now_ms();
    compiled
        .clusters()
        .map(|c| {
            let endpoints: Vec<EndpointView> = c
                .endpoints()
                .map(|e| EndpointView {
                    address: e.authority.to_string(),
                    health: e.health.view(now),
                    in_flight: e.in_flight(),
                })
                .collect();
            UpstreamView {
                service: c.name().to_owned(),
                panic: c.in_panic(now),
                healthy_endpoints: endpoints.iter().filter(|e| e.health.healthy).count(),
                active_requests: c.load().active.load(Ordering::Relaxed),
                pending_requests: c.load().pending.load(Ordering::Relaxed),
                endpoints,
            }
        })
        .collect()
}

pub fn upstream_stats(compiled: &crate::compile::Compiled) -> Vec<UpstreamStats> {
    compiled
        .clusters()
        .map(|c| {
            let l = c.load();
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            UpstreamStats {
                service: c.name().to_owned(),
                panic_picks: get(&l.panic_picks),
                overflows: get(&l.overflows),
                retries: get(&l.retries),
                retries_over_budget: get(&l.retries_over_budget),
                ejections: get(&l.ejections),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_needs_consecutive_failures_and_grows_with_each_ejection() {
        let h = EndpointHealth::default();
        let base = Duration::from_secs(1);
        let now = 1_000;
        // Two failures, a success, two failures: never three in a row.
        for ok in [false, false, true, false, false] {
            assert_eq!(h.record(ok, 3, base, now, || true), None);
        }
        assert_eq!(h.record(false, 3, base, now, || true), Some(base));
        assert!(h.ejected(now) && !h.available(now));
        assert!(!h.ejected(now + 1_000), "ejected for base × 1");
        // Ejected again: twice as long.
        for _ in 0..2 {
            assert_eq!(h.record(false, 3, base, now + 1_000, || true), None);
        }
        assert_eq!(
            h.record(false, 3, base, now + 1_000, || true),
            Some(base * 2)
        );
        assert!(h.ejected(now + 2_999) && !h.ejected(now + 3_000));
        assert_eq!(h.ejections(), 2);
    }

    #[test]
    fn the_cap_on_ejected_endpoints_is_asked_and_obeyed() {
        let h = EndpointHealth::default();
        for _ in 0..5 {
            assert_eq!(
                h.record(false, 1, Duration::from_secs(1), 10, || false),
                None
            );
        }
        assert!(h.available(10));
    }

    #[test]
    fn active_checks_flip_after_their_thresholds() {
        let spec = routemaster_common::spec::ServiceSpec {
            name: "s".into(),
            health_check: Some(routemaster_common::spec::HealthCheckSpec {
                healthy: Some(2),
                unhealthy: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let service = routemaster_common::model::Service::try_from(spec).unwrap();
        let check = service.health_check().unwrap();
        let h = EndpointHealth::default();
        assert_eq!(h.view(0).active, ActiveState::Unknown);
        assert_eq!(h.check_result(false, 1, check), None);
        assert_eq!(h.check_result(false, 2, check), None);
        assert_eq!(h.check_result(false, 3, check), Some(false));
        assert!(!h.available(0));
        assert_eq!(h.check_result(true, 1, check), None);
        assert_eq!(h.check_result(true, 2, check), Some(true));
        assert_eq!(h.view(0).active, ActiveState::Up);
    }

    #[test]
    fn the_retry_budget_is_a_fifth_of_active_requests_but_at_least_three() {
        let load = Arc::new(ServiceLoad::default());
        let slots: Vec<_> = (0..5).filter_map(|_| load.try_retry()).collect();
        assert_eq!(slots.len(), 3);
        load.active.store(50, Ordering::Relaxed);
        let more: Vec<_> = (0..20).filter_map(|_| load.try_retry()).collect();
        assert_eq!(more.len(), 7, "10 in all with 50 active");
        drop(slots);
        drop(more);
        assert_eq!(load.retrying.load(Ordering::Relaxed), 0);
    }
}
