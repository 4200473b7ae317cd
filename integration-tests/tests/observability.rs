//! The proxy's observability against a real proxy: `/metrics` after known traffic (over
//! HTTP/1.1 and h2c) passes Debian's `promtool check metrics` and counts exactly that
//! traffic; the access log has one parsed JSON line per request whose request id is
//! the response's and whose trace id is the one sent upstream in `traceparent`; error
//! bodies carry the trace id; SIGHUP reopens a renamed log file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::eventually;
use support::*;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(10);

fn routes(app: std::net::SocketAddr) -> String {
    format!(
        "services:\n{}routes:\n  - id: r\n    path: {{ prefix: /r }}\n    forward: {{ service: app }}\n  \
         - id: old\n    path: {{ exact: /old }}\n    redirect: {{ path: /r/new }}\n",
        svc("app", &[app])
    )
}

/// `name{labels} value` lines of a scrape, as (name, labels, value).
fn samples(scrape: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().unwrap())
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include all of `want`.
fn total(scrape: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(scrape)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn promtool_check(scrape: &str) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed: scripts/test.sh installs it");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(scrape.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The complete lines of the access log (the writer thread may be mid-line when the
/// test reads: what follows the last newline is not a line yet).
fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_log_account_for_known_traffic() {
    let app = EchoBackend::start("app").await;
    let dir = routemaster_integration_tests::TempDir::new("observability");
    let log = dir.path().join("access.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let p = start(
        "observability",
        &routes(app.addr),
        &["--workers", "2", "--access-log", &log_arg],
    )
    .await;

    // Known traffic: 10 × HTTP/1.1 and 3 × h2c to route r, one redirect, one 404.
    let mut sent = Vec::new();
    let h1 = HttpClient::new();
    let h2 = HttpClient::h2c();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for i in 0..10 {
        let headers: Vec<(&str, &str)> = if i == 0 {
            vec![("traceparent", incoming), ("tracestate", "vendor=x")]
        } else {
            vec![]
        };
        let reply = h1
            .get(&p.proxy.url(&format!("/r/{i}")), &headers)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        sent.push(("http1", reply));
    }
    for i in 0..3 {
        let reply = h2
            .get(&p.proxy.url(&format!("/r/h2/{i}")), &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        sent.push(("h2", reply));
    }
    // A gRPC-typed request over h2c counts under protocol grpc (one stream, one line).
    let grpc = h2
        .send(
            http::Request::post(p.proxy.url("/r/grpc.Svc/Call"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"\0\0\0\0\0",
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(grpc.status, 200);
    sent.push(("grpc", grpc));
    let redirect = h1.get(&p.proxy.url("/old"), &[]).await.unwrap();
    assert_eq!(redirect.status, 301, "{}", redirect.body);
    let missing = h1.get(&p.proxy.url("/nope"), &[]).await.unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("trace id "), "{}", missing.body);
    // A gRPC call the proxy fails itself carries the trace id in grpc-message.
    let unrouted_grpc = h2
        .send(
            http::Request::post(p.proxy.url("/nope.Svc/Call"))
                .header("content-type", "application/grpc")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(unrouted_grpc.header("grpc-status"), Some("12"));
    assert!(
        unrouted_grpc
            .header("grpc-message")
            .is_some_and(|m| m.contains("trace id ")),
        "{:?}",
        unrouted_grpc.header("grpc-message")
    );

    // Trace context: the incoming trace continues with the proxy's span; absent ones start.
    let first = sent[0].1.json();
    let up = first["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(&up[..36], &incoming[..36], "{up}");
    assert_ne!(
        &up[36..52],
        &incoming[36..52],
        "the proxy's span id goes upstream"
    );
    assert_eq!(first["headers"]["tracestate"][0], "vendor=x");
    for (_, reply) in &sent[1..] {
        let tp = reply.json()["headers"]["traceparent"][0]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(tp.len(), 55, "{tp}");
        assert!(tp.ends_with("-00"), "default ratio 0: not sampled: {tp}");
    }

    // Metrics: counted once the outcome is in (h2's when hyper drops the body).
    let scrape = eventually(WAIT, "the scrape to count all requests", || async {
        let s = p.admin("/metrics").await.body;
        (total(
            &s,
            "routemaster_request_duration_seconds_count",
            &[("route", "r")],
        ) == 14.0)
            .then_some(s)
    })
    .await;
    promtool_check(&scrape).await;
    let requests = "routemaster_requests_total";
    let r = [("route", "r"), ("service", "app")];
    assert_eq!(total(&scrape, requests, &r), 14.0, "{scrape}");
    assert_eq!(total(&scrape, requests, &[r[0], ("protocol", "grpc")]), 1.0);
    assert_eq!(
        total(
            &scrape,
            requests,
            &[r[0], r[1], ("protocol", "http1"), ("code_class", "2xx")]
        ),
        10.0
    );
    assert_eq!(total(&scrape, requests, &[r[0], ("protocol", "h2")]), 3.0);
    assert_eq!(
        total(
            &scrape,
            requests,
            &[("route", "old"), ("code_class", "3xx")]
        ),
        1.0
    );
    assert_eq!(
        total(&scrape, requests, &[("route", ""), ("code_class", "4xx")]),
        1.0
    );
    let reasons = "routemaster_proxy_responses_total";
    // The HTTP/1.1 404 and the gRPC UNIMPLEMENTED (HTTP 200, trailers-only).
    assert_eq!(total(&scrape, reasons, &[("reason", "no_route")]), 2.0);
    assert_eq!(total(&scrape, reasons, &[("reason", "redirect")]), 1.0);
    assert_eq!(
        total(&scrape, reasons, &[("reason", "upstream_connect")]),
        0.0
    );
    assert!(total(&scrape, "routemaster_response_bytes_total", &r) > 0.0);
    assert!(total(&scrape, "routemaster_request_bytes_total", &r) > 0.0);
    assert_eq!(
        total(
            &scrape,
            "routemaster_upstream_response_seconds_count",
            &[("route", "r")]
        ),
        14.0
    );
    let connections = "routemaster_upstream_connections_total";
    assert_eq!(
        total(
            &scrape,
            connections,
            &[("service", "app"), ("result", "new")]
        ) + total(
            &scrape,
            connections,
            &[("service", "app"), ("result", "reused")]
        ),
        13.0,
        "one upstream connection per exchange on the HTTP/1.1 engine's client: the 10 \
         HTTP/1.1 requests and the 3 bodiless h2c ones (the gRPC call's body streams \
         through hyper's client)"
    );
    // Still open (idle in the worker's pool): every connection opened, none closed.
    assert_eq!(
        total(
            &scrape,
            "routemaster_upstream_connections_open",
            &[("service", "app")]
        ),
        total(
            &scrape,
            connections,
            &[("service", "app"), ("result", "new")]
        ),
    );
    assert_eq!(
        total(
            &scrape,
            "routemaster_endpoint_in_flight",
            &[("service", "app")]
        ),
        0.0
    );
    assert!(total(&scrape, "routemaster_downstream_connections_total", &[]) >= 2.0);
    assert_eq!(total(&scrape, "routemaster_snapshot_version", &[]), 1.0);
    assert_eq!(total(&scrape, "routemaster_build_info", &[]), 1.0);
    // OpenMetrics asked for: still the classic format, which promtool reads.
    let om = p
        .client
        .get(
            &p.proxy.admin_url("/metrics"),
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await
        .unwrap();
    assert!(
        om.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        om.header("content-type")
    );
    assert!(!om.body.contains("# EOF"));

    // Access log: one line per proxied request (not the admin scrapes), parsed.
    let lines = eventually(WAIT, "17 access log lines", || async {
        let lines = log_lines(&log);
        (lines.len() >= 17).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 17, "{lines:#?}");
    let by_id: HashMap<&str, &serde_json::Value> = lines
        .iter()
        .map(|l| (l["request_id"].as_str().unwrap(), l))
        .collect();
    for (protocol, reply) in &sent {
        let id = reply.header("x-request-id").unwrap();
        let line = by_id
            .get(id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:#?}"));
        let echo = reply.json();
        let tp = echo["headers"]["traceparent"][0].as_str().unwrap();
        assert_eq!(line["trace_id"], tp[3..35], "{line}");
        assert_eq!(line["protocol"], *protocol, "{line}");
        assert_eq!(line["status"], 200);
        assert_eq!(line["flags"], "upstream");
        assert_eq!(line["route"], "r");
        assert_eq!(line["service"], "app");
        assert_eq!(line["endpoint"], app.addr.to_string());
        assert_eq!(line["method"], echo["method"], "{line}");
        assert_eq!(line["path"], echo["uri"], "{line}");
        assert_eq!(line["authority"], p.proxy.addr.to_string());
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["duration_ms"].as_f64().unwrap() >= line["upstream_ms"].as_f64().unwrap());
        assert!(line["bytes_out"].as_u64().unwrap() > 0);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line.get("bytes_in").is_some(), "{line}");
        // Plain HTTP: the TLS keys do not apply and are left out (never null).
        for field in ["tls_version", "tls_sni"] {
            assert!(line.get(field).is_none(), "{field}: {line}");
        }
    }
    let line = by_id[missing.header("x-request-id").unwrap()];
    assert_eq!(line["status"], 404);
    assert_eq!(line["flags"], "no_route");
    // No route, service, endpoint or upstream: those keys are left out.
    for field in ["route", "service", "endpoint", "upstream_ms"] {
        assert!(line.get(field).is_none(), "{field}: {line}");
    }
    assert!(missing.body.contains(line["trace_id"].as_str().unwrap()));
    let line = by_id[redirect.header("x-request-id").unwrap()];
    assert_eq!(
        (line["status"].as_u64(), line["route"].as_str()),
        (Some(301), Some("old"))
    );
    assert_eq!(
        total(
            &p.admin("/metrics").await.body,
            "routemaster_access_log_dropped_total",
            &[]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_reopened_on_sighup() {
    let app = EchoBackend::start("app").await;
    let dir = routemaster_integration_tests::TempDir::new("access-log-hup");
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let log_arg = log.to_str().unwrap().to_owned();
    let p = start(
        "access-log-hup",
        &routes(app.addr),
        &["--access-log", &log_arg],
    )
    .await;

    assert_eq!(p.get("/r/before", &[]).await.status, 200);
    eventually(WAIT, "the first line", || async {
        (log_lines(&log).len() == 1).then_some(())
    })
    .await;
    // logrotate: rename, then SIGHUP; the proxy keeps running and writes a new file.
    std::fs::rename(&log, &rotated).unwrap();
    p.proxy.signal("HUP");
    let after = eventually(WAIT, "a line in the reopened file", || async {
        assert_eq!(p.get("/r/after", &[]).await.status, 200);
        let lines = log_lines(&log);
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert!(after.iter().all(|l| l["path"] == "/r/after"), "{after:#?}");
    let old = log_lines(&rotated);
    assert!(old.iter().any(|l| l["path"] == "/r/before"), "{old:#?}");
    assert_eq!(
        p.admin("/healthz").await.status,
        200,
        "SIGHUP does not stop the proxy"
    );
}

/// On a TLS listener the access log says which TLS version and SNI each request came
/// over, for HTTP/1.1 and HTTP/2 (curl, `--resolve` for the SNI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_shows_tls_version_and_sni() {
    use tokio::io::AsyncBufReadExt;

    let app = EchoBackend::start("app").await;
    let dir = routemaster_integration_tests::TempDir::new("access-log-tls");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.example.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("        {l}\n")).collect() };
    let yaml = format!(
        "tls:\n  certificates:\n    - name: a\n      hosts: [a.example.test]\n      cert_pem: |\n{}      key_pem: |\n{}{}",
        indent(&cert),
        indent(&key.serialize_pem()),
        routes(app.addr)
    );
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, yaml).unwrap();
    let log = dir.path().join("access.log");
    let mut child = tokio::process::Command::new(routemaster_integration_tests::process::binary(
        "routemaster-proxy",
    ))
    .arg("--config")
    .arg(&file)
    .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
    .args(["--tls-listen", "127.0.0.1:0", "--access-log"])
    .arg(&log)
    .stdout(std::process::Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // "routemaster-proxy listening on ADDR admin ADDR tls ADDR"
    let tls: std::net::SocketAddr = line.split_whitespace().nth(7).unwrap().parse().unwrap();
    let url = format!("https://a.example.test:{}/r/tls", tls.port());
    let resolve = format!("a.example.test:{}:127.0.0.1", tls.port());
    for (flag, protocol) in [("--http1.1", "http1"), ("--http2", "h2")] {
        let out = tokio::process::Command::new("curl")
            .args(["-sk", "--max-time", "10", flag, "--resolve", &resolve, &url])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "curl {flag}: {out:?}");
        let lines = eventually(WAIT, "the request's access log line", || async {
            let lines = log_lines(&log);
            lines
                .iter()
                .any(|l| l["protocol"] == protocol)
                .then_some(lines)
        })
        .await;
        let line = lines.iter().find(|l| l["protocol"] == protocol).unwrap();
        assert_eq!(line["tls_sni"], "a.example.test", "{line}");
        assert!(
            matches!(line["tls_version"].as_str(), Some("TLSv1.3" | "TLSv1.2")),
            "{line}"
        );
        assert_eq!(line["status"], 200, "{line}");
    }
}
