//! Load-balancing choices over weighted lists (instances of a service, or the
//! services of a weighted `backends` split). Lock-free: the smooth weighted
//! round-robin order is computed once per table build and walked with one atomic
//! counter, so picking never takes a lock on the request path.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::LoadBalancing;

/// The longest round-robin schedule kept; larger weight sums are scaled down to it.
const MAX_SCHEDULE: u64 = 4096;

/// Picks indices into a weighted list.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(Schedule),
    Random(WeightedRandom),
    /// Power of two choices: two weighted-random candidates, the less loaded wins.
    LeastRequest(WeightedRandom),
}

impl Balancer {
    /// `None` when no weight is positive (nothing can be picked).
    pub fn new(kind: LoadBalancing, weights: &[u32]) -> Option<Self> {
        Some(match kind {
            LoadBalancing::RoundRobin => Balancer::RoundRobin(Schedule::new(weights)?),
            LoadBalancing::Random => Balancer::Random(WeightedRandom::new(weights)?),
            LoadBalancing::LeastRequest => Balancer::LeastRequest(WeightedRandom::new(weights)?),
        })
    }

    /// `load(i)` is the number of requests in flight to item `i` (only consulted by
    /// least-request).
    pub fn pick(&self, load: impl Fn(usize) -> usize) -> usize {
        match self {
            Balancer::RoundRobin(s) => s.next(),
            Balancer::Random(r) => r.pick(),
            Balancer::LeastRequest(r) => {
                let a = r.pick();
                let b = r.pick();
                // Compare load per unit of weight: (la+1)/wa vs (lb+1)/wb.
                let (la, lb) = (load(a) as u64 + 1, load(b) as u64 + 1);
                let (wa, wb) = (u64::from(r.weight(a)), u64::from(r.weight(b)));
                if lb * wa < la * wb { b } else { a }
            }
        }
    }
}

/// A precomputed smooth weighted round-robin order (nginx's algorithm): weights
/// 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
#[derive(Debug)]
pub struct Schedule {
    order: Box<[u32]>,
    next: AtomicUsize,
}

impl Schedule {
    pub fn new(weights: &[u32]) -> Option<Self> {
        let weights = scaled(weights)?;
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        Some(Self {
            order: order.into(),
            next: AtomicUsize::new(fastrand::usize(..total as usize)),
        })
    }

    pub fn next(&self) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.order[n % self.order.len()] as usize
    }

    pub fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.order.iter().map(|&i| i as usize)
    }
}

/// Divides by the common divisor and scales very large sums down (keeping every
/// positive weight at least 1) so the schedule stays short.
fn scaled(weights: &[u32]) -> Option<Vec<u32>> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w));
    if g == 0 {
        return None;
    }
    let mut w: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let total: u64 = w.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_SCHEDULE {
        for x in &mut w {
            if *x > 0 {
                *x = ((u64::from(*x) * MAX_SCHEDULE / total) as u32).max(1);
            }
        }
    }
    Some(w)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Weighted random choice by binary search over cumulative weights.
#[derive(Debug)]
pub struct WeightedRandom {
    cumulative: Box<[u64]>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> Option<Self> {
        let mut acc = 0u64;
        let cumulative: Box<[u64]> = weights
            .iter()
            .map(|&w| {
                acc += u64::from(w);
                acc
            })
            .collect();
        (acc > 0).then_some(Self { cumulative })
    }

    pub fn pick(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = fastrand::u64(..total);
        self.cumulative.partition_point(|&c| c <= x)
    }

    fn weight(&self, i: usize) -> u32 {
        let prev = if i == 0 { 0 } else { self.cumulative[i - 1] };
        (self.cumulative[i] - prev) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(b: &Balancer, n: usize, len: usize) -> Vec<usize> {
        let mut c = vec![0; len];
        for _ in 0..n {
            c[b.pick(|_| 0)] += 1;
        }
        c
    }

    #[test]
    fn smooth_weighted_round_robin_order() {
        let s = Schedule::new(&[5, 1, 1]).unwrap();
        let order: Vec<usize> = s.order().collect();
        assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = Schedule::new(&[1, 2]).unwrap();
        assert_eq!(s.order().collect::<Vec<_>>(), vec![1, 0, 1]);
    }

    #[test]
    fn weights_are_honoured_exactly_by_round_robin() {
        let cases: &[(&[u32], &[usize])] = &[
            (&[1, 1], &[500, 500]),
            (&[1, 2], &[333, 667]),
            (&[2, 0, 2], &[500, 0, 500]),
            (&[90, 10], &[900, 100]),
        ];
        for (weights, want) in cases {
            let b = Balancer::new(LoadBalancing::RoundRobin, weights).unwrap();
            let got = counts(&b, 1000, weights.len());
            for (g, w) in got.iter().zip(*want) {
                assert!(g.abs_diff(*w) <= 1, "weights {weights:?}: got {got:?}");
            }
        }
    }

    #[test]
    fn zero_weights_pick_nothing() {
        for kind in [
            LoadBalancing::RoundRobin,
            LoadBalancing::Random,
            LoadBalancing::LeastRequest,
        ] {
            assert!(Balancer::new(kind, &[0, 0]).is_none());
            assert!(Balancer::new(kind, &[]).is_none());
        }
    }

    #[test]
    fn huge_weight_sums_are_scaled() {
        let s = Schedule::new(&[10_000, 9_999, 1]).unwrap();
        let order: Vec<usize> = s.order().collect();
        assert!(order.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(order.contains(&2));
    }

    #[test]
    fn random_respects_weights() {
        let b = Balancer::new(LoadBalancing::Random, &[3, 1, 0]).unwrap();
        let c = counts(&b, 40_000, 3);
        assert_eq!(c[2], 0);
        assert!((28_000..32_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_request_prefers_the_idle_instance() {
        let b = Balancer::new(LoadBalancing::LeastRequest, &[1, 1]).unwrap();
        let load = [100usize, 0];
        let mut picks = [0; 2];
        for _ in 0..1000 {
            picks[b.pick(|i| load[i])] += 1;
        }
        // Instance 0 wins only when both candidates are instance 0 (~1/4 of draws).
        assert!(picks[1] > 650, "{picks:?}");
        assert!(picks[0] > 150, "{picks:?}");
    }
}
