//! The proxy's one mutable thing: the currently applied [`Compiled`] snapshot, behind
//! arc-swap; beside it, process-wide counters, the client-connection limit, the
//! draining flag (set on SIGTERM: readiness fails, responses say `connection: close`),
//! where the table came from, and (connected mode) the state of the control-plane
//! connection. [`ProxyState::apply`] is the only way to change the table, for file,
//! control-plane and last-known-good sources alike; [`ProxyState::refresh`] recompiles
//! the same snapshot when a `discovery: dns` name resolves differently ([`crate::dns`]). Requests `load()` the table once and
//! keep that `Arc` for their whole life, so a swap never affects a request already
//! routed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use routemaster_common::snapshot::{Snapshot, Source};
use serde::Serialize;

use crate::compile::{Compiled, compile};
use crate::dns::Dns;
use crate::health::HealthRegistry;
use crate::observe::Observer;
use crate::server::ConnectionLimit;
use crate::shadow::ShadowBook;
use crate::stats::Stats;

#[derive(Debug)]
pub struct ProxyState {
    current: ArcSwapOption<Compiled>,
    /// Writers only (apply, the admin view): never taken on the request path. Held
    /// across the swap so the table and what is said about it change together.
    applied: Mutex<AppliedMeta>,
    control_plane: Mutex<Option<ControlPlaneStatus>>,
    pub stats: Stats,
    /// Metrics, the access log and trace settings: what observes each request's outcome.
    pub observe: Observer,
    /// Shadow routes' tallies, kept per declaration across applies.
    pub shadow: ShadowBook,
    /// Upstream health and per-service load, kept across snapshots ([`crate::health`]).
    pub health: HealthRegistry,
    /// `discovery: dns` names and what they resolved to ([`crate::dns`]).
    pub dns: Arc<Dns>,
    pub started: Instant,
    /// Open client connections across workers, against `--max-connections`.
    pub connections: Arc<ConnectionLimit>,
    /// The certificates `--tls-listen` serves ([`crate::tls`]).
    pub tls: crate::tls::Terminator,
    draining: AtomicBool,
}

/// Where the serving table came from (`/config`'s `source_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Received from the control plane in this process's lifetime.
    ControlPlane,
    /// The route file (standalone mode).
    File,
    /// Read back from `--state-dir` at start because no control plane answered in time.
    LastKnownGood,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::ControlPlane => "control-plane",
            SourceKind::File => "file",
            SourceKind::LastKnownGood => "last-known-good",
        }
    }

    fn of(snapshot: &Snapshot) -> Self {
        match snapshot.source() {
            Source::File(_) => SourceKind::File,
            Source::ControlPlane(_) => SourceKind::ControlPlane,
        }
    }
}

/// What is known about the table being served, read together with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppliedMeta {
    pub at: Option<SystemTime>,
    pub kind: Option<SourceKind>,
}

/// The connection to the control plane (connected mode), for `/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    /// Opening a stream (TCP, HTTP/2, Hello).
    Connecting,
    /// A discovery stream is open.
    Connected,
    /// No stream; waiting before the next attempt (or shutting down).
    Disconnected,
}

impl Connection {
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Connecting => "connecting",
            Connection::Connected => "connected",
            Connection::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneStatus {
    pub state: Connection,
    /// The control plane in use (being tried, connected, or last tried).
    pub url: Option<String>,
    /// When the last snapshot arrived from a control plane (applied or not).
    pub last_snapshot_at: Option<SystemTime>,
    /// Why the last session ended or the last attempt failed.
    pub last_error: Option<String>,
}

impl Default for ControlPlaneStatus {
    fn default() -> Self {
        Self {
            state: Connection::Connecting,
            url: None,
            last_snapshot_at: None,
            last_error: None,
        }
    }
}

/// What an apply did, for logs.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    pub version: u64,
    pub routes: usize,
    pub services: usize,
    pub compile_time: std::time::Duration,
}

impl Default for ProxyState {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks is plain values written in one statement; a panic
    // elsewhere while one was held cannot leave them half-updated.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ProxyState {
    pub fn new() -> Self {
        Self::with_max_connections(usize::MAX)
    }

    pub fn with_max_connections(max: usize) -> Self {
        Self::with_limits(max, 1)
    }

    /// `max` client connections, `workers` worker threads (one metrics shard each).
    pub fn with_limits(max: usize, workers: usize) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            applied: Mutex::new(AppliedMeta::default()),
            control_plane: Mutex::new(None),
            stats: Stats::default(),
            observe: Observer::new(workers),
            health: HealthRegistry::default(),
            dns: Arc::new(Dns::default()),
            shadow: ShadowBook::default(),
            started: Instant::now(),
            connections: ConnectionLimit::new(max),
            tls: crate::tls::Terminator::default(),
            draining: AtomicBool::new(false),
        }
    }

    /// The process is going away: readiness fails from now on and responses ask
    /// clients to reconnect (elsewhere, through the load balancer).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Compiles `snapshot` and makes it the table new requests see.
    pub fn apply(&self, snapshot: Arc<Snapshot>) -> Applied {
        let kind = SourceKind::of(&snapshot);
        let (applied, compiled, generation) = self.compile(snapshot);
        let mut meta = lock(&self.applied);
        self.swap(&mut meta, compiled, kind);
        drop(meta);
        self.catch_up(generation);
        applied
    }

    /// Recompiles the current snapshot with the latest DNS resolutions ([`crate::dns`])
    /// and swaps it in like an apply (same source; health of unchanged endpoints kept).
    /// Under the meta lock throughout, so it never puts back an older snapshot than an
    /// apply that raced it. `None` when nothing is served yet.
    pub fn refresh(&self) -> Option<Applied> {
        let mut meta = lock(&self.applied);
        let snapshot = self.current_snapshot()?;
        let kind = meta.kind.unwrap_or(SourceKind::of(&snapshot));
        let (applied, compiled, _) = self.compile(snapshot);
        self.swap(&mut meta, compiled, kind);
        Some(applied)
    }

    /// An apply compiled with resolutions that changed before its swap: compile again,
    /// so the change is not lost (the refresher may have run before the swap).
    fn catch_up(&self, generation: u64) {
        if self.dns.generation() != generation {
            self.refresh();
        }
    }

    /// Recompiles whenever a `discovery: dns` name's set changes, until the process
    /// ends (spawned once on the main runtime).
    pub async fn run_dns_refresher(self: Arc<Self>) {
        loop {
            self.dns.changed().await;
            if let Some(applied) = self.refresh() {
                tracing::info!(
                    version = applied.version,
                    compile_ms = applied.compile_time.as_secs_f64() * 1e3,
                    "DNS discovery: endpoints updated"
                );
            }
        }
    }

    /// [`ProxyState::apply`] for a snapshot read back from disk, but only if nothing is
    /// served yet: a control-plane snapshot that won the race is never replaced by an
    /// older saved one. `None` when something was already loaded.
    pub fn apply_last_known_good(&self, snapshot: Arc<Snapshot>) -> Option<Applied> {
        if self.current.load().is_some() {
            return None;
        }
        let (applied, compiled, generation) = self.compile(snapshot);
        let mut meta = lock(&self.applied);
        if self.current.load().is_some() {
            return None;
        }
        self.swap(&mut meta, compiled, SourceKind::LastKnownGood);
        drop(meta);
        self.catch_up(generation);
        Some(applied)
    }

    fn compile(&self, snapshot: Arc<Snapshot>) -> (Applied, Arc<Compiled>, u64) {
        let t0 = Instant::now();
        let version = snapshot.version();
        let routes = snapshot.config().routes().len();
        let services = snapshot.config().services().len();
        let (resolved, generation) = self.dns.resolved();
        let compiled = Arc::new(compile(
            snapshot,
            &self.observe.metrics,
            &self.health,
            &resolved,
        ));
        let applied = Applied {
            version,
            routes,
            services,
            compile_time: t0.elapsed(),
        };
        (applied, compiled, generation)
    }

    fn swap(&self, meta: &mut AppliedMeta, compiled: Arc<Compiled>, kind: SourceKind) {
        // Health checkers follow the table: started for new endpoints, stopped for gone
        // ones (under the meta lock, so in apply order).
        self.health
            .reconcile(compiled.all_clusters().flat_map(|c| c.wanted()));
        // Resolver tasks follow the table too.
        self.dns
            .reconcile(crate::dns::wanted(compiled.table.snapshot().config()).into_iter());
        // Shadow tallies first, so a request routed by the new table finds its tally.
        self.shadow.sync(compiled.table.snapshot().config());
        // The old table is dropped by whichever request releases it last.
        self.current.store(Some(compiled));
        *meta = AppliedMeta {
            at: Some(SystemTime::now()),
            kind: Some(kind),
        };
    }

    /// The table for one request; `None` until the first snapshot is applied.
    pub fn load(&self) -> Option<Arc<Compiled>> {
        self.current.load_full()
    }

    pub fn current_snapshot(&self) -> Option<Arc<Snapshot>> {
        self.load().map(|c| Arc::clone(c.table.snapshot()))
    }

    /// The current snapshot and what is known about it, consistent with each other.
    pub fn current_with_meta(&self) -> (Option<Arc<Snapshot>>, AppliedMeta) {
        let meta = lock(&self.applied);
        (self.current_snapshot(), *meta)
    }

    pub fn applied_at(&self) -> Option<SystemTime> {
        lock(&self.applied).at
    }

    /// Where the serving table came from; `None` before the first apply.
    pub fn source_kind(&self) -> Option<SourceKind> {
        lock(&self.applied).kind
    }

    /// The control-plane connection (connected mode); `None` in file mode.
    pub fn control_plane(&self) -> Option<ControlPlaneStatus> {
        lock(&self.control_plane).clone()
    }

    /// Changes the control-plane status (created on first use: connected mode).
    pub fn update_control_plane(&self, update: impl FnOnce(&mut ControlPlaneStatus)) {
        let mut status = lock(&self.control_plane);
        update(status.get_or_insert_with(ControlPlaneStatus::default));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routemaster_common::Config;

    fn snapshot(version: u64, source: Source) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(version, source, Config::empty()))
    }

    #[test]
    fn apply_records_where_the_table_came_from() {
        let cases = [
            (Source::File("r.yaml".into()), SourceKind::File),
            (
                Source::ControlPlane("http://cp:7000".into()),
                SourceKind::ControlPlane,
            ),
        ];
        for (source, kind) in cases {
            let state = ProxyState::new();
            assert_eq!(state.source_kind(), None);
            state.apply(snapshot(3, source));
            assert_eq!(state.source_kind(), Some(kind));
            assert!(state.applied_at().is_some());
        }
    }

    #[test]
    fn last_known_good_only_fills_an_empty_state() {
        let state = ProxyState::new();
        let lkg = snapshot(7, Source::File("/state/lkg".into()));
        assert!(state.apply_last_known_good(Arc::clone(&lkg)).is_some());
        assert_eq!(state.source_kind(), Some(SourceKind::LastKnownGood));
        assert_eq!(state.current_snapshot().map(|s| s.version()), Some(7));

        // A control-plane snapshot replaces it, whatever its version.
        state.apply(snapshot(2, Source::ControlPlane("http://cp".into())));
        assert_eq!(state.source_kind(), Some(SourceKind::ControlPlane));
        // ...and the saved one never comes back over it.
        assert!(state.apply_last_known_good(lkg).is_none());
        assert_eq!(state.current_snapshot().map(|s| s.version()), Some(2));
        assert_eq!(state.source_kind(), Some(SourceKind::ControlPlane));
    }

    #[test]
    fn control_plane_status_exists_only_once_used() {
        let state = ProxyState::new();
        assert_eq!(state.control_plane(), None);
        state.update_control_plane(|s| {
            s.state = Connection::Connected;
            s.url = Some("http://cp".into());
        });
        let status = state.control_plane().unwrap();
        assert_eq!(status.state, Connection::Connected);
        assert_eq!(status.url.as_deref(), Some("http://cp"));
        assert_eq!(status.last_snapshot_at, None);
    }
}
