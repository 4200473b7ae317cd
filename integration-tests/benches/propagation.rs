//! Propagation: time from `routemaster apply` returning to both proxies serving the
//! change, over many changes, on a real etcd + control plane + 2 proxies on loopback.
//!
//!     cargo build --release --workspace --bins
//!     cargo bench -p routemaster-integration-tests --bench propagation
//!
//! Each round flips route `/probe` between two backends, then polls both proxies
//! (about every 0.5 ms) until both answer from the new backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::fleet::{Fleet, route_file};

const ROUNDS: usize = 200;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let fleet = Fleet::start("propagation", &[("p1", "default"), ("p2", "default")]).await;
    let file = |target: usize| {
        route_file(
            &[&a, &b],
            &format!(
                "  - {{ id: probe, path: {{ prefix: /probe }}, forward: {{ service: svc-{target} }} }}\n"
            ),
        )
    };
    let (code, _, err) = fleet.apply(0, &file(0)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/probe", 200, Some("a")).await;

    let mut samples = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let target = round % 2;
        let want = if target == 0 { "a" } else { "b" };
        let (code, _, err) = fleet.apply(0, &file(target)).await;
        assert_eq!(code, 0, "{err}");
        let applied = Instant::now();
        let mut pending = vec![0usize, 1];
        while !pending.is_empty() {
            assert!(
                applied.elapsed() < Duration::from_secs(10),
                "change not served in 10 s"
            );
            let mut still = Vec::new();
            for i in pending {
                let r = fleet.get(i, "/probe", "bench").await;
                if r.is_none_or(|r| r.header("x-backend") != Some(want)) {
                    still.push(i);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
        samples.push(applied.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "propagation over {ROUNDS} changes (apply returned → both proxies serving): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.90).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}
