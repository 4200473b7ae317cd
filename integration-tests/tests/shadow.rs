//! Shadow mode, rule shadowing (issue 13, part 1) on real etcd, a real control plane, two
//! real proxies and a "monolith" backend: 50 shadow redirect rules of which 3 are wrong,
//! judged against what the monolith really answers, over HTTP/1.1 and HTTP/2 clients;
//! exactly the 3 wrong ones miss, with expected and actual; `promote` refuses them and
//! takes the good ones through the normal write path; fixing a rule starts its evidence
//! again; a shadow forward rule is judged against the header the monolith names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use routemaster_integration_tests::browser::{chromium, rows};
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::cluster::cli;
use routemaster_integration_tests::fleet::Fleet;
use routemaster_integration_tests::{eventually, metric_sample};
use tokio::net::TcpListener;

const WRONG: [usize; 3] = [7, 19, 42];

/// The old system: `/old/N` → 301 `/new/N`; `/shop/N` → 200 with the path it
/// "shortcut" to in `x-shortcut-result`; anything else 200.
async fn monolith() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    let mut resp = Response::builder().header("x-backend", "monolith");
                    if let Some(n) = path.strip_prefix("/old/") {
                        resp = resp.status(301).header("location", format!("/new/{n}"));
                    } else if let Some(n) = path.strip_prefix("/shop/") {
                        let q = req
                            .uri()
                            .query()
                            .map(|q| format!("?{q}"))
                            .unwrap_or_default();
                        resp = resp.header("x-shortcut-result", format!("/catalog/{n}{q}"));
                    }
                    Ok::<_, Infallible>(resp.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

fn routes(monolith: &str, wrong: &[usize]) -> String {
    let mut y = format!(
        "services:\n  - {{ name: monolith, instances: [{{ address: \"{monolith}\" }}] }}\nroutes:\n  - {{ id: everything, forward: {{ service: monolith }} }}\n"
    );
    for i in 0..50 {
        let target = if wrong.contains(&i) { "wrong" } else { "new" };
        y.push_str(&format!(
            "  - {{ id: old-{i}, path: {{ exact: /old/{i} }}, mode: shadow, redirect: {{ path: /{target}/{i} }} }}\n"
        ));
    }
    y.push_str(
        "  - { id: shop, path: { prefix: /shop }, mode: shadow, shadow: { expect_header: x-shortcut-result }, forward: { service: monolith, rewrite_prefix: /catalog } }\n",
    );
    y
}

/// Waits until every proxy serves the current version.
async fn converged(cp: &str) {
    let (code, out, err) = cli(cp, &["status", "--wait-converged", "10s"]).await;
    assert_eq!(code, 0, "{out}{err}");
}

async fn shadow_json(cp: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["shadow"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let (code, out, err) = cli(cp, &all).await;
    assert_eq!(code, 0, "shadow {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn route<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == id)
        .unwrap_or_else(|| panic!("no shadow route {id} in {doc}"))
}

fn total_requests(doc: &serde_json::Value) -> u64 {
    doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_rules_are_judged_on_live_traffic_and_promoted_only_at_full_hit_rate() {
    let fleet = Fleet::start("shadow", &[("s1", "default"), ("s2", "default")]).await;
    let (mono, _task) = monolith().await;
    let cp = fleet.cp_url();
    let (code, _, err) = fleet.apply(0, &routes(&mono, &WRONG)).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/anything", 200, Some("monolith")).await;

    // Every /old/N is answered by the monolith (the shadow rules never serve), half of
    // them through each proxy, over HTTP/1.1 on s1 and HTTP/2 (h2c) on s2.
    // (Over HTTP/2 the authority is the proxy's address: `:authority` and `host` must agree.)
    let h2 = HttpClient::h2c();
    let h2_authority = fleet.proxies[1].addr.to_string();
    let authority = |i: usize| {
        if i.is_multiple_of(2) {
            "example.com".to_owned()
        } else {
            h2_authority.clone()
        }
    };
    for i in 0..50usize {
        let r = if i.is_multiple_of(2) {
            fleet
                .client
                .get(
                    &fleet.proxies[0].url(&format!("/old/{i}")),
                    &[("host", "example.com")],
                )
                .await
        } else {
            h2.get(&fleet.proxies[1].url(&format!("/old/{i}")), &[])
                .await
        }
        .unwrap();
        assert_eq!(r.status, 301, "/old/{i}");
        assert_eq!(r.header("location"), Some(format!("/new/{i}").as_str()));
        assert_eq!(r.header("x-backend"), Some("monolith"));
    }
    // A shadow forward rule: the monolith reports its path in x-shortcut-result.
    for (i, q) in [(1, ""), (2, "?x=1")] {
        let r = fleet
            .get(0, &format!("/shop/{i}{q}"), "example.com")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }

    // The fleet's evidence arrives with the proxies' health reports (every 1s here).
    let doc = eventually(
        Duration::from_secs(15),
        "50 shadow redirects counted",
        || {
            let cp = cp.clone();
            async move {
                let doc = shadow_json(&cp, &[]).await;
                (total_requests(&doc) == 52).then_some(doc)
            }
        },
    )
    .await;
    let mut hits = 0;
    for i in 0..50 {
        let r = route(&doc, &format!("old-{i}"));
        assert_eq!(r["requests"], 1, "{r}");
        if WRONG.contains(&i) {
            assert_eq!(
                (r["hit"].as_u64(), r["miss"].as_u64()),
                (Some(0), Some(1)),
                "{r}"
            );
            let miss = &r["recent"][0];
            assert_eq!(miss["path"], format!("/old/{i}"));
            assert_eq!(miss["method"], "GET");
            let host = authority(i);
            assert_eq!(miss["expected"], format!("301 http://{host}/wrong/{i}"));
            assert_eq!(miss["actual"], format!("301 http://{host}/new/{i}"));
            assert!(!miss["request_id"].as_str().unwrap().is_empty(), "{miss}");
            let node = if i.is_multiple_of(2) { "s1" } else { "s2" };
            assert_eq!(miss["node"], node, "{miss}");
        } else {
            assert_eq!(
                (r["hit"].as_u64(), r["miss"].as_u64()),
                (Some(1), Some(0)),
                "{r}"
            );
            hits += 1;
        }
        assert_eq!(r["unknown"], 0, "{r}");
    }
    assert_eq!(hits, 47, "hit rate 47/50 over the distinct paths");
    // /shop/1 → /catalog/1 and /shop/2?x=1 → /catalog/2?x=1: both hits.
    let shop = route(&doc, "shop");
    assert_eq!(
        (shop["hit"].as_u64(), shop["miss"].as_u64()),
        (Some(2), Some(0)),
        "{shop}"
    );

    // Each proxy's own counts are in its metrics.
    let scrape = fleet
        .client
        .get(&format!("http://{}/metrics", fleet.proxies[1].admin), &[])
        .await
        .unwrap()
        .body;
    for (route, result, want) in [
        ("old-7", "miss", 1.0),
        ("old-1", "hit", 1.0),
        ("old-2", "hit", 0.0),
    ] {
        let got = metric_sample(
            &scrape,
            "routemaster_shadow_total",
            &[("route", route), ("result", result)],
        );
        assert_eq!(got, Some(want), "{route} {result} in\n{scrape}");
    }

    // The dashboard's shadow panel, rendered by headless Chromium, shows the same.
    let profile = fleet.dir.path().join("chromium-shadow");
    let dom = chromium(
        &profile,
        &["--virtual-time-budget=3000", "--dump-dom"],
        &fleet.control[0].http_url("/"),
    )
    .await;
    let shadow_rows = rows(&dom, "shadow-row");
    assert_eq!(shadow_rows.len(), 51, "50 redirect rules and shop:\n{dom}");
    let row = shadow_rows
        .iter()
        .find(|r| r.contains("data-route=\"old-42\""))
        .unwrap();
    assert!(
        row.contains("0.00%") && row.contains("expected 301 http://example.com/wrong/42"),
        "{row}"
    );

    // The table view names the wrong ones; one route shows its mismatches.
    let (code, table, _) = cli(&cp, &["shadow"]).await;
    assert_eq!(code, 0);
    let missing: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("want 301"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(missing, ["old-19", "old-42", "old-7"], "{table}");
    let (code, one, _) = cli(&cp, &["shadow", "old-7"]).await;
    assert_eq!(code, 0);
    assert!(
        one.contains("Hit rate:  0.00%") && one.contains("/old/7"),
        "{one}"
    );

    // promote: refused for a rule that missed, and for too little evidence.
    let (code, _, err) = cli(&cp, &["promote", "old-7", "--min-requests", "1"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to promote route \"old-7\": 1 of 1 compared requests missed"),
        "{err}"
    );
    let (code, _, err) = cli(&cp, &["promote", "old-0"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("fewer than --min-requests 1000"), "{err}");
    let (code, _, err) = cli(&cp, &["promote", "everything"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not a shadow route"), "{err}");
    // …and done for a rule with full evidence: the proxies now answer it themselves.
    let (code, out, err) = cli(&cp, &["promote", "old-0", "--min-requests", "1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route/old-0 promoted to active"), "{out}");
    converged(&cp).await;
    for proxy in 0..2 {
        let r = fleet.get(proxy, "/old/0", "example.com").await.unwrap();
        assert_eq!(
            r.header("x-backend"),
            None,
            "the proxy answers old-0 itself"
        );
        assert_eq!(r.header("location"), Some("http://example.com/new/0"));
    }
    let (_, yaml, _) = cli(&cp, &["get", "route", "old-0", "-o", "yaml"]).await;
    assert!(yaml.contains("mode: active"), "{yaml}");

    // Fixing a wrong rule starts its evidence again; a hit then allows promotion.
    let fixed = routes(&mono, &[19, 42]);
    let (code, _, err) = fleet
        .apply(
            0,
            &fixed.replace(
                "{ id: old-0, path: { exact: /old/0 }, mode: shadow,",
                "{ id: old-0, path: { exact: /old/0 },",
            ),
        )
        .await;
    assert_eq!(code, 0, "{err}");
    // Every proxy serves the fixed rule (its new declaration) before the next request.
    converged(&cp).await;
    eventually(
        Duration::from_secs(15),
        "old-7's evidence restarted",
        || {
            let cp = cp.clone();
            async move {
                let doc = shadow_json(&cp, &["old-7"]).await;
                (route(&doc, "old-7")["requests"] == 0).then_some(())
            }
        },
    )
    .await;
    let r = fleet.get(0, "/old/7", "example.com").await.unwrap();
    assert_eq!(r.header("x-backend"), Some("monolith"));
    eventually(Duration::from_secs(15), "old-7 hit", || {
        let cp = cp.clone();
        async move {
            let doc = shadow_json(&cp, &["old-7"]).await;
            (route(&doc, "old-7")["hit"] == 1).then_some(())
        }
    })
    .await;
    let (code, out, err) = cli(&cp, &["promote", "old-7", "--min-requests", "1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hit 1, miss 0"), "{out}");
    // The status API shows the same evidence.
    let api = fleet
        .client
        .get(&fleet.control[0].http_url("/v1/shadow/old-19"), &[])
        .await
        .unwrap();
    assert_eq!(api.status, 200);
    assert_eq!(api.json()["routes"][0]["miss"], 1);
    let gone = fleet
        .client
        .get(&fleet.control[0].http_url("/v1/shadow/old-7"), &[])
        .await
        .unwrap();
    assert_eq!(gone.status, 404, "promoted: no longer a shadow route");
}
