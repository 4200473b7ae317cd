//! Region and environment awareness (issue 12), on real etcd, a real control plane and
//! real proxies with `--label`s:
//!
//! - proxies labelled `region=a` / `region=b` each send to their region's instances
//!   (`locality.prefer`) and fail over to the other region when theirs are removed
//!   (a registered instance deregistered, a static one applied away);
//!   `fallback: none` answers 503 instead of crossing the region;
//! - `select: { env: "${node.env}" }` picks each node's environment, and an address
//!   with `${node.NAME}` is filled in per proxy;
//! - a placeholder other than `${node.NAME}` is refused at apply, naming it; a proxy
//!   lacking a label the snapshot needs NACKs it, naming the label, and keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::cluster::cli;
use routemaster_integration_tests::eventually;
use routemaster_integration_tests::fleet::{Fleet, start_proxy_with};

/// Starts a fleet with one proxy per label set (node ids p0, p1, …).
async fn fleet(tag: &str, labels: &[&[&str]]) -> Fleet {
    let mut fleet = Fleet::start(tag, &[]).await;
    for (i, l) in labels.iter().enumerate() {
        let mut extra = Vec::new();
        for kv in *l {
            extra.extend(["--label", kv]);
        }
        let url = fleet.cp_url();
        fleet
            .proxies
            .push(start_proxy_with(&url, &format!("p{i}"), "default", &extra).await);
    }
    fleet
}

/// The backends proxy `i` reaches for `path` over `n` requests (`503` for a 503).
async fn seen(fleet: &Fleet, i: usize, path: &str, n: usize) -> HashSet<String> {
    let mut out = HashSet::new();
    for _ in 0..n {
        if let Some(r) = fleet.get(i, path, "example.com").await {
            match r.status.as_u16() {
                200 => out.insert(r.header("x-backend").unwrap_or("?").to_owned()),
                code => out.insert(code.to_string()),
            };
        }
    }
    out
}

async fn expect(fleet: &Fleet, i: usize, path: &str, want: &[&str]) {
    let want: HashSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    eventually(
        Duration::from_secs(10),
        &format!("proxy {i} to reach {want:?} for {path}"),
        || async {
            let got = seen(fleet, i, path, 8).await;
            (got == want).then_some(())
        },
    )
    .await;
}

fn locality_file(fallback: &str, instances: &[(&EchoBackend, &str)]) -> String {
    let list: Vec<String> = instances
        .iter()
        .map(|(b, region)| {
            format!(
                "{{ address: \"{}\", labels: {{ region: {region} }} }}",
                b.addr
            )
        })
        .collect();
    format!(
        "services:\n  - {{ name: lms, locality: {{ prefer: [region, zone], fallback: {fallback} }}, instances: [{}] }}\nroutes:\n  - {{ id: lms, path: {{ prefix: /lms }}, forward: {{ service: lms }} }}\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_prefer_their_region_and_fail_over_when_it_empties() {
    let a1 = EchoBackend::start("a1").await;
    let b1 = EchoBackend::start("b1").await;
    let b2 = EchoBackend::start("b2").await;
    let fleet = fleet("locality", &[&["region=a"], &["region=b"]]).await;
    let (code, _, err) = fleet
        .apply(
            0,
            &locality_file("any", &[(&a1, "a"), (&b1, "b"), (&b2, "b")]),
        )
        .await;
    assert_eq!(code, 0, "{err}");
    expect(&fleet, 0, "/lms/x", &["a1"]).await;
    expect(&fleet, 1, "/lms/x", &["b1", "b2"]).await;

    // A registered instance in region a joins region a's proxy only.
    let a2 = EchoBackend::start("a2").await;
    let url = fleet.control[0].http_url("/v1/services/lms/instances/a2");
    let body = format!(
        r#"{{"address": "{}", "ttl": "30s", "labels": {{"region": "a"}}}}"#,
        a2.addr
    );
    let put = Request::put(&url)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let r = fleet.client.send(put).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    expect(&fleet, 0, "/lms/x", &["a1", "a2"]).await;
    expect(&fleet, 1, "/lms/x", &["b1", "b2"]).await;

    // Region a empties (deregistered, applied away): its proxy fails over to region b.
    let del = Request::delete(&url).body(Full::default()).unwrap();
    assert_eq!(fleet.client.send(del).await.unwrap().status, 200);
    let (code, _, err) = fleet
        .apply(0, &locality_file("any", &[(&b1, "b"), (&b2, "b")]))
        .await;
    assert_eq!(code, 0, "{err}");
    expect(&fleet, 0, "/lms/x", &["b1", "b2"]).await;

    // `fallback: none`: no crossing — region a's proxy answers 503, region b's serves.
    let (code, _, err) = fleet
        .apply(0, &locality_file("none", &[(&b1, "b"), (&b2, "b")]))
        .await;
    assert_eq!(code, 0, "{err}");
    expect(&fleet, 0, "/lms/x", &["503"]).await;
    expect(&fleet, 1, "/lms/x", &["b1", "b2"]).await;
    // Region a comes back: served again, locally.
    let (code, _, err) = fleet
        .apply(0, &locality_file("none", &[(&a1, "a"), (&b1, "b")]))
        .await;
    assert_eq!(code, 0, "{err}");
    expect(&fleet, 0, "/lms/x", &["a1"]).await;
    expect(&fleet, 1, "/lms/x", &["b1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_labels_select_the_environment_and_fill_in_addresses() {
    let prod = EchoBackend::start("prod").await;
    let test = EchoBackend::start("test").await;
    let prod_port = format!("port={}", prod.addr.port());
    let test_port = format!("port={}", test.addr.port());
    let fleet = fleet(
        "select",
        &[&["env=prod", &prod_port], &["env=test", &test_port]],
    )
    .await;
    let yaml = format!(
        r#"services:
  - name: lms
    select: {{ env: "${{node.env}}" }}
    instances:
      - {{ address: "{}", labels: {{ env: prod }} }}
      - {{ address: "{}", labels: {{ env: test }} }}
  - name: pinned
    instances: [{{ address: "127.0.0.1:${{node.port}}" }}]
routes:
  - {{ id: lms, path: {{ prefix: /lms }}, forward: {{ service: lms }} }}
  - {{ id: pinned, path: {{ prefix: /pinned }}, forward: {{ service: pinned }} }}
"#,
        prod.addr, test.addr
    );
    let (code, _, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "{err}");
    expect(&fleet, 0, "/lms/x", &["prod"]).await;
    expect(&fleet, 1, "/lms/x", &["test"]).await;
    expect(&fleet, 0, "/pinned/x", &["prod"]).await;
    expect(&fleet, 1, "/pinned/x", &["test"]).await;
    // The control plane keeps the declaration; each proxy shows what it resolved.
    let (code, out, _) = cli(
        &fleet.cp_url(),
        &["get", "services", "pinned", "-o", "yaml"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("127.0.0.1:${node.port}"), "{out}");

    // Only ${node.NAME} placeholders exist: anything else is refused at apply.
    let bad = yaml.replace("${node.port}", "${port}");
    let (code, _, err) = fleet.apply(0, &bad).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("instances[0].address") && err.contains("unknown placeholder \"${port}\""),
        "{err}"
    );

    // A label the proxies lack: each NACKs, naming it, and keeps its table.
    let missing = yaml.replace("${node.port}", "${node.only}");
    let (code, _, err) = fleet.apply(0, &missing).await;
    assert_eq!(code, 0, "{err}");
    eventually(Duration::from_secs(10), "both proxies to NACK", || async {
        let nodes = fleet
            .client
            .get(&fleet.control[0].http_url("/v1/nodes"), &[])
            .await
            .ok()?
            .json();
        let nacks: Vec<String> = nodes["nodes"]
            .as_array()?
            .iter()
            .filter_map(|n| n["last_nack"].as_str().map(str::to_owned))
            .collect();
        (nacks.len() == 2).then_some(nacks)
    })
    .await
    .iter()
    .for_each(|nack| {
        assert!(
            nack.contains(
                "service \"pinned\": instances[0].address: this proxy has no label \"only\""
            ),
            "{nack}"
        );
    });
    expect(&fleet, 0, "/pinned/x", &["prod"]).await;
    expect(&fleet, 1, "/lms/x", &["test"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_region_spills_over_on_health_but_never_across_fallback_none() {
    let a1 = EchoBackend::start("a1").await;
    let b1 = EchoBackend::start("b1").await;
    let fleet = fleet("locality-health", &[&["region=a"], &["region=b"]]).await;
    let file = |fallback: &str, a: &str| {
        format!(
            "services:\n  - {{ name: lms, health_check: {{ path: /healthz, interval: 200ms, timeout: 100ms, healthy: 1, unhealthy: 1 }}, locality: {{ prefer: [region], fallback: {fallback} }}, instances: [{{ address: \"{a}\", labels: {{ region: a }} }}, {{ address: \"{}\", labels: {{ region: b }} }}] }}\nroutes:\n  - {{ id: lms, path: {{ prefix: /lms }}, forward: {{ service: lms }} }}\n",
            b1.addr
        )
    };
    let a_addr = a1.addr.to_string();
    let (code, _, err) = fleet.apply(0, &file("any", &a_addr)).await;
    assert_eq!(code, 0, "{err}");
    expect(&fleet, 0, "/lms/x", &["a1"]).await;
    expect(&fleet, 1, "/lms/x", &["b1"]).await;

    // Region a's only instance dies but stays configured: once its health check fails,
    // region a's proxy spills over to region b.
    drop(a1);
    expect(&fleet, 0, "/lms/x", &["b1"]).await;

    // With `fallback: none` the same dead region is never crossed: the proxy keeps to
    // region a (panic mode within it) and fails rather than reach region b.
    let (code, _, err) = fleet.apply(0, &file("none", &a_addr)).await;
    assert_eq!(code, 0, "{err}");
    eventually(
        Duration::from_secs(10),
        "region a's proxy to stop reaching b1",
        || async {
            let got = seen(&fleet, 0, "/lms/x", 8).await;
            (!got.contains("b1") && !got.is_empty()).then_some(got)
        },
    )
    .await;
    for _ in 0..3 {
        let got = seen(&fleet, 0, "/lms/x", 8).await;
        assert!(!got.contains("b1"), "{got:?}");
    }
    expect(&fleet, 1, "/lms/x", &["b1"]).await;
}
