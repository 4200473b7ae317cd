//! Process-wide request counters. Relaxed atomics only: they are read for reports and
//! admin output, never used to make decisions on the request path.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub requests_total: AtomicU64,
    pub in_flight: AtomicU64,
    /// 4xx produced by the proxy itself (bad path, no route, …).
    pub downstream_errors: AtomicU64,
    /// 502/504: the upstream failed.
    pub upstream_errors: AtomicU64,
    /// 503 and other errors of our own making.
    pub internal_errors: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    pub fn start(stats: &'a Stats) -> Self {
        stats.requests_total.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
