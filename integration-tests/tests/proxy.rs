//! Multi-process tests of the standalone proxy: forwarding (path, query, `x-forwarded-*`,
//! request ids, hop-by-hop headers), rewrites and redirects, error statuses, weighted
//! balancing, h2c, header limits and timeouts, and the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use support::{
    Running, dead_port, is_uuid, raw_request, seen, seen_one, spread, start, svc, svc_weighted,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One echo backend behind `www.example.com` + `/courses`.
async fn courses_proxy(tag: &str, extra: &[&str]) -> (EchoBackend, Running) {
    let lms = EchoBackend::start("lms").await;
    let yaml = format!(
        "services:\n{}routes:
  - id: courses
    hosts: [www.example.com]
    path: {{ prefix: /courses }}
    forward: {{ service: lms }}\n",
        svc("lms", &[lms.addr])
    );
    let running = start(tag, &yaml, extra).await;
    (lms, running)
}

const HOST: (&str, &str) = ("host", "www.example.com");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_receives_the_normalised_path_and_the_query() {
    let (lms, p) = courses_proxy("normalise", &[]).await;
    // (request target, what the backend must see)
    let cases = [
        ("/courses/%2e%2e/courses//2", "/courses/2"),
        (
            "/courses/%2e%2e/courses//2?a=1&b=x%20y",
            "/courses/2?a=1&b=x%20y",
        ),
        ("/courses/./a/../b/?q", "/courses/b/?q"),
        ("/courses/%66oo", "/courses/foo"),
        ("/courses/a%2fb", "/courses/a%2Fb"),
        ("/courses//x///y", "/courses/x/y"),
        ("/courses/1?next=/../%2e%2e", "/courses/1?next=/../%2e%2e"),
        ("/courses/plain?k=v&k=w", "/courses/plain?k=v&k=w"),
        ("/courses", "/courses"),
    ];
    for (target, want) in cases {
        let reply = p.get(target, &[HOST]).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.body);
        assert_eq!(reply.json()["uri"], want, "{target}");
    }
    assert_eq!(lms.hits(), cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_host_is_kept() {
    let (_lms, p) = courses_proxy("forwarded", &[]).await;
    // (case, request headers, x-forwarded-for upstream, Host and x-forwarded-host upstream)
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Headers, &str, &str); 4] = [
        ("no previous hop", &[HOST], "127.0.0.1", "www.example.com"),
        (
            "client ip appended; proto overwritten",
            &[
                HOST,
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
            ],
            "203.0.113.7, 127.0.0.1",
            "www.example.com",
        ),
        (
            "existing chain",
            &[HOST, ("x-forwarded-for", "203.0.113.7, 198.51.100.2")],
            "203.0.113.7, 198.51.100.2, 127.0.0.1",
            "www.example.com",
        ),
        (
            "host matched normalised, forwarded verbatim",
            &[("host", "WWW.Example.COM:8080")],
            "127.0.0.1",
            "WWW.Example.COM:8080",
        ),
    ];
    let names = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "host",
    ];
    for (case, headers, xff, host) in cases {
        let reply = p.get("/courses/1", headers).await;
        assert_eq!(reply.status, 200, "{case}: {}", reply.body);
        let echo = reply.json();
        let got: Vec<String> = names
            .iter()
            .map(|h| seen_one(&echo, h).unwrap_or_default())
            .collect();
        assert_eq!(got, [xff, "http", host, host], "{case}: {names:?}");
    }
}

/// RFC 9110 §5.3: several `x-forwarded-for` field lines mean one comma-joined list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_x_forwarded_for_lines_are_all_kept() {
    let (_lms, p) = courses_proxy("xff-lines", &[]).await;
    let reply = p
        .get(
            "/courses/1",
            &[
                HOST,
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", "198.51.100.2"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let xff = seen(&reply.json(), "x-forwarded-for").join(", ");
    assert_eq!(xff, "203.0.113.7, 198.51.100.2, 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_or_kept_and_reach_the_backend() {
    let (_lms, p) = courses_proxy("request-id", &[]).await;
    let mut generated = Vec::new();
    for _ in 0..2 {
        let reply = p.get("/courses/1", &[HOST]).await;
        let id = reply
            .header("x-request-id")
            .expect("x-request-id echoed")
            .to_owned();
        assert!(is_uuid(&id), "generated id {id:?} is not a UUID");
        assert_eq!(seen_one(&reply.json(), "x-request-id"), Some(id.clone()));
        generated.push(id);
    }
    assert_ne!(generated[0], generated[1], "ids must be fresh per request");

    let reply = p
        .get("/courses/1", &[HOST, ("x-request-id", "client-id-42")])
        .await;
    assert_eq!(reply.header("x-request-id"), Some("client-id-42"));
    assert_eq!(
        seen_one(&reply.json(), "x-request-id").as_deref(),
        Some("client-id-42")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_lms, p) = courses_proxy("hop-by-hop", &[]).await;
    // Written by hand: hyper's client has opinions about some of these headers.
    let request = "GET /courses/1 HTTP/1.1\r\n\
        Host: www.example.com\r\n\
        Connection: keep-alive, x-secret\r\n\
        X-Secret: s3cret\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        Proxy-Connection: keep-alive\r\n\
        Upgrade: websocket\r\n\
        X-Keep: yes\r\n\
        \r\n";
    let reply = raw_request(p.proxy.addr, request.as_bytes()).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert_eq!(
            seen(&echo, gone),
            Vec::<String>::new(),
            "{gone} was forwarded"
        );
    }
    assert_eq!(seen_one(&echo, "x-keep").as_deref(), Some("yes"));
    assert_eq!(seen_one(&echo, "host").as_deref(), Some("www.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_prefix_and_host_rewrite() {
    let app = EchoBackend::start("app").await;
    let yaml = format!(
        "services:\n{}routes:
  - id: old-api
    path: {{ prefix: /old-api }}
    forward: {{ service: app, rewrite_prefix: /new-api }}
  - id: strip
    path: {{ prefix: /strip }}
    forward: {{ service: app, rewrite_prefix: / }}
  - id: exact
    path: {{ exact: /exact }}
    forward: {{ service: app, rewrite_prefix: /elsewhere }}
  - id: internal
    path: {{ prefix: /internal }}
    forward: {{ service: app, host_rewrite: lms.internal }}\n",
        svc("app", &[app.addr])
    );
    let p = start("rewrite", &yaml, &[]).await;
    // (request, backend uri, backend Host)
    let cases = [
        ("/old-api/v1", "/new-api/v1", "www.example.com"),
        (
            "/old-api/v1?x=1&y=2",
            "/new-api/v1?x=1&y=2",
            "www.example.com",
        ),
        ("/old-api", "/new-api", "www.example.com"),
        ("/old-api//./v1", "/new-api/v1", "www.example.com"),
        ("/strip/v1?y=2", "/v1?y=2", "www.example.com"),
        ("/strip", "/", "www.example.com"),
        ("/strip?z", "/?z", "www.example.com"),
        ("/exact?q=1", "/elsewhere?q=1", "www.example.com"),
        ("/internal/x?a=b", "/internal/x?a=b", "lms.internal"),
    ];
    for (target, uri, host) in cases {
        let reply = p.get(target, &[HOST]).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.body);
        let echo = reply.json();
        assert_eq!(echo["uri"], uri, "{target}");
        assert_eq!(seen_one(&echo, "host").as_deref(), Some(host), "{target}");
        assert_eq!(
            seen_one(&echo, "x-forwarded-host").as_deref(),
            Some("www.example.com"),
            "{target}: x-forwarded-host must be the client's Host"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_build_location_from_request_and_rule() {
    let app = EchoBackend::start("app").await;
    let yaml = format!(
        "services:\n{}routes:
  - id: old-courses
    path: {{ prefix: /old-courses }}
    redirect: {{ prefix: /courses, code: 301 }}
  - id: moved
    path: {{ prefix: /moved }}
    redirect: {{ path: /new-home }}
  - id: secure
    path: {{ prefix: /secure }}
    redirect: {{ scheme: https, code: 308 }}
  - id: secure-default-port
    path: {{ prefix: /tls }}
    redirect: {{ scheme: https, port: 443, code: 302 }}
  - id: elsewhere
    path: {{ prefix: /elsewhere }}
    redirect: {{ host: new.example.com, port: 9000, code: 307 }}
  - id: port-only
    path: {{ exact: /port }}
    redirect: {{ port: 8443, code: 303 }}
  - id: to-root
    path: {{ prefix: /legacy }}
    redirect: {{ prefix: / }}
  - id: app
    path: {{ prefix: /app }}
    forward: {{ service: app }}\n",
        svc("app", &[app.addr])
    );
    let p = start("redirect", &yaml, &[]).await;
    let host = ("host", "www.example.com:8080");
    // (request, status, Location)
    let cases = [
        (
            "/old-courses/101?page=2",
            301,
            "http://www.example.com:8080/courses/101?page=2",
        ),
        (
            "/moved/x?a=1",
            301,
            "http://www.example.com:8080/new-home?a=1",
        ),
        (
            "/secure/p?q=1",
            308,
            // a new scheme without a port means that scheme's default port
            "https://www.example.com/secure/p?q=1",
        ),
        ("/tls/x", 302, "https://www.example.com/tls/x"),
        (
            "/elsewhere/a?b=c",
            307,
            "http://new.example.com:9000/elsewhere/a?b=c",
        ),
        ("/port?x", 303, "http://www.example.com:8443/port?x"),
        (
            "/legacy/a/b?c=d",
            301,
            "http://www.example.com:8080/a/b?c=d",
        ),
        (
            "/old-courses//./7",
            301,
            "http://www.example.com:8080/courses/7",
        ),
    ];
    for (target, status, location) in cases {
        let reply = p.get(target, &[host]).await;
        assert_eq!(reply.status.as_u16(), status, "{target}: {}", reply.body);
        assert_eq!(reply.header("location"), Some(location), "{target}");
        assert!(
            reply.header("x-request-id").is_some(),
            "{target}: no request id"
        );
    }
    assert_eq!(app.hits(), 0, "redirects must not reach a backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_their_status_and_a_body_naming_reason_and_request_id() {
    let app = EchoBackend::start("app").await;
    let yaml = format!(
        "services:\n{}{}  - {{ name: empty, instances: [] }}\nroutes:
  - id: app
    path: {{ prefix: /app }}
    forward: {{ service: app }}
  - id: empty
    path: {{ prefix: /empty }}
    forward: {{ service: empty }}
  - id: dead
    path: {{ prefix: /dead }}
    forward: {{ service: dead }}
  - id: slow
    path: {{ prefix: /slow }}
    forward: {{ service: app, timeout: 200ms }}\n",
        svc("app", &[app.addr]),
        svc("dead", &[dead_port()]),
    );
    let p = start("errors", &yaml, &[]).await;
    enum Send {
        Client(&'static str),
        Raw(&'static str),
    }
    // (request, status, body must contain)
    let cases = [
        (Send::Client("/nothing/here"), 404, "no route matched"),
        (
            Send::Client("/empty/x"),
            503,
            "service \"empty\" has no instances",
        ),
        (Send::Client("/dead/x"), 502, "upstream connect failed"),
        (
            Send::Client("/slow?sleep_ms=3000"),
            504,
            "upstream timed out",
        ),
        (
            Send::Raw("GET /../x HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
            "climbs above the root",
        ),
        (
            Send::Raw("GET /app/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
            "climbs above the root",
        ),
        (
            Send::Raw("GET /app/%zz HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
            "malformed percent-escape",
        ),
        (
            Send::Raw("GET /app/x HTTP/1.1\r\n\r\n"),
            400,
            "missing Host",
        ),
        (
            Send::Raw("GET /app/x HTTP/1.0\r\n\r\n"),
            400,
            "request has no host",
        ),
    ];
    for (send, status, reason) in cases {
        let started = Instant::now();
        let (what, got, id, body) = match send {
            Send::Client(path) => {
                let r = p.get(path, &[HOST]).await;
                let id = r.header("x-request-id").map(str::to_owned);
                (path, r.status.as_u16(), id, r.body)
            }
            Send::Raw(req) => {
                let r = raw_request(p.proxy.addr, req.as_bytes()).await.unwrap();
                let id = r.header("x-request-id").map(str::to_owned);
                (req.lines().next().unwrap_or(req), r.status, id, r.body)
            }
        };
        let elapsed = started.elapsed();
        assert_eq!(got, status, "{what}: {body}");
        assert!(body.starts_with(&status.to_string()), "{what}: {body}");
        assert!(
            body.contains(reason),
            "{what}: body {body:?} lacks {reason:?}"
        );
        let id = id.unwrap_or_else(|| panic!("{what}: no x-request-id"));
        assert!(
            body.contains(&id),
            "{what}: body {body:?} lacks request id {id}"
        );
        assert!(body.len() < 200, "{what}: body is not short: {body:?}");
        if status == 504 {
            assert!(
                elapsed < Duration::from_millis(1500),
                "504 after {elapsed:?}, route timeout is 200ms"
            );
        }
    }
    assert_eq!(app.hits(), 1, "only the slow request reaches the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_balancing_over_real_backends() {
    let (a1, a2) = (
        EchoBackend::start("a1").await,
        EchoBackend::start("a2").await,
    );
    let (big, small) = (
        EchoBackend::start("big").await,
        EchoBackend::start("small").await,
    );
    let yaml = format!(
        "services:\n{}{}{}routes:
  - id: instances
    path: {{ prefix: /instances }}
    forward: {{ service: pair }}
  - id: split
    path: {{ prefix: /split }}
    forward:
      backends: [{{ service: ninety, weight: 90 }}, {{ service: ten, weight: 10 }}]\n",
        svc_weighted("pair", &[(a1.addr, 1), (a2.addr, 2)]),
        svc("ninety", &[big.addr]),
        svc("ten", &[small.addr]),
    );
    let p = start("balance", &yaml, &[]).await;
    // (path, requests, [(backend, expected, backend's own count)], tolerance)
    let cases = [
        ("/instances", 300, [("a1", 100, &a1), ("a2", 200, &a2)], 1),
        (
            "/split",
            1000,
            [("big", 900, &big), ("small", 100, &small)],
            2,
        ),
    ];
    for (path, n, want, tolerance) in cases {
        let counts = spread(&p, path, n, 8).await;
        println!("{path}: {counts:?}");
        assert_eq!(counts.values().sum::<usize>(), n, "{path}: {counts:?}");
        for (name, expected, backend) in want {
            let got = counts.get(name).copied().unwrap_or(0);
            assert!(
                got.abs_diff(expected) <= tolerance,
                "{path}: {name} got {got}, want {expected}±{tolerance} ({counts:?})"
            );
            assert_eq!(backend.hits(), got, "{path}: {name}'s own count");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_as_http1_with_host_from_authority() {
    let app = EchoBackend::start("app").await;
    let yaml = format!(
        "services:\n{}routes:
  - id: app
    path: {{ prefix: /h2 }}
    forward: {{ service: app }}\n",
        svc("app", &[app.addr])
    );
    let p = start("h2c", &yaml, &[]).await;
    let reply = HttpClient::h2c()
        .get(
            &p.proxy.url("/h2/x?y=1"),
            &[("x-forwarded-for", "203.0.113.7")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    // An HTTP/1.1 request arrives in origin form with a Host header; over HTTP/2 the
    // echo backend would see an absolute URI and no Host header.
    assert_eq!(echo["uri"], "/h2/x?y=1");
    let authority = p.proxy.addr.to_string();
    assert_eq!(seen_one(&echo, "host"), Some(authority.clone()));
    assert_eq!(seen_one(&echo, "x-forwarded-host"), Some(authority));
    assert_eq!(
        seen_one(&echo, "x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    let id = reply.header("x-request-id").unwrap();
    assert!(is_uuid(id));
    assert_eq!(seen_one(&echo, "x-request-id").as_deref(), Some(id));
}

/// The host and path rules are the routing phase's, so HTTP/2 gets them too; and a
/// `host` field naming another entity than `:authority` is malformed (RFC 9113 §8.3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_get_the_same_host_and_path_checks() {
    let app = EchoBackend::start("app").await;
    let yaml = format!(
        "services:\n{}routes:\n  - {{ id: app, forward: {{ service: app }} }}\n",
        svc("app", &[app.addr])
    );
    let p = start("h2c-checks", &yaml, &[]).await;
    let h2 = HttpClient::h2c();
    let authority = p.proxy.addr.to_string();
    type Headers<'a> = &'a [(&'a str, &'a str)];
    // (path, extra headers, status, reason in the body)
    let cases: &[(&str, Headers<'_>, u16, &str)] = &[
        ("/ok", &[], 200, ""),
        (
            "/ok",
            &[("host", "evil.example")],
            400,
            "host differs from :authority",
        ),
        ("/ok", &[("host", authority.as_str())], 200, ""),
        ("/a/%00b", &[], 400, "NUL"),
        ("/a/..%2Fadmin", &[], 400, "escape or segment"),
        ("/public/..;/admin", &[], 400, "escape or segment"),
    ];
    for (path, headers, status, reason) in cases {
        let reply = h2.get(&p.proxy.url(path), headers).await.unwrap();
        assert_eq!(reply.status, *status, "{path} {headers:?}: {}", reply.body);
        assert!(reply.body.contains(reason), "{path}: {}", reply.body);
    }
    assert_eq!(
        app.hits(),
        2,
        "only the two good requests reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_blocks_over_64_kib_get_431() {
    let (lms, p) = courses_proxy("431", &[]).await;
    // (size of one header value, status)
    let cases = [(60 * 1024, 200), (66 * 1024, 431), (200 * 1024, 431)];
    for (size, status) in cases {
        let request = format!(
            "GET /courses/1 HTTP/1.1\r\nHost: www.example.com\r\nX-Big: {}\r\n\r\n",
            "a".repeat(size)
        );
        let reply = raw_request(p.proxy.addr, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{size} bytes: {e:#}"));
        assert_eq!(reply.status, status, "{size}-byte header");
    }
    assert_eq!(
        lms.hits(),
        1,
        "only the request under the limit is forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_senders_are_cut_off() {
    let (_lms, p) = courses_proxy("header-timeout", &["--header-read-timeout", "300ms"]).await;
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(p.proxy.addr).await.unwrap();
    stream.write_all(b"GET /courses/1 HT").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    let read = read.unwrap_or_else(|_| panic!("connection still open after {elapsed:?}"));
    let text = String::from_utf8_lossy(&buf);
    // Closed (EOF or reset), optionally after a 408.
    assert!(
        read.is_err() || buf.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer after {elapsed:?}: {read:?} {text:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "cut off after only {elapsed:?}"
    );
    println!("partial request line cut off after {elapsed:?} ({read:?}, {text:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_health_config_and_stats() {
    let (_lms, p) = courses_proxy("admin", &[]).await;
    // (path, status, body contains)
    let cases = [
        ("/healthz", 200, "ok"),
        ("/readyz", 200, "ready"),
        ("/nope", 404, "not found"),
    ];
    for (path, status, text) in cases {
        let reply = p.admin(path).await;
        assert_eq!(reply.status, status, "{path}");
        assert!(reply.body.contains(text), "{path}: {}", reply.body);
    }
    let post = http::Request::post(p.proxy.admin_url("/config"))
        .body(Default::default())
        .unwrap();
    assert_eq!(p.client.send(post).await.unwrap().status, 405);

    let config = p.admin("/config").await.json();
    assert_eq!(config["version"], 1);
    assert_eq!(config["source"], format!("file:{}", p.file.display()));
    assert_eq!(config["routes"], 1);
    assert_eq!(config["services"], 1);
    let applied_at = config["applied_at"].as_str().unwrap_or_default();
    assert!(
        applied_at.ends_with('Z') && applied_at.contains('T'),
        "applied_at is not RFC 3339: {config}"
    );

    let stats = p.admin("/stats").await.json();
    assert_eq!(
        stats["requests_total"], 0,
        "admin requests are not proxied: {stats}"
    );
    for _ in 0..5 {
        assert_eq!(p.get("/courses/1", &[HOST]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(p.get("/missing", &[HOST]).await.status, 404);
    }
    // A request leaves in-flight just after its last byte is written, so a client
    // that is quick enough can see it counted for a moment: poll, bounded.
    let stats = routemaster_integration_tests::eventually(
        Duration::from_secs(5),
        "in_flight back to 0",
        || async {
            let stats = p.admin("/stats").await.json();
            (stats["in_flight"] == 0).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["requests_total"], 7, "{stats}");
    assert_eq!(stats["downstream_errors"], 2, "{stats}");
    assert_eq!(stats["upstream_errors"], 0, "{stats}");
    assert_eq!(stats["internal_errors"], 0, "{stats}");
}

/// HEAD over h2c, with curl: our own answers and the admin API's carry their headers
/// (`content-length` included) and no DATA (a body after HEAD is a protocol error that
/// curl reports as a reset stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_over_h2c_gets_headers_and_no_body() {
    let app = EchoBackend::start("app").await;
    let yaml = format!(
        "services:\n{}routes:\n  - {{ id: app, path: {{ prefix: /app }}, forward: {{ service: app }} }}\n",
        svc("app", &[app.addr])
    );
    let p = start("h2c-head", &yaml, &[]).await;
    for (url, status) in [
        (p.proxy.url("/nope"), "404"),
        (p.proxy.url("/app/x"), "200"),
        (p.proxy.admin_url("/readyz"), "200"),
    ] {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "-I",
                "--max-time",
                "10",
                "--http2-prior-knowledge",
                &url,
            ])
            .output()
            .await
            .expect("curl (scripts/test.sh installs it)");
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            out.status.success(),
            "{url}: {}{head}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            head.starts_with(&format!("http/2 {status}")),
            "{url}: {head}"
        );
        assert!(head.contains("content-length: "), "{url}: {head}");
    }
}
