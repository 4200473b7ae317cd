//! Shadow mode, mirrored comparison (issue 13, part 2) on real etcd, a real control
//! plane, a real proxy and JSON backends: a candidate that differs from the primary only
//! in a timestamp is `noise` with a baseline and `miss` without one; an ignored path is a
//! `match`; a real difference is a `miss` naming the JSON path with both values; a dead
//! candidate is an `error` and never a client error; a fire-and-forget mirror's copies
//! carry `x-routemaster-shadow: 1` and a `-shadow` host; HTTP/1.1 and HTTP/2 clients
//! alike; a primary answering chunked JSON to HTTP/1.1 clients is compared on the
//! decoded body. The client's latency with mirroring on and off is measured and printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::cluster::cli;
use routemaster_integration_tests::fleet::Fleet;
use routemaster_integration_tests::{eventually, metric_sample};
use tokio::net::TcpListener;

/// What a backend saw: (host, x-routemaster-shadow) per request.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A JSON backend: `{"generated_at": <n>, "items": [{"id": 1}, {"id": second}], "v": 1}`,
/// with `n` counting up per request over every backend of the test process (so no two
/// calls, to one backend or to two, ever agree on it); `chunked`: sent in two frames
/// without a length (chunked over HTTP/1.1).
async fn json_backend(second: u64, chunked: bool) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    static GENERATED: AtomicU64 = AtomicU64::new(0);
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    log.lock().unwrap().push((
                        header("host").unwrap_or_default(),
                        header("x-routemaster-shadow"),
                    ));
                    let n = GENERATED.fetch_add(1, Ordering::Relaxed);
                    let body = format!(
                        r#"{{"generated_at": {n}, "items": [{{"id": 1}}, {{"id": {second}}}], "v": 1}}"#
                    );
                    let body = if chunked {
                        let (a, b) = body.split_at(body.len() / 2);
                        let frames = [a, b].map(|p| {
                            Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(p.as_bytes())))
                        });
                        Either::Right(StreamBody::new(tokio_stream::iter(frames)))
                    } else {
                        Either::Left(Full::new(Bytes::from(body)))
                    };
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn shadow_json(cp: &str) -> serde_json::Value {
    let (code, out, err) = cli(cp, &["shadow", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn mirror<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == id && r["kind"] == "mirror")
        .unwrap_or_else(|| panic!("no mirror {id} in {doc}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const N: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_responses_are_compared_with_noise_learned_from_a_baseline() {
    let fleet = Fleet::start("mirror", &[("m1", "default")]).await;
    let (lms, _) = json_backend(2, false).await;
    let (lms_chunked, _) = json_backend(2, true).await;
    let (v2, v2_seen) = json_backend(2, false).await;
    let (v3, _) = json_backend(3, false).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cp = fleet.cp_url();
    let yaml = format!(
        r#"services:
  - {{ name: lms, instances: [{{ address: "{lms}" }}] }}
  - {{ name: lms-chunked, instances: [{{ address: "{lms_chunked}" }}] }}
  - {{ name: lms-v2, instances: [{{ address: "{v2}" }}] }}
  - {{ name: lms-v3, instances: [{{ address: "{v3}" }}] }}
  - {{ name: gone, instances: [{{ address: "{dead}" }}] }}
routes:
  - {{ id: with-baseline, path: {{ prefix: /a }}, forward: {{ service: lms, mirror: {{ service: lms-v2, compare: {{ baseline: lms, headers: [content-type] }} }} }} }}
  - {{ id: without-baseline, path: {{ prefix: /b }}, forward: {{ service: lms, mirror: {{ service: lms-v2, compare: {{ headers: [content-type] }} }} }} }}
  - {{ id: real-change, path: {{ prefix: /c }}, forward: {{ service: lms, mirror: {{ service: lms-v3, compare: {{ baseline: lms }} }} }} }}
  - {{ id: dead-candidate, path: {{ prefix: /d }}, forward: {{ service: lms, mirror: {{ service: gone, timeout: 500ms, compare: {{ }} }} }} }}
  - {{ id: ignoring, path: {{ prefix: /e }}, forward: {{ service: lms, mirror: {{ service: lms-v2, compare: {{ ignore: ["$.generated_at"] }} }} }} }}
  - {{ id: fire-and-forget, path: {{ prefix: /f }}, forward: {{ service: lms, mirror: {{ service: lms-v2 }} }} }}
  - {{ id: plain, path: {{ prefix: /g }}, forward: {{ service: lms }} }}
  - {{ id: chunked-change, path: {{ prefix: /h }}, forward: {{ service: lms-chunked, mirror: {{ service: lms-v3, compare: {{ ignore: ["$.generated_at"] }} }} }} }}
  - {{ id: chunked-same, path: {{ prefix: /i }}, forward: {{ service: lms-chunked, mirror: {{ service: lms-v2, compare: {{ ignore: ["$.generated_at"] }} }} }} }}
"#
    );
    let (code, _, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "{err}");
    fleet.wait_all("/g", 200, None).await;

    // Half over HTTP/1.1, half over HTTP/2 (h2c): every client request succeeds, the
    // dead candidate's included.
    let h2 = HttpClient::h2c();
    let proxy = &fleet.proxies[0];
    for path in ["/a", "/b", "/c", "/d", "/e", "/f"] {
        for i in 0..N {
            let r = if i.is_multiple_of(2) {
                fleet.get(0, path, "example.com").await.unwrap()
            } else {
                h2.get(&proxy.url(path), &[]).await.unwrap()
            };
            assert_eq!(r.status, 200, "{path}");
            assert!(r.body.contains("\"items\""), "{path}: {}", r.body);
        }
    }
    // A primary answering chunked JSON to HTTP/1.1 clients (relayed chunked by the
    // engine): the mirror compares the decoded body, structurally.
    for path in ["/h", "/i"] {
        for _ in 0..N {
            let r = fleet.get(0, path, "example.com").await.unwrap();
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(
                r.headers.get("transfer-encoding").map(|v| v.as_bytes()),
                Some(&b"chunked"[..]),
                "{path}"
            );
            assert!(r.body.contains("\"items\""), "{path}: {}", r.body);
        }
    }

    let doc = eventually(Duration::from_secs(15), "every mirror judged", || {
        let cp = cp.clone();
        async move {
            let doc = shadow_json(&cp).await;
            let done = [
                "with-baseline",
                "without-baseline",
                "real-change",
                "dead-candidate",
                "ignoring",
                "chunked-change",
                "chunked-same",
            ]
            .iter()
            .all(|id| mirror(&doc, id)["requests"] == N);
            done.then_some(doc)
        }
    })
    .await;
    let counts = |id: &str| {
        let m = mirror(&doc, id);
        ["hit", "miss", "noise", "error", "dropped"].map(|k| m[k].as_u64().unwrap())
    };
    // A timestamp-only difference: noise with the baseline, a miss without it.
    assert_eq!(counts("with-baseline"), [0, 0, N, 0, 0]);
    assert_eq!(
        mirror(&doc, "with-baseline")["noise_paths"],
        serde_json::json!(["$.generated_at"])
    );
    assert_eq!(counts("without-baseline"), [0, N, 0, 0, 0]);
    let miss = &mirror(&doc, "without-baseline")["recent"][0];
    assert!(
        miss["expected"]
            .as_str()
            .unwrap()
            .starts_with("$.generated_at="),
        "{miss}"
    );
    // A real change is a miss naming the path and both values, noise left out.
    assert_eq!(counts("real-change"), [0, N, 0, 0, 0]);
    let miss = &mirror(&doc, "real-change")["recent"][0];
    assert_eq!(miss["expected"], "$.items[1].id=2", "{miss}");
    assert_eq!(miss["actual"], "$.items[1].id=3", "{miss}");
    // A dead candidate is an error, never the client's.
    assert_eq!(counts("dead-candidate"), [0, 0, 0, N, 0]);
    assert!(
        mirror(&doc, "dead-candidate")["recent"][0]["actual"]
            .as_str()
            .unwrap()
            .starts_with("error: ")
    );
    // An ignored path does not count.
    assert_eq!(counts("ignoring"), [N, 0, 0, 0, 0]);
    assert_eq!(mirror(&doc, "ignoring")["hit_rate"], 1.0);
    // Chunked primaries: a real change is a miss on the JSON path, the same body a match.
    assert_eq!(counts("chunked-change"), [0, N, 0, 0, 0]);
    let miss = &mirror(&doc, "chunked-change")["recent"][0];
    assert_eq!(miss["expected"], "$.items[1].id=2", "{miss}");
    assert_eq!(miss["actual"], "$.items[1].id=3", "{miss}");
    assert_eq!(counts("chunked-same"), [N, 0, 0, 0, 0]);

    // The copies are marked, and name the host with the -shadow suffix.
    let seen = v2_seen.lock().unwrap().clone();
    let marked = seen
        .iter()
        .filter(|(_, m)| m.as_deref() == Some("1"))
        .count();
    assert_eq!(marked, seen.len(), "every request lms-v2 saw is a copy");
    assert!(
        seen.iter().any(|(h, _)| h == "example.com-shadow"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(h, _)| h == &format!("{}-shadow:{}", proxy.addr.ip(), proxy.addr.port())),
        "{seen:?}"
    );
    // lms-v2 mirrors /a, /b, /e, /i and the fire-and-forget /f.
    eventually(Duration::from_secs(5), "fire-and-forget copies", || async {
        (v2_seen.lock().unwrap().len() as u64 == 5 * N).then_some(())
    })
    .await;

    // The proxy's metrics say the same.
    let scrape = fleet
        .client
        .get(&format!("http://{}/metrics", proxy.admin), &[])
        .await
        .unwrap()
        .body;
    assert_eq!(
        metric_sample(
            &scrape,
            "routemaster_shadow_total",
            &[("route", "with-baseline"), ("result", "noise")]
        ),
        Some(N as f64),
        "{scrape}"
    );

    // The client's latency with a 100% compared mirror (plus baseline) vs none, same
    // backend, same run, over each client protocol: measured and printed, not asserted
    // (see README).
    for (label, over_h2) in [("HTTP/1.1", false), ("HTTP/2", true)] {
        let mut on = Vec::new();
        let mut off = Vec::new();
        for _ in 0..200 {
            for (path, into) in [("/a", &mut on), ("/g", &mut off)] {
                let t = Instant::now();
                let r = if over_h2 {
                    h2.get(&proxy.url(path), &[]).await.unwrap()
                } else {
                    fleet.get(0, path, "example.com").await.unwrap()
                };
                into.push(t.elapsed());
                assert_eq!(r.status, 200);
            }
        }
        on.sort();
        off.sort();
        eprintln!(
            "{label} client latency, mirror on / off: p50 {:?} / {:?}, p99 {:?} / {:?}",
            percentile(&on, 0.5),
            percentile(&off, 0.5),
            percentile(&on, 0.99),
            percentile(&off, 0.99)
        );
    }
}
