//! A mirrored route's evidence on this proxy: its verdict counters, the ring of recent
//! misses sent in health reports, and the noise its baseline taught.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use routemaster_common::mirror::{MirrorVerdict, NoiseSet};

use super::lock;
use crate::shadow::{MissSample, RECENT_MISSES};

/// One mirrored route declaration's evidence on this proxy, and the noise its baseline
/// taught.
#[derive(Debug)]
pub struct MirrorTally {
    route: Box<str>,
    fingerprint: u64,
    counts: [AtomicU64; 5],
    pub(super) recent: Mutex<VecDeque<MissSample>>,
    pub(super) noise: Mutex<NoiseSet>,
}

/// The verdicts in counter order.
pub const RESULTS: [&str; 5] = ["match", "miss", "noise", "error", "dropped"];

/// A mirror tally's numbers at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorCounts {
    pub route: String,
    pub fingerprint: u64,
    /// In [`RESULTS`] order.
    pub counts: [u64; 5],
    pub recent: Vec<MissSample>,
    pub noise: Vec<String>,
}

impl MirrorTally {
    pub fn new(route: &str, fingerprint: u64) -> Self {
        Self {
            route: route.into(),
            fingerprint,
            counts: Default::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_MISSES)),
            noise: Mutex::new(NoiseSet::default()),
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub(super) fn count(&self, verdict: &MirrorVerdict) {
        let i = RESULTS
            .iter()
            .position(|r| *r == verdict.label())
            .unwrap_or(3);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a copy that was not sent.
    pub fn dropped(&self) {
        self.count(&MirrorVerdict::Dropped);
    }

    pub fn counts(&self) -> MirrorCounts {
        MirrorCounts {
            route: self.route.to_string(),
            fingerprint: self.fingerprint,
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            recent: lock(&self.recent).iter().cloned().collect(),
            noise: lock(&self.noise).patterns(),
        }
    }
}
