//! Upstream resilience on real processes and sockets: retries (`forward.retry`) on the
//! HTTP/1.1 engine, outlier ejection of a SIGKILLed backend under load, active health
//! checks marking a backend down and up, panic mode, and `limits`. Each test takes
//! seconds; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::{HttpClient, Reply};
use routemaster_integration_tests::process::binary;
use routemaster_integration_tests::{eventually, metric_sample};
use support::{Running, dead_port, start};
use tokio::net::TcpListener;

/// A backend whose answer is decided per request by `script(hit, path)` (hits count
/// from 1, health-check requests included only when the script counts them); it
/// records the `x-routemaster-attempts` header of every request.
struct Scripted {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    attempts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Script = dyn Fn(usize, &str) -> u16 + Send + Sync;

impl Scripted {
    async fn start(name: &'static str, script: Arc<Script>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (h, a) = (Arc::clone(&hits), Arc::clone(&attempts));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, a, script) = (Arc::clone(&h), Arc::clone(&a), Arc::clone(&script));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let path = req.uri().path().to_owned();
                        let status = if path == "/healthz" {
                            script(0, &path)
                        } else {
                            let hit = h.fetch_add(1, Ordering::SeqCst) + 1;
                            let seen = req
                                .headers()
                                .get("x-routemaster-attempts")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_owned();
                            a.lock().unwrap().push(seen);
                            script(hit, &path)
                        };
                        async move {
                            let _ = req.into_body().collect().await;
                            let body = format!("{{\"backend\":\"{name}\",\"status\":{status}}}");
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
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
        Self {
            addr,
            hits,
            attempts,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Starts the script again (hit 1 next) and forgets the attempts seen.
    fn reset(&self) {
        self.hits.store(0, Ordering::SeqCst);
        self.attempts.lock().unwrap().clear();
    }

    fn attempts(&self) -> Vec<String> {
        self.attempts.lock().unwrap().clone()
    }
}

fn instances(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!("[{}]", list.join(", "))
}

async fn send(client: &HttpClient, method: &str, url: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(b"{\"x\":1}")))
        .unwrap();
    client.send(req).await.unwrap()
}

async fn upstream(p: &Running, service: &str) -> serde_json::Value {
    let config = p.admin("/config").await.json();
    config["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["service"] == service)
        .cloned()
        .unwrap_or_else(|| panic!("no upstream {service} in {config}"))
}

fn endpoint(up: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    up["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .unwrap()
}

#[tokio::test]
async fn a_backend_answering_503_twice_is_retried_transparently() {
    let flaky = Scripted::start("flaky", Arc::new(|hit, _| if hit <= 2 { 503 } else { 200 })).await;
    let yaml = format!(
        "services:\n  - {{ name: s, instances: {} }}\nroutes:\n  - {{ id: r, forward: {{ service: s, retry: {{ attempts: 2, on: [503], backoff: 1ms }} }} }}\n",
        instances(&[flaky.addr])
    );
    let p = start("retry-503", &yaml, &[]).await;
    let reply = send(&p.client, "GET", &p.proxy.url("/x")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["backend"], "flaky");
    assert_eq!(flaky.hits(), 3);
    assert_eq!(flaky.attempts(), ["1", "2", "3"]);
    let stats = p.admin("/stats").await.json();
    let s = &stats["upstreams"][0];
    assert_eq!(s["retries"], 2, "{stats}");

    // The HTTP/2 path retries the same way (a small body is kept and sent again).
    let h2 = HttpClient::h2c();
    flaky.reset();
    let reply = send(&h2, "PUT", &p.proxy.url("/h2")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["backend"], "flaky");
    assert_eq!(flaky.hits(), 3);
    assert_eq!(flaky.attempts(), ["1", "2", "3"]);

    // The metrics count the same retries (two per engine).
    let scrape = p.admin("/metrics").await.body;
    let retries = metric_sample(
        &scrape,
        "routemaster_upstream_events_total",
        &[("service", "s"), ("event", "retry")],
    );
    assert_eq!(retries, Some(4.0), "{scrape}");
    let panic = metric_sample(&scrape, "routemaster_upstream_panic", &[("service", "s")]);
    assert_eq!(panic, Some(0.0));

    // A client's own x-routemaster-attempts does not reach the upstream.
    let reply = p
        .client
        .get(&p.proxy.url("/y"), &[("x-routemaster-attempts", "9")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(flaky.attempts().last().map(String::as_str), Some("1"));
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried_unless_allowed() {
    // Odd hits fail: a retry (the next, even hit) would succeed.
    let flaky = Scripted::start(
        "odd",
        Arc::new(|hit, _| if hit % 2 == 1 { 503 } else { 200 }),
    )
    .await;
    let yaml = format!(
        "services:\n  - {{ name: s, instances: {} }}\nroutes:\n  - {{ id: plain, path: {{ prefix: /plain }}, forward: {{ service: s, retry: {{ on: [503], backoff: 1ms }} }} }}\n  - {{ id: allowed, path: {{ prefix: /allowed }}, forward: {{ service: s, retry: {{ on: [503], backoff: 1ms, non_idempotent: true }} }} }}\n",
        instances(&[flaky.addr])
    );
    let p = start("retry-post", &yaml, &[]).await;
    let cases = [
        ("POST", "/plain", 503, 1),
        ("PUT", "/plain", 200, 2),
        ("DELETE", "/plain", 200, 2),
        ("PATCH", "/plain", 503, 1),
        ("POST", "/allowed", 200, 2),
    ];
    for (method, path, status, tries) in cases {
        let before = flaky.hits();
        // Start each case on an odd hit.
        if before % 2 == 1 {
            send(&p.client, "GET", &p.proxy.url("/plain/align")).await;
        }
        let before = flaky.hits();
        let reply = send(&p.client, method, &p.proxy.url(path)).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert_eq!(flaky.hits() - before, tries, "{method} {path}");
    }
}

#[tokio::test]
async fn exhausted_retries_answer_the_last_outcome() {
    let down = Scripted::start("down", Arc::new(|_, _| 503)).await;
    let dead = dead_port();
    let yaml = format!(
        "services:\n  - {{ name: busy, instances: {} }}\n  - {{ name: gone, instances: {} }}\nroutes:\n  - {{ id: busy, path: {{ prefix: /busy }}, forward: {{ service: busy, retry: {{ attempts: 3, backoff: 1ms }} }} }}\n  - {{ id: gone, path: {{ prefix: /gone }}, forward: {{ service: gone, retry: {{ attempts: 3, backoff: 1ms }} }} }}\n",
        instances(&[down.addr]),
        instances(&[dead])
    );
    let p = start("retry-exhausted", &yaml, &[]).await;
    // The upstream's own 503 (its body), after 1 + 3 tries.
    let reply = send(&p.client, "GET", &p.proxy.url("/busy")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["backend"], "down");
    assert_eq!(down.hits(), 4);
    assert_eq!(down.attempts(), ["1", "2", "3", "4"]);
    // A connection failure stays a 502.
    let t0 = Instant::now();
    let reply = send(&p.client, "GET", &p.proxy.url("/gone")).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(t0.elapsed() < Duration::from_secs(2));
    let stats = p.admin("/stats").await.json();
    let gone = stats["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["service"] == "gone")
        .unwrap()
        .clone();
    assert_eq!(gone["retries"], 3, "{stats}");
}

/// Starts `routemaster-demo-backend NAME 127.0.0.1:0` and returns it with its address.
async fn demo_backend(name: &str) -> (tokio::process::Child, SocketAddr) {
    let mut cmd = tokio::process::Command::new(binary("routemaster-demo-backend"));
    cmd.args([name, "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
    (child, addr)
}

/// The acceptance test: three backend processes under 20 concurrent clients; one is
/// SIGKILLed. Outlier detection ejects it; with retries on, they cover the requests
/// that met it before. After the ejection, zero requests fail; the count before it is
/// reported (with and without retries).
#[tokio::test]
async fn killing_one_of_three_backends_under_load_fails_nothing_after_ejection() {
    kill_one_of_three(true).await;
}

#[tokio::test]
async fn without_retries_only_requests_before_the_ejection_fail() {
    kill_one_of_three(false).await;
}

/// Returns how many requests failed between the kill and the ejection.
async fn kill_one_of_three(retry: bool) -> usize {
    let (_a, a) = demo_backend("a").await;
    let (_b, b) = demo_backend("b").await;
    let (mut c_proc, c) = demo_backend("c").await;
    let retry_field = if retry {
        ", retry: { attempts: 2, on: [connect-failure, reset, 502, 503], backoff: 5ms }"
    } else {
        ""
    };
    let yaml = format!(
        "services:\n  - name: web\n    instances: {}\n    outlier: {{ consecutive_failures: 3, base_ejection: 30s }}\nroutes:\n  - {{ id: web, forward: {{ service: web{retry_field} }} }}\n",
        instances(&[a, b, c])
    );
    let p = start("kill-one", &yaml, &[]).await;
    let url = p.proxy.url("/load");

    let stop = Arc::new(AtomicBool::new(false));
    // (time, ok) per request.
    let log: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (stop, log, url) = (Arc::clone(&stop), Arc::clone(&log), url.clone());
        clients.push(tokio::spawn(async move {
            let client = HttpClient::new();
            let deadline = Instant::now() + Duration::from_secs(8);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let start = Instant::now();
                let ok = matches!(client.get(&url, &[]).await, Ok(r) if r.status == 200);
                log.lock().unwrap().push((start, ok));
            }
        }));
    }
    // Steady load first.
    eventually(Duration::from_secs(5), "steady load", || async {
        (log.lock().unwrap().len() > 300).then_some(())
    })
    .await;
    c_proc.start_kill().unwrap();
    let killed = Instant::now();
    c_proc.wait().await.unwrap();
    let at = eventually(
        Duration::from_secs(5),
        "the dead backend ejected",
        || async {
            let up = upstream(&p, "web").await;
            (endpoint(&up, c)["ejected"] == true).then(Instant::now)
        },
    )
    .await;
    // A second and a half under load after the ejection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    // Requests that started before the ejection was seen (some just before the kill)
    // may have met the dead backend; those that started after must not fail.
    let failed_before = log.iter().filter(|(t, ok)| *t < at && !ok).count();
    let after: Vec<_> = log.iter().filter(|(t, _)| *t >= at).collect();
    let failed_after = after.iter().filter(|(_, ok)| !ok).count();
    let total_failed = log.iter().filter(|(_, ok)| !ok).count();
    let stats = p.admin("/stats").await.json();
    let web = &stats["upstreams"][0];
    eprintln!(
        "kill one of three under 20 clients (retries {}): ejected (seen in /config) {:.0} ms after the kill; {failed_before} failed in between, {failed_after} of {} after; {} requests in all; retries {}, refused by the budget {}",
        if retry { "on" } else { "off" },
        (at - killed).as_secs_f64() * 1e3,
        after.len(),
        log.len(),
        web["retries"],
        web["retries_over_budget"],
    );
    assert!(after.len() > 100, "too little load after the ejection");
    assert_eq!(failed_after, 0, "requests failed after the ejection");
    assert_eq!(total_failed, failed_before);
    assert!(web["ejections"].as_u64().unwrap() >= 1, "{stats}");
    failed_before
}

#[tokio::test]
async fn health_checks_mark_a_backend_down_and_up_again() {
    let sick = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&sick);
    let a = Scripted::start(
        "a",
        Arc::new(move |_, path| {
            if path == "/healthz" && flag.load(Ordering::SeqCst) {
                503
            } else {
                200
            }
        }),
    )
    .await;
    let b = Scripted::start("b", Arc::new(|_, _| 200)).await;
    let yaml = format!(
        "services:\n  - name: s\n    instances: {}\n    health_check: {{ interval: 100ms, timeout: 100ms, healthy: 2, unhealthy: 2 }}\nroutes:\n  - {{ id: r, forward: {{ service: s }} }}\n",
        instances(&[a.addr, b.addr])
    );
    let p = start("health", &yaml, &[]).await;
    eventually(Duration::from_secs(5), "both checked up", || async {
        let up = upstream(&p, "s").await;
        (endpoint(&up, a.addr)["active"] == "up" && endpoint(&up, b.addr)["active"] == "up")
            .then_some(())
    })
    .await;

    sick.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    eventually(Duration::from_secs(5), "a marked down", || async {
        let up = upstream(&p, "s").await;
        let e = endpoint(&up, a.addr);
        (e["active"] == "down" && e["healthy"] == false).then_some(())
    })
    .await;
    eprintln!("health check: down after {:?}", t0.elapsed());
    let before = a.hits();
    for _ in 0..20 {
        let r = p.client.get(&p.proxy.url("/x"), &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["backend"], "b");
    }
    assert_eq!(a.hits(), before, "a got traffic while down");
    // A reload (a new table, the same endpoints) keeps what the checks concluded.
    p.ensure_watching().await;
    let up = upstream(&p, "s").await;
    let e = endpoint(&up, a.addr);
    assert!(e["active"] == "down" && e["healthy"] == false, "{up}");

    sick.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "a back up", || async {
        let up = upstream(&p, "s").await;
        (endpoint(&up, a.addr)["healthy"] == true).then_some(())
    })
    .await;
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let r = p.client.get(&p.proxy.url("/x"), &[]).await.unwrap();
        *seen
            .entry(r.json()["backend"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert!(seen.get("a").copied().unwrap_or(0) >= 5, "{seen:?}");
}

#[tokio::test]
async fn panic_mode_balances_over_all_when_fewer_than_half_are_healthy() {
    let sick = Arc::new(AtomicBool::new(false));
    let mk = |name: &'static str, sick: Option<Arc<AtomicBool>>| {
        Arc::new(move |_: usize, path: &str| {
            if path == "/healthz" && sick.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                503
            } else {
                let _ = name;
                200
            }
        })
    };
    let a = Scripted::start("a", mk("a", Some(Arc::clone(&sick)))).await;
    let b = Scripted::start("b", mk("b", Some(Arc::clone(&sick)))).await;
    let c = Scripted::start("c", mk("c", None)).await;
    let yaml = format!(
        "services:\n  - name: s\n    instances: {}\n    health_check: {{ interval: 100ms, timeout: 100ms, healthy: 1, unhealthy: 1 }}\nroutes:\n  - {{ id: r, forward: {{ service: s }} }}\n",
        instances(&[a.addr, b.addr, c.addr])
    );
    let p = start("panic", &yaml, &[]).await;
    eventually(Duration::from_secs(5), "all checked up", || async {
        let up = upstream(&p, "s").await;
        (up["healthy_endpoints"] == 3 && up["panic"] == false).then_some(())
    })
    .await;
    // Two of three down: one healthy is fewer than half.
    sick.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "panic mode", || async {
        let up = upstream(&p, "s").await;
        (up["healthy_endpoints"] == 1 && up["panic"] == true).then_some(())
    })
    .await;
    let before = (a.hits(), b.hits(), c.hits());
    for _ in 0..30 {
        let r = p.client.get(&p.proxy.url("/x"), &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let got = (
        a.hits() - before.0,
        b.hits() - before.1,
        c.hits() - before.2,
    );
    assert!(
        got.0 > 0 && got.1 > 0 && got.2 > 0,
        "all take traffic: {got:?}"
    );
    let stats = p.admin("/stats").await.json();
    assert!(
        stats["upstreams"][0]["panic_picks"].as_u64().unwrap() >= 30,
        "{stats}"
    );
}

#[tokio::test]
async fn over_the_limits_is_a_fast_503() {
    let slow = EchoBackend::start("slow").await;
    let yaml = format!(
        "services:\n  - name: s\n    instances: {}\n    limits: {{ max_connections: 2 }}\nroutes:\n  - {{ id: r, forward: {{ service: s }} }}\n",
        instances(&[slow.addr])
    );
    let p = start("limits", &yaml, &[]).await;
    let url = p.proxy.url("/slow?sleep_ms=1500");
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { HttpClient::new().get(&url, &[]).await.unwrap().status })
        })
        .collect();
    eventually(Duration::from_secs(5), "two requests in flight", || async {
        let up = upstream(&p, "s").await;
        (up["active_requests"] == 2).then_some(())
    })
    .await;
    let t0 = Instant::now();
    let reply = p.client.get(&p.proxy.url("/fast"), &[]).await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("concurrency limit"), "{}", reply.body);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    for b in busy {
        assert_eq!(b.await.unwrap(), 200);
    }
    // Below the limit again.
    let reply = p.client.get(&p.proxy.url("/fast"), &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    let stats = p.admin("/stats").await.json();
    assert_eq!(stats["upstreams"][0]["overflows"], 1, "{stats}");
}

/// Connected mode: each proxy's view of each instance reaches the control plane in its
/// health reports, and `/v1/services` shows it per instance and per proxy — the same
/// service applied through the CLI and proto (health check, outlier, limits, retry).
#[tokio::test]
async fn the_control_plane_shows_each_instance_as_every_proxy_sees_it() {
    use routemaster_integration_tests::fleet::Fleet;
    let fleet = Fleet::start("resilience-fleet", &[("p1", "default"), ("p2", "default")]).await;
    let up = EchoBackend::start("up").await;
    let dead = dead_port();
    let yaml = format!(
        "services:\n  - name: web\n    instances: {}\n    health_check: {{ interval: 100ms, timeout: 100ms, healthy: 1, unhealthy: 1 }}\n    outlier: {{ consecutive_failures: 2 }}\n    limits: {{ max_connections: 100 }}\nroutes:\n  - {{ id: web, forward: {{ service: web, retry: {{ attempts: 1 }} }} }}\n",
        instances(&[up.addr, dead])
    );
    let (code, out, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "{out}{err}");
    let url = fleet.control[0].http_url("/v1/services");
    let services = eventually(
        Duration::from_secs(10),
        "both proxies' health reports in /v1/services",
        || async {
            let services = fleet.client.get(&url, &[]).await.ok()?.json();
            let web = services
                .as_array()?
                .iter()
                .find(|s| s["name"] == "web")?
                .clone();
            let instances = web["health"]["instances"].as_array()?.clone();
            let find = |a: SocketAddr| {
                instances
                    .iter()
                    .find(|i| i["address"] == a.to_string())
                    .cloned()
            };
            let (good, bad) = (find(up.addr)?, find(dead)?);
            let both = |i: &serde_json::Value| i["seen_by"].as_array().map_or(0, Vec::len) == 2;
            (both(&good)
                && both(&bad)
                && good["healthy"] == true
                && bad["healthy"] == false
                && bad["seen_by"][0]["active"] == "down")
                .then_some(web)
        },
    )
    .await;
    // The service's own fields are still there, as the route file has them.
    assert_eq!(services["health_check"]["interval"], "100ms", "{services}");
    assert_eq!(services["limits"]["max_connections"], 100, "{services}");
    // Every request reaches the healthy instance.
    for i in 0..2 {
        for _ in 0..10 {
            let r = fleet.get(i, "/x", "example.com").await.unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
}
