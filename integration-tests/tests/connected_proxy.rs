//! A connected proxy when the control plane is not there (issue 10: readiness when
//! disconnected, last-known-good on disk, goodbye on drain), with real etcd, a real
//! control plane and real proxies:
//!
//! - a proxy that loses its control plane keeps serving and stays ready (200), and
//!   `/config` says it is disconnected, from where, and since which snapshot;
//! - a proxy started with `--state-dir` while etcd and the control plane are both down
//!   serves its saved snapshot once `--bootstrap-timeout` passes (timed), a damaged copy
//!   is never served, and the control plane's snapshots take over when it is back;
//! - a proxy that drains on SIGTERM says goodbye: the control plane stops listing it
//!   (within 2 s of its exit, at the start of its drain) and never calls it `lost`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::cluster::ControlPlane;
use routemaster_integration_tests::fleet::{Fleet, route_file, start_proxy_with};
use routemaster_integration_tests::process::ProxyProcess;
use routemaster_integration_tests::{TempDir, eventually};

const COURSES: &str =
    "  - { id: courses, path: { prefix: /courses }, forward: { service: svc-0 } }\n";

async fn admin(http: &HttpClient, proxy: &ProxyProcess, path: &str) -> Option<(u16, String)> {
    let r = http.get(&proxy.admin_url(path), &[]).await.ok()?;
    Some((r.status.as_u16(), r.body))
}

async fn config(http: &HttpClient, proxy: &ProxyProcess, path: &str) -> serde_json::Value {
    let r = http.get(&proxy.admin_url(path), &[]).await.unwrap();
    assert_eq!(r.status, 200);
    r.json()
}

async fn status_of(http: &HttpClient, proxy: &ProxyProcess, path: &str) -> Option<u16> {
    let r = http
        .get(&proxy.url(path), &[("host", "example.com")])
        .await
        .ok()?;
    Some(r.status.as_u16())
}

fn is_rfc3339(t: &serde_json::Value) -> bool {
    t.as_str()
        .is_some_and(|t| t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_lost_its_control_plane_stays_ready_and_says_so() {
    let a = EchoBackend::start("a").await;
    let mut fleet = Fleet::start("cp-lost", &[("p1", "default")]).await;
    let (code, _, err) = fleet.apply(0, &route_file(&[&a], COURSES)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/courses/1", 200, Some("a")).await;
    let proxy = &fleet.proxies[0];
    let http = &fleet.client;

    let c = config(http, proxy, "/config").await;
    assert_eq!(c["source_kind"], "control-plane", "{c}");
    assert_eq!(
        c["source"],
        format!("control-plane:{}", fleet.cp_url()),
        "{c}"
    );
    assert_eq!(c["control_plane"]["state"], "connected", "{c}");
    assert_eq!(c["control_plane"]["url"], fleet.cp_url(), "{c}");
    assert!(is_rfc3339(&c["control_plane"]["last_snapshot_at"]), "{c}");
    assert!(c.get("config").is_none(), "only ?full=1 dumps: {c}");

    // The full dump: the serving configuration in the route file's field names.
    let full = config(http, proxy, "/config?full=1").await;
    assert_eq!(full["version"], c["version"]);
    let services = &full["config"]["services"];
    assert_eq!(services[0]["name"], "svc-0", "{full}");
    assert_eq!(
        services[0]["instances"][0]["address"],
        a.addr.to_string(),
        "{full}"
    );
    let routes = &full["config"]["routes"];
    assert_eq!(routes[0]["id"], "courses", "{full}");
    assert_eq!(routes[0]["path"]["prefix"], "/courses", "{full}");
    assert_eq!(routes[0]["forward"]["service"], "svc-0", "{full}");

    // The control plane goes away.
    fleet.control[0].kill().await;
    let c = eventually(
        Duration::from_secs(10),
        "/config to show the control plane is gone",
        || async {
            let c = config(http, proxy, "/config").await;
            (c["control_plane"]["state"] != "connected").then_some(c)
        },
    )
    .await;
    let state = c["control_plane"]["state"].as_str().unwrap();
    assert!(
        ["disconnected", "connecting"].contains(&state),
        "{state}: {c}"
    );
    assert!(c["control_plane"]["last_error"].is_string(), "{c}");
    assert!(is_rfc3339(&c["control_plane"]["last_snapshot_at"]), "{c}");
    assert_eq!(c["source_kind"], "control-plane", "{c}");

    // Ready and serving all along: a load balancer must not pull it.
    for _ in 0..20 {
        assert_eq!(
            admin(http, proxy, "/readyz").await,
            Some((200, "ready\n".into()))
        );
        assert_eq!(status_of(http, proxy, "/courses/1").await, Some(200));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The nodes the control plane lists: `(id, state)`.
async fn nodes(http: &HttpClient, control: &ControlPlane) -> Option<Vec<(String, String)>> {
    let r = http.get(&control.http_url("/v1/nodes"), &[]).await.ok()?;
    let list = r.json();
    Some(
        list["nodes"]
            .as_array()?
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap_or_default().to_owned(),
                    n["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_proxy_says_goodbye_and_is_never_lost() {
    let fleet = Fleet::start("goodbye", &[]).await;
    let http = &fleet.client;
    let control = &fleet.control[0];
    // (drain delay, whether the node must be gone before the process exits)
    let cases = [("0s", false), ("1s", true)];
    for (i, (delay, gone_before_exit)) in cases.into_iter().enumerate() {
        let id = format!("leaver-{i}");
        let mut proxy =
            start_proxy_with(&fleet.cp_url(), &id, "default", &["--drain-delay", delay]).await;
        eventually(Duration::from_secs(10), "the proxy to connect", || async {
            let list = nodes(http, control).await?;
            list.iter()
                .any(|(n, s)| n == &id && s == "connected")
                .then_some(())
        })
        .await;

        proxy.signal("TERM");
        let signalled = Instant::now();
        let mut gone: Option<Instant> = None;
        let mut exited: Option<Instant> = None;
        while gone.is_none() || exited.is_none() {
            assert!(
                signalled.elapsed() < Duration::from_secs(15),
                "{id}: gone {gone:?}, exited {exited:?}"
            );
            if let Some(list) = nodes(http, control).await {
                let state = list.iter().find(|(n, _)| n == &id).map(|(_, s)| s.clone());
                assert_ne!(state.as_deref(), Some("lost"), "{id}: {list:?}");
                if state.is_none() {
                    gone.get_or_insert_with(Instant::now);
                }
            }
            if exited.is_none() && proxy.child.try_wait().unwrap().is_some() {
                exited = Some(Instant::now());
            }
            if let (Some(exited), None) = (exited, gone) {
                assert!(
                    exited.elapsed() < Duration::from_secs(2),
                    "{id} still listed 2 s after it exited"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let (gone, exited) = (gone.unwrap(), exited.unwrap());
        assert_eq!(proxy.wait_exit(Duration::from_secs(1)).await, Some(0));
        if gone_before_exit {
            // The goodbye goes out when the drain starts, not when the process ends.
            assert!(gone < exited, "{id}: listed until it exited");
        }
        eprintln!(
            "{id} (drain delay {delay}): unlisted {:?} after SIGTERM, exited after {:?}",
            gone - signalled,
            exited - signalled
        );
    }
    let list = nodes(http, control).await.unwrap();
    assert!(list.is_empty(), "{list:?}");
}

/// The version in a saved snapshot (header line, then JSON with `version`).
fn saved_version(path: &std::path::Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let body = bytes.splitn(2, |&b| b == b'\n').nth(1)?;
    serde_json::from_slice::<serde_json::Value>(body).ok()?["version"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restarted_with_etcd_and_the_control_plane_down_serves_its_last_known_good_snapshot()
 {
    let a = EchoBackend::start("a").await;
    let mut fleet = Fleet::start("lkg", &[]).await;
    let state = TempDir::new("lkg-state");
    let damaged = TempDir::new("lkg-damaged");
    let state_dir = state.path().to_str().unwrap().to_owned();
    let cp_url = fleet.cp_url();
    let start = |node: &'static str, dir: String| {
        let cp_url = cp_url.clone();
        async move {
            // The default --bootstrap-timeout (5 s).
            start_proxy_with(&cp_url, node, "default", &["--state-dir", &dir]).await
        }
    };
    fleet.proxies.push(start("lkg-1", state_dir.clone()).await);
    let (code, _, err) = fleet.apply(0, &route_file(&[&a], COURSES)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/courses/1", 200, Some("a")).await;
    let version = config(&fleet.client, &fleet.proxies[0], "/config").await["version"]
        .as_u64()
        .unwrap();
    let file = state.path().join("last-known-good.snapshot");
    eventually(
        Duration::from_secs(5),
        "the snapshot to be saved",
        || async { (saved_version(&file) == Some(version)).then_some(()) },
    )
    .await;
    // A copy with one byte of its body flipped: never to be served.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x02;
    std::fs::write(damaged.path().join("last-known-good.snapshot"), bytes).unwrap();

    // Everything behind the proxy goes down, then the proxy restarts.
    let grpc = fleet.control[0].grpc.to_string();
    let status_http = fleet.control[0].http.to_string();
    fleet.control[0].kill().await;
    fleet.etcd.stop().await;
    let mut old = fleet.proxies.pop().unwrap();
    old.signal("TERM");
    assert_eq!(old.wait_exit(Duration::from_secs(10)).await, Some(0));

    let restarted = Instant::now();
    let proxy = start("lkg-1", state_dir.clone()).await;
    let other_started = Instant::now();
    let other = start("lkg-2", damaged.path().to_str().unwrap().to_owned()).await;
    let http = &fleet.client;
    // Nothing to serve until the bootstrap timeout.
    let (code, body) = admin(http, &proxy, "/readyz").await.unwrap();
    assert_eq!((code, body.as_str()), (503, "no configuration loaded\n"));
    let serving = eventually(
        Duration::from_secs(10),
        "the last-known-good table to serve",
        || async { (status_of(http, &proxy, "/courses/1").await == Some(200)).then(Instant::now) },
    )
    .await;
    let took = serving - restarted;
    eprintln!("last-known-good: restart to first proxied 200 in {took:?} (bootstrap timeout 5s)");
    assert!(
        took >= Duration::from_secs(5),
        "served before the bootstrap timeout: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(6),
        "not serving within 1 s of the bootstrap timeout: {took:?}"
    );
    assert_eq!(
        admin(http, &proxy, "/readyz").await,
        Some((200, "ready\n".into()))
    );
    let c = config(http, &proxy, "/config").await;
    assert_eq!(c["source_kind"], "last-known-good", "{c}");
    assert_eq!(
        c["source"],
        format!("last-known-good:{}", file.display()),
        "{c}"
    );
    assert_eq!(c["version"], version, "{c}");
    assert_ne!(c["control_plane"]["state"], "connected", "{c}");
    assert!(c["control_plane"]["last_snapshot_at"].is_null(), "{c}");
    let full = config(http, &proxy, "/config?full=1").await;
    assert_eq!(full["config"]["routes"][0]["id"], "courses", "{full}");

    // The damaged copy is ignored: up to well past its own bootstrap timeout, nothing.
    while other_started.elapsed() < Duration::from_millis(6500) {
        assert_eq!(
            admin(http, &other, "/readyz").await,
            Some((503, "no configuration loaded\n".into()))
        );
        assert_eq!(status_of(http, &other, "/courses/1").await, Some(503));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(other);

    // etcd and the control plane come back: the proxy takes its snapshots again.
    fleet.etcd.restart().await;
    fleet.control[0] =
        ControlPlane::start_on(&fleet.etcd.url(), "/routemaster", &grpc, &status_http).await;
    eventually(
        Duration::from_secs(15),
        "the control plane's snapshot to replace the saved one",
        || async {
            let c = config(http, &proxy, "/config").await;
            (c["source_kind"] == "control-plane" && c["control_plane"]["state"] == "connected")
                .then_some(())
        },
    )
    .await;
    let more = format!(
        "{COURSES}  - {{ id: more, path: {{ prefix: /more }}, forward: {{ service: svc-0 }} }}\n"
    );
    let (code, _, err) = fleet.apply(0, &route_file(&[&a], &more)).await;
    assert_eq!(code, 0, "{err}");
    eventually(
        Duration::from_secs(10),
        "the new route to serve",
        || async { (status_of(http, &proxy, "/more").await == Some(200)).then_some(()) },
    )
    .await;
    let newer = config(http, &proxy, "/config").await["version"]
        .as_u64()
        .unwrap();
    assert!(newer > version);
    eventually(
        Duration::from_secs(5),
        "the newer snapshot to be saved",
        || async { (saved_version(&file) == Some(newer)).then_some(()) },
    )
    .await;
    fleet.proxies.push(proxy);
}
