//! Read-your-writes through the real CLI, on one control-plane replica and across two:
//! 200 × (apply → get → diff → status → delete → get) with zero stale answers.
//!
//! Before the fix every `get` right after `apply` answered `route "X" not found` (reads
//! came from the catalog the watch fills, which lags the write). Now a write answers once
//! its own replica's catalog has it, and a read on any replica first catches up with
//! etcd's configuration version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use routemaster_integration_tests::cluster::{ControlPlane, cli};
use routemaster_integration_tests::fleet::Fleet;

const ROUNDS: usize = 200;

#[derive(Debug, Default)]
struct Report {
    stale: Vec<String>,
    rounds: Vec<Duration>,
}

impl Report {
    fn summary(&self, name: &str) -> String {
        let mut r = self.rounds.clone();
        r.sort();
        let total: Duration = r.iter().sum();
        let pct = |p: usize| r[(r.len() * p / 100).min(r.len() - 1)];
        format!(
            "{name}: {} rounds, {} stale answers; round (6 CLI runs) p50 {:?}, p99 {:?}, max {:?}; total {:?}",
            r.len(),
            self.stale.len(),
            pct(50),
            pct(99),
            r[r.len() - 1],
            total
        )
    }
}

/// `version N` from apply's output.
fn applied_version(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("version "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no version in apply output: {out}"))
}

/// Runs the loop with writes on `writer` and reads on `reader` (control plane URLs).
async fn rounds(fleet: &Fleet, tag: &str, writer: &str, reader: &str) -> Report {
    let mut report = Report::default();
    for i in 0..ROUNDS {
        let id = format!("{tag}-{i}");
        let file = fleet.dir.path().join(format!("{id}.yaml"));
        std::fs::write(
            &file,
            format!(
                "services:\n  - {{ name: rw, instances: [{{ address: \"127.0.0.1:9\" }}] }}\nroutes:\n  - {{ id: {id}, path: {{ prefix: /{id} }}, forward: {{ service: rw }} }}\n"
            ),
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let start = Instant::now();

        let (code, out, err) = cli(writer, &["apply", "-f", file]).await;
        assert_eq!(code, 0, "round {i}: apply failed: {out}{err}");
        let version = applied_version(&out);

        let (code, out, err) = cli(reader, &["get", &format!("route/{id}"), "-o", "yaml"]).await;
        if code != 0 || !out.contains(&format!("id: {id}")) {
            report.stale.push(format!(
                "round {i}: get after apply: exit {code}: {out}{err}"
            ));
        }

        let (code, out, err) = cli(reader, &["diff", "-f", file]).await;
        if code != 0 {
            report.stale.push(format!(
                "round {i}: diff after apply: exit {code}: {out}{err}"
            ));
        }

        let (code, out, err) = cli(reader, &["status", "-o", "json"]).await;
        let seen = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|s| s["version"].as_u64());
        if code != 0 || seen.is_none_or(|v| v < version) {
            report.stale.push(format!(
                "round {i}: status after apply (version {version}): exit {code}: {out}{err}"
            ));
        }

        let (code, out, err) = cli(writer, &["delete", "route", &id]).await;
        assert_eq!(code, 0, "round {i}: delete failed: {out}{err}");

        let (code, out, err) = cli(reader, &["get", "route", &id]).await;
        if code != 1 || !err.contains(&format!("route \"{id}\" not found")) {
            report.stale.push(format!(
                "round {i}: get after delete: exit {code}: {out}{err}"
            ));
        }
        report.rounds.push(start.elapsed());
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_sees_the_writes_before_it_on_one_replica_and_across_replicas() {
    let mut fleet = Fleet::start("read-your-writes", &[]).await;
    let second = ControlPlane::start(&fleet.etcd.url(), "/routemaster").await;
    fleet.control.push(second);
    let (cp0, cp1) = (fleet.control[0].grpc_url(), fleet.control[1].grpc_url());

    let one = rounds(&fleet, "one", &cp0, &cp0).await;
    println!("{}", one.summary("one replica (write and read on cp0)"));
    let across = rounds(&fleet, "across", &cp0, &cp1).await;
    println!(
        "{}",
        across.summary("across replicas (write on cp0, read on cp1)")
    );

    assert!(
        one.stale.is_empty(),
        "{} stale answers on one replica, e.g.:\n{}",
        one.stale.len(),
        one.stale
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        across.stale.is_empty(),
        "{} stale answers across replicas, e.g.:\n{}",
        across.stale.len(),
        across
            .stale
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
