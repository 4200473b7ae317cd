//! The whole system on loopback: real etcd, routemaster-control, connected
//! routemaster-proxy processes, echo backends and the routemaster CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::cluster::{ControlPlane, cli};
use routemaster_integration_tests::eventually;
use routemaster_integration_tests::fleet::{Fleet, route_file, start_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reaches_every_proxy_and_delete_removes_the_route() {
    let a = EchoBackend::start("a").await;
    let fleet = Fleet::start("apply", &[("p1", "default"), ("p2", "default")]).await;
    let yaml = route_file(
        &[&a],
        "  - { id: courses, path: { prefix: /courses }, forward: { service: svc-0 } }\n",
    );
    let (code, out, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "apply failed: {out}{err}");
    assert!(out.contains("route/courses created"), "{out}");
    assert!(out.contains("service/svc-0 created"), "{out}");
    assert!(out.contains("version"), "{out}");
    fleet.wait_all("/courses/1", 200, Some("a")).await;

    // Re-applying the same file changes nothing.
    let (code, out, _) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0);
    assert!(out.contains("route/courses unchanged"), "{out}");

    // The fleet converges on one version, visible in the status API.
    let status = eventually(Duration::from_secs(10), "fleet converged", || async {
        let s = fleet.status(0).await;
        (s["nodes"]["total"] == 2 && s["nodes"]["converged"] == 2).then_some(s)
    })
    .await;
    assert_eq!(status["routes"], 1);
    assert_eq!(status["etcd"]["connected"], true);
    let listing = fleet
        .client
        .get(&fleet.control[0].http_url("/v1/nodes"), &[])
        .await
        .unwrap()
        .json();
    assert_eq!(listing["version"], status["version"]);
    let nodes = &listing["nodes"];
    let ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["p1", "p2"]);
    assert_eq!(nodes[0]["applied_version"], status["version"]);
    assert_eq!(nodes[0]["labels"]["zone"], "test");
    assert_eq!(nodes[0]["state"], "connected");
    assert_eq!(nodes[0]["binary_version"], env!("CARGO_PKG_VERSION"));
    for field in ["last_seen", "connected_since"] {
        let t = nodes[0][field].as_str().unwrap_or_default();
        assert!(
            t.ends_with('Z') && t.contains('T'),
            "{field} is not RFC 3339: {t:?}"
        );
    }
    let one = fleet
        .client
        .get(&fleet.control[0].http_url("/v1/nodes/p2"), &[])
        .await
        .unwrap();
    assert_eq!(one.json()["id"], "p2");
    let missing = fleet
        .client
        .get(&fleet.control[0].http_url("/v1/nodes/nope"), &[])
        .await
        .unwrap();
    assert_eq!(missing.status, 404);

    let (code, out, err) = cli(&fleet.cp_url(), &["delete", "route", "courses"]).await;
    assert_eq!(code, 0, "{out}{err}");
    fleet.wait_all("/courses/1", 404, None).await;

    // A service still in use cannot be deleted; an unused one can.
    let (code, _, _) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0);
    let (code, _, err) = cli(&fleet.cp_url(), &["delete", "service", "svc-0"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("courses"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_batch_is_rejected_whole_and_names_the_route() {
    let a = EchoBackend::start("a").await;
    let fleet = Fleet::start("invalid", &[("p1", "default")]).await;
    let yaml = route_file(
        &[&a],
        "  - { id: good, path: { prefix: /good }, forward: { service: svc-0 } }\n  - { id: bad, path: { regex: \"(\" }, forward: { service: svc-0 } }\n",
    );
    let (code, out, err) = fleet.apply(0, &yaml).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains(r#"route "bad""#) && err.contains("path.regex"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    let (code, out, _) = cli(&fleet.cp_url(), &["get", "routes", "-o", "json"]).await;
    assert_eq!(code, 0);
    assert!(!out.contains("good"), "nothing of the batch landed: {out}");
    assert_eq!(
        fleet.get(0, "/good", "example.com").await.unwrap().status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_decide_which_proxies_get_a_route() {
    let a = EchoBackend::start("a").await;
    let fleet = Fleet::start("groups", &[("inner", "default"), ("edge", "edge")]).await;
    let yaml = route_file(
        &[&a],
        "  - { id: public, group: edge, path: { prefix: /public }, forward: { service: svc-0 } }\n  - { id: private, path: { prefix: /private }, forward: { service: svc-0 } }\n",
    );
    let (code, out, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "{out}{err}");
    fleet.wait_one(1, "/public", 200, Some("a")).await;
    fleet.wait_one(0, "/private", 200, Some("a")).await;
    assert_eq!(fleet.get(0, "/public", "x").await.unwrap().status, 404);
    assert_eq!(fleet.get(1, "/private", "x").await.unwrap().status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_under_load_never_fail_untouched_routes() {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let fleet = Arc::new(Fleet::start("load", &[("p1", "default"), ("p2", "default")]).await);
    let routes = |target: usize| {
        format!(
            "  - {{ id: steady, path: {{ prefix: /steady }}, forward: {{ service: svc-0 }} }}\n  - {{ id: moving, path: {{ prefix: /moving }}, forward: {{ service: svc-{target} }} }}\n"
        )
    };
    let (code, _, err) = fleet.apply(0, &route_file(&[&a, &b], &routes(0))).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/steady", 200, Some("a")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for w in 0..6 {
        let (fleet, stop, ok, failed) = (
            Arc::clone(&fleet),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match fleet.get(w % 2, "/steady/x", "example.com").await {
                    Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for round in 1..=20 {
        let target = round % 2;
        let (code, _, err) = fleet
            .apply(0, &route_file(&[&a, &b], &routes(target)))
            .await;
        assert_eq!(code, 0, "{err}");
        let name = if target == 0 { "a" } else { "b" };
        fleet.wait_all("/moving", 200, Some(name)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("steady route during 20 updates: {ok} ok, {failed} failed");
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_survive_a_control_plane_restart_and_reconverge() {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let mut fleet = Fleet::start("cp-restart", &[("p1", "default"), ("p2", "default")]).await;
    let one = "  - { id: one, path: { prefix: /one }, forward: { service: svc-0 } }\n";
    let (code, _, err) = fleet.apply(0, &route_file(&[&a, &b], one)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/one", 200, Some("a")).await;

    let grpc = fleet.control[0].grpc.to_string();
    let http = fleet.control[0].http.to_string();
    fleet.control[0].kill().await;
    // Proxies keep serving their last table while the control plane is gone.
    for i in 0..2 {
        for _ in 0..20 {
            assert_eq!(fleet.get(i, "/one", "x").await.unwrap().status, 200);
        }
    }
    let etcd = fleet.etcd.url();
    fleet.control[0] = ControlPlane::start_on(&etcd, "/routemaster", &grpc, &http).await;
    let two = format!(
        "{one}  - {{ id: two, path: {{ prefix: /two }}, forward: {{ service: svc-1 }} }}\n"
    );
    let (code, _, err) = fleet.apply(0, &route_file(&[&a, &b], &two)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/two", 200, Some("b")).await;
    eventually(Duration::from_secs(15), "fleet reconverged", || async {
        let s = fleet.status(0).await;
        (s["nodes"]["converged"] == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_keeps_traffic_flowing_and_refuses_writes_clearly() {
    let a = EchoBackend::start("a").await;
    let mut fleet = Fleet::start("etcd-outage", &[("p1", "default")]).await;
    let one = "  - { id: one, path: { prefix: /one }, forward: { service: svc-0 } }\n";
    let (code, _, err) = fleet.apply(0, &route_file(&[&a], one)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/one", 200, Some("a")).await;

    fleet.etcd.stop().await;
    for _ in 0..20 {
        assert_eq!(fleet.get(0, "/one", "x").await.unwrap().status, 200);
    }
    let two = format!(
        "{one}  - {{ id: two, path: {{ prefix: /two }}, forward: {{ service: svc-0 }} }}\n"
    );
    let (code, _, err) = fleet.apply(0, &route_file(&[&a], &two)).await;
    assert_ne!(code, 0);
    assert!(err.contains("etcd"), "the error says why: {err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    // Reads are still answered from the last snapshot.
    let (code, out, _) = cli(&fleet.cp_url(), &["get", "routes", "-o", "json"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("one"));
    let status = fleet.status(0).await;
    assert_eq!(status["etcd"]["connected"], false);

    fleet.etcd.restart().await;
    eventually(Duration::from_secs(20), "writes accepted again", || async {
        let (code, _, _) = fleet.apply(0, &route_file(&[&a], &two)).await;
        (code == 0).then_some(())
    })
    .await;
    fleet.wait_all("/two", 200, Some("a")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_plane_replicas_serve_one_fleet() {
    let a = EchoBackend::start("a").await;
    let mut fleet = Fleet::start("replicas", &[]).await;
    let second = ControlPlane::start(&fleet.etcd.url(), "/routemaster").await;
    fleet
        .proxies
        .push(start_proxy(&fleet.control[0].grpc_url(), "p1", "default").await);
    fleet
        .proxies
        .push(start_proxy(&second.grpc_url(), "p2", "default").await);
    fleet.control.push(second);

    let one = "  - { id: one, path: { prefix: /one }, forward: { service: svc-0 } }\n";
    let (code, _, err) = fleet.apply(1, &route_file(&[&a], one)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/one", 200, Some("a")).await;
    // Both replicas publish the same version and see the whole fleet.
    let (s0, s1) = eventually(Duration::from_secs(10), "replicas agree", || async {
        let (s0, s1) = (fleet.status(0).await, fleet.status(1).await);
        (s0["version"] == s1["version"]
            && s0["nodes"]["converged"] == 2
            && s1["nodes"]["converged"] == 2)
            .then_some((s0, s1))
    })
    .await;
    assert_eq!(s0["nodes"]["total"], 2);
    assert_eq!(s1["routes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_lands_in_one_transaction() {
    let a = EchoBackend::start("a").await;
    let fleet = Fleet::start("large", &[("p1", "default")]).await;
    let mut routes = String::new();
    for i in 0..1_000 {
        routes.push_str(&format!(
            "  - {{ id: r{i}, path: {{ prefix: /r{i} }}, forward: {{ service: svc-0 }} }}\n"
        ));
    }
    let (code, out, err) = fleet.apply(0, &route_file(&[&a], &routes)).await;
    assert_eq!(code, 0, "{out}{err}");
    fleet.wait_all("/r999/x", 200, Some("a")).await;
    let status = fleet.status(0).await;
    assert_eq!(status["routes"], 1_000);
}
