//! The control plane's observability (issue 11, control-plane side), on real etcd, a
//! real control plane and real proxies:
//!
//! - `GET /metrics` passes `promtool check metrics` (Debian's `prometheus` 2.42) and
//!   counts what happened: applies and deletes by result, streams by group, the fleet
//!   gauges, the convergence histogram; an etcd outage shows (connected 0, errors
//!   counted, the watch restarted once etcd is back);
//! - the dashboard at `GET /`, rendered by headless Chromium, shows the nodes, the
//!   version and a route's way through the map (host → route → service → instance →
//!   proxy); a screenshot is written to the test's temp dir (copied to
//!   `$ROUTEMASTER_KEEP_SCREENSHOT` when set);
//! - `routemaster map` prints that map as a tree and, with `-o json`, exactly what
//!   `GET /v1/map` returns;
//! - `routemaster status --watch` prints refreshes until SIGINT, then exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::browser::{chromium, rows};
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::cluster::cli;
use routemaster_integration_tests::eventually;
use routemaster_integration_tests::fleet::{Fleet, route_file};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// A fleet of two proxies (groups `default` and `edge`), one backend, and routes for
/// both groups; returns once both proxies serve the applied version.
async fn converged_fleet(tag: &str) -> (Fleet, EchoBackend) {
    let fleet = Fleet::start(tag, &[("p-default", "default"), ("p-edge", "edge")]).await;
    let backend = EchoBackend::start("b0").await;
    let routes = "  - { id: api, hosts: [shop.example.com], path: { prefix: /api }, forward: { service: svc-0 } }\n  - { id: edge-all, group: edge, forward: { service: svc-0 } }\n";
    let (code, out, err) = fleet.apply(0, &route_file(&[&backend], routes)).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_converged(&fleet).await;
    (fleet, backend)
}

/// Registers instance `extra` (127.0.0.1:1, weight 2) of svc-0 over the registry's HTTP
/// API: service discovery's instances join the static ones in the map.
async fn register_extra(fleet: &Fleet) {
    let register =
        http::Request::put(fleet.control[0].http_url("/v1/services/svc-0/instances/extra"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"address": "127.0.0.1:1", "weight": 2, "ttl": "60s"}"#,
            )))
            .unwrap();
    let r = fleet.client.send(register).await.unwrap();
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
}

async fn wait_converged(fleet: &Fleet) -> u64 {
    eventually(Duration::from_secs(10), "the fleet to converge", || async {
        let s = fleet.status(0).await;
        let n = &s["nodes"];
        (n["total"] == 2 && n["converged"] == 2).then(|| s["version"].as_u64().unwrap())
    })
    .await
}

async fn http_get(fleet: &Fleet, path: &str) -> (u16, Option<String>, String) {
    let r = fleet
        .client
        .get(&fleet.control[0].http_url(path), &[])
        .await
        .unwrap();
    (
        r.status.as_u16(),
        r.header("content-type").map(str::to_owned),
        r.body,
    )
}

/// The value of the sample `name` (with its labels exactly as written) in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().unwrap())
    })
}

async fn promtool_check(scrape: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool could not start: is prometheus installed? (scripts/test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, scrape.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("promtool did not finish in 20s")
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_writes_streams_and_convergence() {
    let (fleet, _backend) = converged_fleet("cp-metrics").await;
    // One invalid apply and one delete of a route that does not exist.
    let (code, _, _) = fleet
        .apply(
            0,
            "routes:\n  - { id: broken, forward: { service: nowhere } }\n",
        )
        .await;
    assert_eq!(code, 1);
    let (code, _, _) = cli(&fleet.cp_url(), &["delete", "route", "ghost"]).await;
    assert_eq!(code, 1);
    let version = wait_converged(&fleet).await;

    // The convergence histogram is fed asynchronously: poll for it, bounded.
    let scrape = eventually(
        Duration::from_secs(10),
        "the apply's convergence to be timed",
        || async {
            let (status, _, body) = http_get(&fleet, "/metrics").await;
            assert_eq!(status, 200);
            (sample(&body, "routemaster_control_convergence_seconds_count") >= Some(1.0))
                .then_some(body)
        },
    )
    .await;
    let (_, content_type, _) = http_get(&fleet, "/metrics").await;
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (ok, report) = promtool_check(&scrape).await;
    assert!(
        ok,
        "promtool check metrics failed:\n{report}\n---\n{scrape}"
    );

    let expect = [
        (
            "routemaster_control_writes_total{operation=\"apply\",result=\"ok\"}",
            1.0,
        ),
        (
            "routemaster_control_writes_total{operation=\"apply\",result=\"invalid\"}",
            1.0,
        ),
        (
            "routemaster_control_writes_total{operation=\"delete\",result=\"not_found\"}",
            1.0,
        ),
        ("routemaster_control_streams{group=\"default\"}", 1.0),
        ("routemaster_control_streams{group=\"edge\"}", 1.0),
        ("routemaster_control_fleet_nodes", 2.0),
        ("routemaster_control_fleet_nodes_converged", 2.0),
        ("routemaster_control_fleet_nodes_lost", 0.0),
        ("routemaster_control_etcd_connected", 1.0),
        ("routemaster_control_config_version", version as f64),
        ("routemaster_control_convergence_seconds_count", 1.0),
    ];
    for (name, want) in expect {
        assert_eq!(sample(&scrape, name), Some(want), "{name} in\n{scrape}");
    }
    // etcd requests were timed (the apply's transaction among them), and snapshots
    // encoded for both groups.
    assert!(
        sample(
            &scrape,
            "routemaster_control_etcd_request_duration_seconds_count{operation=\"txn\"}"
        ) >= Some(1.0)
    );
    assert!(
        sample(
            &scrape,
            "routemaster_control_snapshot_encode_duration_seconds_count"
        ) >= Some(2.0)
    );
    assert!(sample(&scrape, "routemaster_control_snapshot_size_bytes_sum") > Some(0.0));
    assert!(scrape.contains("routemaster_control_build_info{version=\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_shows_in_the_metrics() {
    let mut fleet = Fleet::start("cp-metrics-outage", &[]).await;
    let url = fleet.control[0].http_url("/metrics");
    let http = HttpClient::new();
    let scrape = || async { http.get(&url, &[]).await.unwrap().body };
    let before = scrape().await;
    assert_eq!(
        sample(&before, "routemaster_control_etcd_connected"),
        Some(1.0)
    );
    assert_eq!(
        sample(&before, "routemaster_control_watch_restarts_total"),
        Some(0.0)
    );

    fleet.etcd.stop().await;
    let during = eventually(Duration::from_secs(20), "etcd errors counted", || async {
        let s = scrape().await;
        let errors: f64 = s
            .lines()
            .filter(|l| {
                l.starts_with("routemaster_control_etcd_errors_total{")
                    && l.contains("kind=\"unavailable\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        (sample(&s, "routemaster_control_etcd_connected") == Some(0.0) && errors >= 1.0)
            .then_some(s)
    })
    .await;
    let (ok, report) = promtool_check(&during).await;
    assert!(
        ok,
        "promtool check metrics failed:\n{report}\n---\n{during}"
    );

    fleet.etcd.restart().await;
    eventually(
        Duration::from_secs(20),
        "the watch to come back",
        || async {
            let s = scrape().await;
            (sample(&s, "routemaster_control_etcd_connected") == Some(1.0)
                && sample(&s, "routemaster_control_watch_restarts_total") >= Some(1.0))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_the_fleet_version_and_route_map_in_chromium() {
    let (fleet, backend) = converged_fleet("cp-dashboard").await;
    register_extra(&fleet).await;
    let version = wait_converged(&fleet).await;
    let url = fleet.control[0].http_url("/");
    let (status, content_type, page) = http_get(&fleet, "/").await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("text/html; charset=utf-8"));
    assert!(page.contains("/dashboard/app.js"));

    let dir = fleet.dir.path();
    let screenshot = dir.join("dashboard.png");
    let shot_arg = format!("--screenshot={}", screenshot.display());
    // The DOM after the script has fetched the API and rendered (virtual time runs the
    // page's timers without waiting for them), and a screenshot, side by side.
    let (dom_profile, shot_profile) = (dir.join("chromium-dom"), dir.join("chromium-shot"));
    let dom_args = ["--virtual-time-budget=3000", "--dump-dom"];
    let shot_args = [
        "--virtual-time-budget=3000",
        "--window-size=1280,900",
        shot_arg.as_str(),
    ];
    let (dom, _) = tokio::join!(
        chromium(&dom_profile, &dom_args, &url),
        chromium(&shot_profile, &shot_args, &url),
    );
    assert!(
        dom.contains(&format!("<span id=\"version\">version {version}</span>")),
        "version missing:\n{dom}"
    );
    assert!(dom.contains("2/2 converged"), "{dom}");
    // Nothing rendered from a missing value.
    for bad in ["null", "undefined", "NaN", "[object"] {
        assert!(!dom.contains(bad), "{bad} in the page:\n{dom}");
    }
    // Both nodes, with their group and state.
    let nodes = rows(&dom, "node-row");
    assert_eq!(nodes.len(), 2, "{dom}");
    for (node, group) in [("p-default", "default"), ("p-edge", "edge")] {
        let row = nodes
            .iter()
            .find(|r| r.contains(&format!("data-node=\"{node}\"")))
            .unwrap_or_else(|| panic!("no row for {node}:\n{dom}"));
        assert!(row.contains(&format!("<td>{group}</td>")), "{row}");
        assert!(row.contains(">connected</span>"), "{row}");
        assert!(row.contains("zone=test"), "{row}");
    }
    // The route `api`: host → path → route → service → instance → the proxy of its group.
    let map = rows(&dom, "map-row");
    let api = map
        .iter()
        .find(|r| r.contains("data-route=\"api\""))
        .unwrap_or_else(|| panic!("route api not in the map:\n{dom}"));
    let order = [
        "shop.example.com".to_owned(),
        "/api".to_owned(),
        ">api</span>".to_owned(),
        ">svc-0</span>".to_owned(),
        backend.addr.to_string(),
        "p-default".to_owned(),
    ];
    let mut at = 0;
    for part in &order {
        let found = api[at..]
            .find(part.as_str())
            .unwrap_or_else(|| panic!("{part} missing (in order {order:?}) in {api}"));
        at += found + part.len();
    }
    assert!(
        !api.contains("p-edge"),
        "the edge proxy does not serve api: {api}"
    );
    assert!(
        api.contains("<li class=\"instance-registered\">127.0.0.1:1"),
        "registered instance missing: {api}"
    );
    // The edge route serves any host, through the edge proxy only.
    let edge = map
        .iter()
        .find(|r| r.contains("data-route=\"edge-all\""))
        .unwrap();
    assert!(
        edge.contains("* (any host)") && edge.contains("p-edge") && !edge.contains("p-default")
    );
    // Recent changes list the apply's objects.
    assert!(dom.contains("change-row"), "{dom}");

    let png = std::fs::read(&screenshot).expect("no screenshot written");
    // To look at it: ROUTEMASTER_KEEP_SCREENSHOT=/tmp/dashboard.png (the temp dir goes).
    if let Some(keep) = std::env::var_os("ROUTEMASTER_KEEP_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_cli_and_status_watch() {
    let (fleet, backend) = converged_fleet("cp-map").await;
    register_extra(&fleet).await;
    let version = wait_converged(&fleet).await;
    let cp = fleet.cp_url();

    // -o json is GET /v1/map's document, with and without --host.
    for (args, path) in [
        (vec!["map", "-o", "json"], "/v1/map"),
        (
            vec!["map", "-o", "json", "--host", "SHOP.example.com"],
            "/v1/map?host=shop.example.com",
        ),
    ] {
        let (code, out, err) = cli(&cp, &args).await;
        assert_eq!(code, 0, "{err}");
        let (_, _, body) = http_get(&fleet, path).await;
        let cli_map: serde_json::Value = serde_json::from_str(&out).unwrap();
        let api_map: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(cli_map, api_map, "{args:?}");
        assert_eq!(cli_map["version"], version);
    }

    let (code, tree, err) = cli(&cp, &["map", "--host", "shop.example.com"]).await;
    assert_eq!(code, 0, "{err}");
    let want = format!(
        "version {version}
shop.example.com
└── /api (prefix)
    └── route api  [group default]
        ├── service svc-0  100%
        │   ├── {addr}
        │   └── 127.0.0.1:1  weight 2  (registered: extra)
        └── proxies: p-default (connected v{version})
* (any host)
└── / (prefix)
    └── route edge-all  [group edge]
        ├── service svc-0  100%
        │   ├── {addr}
        │   └── 127.0.0.1:1  weight 2  (registered: extra)
        └── proxies: p-edge (connected v{version})
",
        addr = backend.addr
    );
    assert_eq!(tree, want);

    // status --watch: at least two refreshes, then SIGINT ends it with 0.
    let mut child = Command::new(routemaster_integration_tests::process::binary(
        "routemaster",
    ))
    .args([
        "--control-plane",
        &cp,
        "status",
        "--watch",
        "--interval",
        "200ms",
    ])
    .env_remove("RUST_LOG")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let mut frames = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while frames < 2 {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("watch exited early");
            if line.starts_with("--- every 200ms: routemaster status") {
                frames += 1;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than two refreshes in 10s:\n{seen}"));
    // Read until the second frame is complete (its last line) before interrupting.
    assert!(
        seen.contains(&format!("version         {version}")),
        "{seen}"
    );
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-s", "INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("watch did not exit within 5s of SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{seen}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(stderr, "");
    assert!(!seen.contains('\x1b'), "escape codes on a pipe: {seen:?}");

    // On a terminal (a pty from util-linux `script`), frames redraw in place: the screen
    // is cleared once, then each frame starts at the cursor home and clears to the end
    // of every line and below. `timeout` interrupts the watch with SIGINT after 2 s.
    let cli = routemaster_integration_tests::process::binary("routemaster");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new("script")
            .args(["-q", "-e", "-c"])
            .arg(format!(
                "timeout --preserve-status -s INT 2 '{}' --control-plane {cp} status --watch --interval 200ms",
                cli.display()
            ))
            .arg("/dev/null")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("script did not finish in 20s")
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown:?}");
    assert_eq!(shown.matches("\x1b[2J").count(), 1, "{shown:?}");
    let frames = shown
        .matches("\x1b[Hevery 200ms: routemaster status")
        .count();
    assert!(frames >= 2, "{frames} frames: {shown:?}");
    assert_eq!(shown.matches("\x1b[J").count(), frames, "{shown:?}");
    assert!(
        shown.contains(&format!("version         {version}\x1b[K")),
        "{shown:?}"
    );
}
