//! Every client protocol × every upstream protocol, through a real proxy: HTTP/1.1 and
//! h2c clients (hyper's) × `http1`, `h2c`, `https` and `h2` services (the echo backend,
//! plain or behind rustls with certificates made here by rcgen and given to the proxy as
//! `tls.ca_pem`). One table of cases per pair — routing (and the protocol the backend
//! really saw), header filters both ways, a request body, an unreachable instance (502)
//! and a route timeout (504) — plus a service whose `ca_pem` is another CA's (502 and a
//! log line naming the TLS failure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::*;

/// A CA and a server certificate it signed for `backend.test` and `127.0.0.1`.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn make_pki(ca_name: &str) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["backend.test".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = routemaster_runtime::tls::provider();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// The route file's block-scalar form of a PEM, indented for `ca_pem: |`.
fn indented(pem: &str, by: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

const KINDS: [&str; 4] = ["http1", "h2c", "https", "h2"];

fn is_tls(kind: &str) -> bool {
    kind == "https" || kind == "h2"
}

/// Per upstream kind K: service `up-K` (the echo backend) and `dead-K` (nothing
/// listening), routes `/K/` (header filters) and `/K-slow/` (300 ms timeout) to `up-K`
/// and `/dead-K/` to `dead-K`; `badca` is an https service checked with another CA.
fn routes(plain: SocketAddr, tls: SocketAddr, ca_pem: &str, other_ca: &str) -> String {
    let mut y = String::from("services:\n");
    for kind in KINDS {
        let addr = if is_tls(kind) { tls } else { plain };
        let tls_block = match kind {
            // https names the server explicitly; h2 relies on the default (the
            // instance's host, an IP the certificate lists).
            "https" => format!(
                "    tls:\n      server_name: backend.test\n      ca_pem: |\n{}",
                indented(ca_pem, 8)
            ),
            "h2" => format!("    tls:\n      ca_pem: |\n{}", indented(ca_pem, 8)),
            _ => String::new(),
        };
        y.push_str(&format!(
            "  - name: up-{kind}\n    protocol: {kind}\n    instances: [{{ address: \"{addr}\" }}]\n{tls_block}"
        ));
        y.push_str(&format!(
            "  - name: dead-{kind}\n    protocol: {kind}\n    instances: [{{ address: \"{}\" }}]\n",
            dead_port()
        ));
    }
    y.push_str(&format!(
        "  - name: badca\n    protocol: https\n    instances: [{{ address: \"{tls}\" }}]\n    tls:\n      server_name: backend.test\n      ca_pem: |\n{}",
        indented(other_ca, 8)
    ));
    y.push_str("routes:\n");
    for kind in KINDS {
        y.push_str(&format!(
            "  - id: r-{kind}\n    path: {{ prefix: /{kind}/ }}\n    filters:\n      request_headers: {{ set: {{ x-team: {kind} }}, remove: [x-internal] }}\n      response_headers: {{ set: {{ x-resp: {kind} }}, remove: [x-backend] }}\n    forward: {{ service: up-{kind} }}\n"
        ));
        y.push_str(&format!(
            "  - {{ id: slow-{kind}, path: {{ prefix: /{kind}-slow/ }}, forward: {{ service: up-{kind}, timeout: 300ms }} }}\n"
        ));
        y.push_str(&format!(
            "  - {{ id: dead-{kind}, path: {{ prefix: /dead-{kind}/ }}, forward: {{ service: dead-{kind} }} }}\n"
        ));
    }
    y.push_str("  - { id: badca, path: { prefix: /badca/ }, forward: { service: badca } }\n");
    y
}

struct Setup {
    proxy: routemaster_integration_tests::process::ProxyProcess,
    stderr: Stderr,
    _plain: EchoBackend,
    _tls: EchoBackend,
    _dir: routemaster_integration_tests::TempDir,
}

async fn setup(tag: &str) -> Setup {
    let pki = make_pki("routemaster test CA");
    let other = make_pki("another CA");
    let plain = EchoBackend::start("plain").await;
    let tls = EchoBackend::start_tls("tls", Arc::clone(&pki.server)).await;
    let dir = routemaster_integration_tests::TempDir::new(tag);
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        routes(plain.addr, tls.addr, &pki.ca_pem, &other.ca_pem),
    )
    .unwrap();
    let (proxy, stderr) = start_capturing(&file, &[]).await.unwrap();
    Setup {
        proxy,
        stderr,
        _plain: plain,
        _tls: tls,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_protocol_reaches_every_upstream_protocol() {
    let s = setup("upstreams").await;
    let clients = [("h1", HttpClient::new()), ("h2c", HttpClient::h2c())];
    for (client_name, client) in &clients {
        for kind in KINDS {
            let pair = format!("{client_name} client → {kind} upstream");
            let upstream_version = if kind.starts_with("h2") {
                "HTTP/2.0"
            } else {
                "HTTP/1.1"
            };

            // Routing and header filters, both ways.
            let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let r = client
                .get(
                    &s.proxy.url(&format!("/{kind}/hello?q=1")),
                    &[
                        ("x-internal", "secret"),
                        ("x-keep", "yes"),
                        ("traceparent", incoming),
                        ("tracestate", "vendor=x"),
                    ],
                )
                .await
                .unwrap_or_else(|e| panic!("{pair}: {e:#}"));
            assert_eq!(r.status, 200, "{pair}: {}", r.body);
            let echo = r.json();
            let backend = if is_tls(kind) { "tls" } else { "plain" };
            assert_eq!(echo["backend"], backend, "{pair}");
            assert_eq!(echo["version"], upstream_version, "{pair}: {echo}");
            assert!(
                echo["uri"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/{kind}/hello?q=1")),
                "{pair}: {echo}"
            );
            assert_eq!(
                seen_one(&echo, "x-team").as_deref(),
                Some(kind),
                "{pair}: {echo}"
            );
            assert_eq!(
                seen_one(&echo, "x-keep").as_deref(),
                Some("yes"),
                "{pair}: {echo}"
            );
            assert!(seen(&echo, "x-internal").is_empty(), "{pair}: {echo}");
            assert!(seen_one(&echo, "x-request-id").is_some(), "{pair}: {echo}");
            // The client's trace continues with the proxy's span, whatever the pair.
            let up = seen_one(&echo, "traceparent").unwrap_or_default();
            assert_eq!(up.get(..36), incoming.get(..36), "{pair}: {echo}");
            assert_ne!(up.get(36..52), incoming.get(36..52), "{pair}: our span");
            assert_eq!(
                seen_one(&echo, "tracestate").as_deref(),
                Some("vendor=x"),
                "{pair}: {echo}"
            );
            assert_eq!(
                seen_one(&echo, "x-forwarded-for").as_deref(),
                Some("127.0.0.1"),
                "{pair}: {echo}"
            );
            // The client's host: `host` over HTTP/1.1, `:authority` (the URI the
            // backend sees) over HTTP/2 with no `host` beside it; the connection still
            // goes to the instance.
            let client_host = s.proxy.addr.to_string();
            if kind.starts_with("h2") {
                assert_eq!(seen_one(&echo, "host"), None, "{pair}: {echo}");
                let scheme = if is_tls(kind) { "https" } else { "http" };
                assert_eq!(
                    echo["uri"],
                    format!("{scheme}://{client_host}/{kind}/hello?q=1"),
                    "{pair}: {echo}"
                );
            } else {
                assert_eq!(
                    seen_one(&echo, "host").as_deref(),
                    Some(client_host.as_str()),
                    "{pair}: {echo}"
                );
            }
            assert_eq!(
                seen_one(&echo, "x-forwarded-host").as_deref(),
                Some(client_host.as_str()),
                "{pair}: {echo}"
            );
            assert_eq!(r.header("x-resp"), Some(kind), "{pair}");
            assert_eq!(r.header("x-backend"), None, "{pair}");

            // A request body arrives whole.
            let body = vec![b'x'; 100_000];
            let req = Request::post(s.proxy.url(&format!("/{kind}/upload")))
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let r = client
                .send(req)
                .await
                .unwrap_or_else(|e| panic!("{pair}: {e:#}"));
            assert_eq!(r.status, 200, "{pair}: {}", r.body);
            assert_eq!(r.json()["body_len"], 100_000, "{pair}");

            // An instance nobody listens on: 502.
            let r = client
                .get(&s.proxy.url(&format!("/dead-{kind}/x")), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 502, "{pair}: {}", r.body);

            // The route's timeout, the same for every upstream kind: 504.
            let t0 = Instant::now();
            let r = client
                .get(&s.proxy.url(&format!("/{kind}-slow/x?sleep_ms=5000")), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 504, "{pair}: {}", r.body);
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "{pair}: {:?}",
                t0.elapsed()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_signed_by_another_ca_is_a_502_and_a_log_line() {
    let s = setup("upstreams-badca").await;
    for client in [HttpClient::new(), HttpClient::h2c()] {
        let r = client.get(&s.proxy.url("/badca/x"), &[]).await.unwrap();
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(
            r.body.contains("upstream TLS connection failed"),
            "{}",
            r.body
        );
    }
    let stderr = &s.stderr;
    routemaster_integration_tests::eventually(
        Duration::from_secs(5),
        "a log line naming the TLS failure",
        || async move {
            stderr
                .text()
                .lines()
                .any(|l| {
                    l.contains("upstream TLS handshake failed")
                        && l.contains("badca")
                        && l.contains("UnknownIssuer")
                })
                .then_some(())
        },
    )
    .await;
}

/// `--io-timeout` bounds the wait for an upstream's answer on the HTTP/2 path too
/// (a route without its own timeout): 504 after the I/O timeout, for both clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_io_timeout_applies_to_every_upstream_kind() {
    let pki = make_pki("routemaster test CA");
    let plain = EchoBackend::start("plain").await;
    let tls = EchoBackend::start_tls("tls", Arc::clone(&pki.server)).await;
    let dir = routemaster_integration_tests::TempDir::new("upstreams-io");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        routes(plain.addr, tls.addr, &pki.ca_pem, &pki.ca_pem),
    )
    .unwrap();
    let (proxy, _stderr) = start_capturing(&file, &["--io-timeout", "300ms"])
        .await
        .unwrap();
    for (name, client) in [("h1", HttpClient::new()), ("h2c", HttpClient::h2c())] {
        for kind in KINDS {
            let t0 = Instant::now();
            let r = client
                .get(&proxy.url(&format!("/{kind}/x?sleep_ms=5000")), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 504, "{name} → {kind}: {}", r.body);
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "{name} → {kind}: {:?}",
                t0.elapsed()
            );
        }
    }
}

/// HTTP/1.1 request bodies the bridge decodes (chunked, with a trailer that is
/// dropped) and streams to h2c, https and h2 services; `Expect: 100-continue` is
/// answered by the proxy; a body that arrives late still goes up whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_bodies_reach_every_bridged_upstream() {
    let s = setup("upstreams-bodies").await;
    for kind in ["h2c", "https", "h2"] {
        let chunked = format!(
            "POST /{kind}/chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: dropped\r\n\r\n"
        );
        let r = raw_request(s.proxy.addr, chunked.as_bytes()).await.unwrap();
        assert_eq!(r.status, 200, "{kind}: {}", r.body);
        let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(echo["body_len"], 11, "{kind}: {echo}");
        assert!(seen(&echo, "x-trailer").is_empty(), "{kind}: {echo}");
        assert!(seen(&echo, "expect").is_empty(), "{kind}: {echo}");

        // Expect: 100-continue, then the body in two writes.
        let mut conn = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(
            format!(
                "POST /{kind}/expect HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut interim = [0u8; 25];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut interim))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "{kind}");
        conn.write_all(b"abcd").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.write_all(b"efgh").await.unwrap();
        let r = read_reply(&mut conn).await.unwrap();
        assert_eq!(r.status, 200, "{kind}: {}", r.body);
        let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(echo["body_len"], 8, "{kind}: {echo}");
        assert!(seen(&echo, "expect").is_empty(), "{kind}: {echo}");
    }
}

/// Active health checks of TLS services go over TLS with the service's settings: the
/// endpoints of an `https` and an `h2` service are seen up (over plain HTTP they could
/// never answer), and one whose `ca_pem` is another CA's is seen down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_tls_services_use_their_tls_settings() {
    let pki = make_pki("routemaster test CA");
    let other = make_pki("another CA");
    let tls = EchoBackend::start_tls("tls", Arc::clone(&pki.server)).await;
    let dir = routemaster_integration_tests::TempDir::new("upstreams-health");
    let file = dir.path().join("routes.yaml");
    let service = |name: &str, protocol: &str, ca: &str| {
        format!(
            "  - name: {name}\n    protocol: {protocol}\n    instances: [{{ address: \"{}\" }}]\n    health_check: {{ path: /healthz, interval: 200ms, timeout: 200ms, healthy: 1, unhealthy: 1 }}\n    tls:\n      server_name: backend.test\n      ca_pem: |\n{}",
            tls.addr,
            indented(ca, 8)
        )
    };
    let yaml = format!(
        "services:\n{}{}{}routes:\n  - {{ id: a, path: {{ prefix: / }}, forward: {{ service: hc-https }} }}\n",
        service("hc-https", "https", &pki.ca_pem),
        service("hc-h2", "h2", &pki.ca_pem),
        service("hc-badca", "h2", &other.ca_pem),
    );
    std::fs::write(&file, yaml).unwrap();
    let (proxy, _stderr) = start_capturing(&file, &[]).await.unwrap();
    let client = HttpClient::new();
    let url = format!("http://{}/config", proxy.admin);
    let states = routemaster_integration_tests::eventually(
        Duration::from_secs(10),
        "every TLS service's endpoint checked",
        || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let config = client.get(&url, &[]).await.ok()?.json();
                let mut states = std::collections::BTreeMap::new();
                for u in config["upstreams"].as_array()? {
                    let active = u["endpoints"][0]["active"].as_str()?.to_owned();
                    if active == "unknown" {
                        return None;
                    }
                    states.insert(u["service"].as_str()?.to_owned(), active);
                }
                (states.len() == 3).then_some(states)
            }
        },
    )
    .await;
    assert_eq!(states["hc-https"], "up", "{states:?}");
    assert_eq!(states["hc-h2"], "up", "{states:?}");
    assert_eq!(states["hc-badca"], "down", "{states:?}");
}
