//! Service discovery (issue 12): instances register themselves with the control plane,
//! on real etcd, a real control plane, real proxies and real backends.
//!
//! - an instance registered over HTTP and one registered by `routemaster register` get
//!   traffic beside the static instance; `apply -f` of the service (and `get services
//!   -o yaml` applied back) leaves them alone; `get instances` lists all three kinds;
//! - `register` killed with SIGKILL (no deregistration): the instance is gone within
//!   TTL + 2 s (ttl 5s); stopped with SIGTERM it deregisters at once; DELETE
//!   deregisters over HTTP;
//! - bad registrations are clear 4xx / gRPC errors naming the field;
//! - a thousand instances registering at once reach every proxy within 2 s
//!   (flood control coalesces the versions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::{HttpClient, Reply};
use routemaster_integration_tests::cluster::cli;
use routemaster_integration_tests::eventually;
use routemaster_integration_tests::fleet::Fleet;
use routemaster_integration_tests::process::binary;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ROUTE: &str = "routes:\n  - { id: lms, path: { prefix: /lms }, forward: { service: lms } }\n";

fn service_file(static_addr: &str) -> String {
    format!(
        "services:\n  - {{ name: lms, instances: [{{ address: \"{static_addr}\", labels: {{ zone: a }} }}] }}\n{ROUTE}"
    )
}

async fn send(http: &HttpClient, method: &str, url: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    http.send(req).await.unwrap()
}

fn instance_url(fleet: &Fleet, service: &str, id: &str) -> String {
    fleet.control[0].http_url(&format!("/v1/services/{service}/instances/{id}"))
}

/// The backends (`x-backend`) that answer `/lms` through proxy 0 over `n` requests.
async fn backends_seen(fleet: &Fleet, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        if let Some(r) = fleet.get(0, "/lms/x", "example.com").await
            && r.status == 200
            && let Some(b) = r.header("x-backend")
        {
            seen.insert(b.to_owned());
        }
    }
    seen
}

/// `routemaster register …` as a long-running process; returns once it said it
/// registered.
async fn start_register(cp: &str, args: &[&str]) -> Child {
    let mut child = Command::new(binary("routemaster"))
        .arg("--control-plane")
        .arg(cp)
        .arg("register")
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("register printed nothing within 10s")
        .unwrap()
        .expect("register exited before registering");
    assert!(line.contains("registered"), "{line}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn instances(fleet: &Fleet) -> serde_json::Value {
    let (code, out, err) = cli(&fleet.cp_url(), &["get", "instances", "lms", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["id"]
                .as_str()
                .map_or_else(|| format!("static:{}", i["address"]), str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_instances_get_traffic_and_leave_with_their_lease() {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let c = EchoBackend::start("c").await;
    let fleet = Fleet::start("registry", &[("p1", "default")]).await;
    let file = service_file(&a.addr.to_string());
    let (code, _, err) = fleet.apply(0, &file).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/lms/x", 200, Some("a")).await;
    let http = &fleet.client;

    // Over HTTP: created (201), then a re-PUT renews it (200, unchanged).
    let body = format!(
        r#"{{"address": "{}", "ttl": "5s", "labels": {{"zone": "b"}}}}"#,
        b.addr
    );
    let r = send(http, "PUT", &instance_url(&fleet, "lms", "b"), &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert_eq!(created["change"], "created", "{created}");
    assert_eq!(created["ttl"], "5s");
    let r = send(http, "PUT", &instance_url(&fleet, "lms", "b"), &body).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["change"].clone()),
        (200, "unchanged".into())
    );
    assert_eq!(
        r.json()["version"],
        created["version"],
        "a renewal makes no version"
    );
    let hb = instance_url(&fleet, "lms", "b") + "/heartbeat";
    let r = send(http, "POST", &hb, "").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // With the CLI, as a sidecar.
    let cp = fleet.cp_url();
    let c_addr = c.addr.to_string();
    let mut sidecar = start_register(
        &cp,
        &[
            "lms", &c_addr, "--ttl", "5s", "--id", "c", "--label", "zone=c",
        ],
    )
    .await;

    eventually(Duration::from_secs(10), "traffic to a, b and c", || async {
        let seen = backends_seen(&fleet, 12).await;
        (seen.len() == 3).then_some(())
    })
    .await;

    // `get instances`: both kinds, with source, ttl and time left.
    let list = instances(&fleet).await;
    assert_eq!(
        ids(&list),
        [format!("static:\"{}\"", a.addr), "b".into(), "c".into()],
        "{list}"
    );
    let reg = &list["instances"][1];
    assert_eq!(reg["source"], "registered");
    assert_eq!(reg["ttl"], "5s");
    assert_eq!(reg["labels"]["zone"], "b");
    let left = reg["expires_in_seconds"].as_i64().unwrap();
    assert!((1..=5).contains(&left), "{list}");
    assert_eq!(list["instances"][0]["source"], "static");
    // `/v1/services`: the static list as the file has it, and the registered ones.
    let services = http
        .get(&fleet.control[0].http_url("/v1/services"), &[])
        .await
        .unwrap()
        .json();
    let lms = &services[0];
    assert_eq!(lms["instances"].as_array().unwrap().len(), 1, "{lms}");
    let registered: Vec<(&str, &str, &str)> = lms["registered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["source"].as_str().unwrap(),
                r["ttl"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        registered,
        [("b", "registered", "5s"), ("c", "registered", "5s")],
        "{lms}"
    );
    let (code, table, _) = cli(&cp, &["get", "instances", "lms"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("registered") && table.contains("static"),
        "{table}"
    );

    // The route file owns only the static list: applying it again, or what `get -o
    // yaml` shows, changes nothing and removes no registered instance.
    let (code, out, err) = fleet.apply(0, &file).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("unchanged") && !out.contains("updated"),
        "{out}"
    );
    let (code, yaml, _) = cli(&cp, &["get", "services", "-o", "yaml"]).await;
    assert_eq!(code, 0);
    assert!(
        !yaml.contains(&b.addr.to_string()),
        "registered instances are not in the file:\n{yaml}"
    );
    let (code, out, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(ids(&instances(&fleet).await).len(), 3);
    // The versions record the registrations.
    let changes = http
        .get(&fleet.control[0].http_url("/v1/changes"), &[])
        .await
        .unwrap();
    assert!(
        changes.body.contains("lms/b") && changes.body.contains("lms/c"),
        "{}",
        changes.body
    );

    // SIGKILL: no deregistration; the lease runs out within the ttl (5 s) + 2 s.
    signal(&sidecar, "KILL");
    let killed = Instant::now();
    let _ = sidecar.wait().await;
    eventually(
        Duration::from_secs(7),
        "c to expire (ttl 5s + 2s)",
        || async {
            let list = instances(&fleet).await;
            (!ids(&list).contains(&"c".to_owned())).then_some(())
        },
    )
    .await;
    let expired_after = killed.elapsed();
    eventually(
        Duration::from_secs(2),
        "proxies to stop sending to c",
        || async {
            let seen = backends_seen(&fleet, 6).await;
            (!seen.contains("c")).then_some(())
        },
    )
    .await;
    eprintln!(
        "registry: a SIGKILLed register's instance left after {expired_after:?} (ttl 5s); traffic stopped after {:?}",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() <= Duration::from_secs(7),
        "{:?}",
        killed.elapsed()
    );
    let changes = http
        .get(&fleet.control[0].http_url("/v1/changes"), &[])
        .await
        .unwrap();
    assert!(changes.body.contains("expired"), "{}", changes.body);

    // b was kept alive by nobody since: renew it, then DELETE it.
    let r = send(http, "PUT", &instance_url(&fleet, "lms", "b"), &body).await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = send(http, "DELETE", &instance_url(&fleet, "lms", "b"), "").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["change"].clone()),
        (200, "deleted".into())
    );
    let r = send(http, "DELETE", &instance_url(&fleet, "lms", "b"), "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(ids(&instances(&fleet).await).len(), 1);

    // SIGTERM: the sidecar deregisters before it exits.
    let mut sidecar = start_register(&cp, &["lms", &c_addr, "--ttl", "60s"]).await;
    assert!(ids(&instances(&fleet).await).contains(&default_id(&c_addr)));
    signal(&sidecar, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), sidecar.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        ids(&instances(&fleet).await).len(),
        1,
        "deregistered at once, not after 60s"
    );
    fleet.wait_all("/lms/x", 200, Some("a")).await;
}

fn default_id(address: &str) -> String {
    address.replace(':', "-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_are_refused_naming_the_field() {
    let a = EchoBackend::start("a").await;
    let fleet = Fleet::start("registry-errors", &[]).await;
    let (code, _, err) = fleet.apply(0, &service_file(&a.addr.to_string())).await;
    assert_eq!(code, 0, "{err}");
    let http = &fleet.client;
    let taken = a.addr.to_string();
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "lms",
            "i1",
            r#"{"address": "127.0.0.1:9", "ttl": "1s"}"#,
            400,
            "ttl: \"1s\" is out of range",
        ),
        (
            "lms",
            "i1",
            r#"{"address": "127.0.0.1:9", "ttl": "10 s"}"#,
            400,
            "ttl: \"10 s\" is not a duration",
        ),
        (
            "lms",
            "i1",
            r#"{"address": "127.0.0.1", "ttl": "10s"}"#,
            400,
            "address: \"127.0.0.1\" has no port",
        ),
        (
            "lms",
            "i1",
            r#"{"address": "127.0.0.1:9", "weight": 0}"#,
            400,
            "weight: 0 is out of range",
        ),
        (
            "lms",
            "i1",
            r#"{"address": "127.0.0.1:9", "labels": {"a b": "c"}}"#,
            400,
            "labels: key \"a b\"",
        ),
        (
            "lms",
            "i1",
            r#"{"address": "127.0.0.1:9", "port": 9}"#,
            400,
            "unknown field `port`",
        ),
        (
            "lms",
            "i1",
            r#"{"ttl": "10s"}"#,
            400,
            "missing field `address`",
        ),
        (
            "ghost",
            "i1",
            r#"{"address": "127.0.0.1:9"}"#,
            404,
            "service \"ghost\" not found",
        ),
        (
            "lms",
            "i1",
            &format!(r#"{{"address": "{taken}"}}"#),
            409,
            "address: ",
        ),
    ];
    for (svc, id, body, status, words) in cases {
        let r = send(http, "PUT", &instance_url(&fleet, svc, id), body).await;
        assert_eq!(r.status.as_u16(), *status, "{body}: {}", r.body);
        assert!(r.body.contains(words), "{body}: {}", r.body);
        assert_eq!(r.body.lines().count(), 1, "one line: {}", r.body);
    }
    let r = send(
        http,
        "POST",
        &(instance_url(&fleet, "lms", "nobody") + "/heartbeat"),
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("not registered"), "{}", r.body);
    // Nothing else on the status port writes.
    let r = send(
        http,
        "PUT",
        &fleet.control[0].http_url("/v1/services"),
        "{}",
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.body);

    // The same checks over gRPC, through the CLI.
    let cp = fleet.cp_url();
    let grpc_cases: &[(&[&str], &str)] = &[
        (
            &["lms", "127.0.0.1:9", "--ttl", "301s"],
            "ttl: \"301s\" is out of range",
        ),
        (&["lms", "nowhere"], "address: \"nowhere\" has no port"),
        (&["ghost", "127.0.0.1:9"], "service \"ghost\" not found"),
        (&["lms", "127.0.0.1:9", "--id", "a/b"], "id: \"a/b\""),
    ];
    for (args, words) in grpc_cases {
        let mut all = vec!["register"];
        all.extend_from_slice(args);
        let (code, _, err) = cli(&cp, &all).await;
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
    let list = instances(&fleet).await;
    assert_eq!(ids(&list).len(), 1, "nothing was registered: {list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_a_thousand_registrations_reaches_every_proxy_within_two_seconds() {
    const N: usize = 1000;
    let fleet = Fleet::start("registry-flood", &[("p1", "default"), ("p2", "default")]).await;
    let yaml = format!("services:\n  - {{ name: lms }}\n{ROUTE}");
    let (code, _, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/lms/x", 503, None).await;

    let before = control_metrics(&fleet).await;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let http = fleet.client.clone();
        let url = instance_url(&fleet, "lms", &format!("i{i}"));
        let body = format!(
            r#"{{"address": "10.{}.{}.{}:8080", "ttl": "60s"}}"#,
            i / 65536,
            (i / 256) % 256,
            i % 256
        );
        tasks.spawn(async move { send(&http, "PUT", &url, &body).await });
    }
    let mut last_version = 0;
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        last_version = last_version.max(r.json()["version"].as_u64().unwrap());
    }
    let acknowledged = start.elapsed();
    // Every proxy serves a snapshot with all of them (its `/config` version is at least
    // the last registration's, and its table holds N instances).
    let http = &fleet.client;
    for (i, p) in fleet.proxies.iter().enumerate() {
        eventually(
            Duration::from_secs(10),
            &format!("proxy {i} to have {N} instances"),
            || async {
                let c = http.get(&p.admin_url("/config"), &[]).await.ok()?.json();
                (c["version"].as_u64()? >= last_version).then_some(())
            },
        )
        .await;
        let full = http
            .get(&p.admin_url("/config?full=1"), &[])
            .await
            .unwrap()
            .json();
        let n = full["config"]["services"][0]["instances"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(n, N, "proxy {i}");
    }
    let converged = start.elapsed();
    let propagation = converged - acknowledged;
    eprintln!(
        "registry flood: {N} registrations acknowledged after {acknowledged:?}, every proxy converged after {converged:?} ({propagation:?} after the last acknowledgement)"
    );
    // The bound: once the flood is registered, every proxy serves all of it within 2 s
    // (coalesced: at most --max-snapshots-per-second snapshots each). The whole burst,
    // writes included, is about 2 s in a debug build on two busy cores; a generous
    // bound keeps a regression (one transaction per registration) visible.
    assert!(
        propagation <= Duration::from_secs(2),
        "converged {propagation:?} after the last acknowledgement"
    );
    assert!(
        converged <= Duration::from_secs(10),
        "converged after {converged:?}"
    );
    // Flood control: versions were published faster than they were sent; each group's
    // snapshot is encoded once per version sent, and no more than 10 a second went out.
    let after = control_metrics(&fleet).await;
    let published = after.0 - before.0;
    let sent = after.1 - before.1;
    eprintln!("registry flood: {published} versions published, {sent} snapshots sent to the group");
    let bound = (converged.as_secs_f64() * 10.0).ceil() + 2.0;
    assert!(
        sent <= bound,
        "{sent} snapshots in {converged:?} (at most {bound})"
    );
}

/// (versions published, group snapshots encoded) from the control plane's /metrics.
async fn control_metrics(fleet: &Fleet) -> (f64, f64) {
    let text = fleet
        .client
        .get(&fleet.control[0].http_url("/metrics"), &[])
        .await
        .unwrap()
        .body;
    let value = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (
        value("routemaster_control_versions_published_total"),
        value("routemaster_control_snapshot_encode_duration_seconds_count"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_snapshots_per_second_coalesces_versions() {
    use routemaster_integration_tests::TempDir;
    use routemaster_integration_tests::cluster::{ControlPlane, Etcd};
    use routemaster_integration_tests::fleet::start_proxy;
    let dir = TempDir::new("registry-pace");
    let etcd = Etcd::start(dir.path()).await;
    let control = ControlPlane::start_with(
        &etcd.url(),
        "/routemaster",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--node-ttl", "6s", "--max-snapshots-per-second", "1"],
    )
    .await;
    let proxy = start_proxy(&control.grpc_url(), "p1", "default").await;
    let fleet = Fleet {
        dir,
        etcd,
        control: vec![control],
        proxies: vec![proxy],
        client: HttpClient::new(),
    };
    let (code, _, err) = fleet
        .apply(0, &format!("services:\n  - {{ name: lms }}\n{ROUTE}"))
        .await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/lms/x", 503, None).await;

    let before = control_metrics(&fleet).await;
    let start = Instant::now();
    let mut last = 0;
    for i in 0..10 {
        let url = instance_url(&fleet, "lms", &format!("i{i}"));
        let body = format!(r#"{{"address": "10.0.0.{i}:80", "ttl": "60s"}}"#);
        let r = send(&fleet.client, "PUT", &url, &body).await;
        assert_eq!(r.status, 201, "{}", r.body);
        last = r.json()["version"].as_u64().unwrap();
    }
    let p = &fleet.proxies[0];
    eventually(
        Duration::from_secs(5),
        "the proxy to get the last version",
        || async {
            let c = fleet
                .client
                .get(&p.admin_url("/config"), &[])
                .await
                .ok()?
                .json();
            (c["version"].as_u64()? >= last).then_some(())
        },
    )
    .await;
    let took = start.elapsed();
    let after = control_metrics(&fleet).await;
    let (published, sent) = (after.0 - before.0, after.1 - before.1);
    eprintln!(
        "registry pace: 10 registrations one by one, {published} versions published, {sent} sent at 1/s, converged after {took:?}"
    );
    assert!(published >= 10.0, "{published}");
    assert!(
        sent <= took.as_secs_f64().ceil() + 1.0,
        "{sent} snapshots in {took:?} at --max-snapshots-per-second 1"
    );
    // The newest version waits at most about one interval after the last write.
    assert!(took <= Duration::from_secs(4), "{took:?}");
}
