//! The control plane's Prometheus metrics (`GET /metrics` on the status port), in the
//! classic text format 0.0.4 written by the `prometheus` crate's `TextEncoder`.
//!
//! [`Metrics`] owns one registry per process (no global state, so tests can build as
//! many as they like). Counters and histograms are updated where things happen (the
//! etcd funnel in [`crate::store`], the write path and watch loop in
//! [`crate::controller`], discovery sessions, snapshot encoding); the fleet gauges
//! (convergence, lost nodes, etcd connectivity, version) are set from the node list at
//! scrape time by [`Metrics::set_fleet`], so a scrape always shows the fleet as
//! `/v1/status` would. Label values are bounded: operation and result names are fixed
//! here, groups come from the proxies' own `--group`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::nodes::Convergence;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open discovery streams on this replica, by proxy group.
    pub streams: IntGaugeVec,
    /// Configuration writes by operation (`apply`, `dry_run`, `delete`) and result.
    pub writes: IntCounterVec,
    /// etcd requests by operation: latency, and failures by kind.
    pub etcd_duration: HistogramVec,
    pub etcd_errors: IntCounterVec,
    /// Times the watch loop reloaded in full (watch lost, compacted, etcd away).
    pub watch_restarts: IntCounter,
    /// Catalog versions published by this replica.
    pub versions_published: IntCounter,
    /// Publish of a version → every node that counts serving it.
    pub convergence: Histogram,
    /// Per-group snapshot encoding (once per group and version).
    pub encode_duration: Histogram,
    pub snapshot_bytes: Histogram,
    // Set at scrape time.
    version: IntGauge,
    etcd_connected: IntGauge,
    nodes: IntGauge,
    nodes_converged: IntGauge,
    nodes_lost: IntGauge,
}

fn counter(reg: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(reg: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    reg: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
}

/// Seconds, from 1 ms to ~16 s.
fn latency_buckets() -> prometheus::Result<Vec<f64>> {
    prometheus::exponential_buckets(0.001, 2.0, 15)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let reg = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "routemaster_control_build_info",
                "Always 1; the labels say which build of routemaster-control this is.",
            ),
            &["version"],
        )?;
        reg.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let streams = IntGaugeVec::new(
            Opts::new(
                "routemaster_control_streams",
                "Proxy discovery streams open on this replica, by proxy group.",
            ),
            &["group"],
        )?;
        reg.register(Box::new(streams.clone()))?;
        let etcd_duration = HistogramVec::new(
            HistogramOpts::new(
                "routemaster_control_etcd_request_duration_seconds",
                "etcd requests by operation, including failover to other endpoints.",
            )
            .buckets(latency_buckets()?),
            &["operation"],
        )?;
        reg.register(Box::new(etcd_duration.clone()))?;
        Ok(Self {
            streams,
            writes: counter_vec(
                &reg,
                "routemaster_control_writes_total",
                "Configuration writes (CLI apply/delete) by operation and result.",
                &["operation", "result"],
            )?,
            etcd_duration,
            etcd_errors: counter_vec(
                &reg,
                "routemaster_control_etcd_errors_total",
                "Failed etcd requests by operation and kind (unavailable, rejected).",
                &["operation", "kind"],
            )?,
            watch_restarts: counter(
                &reg,
                "routemaster_control_watch_restarts_total",
                "Full reloads of the configuration after the etcd watch ended (lost, compacted, etcd away).",
            )?,
            versions_published: counter(
                &reg,
                "routemaster_control_versions_published_total",
                "Configuration versions published to this replica's discovery streams.",
            )?,
            convergence: histogram(
                &reg,
                "routemaster_control_convergence_seconds",
                "Time from a version's publication on this replica to every node that counts serving it.",
                prometheus::exponential_buckets(0.005, 2.0, 14)?,
            )?,
            encode_duration: histogram(
                &reg,
                "routemaster_control_snapshot_encode_duration_seconds",
                "Encoding one group's snapshot (once per group and version, shared by its streams).",
                prometheus::exponential_buckets(0.0001, 4.0, 10)?,
            )?,
            snapshot_bytes: histogram(
                &reg,
                "routemaster_control_snapshot_size_bytes",
                "Size of encoded group snapshots.",
                prometheus::exponential_buckets(256.0, 4.0, 12)?,
            )?,
            version: gauge(
                &reg,
                "routemaster_control_config_version",
                "The configuration version this replica serves (etcd revision of the last write).",
            )?,
            etcd_connected: gauge(
                &reg,
                "routemaster_control_etcd_connected",
                "1 when this replica's etcd watch is up, else 0.",
            )?,
            nodes: gauge(
                &reg,
                "routemaster_control_fleet_nodes",
                "Proxy nodes that count for convergence (connected, behind, nacked or lost; not those that left).",
            )?,
            nodes_converged: gauge(
                &reg,
                "routemaster_control_fleet_nodes_converged",
                "Nodes connected and serving the current configuration version.",
            )?,
            nodes_lost: gauge(
                &reg,
                "routemaster_control_fleet_nodes_lost",
                "Nodes not heard from for the node TTL (still owed the configuration).",
            )?,
            registry: reg,
        })
    }

    /// Sets the scrape-time gauges.
    pub fn set_fleet(&self, version: u64, etcd_connected: bool, fleet: Convergence) {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.version.set(int(version));
        self.etcd_connected.set(i64::from(etcd_connected));
        self.nodes.set(int(fleet.total as u64));
        self.nodes_converged.set(int(fleet.converged as u64));
        self.nodes_lost.set(int(fleet.lost as u64));
    }

    /// Records one etcd request.
    pub fn etcd_request(&self, operation: &str, took: Duration, error: Option<&'static str>) {
        self.etcd_duration
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.etcd_errors.with_label_values(&[operation, kind]).inc();
        }
    }

    /// Everything registered, in the text format 0.0.4.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Feeds `routemaster_control_convergence_seconds` until `shutdown`: each version this
/// replica publishes after its first load starts a clock, stopped when every node that
/// counts (see [`crate::nodes::convergence`]) serves it. A newer version replaces an
/// unconverged one (only the latest is timed); a fleet without nodes never converges.
/// The fleet is re-read on every node report here and every 500 ms (for nodes on other
/// replicas), only while a version is pending.
pub async fn track_convergence(
    controller: std::sync::Arc<crate::controller::Controller>,
    nodes: std::sync::Arc<crate::nodes::Nodes>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use tokio::time::Instant;
    tokio::pin!(shutdown);
    let metrics = controller.metrics().clone();
    let mut catalogs = controller.subscribe();
    // The version loaded at start (or before this task ran) is not a write to time.
    let mut seen = {
        let c = catalogs.borrow_and_update();
        c.is_loaded().then_some(c.version)
    };
    let mut pending: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            changed = catalogs.changed() => {
                if changed.is_err() {
                    return;
                }
                let (loaded, version) = {
                    let c = catalogs.borrow_and_update();
                    (c.is_loaded(), c.version)
                };
                if loaded && seen.is_some_and(|v| version > v) {
                    pending = Some((version, Instant::now()));
                }
                if loaded {
                    seen = Some(seen.map_or(version, |v| v.max(version)));
                }
            }
            () = nodes.next_report(), if pending.is_some() => {}
            () = tokio::time::sleep(Duration::from_millis(500)), if pending.is_some() => {}
            () = &mut shutdown => return,
        }
        if let Some((version, since)) = pending {
            let fleet = crate::nodes::convergence(&nodes.list().await, version);
            if fleet.total > 0 && fleet.converged == fleet.total {
                metrics.convergence.observe(since.elapsed().as_secs_f64());
                pending = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_has_every_family_and_the_values_set() {
        let m = Metrics::new().unwrap();
        m.writes.with_label_values(&["apply", "ok"]).inc();
        m.streams.with_label_values(&["edge"]).inc();
        m.etcd_request("txn", Duration::from_millis(3), Some("unavailable"));
        m.set_fleet(
            42,
            true,
            Convergence {
                total: 3,
                converged: 2,
                lost: 1,
            },
        );
        let text = m.render().unwrap();
        for line in [
            &format!(
                "routemaster_control_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "routemaster_control_writes_total{operation=\"apply\",result=\"ok\"} 1",
            "routemaster_control_streams{group=\"edge\"} 1",
            "routemaster_control_etcd_errors_total{kind=\"unavailable\",operation=\"txn\"} 1",
            "routemaster_control_etcd_request_duration_seconds_count{operation=\"txn\"} 1",
            "routemaster_control_config_version 42",
            "routemaster_control_etcd_connected 1",
            "routemaster_control_fleet_nodes 3",
            "routemaster_control_fleet_nodes_converged 2",
            "routemaster_control_fleet_nodes_lost 1",
            "# TYPE routemaster_control_convergence_seconds histogram",
            "# TYPE routemaster_control_watch_restarts_total counter",
        ] {
            let line: &str = line;
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("# EOF"), "classic format, not OpenMetrics");
    }
}
