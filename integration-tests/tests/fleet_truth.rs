//! The fleet view tells the truth (issue 10, item 3), on real etcd, a real control plane
//! and real proxies: a proxy killed with SIGKILL or stopped with SIGSTOP shows as `lost`
//! (with when it was last seen) and counts against convergence until its retention ends;
//! a stopped one that resumes is connected again; a proxy that drains on SIGTERM leaves
//! (gone within 2 s of exiting, never `lost`); and an etcd outage does not make healthy
//! proxies look unhealthy, during it or just after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::cluster::{ControlPlane, Etcd};
use routemaster_integration_tests::fleet::start_proxy;
use routemaster_integration_tests::process::ProxyProcess;
use routemaster_integration_tests::{TempDir, eventually};

const TTL: &str = "2s";
const RETENTION: &str = "6s";

struct Fleet {
    _dir: TempDir,
    etcd: Etcd,
    control: ControlPlane,
    proxies: Vec<ProxyProcess>,
    http: HttpClient,
}

impl Fleet {
    async fn start(tag: &str, n: usize) -> Self {
        let dir = TempDir::new(tag);
        let etcd = Etcd::start(dir.path()).await;
        let control = ControlPlane::start_with(
            &etcd.url(),
            "/routemaster",
            "127.0.0.1:0",
            "127.0.0.1:0",
            &["--node-ttl", TTL, "--node-retention", RETENTION],
        )
        .await;
        let mut proxies = Vec::new();
        for i in 0..n {
            proxies.push(start_proxy(&control.grpc_url(), &format!("p{i}"), "default").await);
        }
        let fleet = Self {
            _dir: dir,
            etcd,
            control,
            proxies,
            http: HttpClient::new(),
        };
        fleet
            .wait_states("every proxy connected", |s| {
                s.len() == n && s.iter().all(|(_, st)| st == "connected")
            })
            .await;
        fleet
    }

    async fn nodes(&self) -> serde_json::Value {
        self.http
            .get(&self.control.http_url("/v1/nodes"), &[])
            .await
            .map(|r| r.json())
            .unwrap_or_default()
    }

    async fn status(&self) -> serde_json::Value {
        self.http
            .get(&self.control.http_url("/v1/status"), &[])
            .await
            .map(|r| r.json())
            .unwrap_or_default()
    }

    /// `(id, state)` of every listed node.
    async fn states(&self) -> Vec<(String, String)> {
        let nodes = self.nodes().await;
        nodes["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| {
                        (
                            n["id"].as_str().unwrap_or_default().to_owned(),
                            n["state"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn wait_states(&self, what: &str, check: impl Fn(&[(String, String)]) -> bool) {
        eventually(Duration::from_secs(20), what, || async {
            let s = self.states().await;
            check(&s).then_some(())
        })
        .await;
    }
}

fn state_of<'a>(states: &'a [(String, String)], id: &str) -> Option<&'a str> {
    states
        .iter()
        .find(|(n, _)| n == id)
        .map(|(_, s)| s.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_is_lost_until_its_retention_ends() {
    let fleet = Fleet::start("fleet-kill", 2).await;
    fleet.proxies[1].signal("KILL");
    let killed = Instant::now();
    fleet
        .wait_states("p1 lost", |s| state_of(s, "p1") == Some("lost"))
        .await;
    // Lost, with when it was last seen, and counted against convergence.
    let nodes = fleet.nodes().await;
    let p1 = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "p1")
        .unwrap()
        .clone();
    assert_eq!(p1["healthy"], false);
    assert!(p1["last_seen"].as_str().unwrap().ends_with('Z'), "{p1}");
    let status = fleet.status().await;
    assert_eq!(status["nodes"]["total"], 2, "{status}");
    assert_eq!(status["nodes"]["converged"], 1, "{status}");
    assert_eq!(status["nodes"]["lost"], 1, "{status}");
    // Forgotten once the retention has passed since it was last seen.
    fleet
        .wait_states("p1 forgotten after its retention", |s| {
            state_of(s, "p1").is_none() && state_of(s, "p0") == Some("connected")
        })
        .await;
    assert!(
        killed.elapsed() >= Duration::from_secs(5),
        "forgotten after only {:?} (retention {RETENTION})",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_proxy_is_lost_and_comes_back_when_resumed() {
    let fleet = Fleet::start("fleet-stop", 1).await;
    fleet.proxies[0].signal("STOP");
    fleet
        .wait_states("p0 lost while stopped", |s| {
            state_of(s, "p0") == Some("lost")
        })
        .await;
    fleet.proxies[0].signal("CONT");
    fleet
        .wait_states("p0 connected again", |s| {
            state_of(s, "p0") == Some("connected")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_proxy_leaves_and_is_never_lost() {
    let mut fleet = Fleet::start("fleet-leave", 2).await;
    fleet.proxies[1].signal("TERM");
    assert_eq!(
        fleet.proxies[1].wait_exit(Duration::from_secs(10)).await,
        Some(0)
    );
    let exited = Instant::now();
    loop {
        let states = fleet.states().await;
        assert_ne!(state_of(&states, "p1"), Some("lost"), "{states:?}");
        if state_of(&states, "p1").is_none() {
            break;
        }
        assert!(
            exited.elapsed() < Duration::from_secs(2),
            "p1 still listed 2 s after it exited: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = fleet.status().await;
    assert_eq!(status["nodes"]["total"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_does_not_make_healthy_proxies_look_lost() {
    let mut fleet = Fleet::start("fleet-etcd", 2).await;
    fleet.etcd.stop().await;
    // The control plane learns of the outage from its etcd client (a failed call or
    // a broken watch), a moment after the process is gone: wait for that first.
    eventually(Duration::from_secs(5), "etcd seen disconnected", || async {
        (fleet.status().await["etcd"]["connected"] == false).then_some(())
    })
    .await;
    // Three TTLs of outage: long enough for any lease or TTL to lapse.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(6) {
        let status = fleet.status().await;
        assert_eq!(status["etcd"]["connected"], false, "{status}");
        let states = fleet.states().await;
        assert!(
            states.len() == 2 && states.iter().all(|(_, s)| s == "connected"),
            "during the outage ({:?} in): {states:?}",
            outage.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fleet.etcd.restart().await;
    let back = Instant::now();
    eventually(Duration::from_secs(15), "etcd connected again", || async {
        (fleet.status().await["etcd"]["connected"] == true).then_some(())
    })
    .await;
    // Just after: still the truth.
    while back.elapsed() < Duration::from_secs(4) {
        let states = fleet.states().await;
        assert!(
            states.len() == 2 && states.iter().all(|(_, s)| s == "connected"),
            "after the outage: {states:?}"
        );
        let status = fleet.status().await;
        assert_eq!(status["nodes"]["converged"], 2, "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
