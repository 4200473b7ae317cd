//! The proxy's one mutable thing: the currently applied [`Compiled`] snapshot, behind
//! arc-swap; beside it, process-wide counters, the client-connection limit and the
//! draining flag (set on SIGTERM: readiness fails, responses say `connection: close`). [`ProxyState::apply`] is the only way to change it, for file and
//! control-plane sources alike. Requests `load()` the table once and keep that `Arc` for
//! their whole life, so a swap never affects a request already routed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use routemaster_common::snapshot::Snapshot;

use crate::compile::{Compiled, compile};
use crate::server::ConnectionLimit;
use crate::stats::Stats;

#[derive(Debug)]
pub struct ProxyState {
    current: ArcSwapOption<Compiled>,
    applied_at: std::sync::Mutex<Option<SystemTime>>,
    pub stats: Stats,
    pub started: Instant,
    /// Open client connections across workers, against `--max-connections`.
    pub connections: Arc<ConnectionLimit>,
    draining: AtomicBool,
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

impl ProxyState {
    pub fn new() -> Self {
        Self::with_max_connections(usize::MAX)
    }

    pub fn with_max_connections(max: usize) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            applied_at: std::sync::Mutex::new(None),
            stats: Stats::default(),
            started: Instant::now(),
            connections: ConnectionLimit::new(max),
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
        let t0 = Instant::now();
        let version = snapshot.version();
        let routes = snapshot.config().routes().len();
        let services = snapshot.config().services().len();
        let compiled = Arc::new(compile(snapshot));
        let compile_time = t0.elapsed();
        // The old table is dropped by whichever request releases it last.
        self.current.store(Some(compiled));
        if let Ok(mut at) = self.applied_at.lock() {
            *at = Some(SystemTime::now());
        }
        Applied {
            version,
            routes,
            services,
            compile_time,
        }
    }

    /// The table for one request; `None` until the first snapshot is applied.
    pub fn load(&self) -> Option<Arc<Compiled>> {
        self.current.load_full()
    }

    pub fn current_snapshot(&self) -> Option<Arc<Snapshot>> {
        self.load().map(|c| Arc::clone(c.table.snapshot()))
    }

    pub fn applied_at(&self) -> Option<SystemTime> {
        self.applied_at.lock().ok().and_then(|at| *at)
    }
}
