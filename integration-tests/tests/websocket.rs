//! WebSocket through the proxy with real peers: Debian's python3-websockets as the
//! backend (an echo server) and as the client (text echo, a 1 MB binary echo, a close
//! code the server picks). Also: an upgrade the backend declines is an ordinary
//! response, `Upgrade: h2c` is never passed up, and an idle tunnel is closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use routemaster_integration_tests::backend::EchoBackend;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const PYTHON: &str = "/usr/bin/python3";

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The Python echo server, and its address.
async fn ws_server() -> (Child, SocketAddr) {
    let mut child = Command::new(PYTHON)
        .arg(script("ws_echo_server.py"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (scripts/test.sh installs python3-websockets)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the websocket server did not start")
        .unwrap()
        .expect("the websocket server exited (is python3-websockets installed?)");
    let port: u16 = line.rsplit(' ').next().unwrap().parse().unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn routes(ws: SocketAddr, plain: SocketAddr) -> String {
    format!(
        "services:\n{}{}routes:\n  - {{ id: ws, path: {{ prefix: /ws }}, forward: {{ service: ws, rewrite_prefix: / }} }}\n  - {{ id: plain, forward: {{ service: plain }} }}\n",
        svc("ws", &[ws]),
        svc("plain", &[plain])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_talks_to_a_python_server_through_the_proxy() {
    let (_server, ws) = ws_server().await;
    let plain = EchoBackend::start("plain").await;
    let p = start("websocket", &routes(ws, plain.addr), &[]).await;
    let url = format!("ws://{}/ws/echo", p.proxy.addr);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(PYTHON)
            .arg(script("ws_client.py"))
            .arg(&url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the websocket client timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed:\n{stdout}\n{stderr}");
    for check in ["text echo ok", "1 MB echo ok", "close code 4001 ok"] {
        assert!(
            stdout.contains(check),
            "{check} missing:\n{stdout}\n{stderr}"
        );
    }
    // One request, and nothing left open once both sides closed.
    let stats = eventually_stats(&p, |s| s["in_flight"] == 0).await;
    assert_eq!(stats["requests_total"], 1, "{stats}");
    // The logging hook saw the tunnel once, when it closed: a 101 on route ws, with the
    // megabyte each way in its byte counts.
    let scrape = p.admin("/metrics").await.body;
    let series = |name: &str| {
        scrape
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no {name} in\n{scrape}"))
    };
    assert_eq!(
        series(
            r#"routemaster_requests_total{route="ws",service="ws",code_class="1xx",protocol="websocket"}"#
        ),
        1.0
    );
    assert!(series(r#"routemaster_request_bytes_total{route="ws",service="ws"}"#) > 1e6);
    assert!(series(r#"routemaster_response_bytes_total{route="ws",service="ws"}"#) > 1e6);
}

async fn eventually_stats(
    p: &Running,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    routemaster_integration_tests::eventually(Duration::from_secs(10), "stats", || async {
        let s = p.admin("/stats").await.json();
        ok(&s).then_some(s)
    })
    .await
}

const UPGRADE: &str = "GET /plain HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_go_up_only_for_websocket_and_a_declined_one_is_a_plain_response() {
    let (_server, ws) = ws_server().await;
    let plain = EchoBackend::start("plain").await;
    let p = start("websocket-declined", &routes(ws, plain.addr), &[]).await;

    // A backend that does not switch answers normally; the upgrade was asked for.
    let reply = raw_request(p.proxy.addr, UPGRADE.as_bytes()).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen_one(&echo, "upgrade").as_deref(), Some("websocket"));
    assert_eq!(seen_one(&echo, "connection").as_deref(), Some("upgrade"));
    assert_eq!(
        seen_one(&echo, "sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );

    // Not WebSocket (h2c), not GET, or no `Connection: upgrade`: served as HTTP/1.1 and
    // nothing about the upgrade goes up.
    let cases = [
        "GET /plain HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "POST /plain HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        "GET /plain HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
        "GET /plain HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
    ];
    for req in cases {
        let reply = raw_request(p.proxy.addr, req.as_bytes()).await.unwrap();
        assert_eq!(reply.status, 200, "{req:?}: {}", reply.body);
        let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(seen_one(&echo, "upgrade"), None, "{req:?}");
        assert_eq!(seen_one(&echo, "http2-settings"), None, "{req:?}");
        assert_eq!(seen_one(&echo, "connection"), None, "{req:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed() {
    let (_server, ws) = ws_server().await;
    let plain = EchoBackend::start("plain").await;
    let p = start(
        "websocket-idle",
        &routes(ws, plain.addr),
        &["--tunnel-idle-timeout", "500ms"],
    )
    .await;
    let mut s = TcpStream::connect(p.proxy.addr).await.unwrap();
    s.write_all(UPGRADE.replace("/plain", "/ws/echo").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .expect("no 101")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let opened = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the idle tunnel was not closed")
        .unwrap();
    assert!(
        opened.elapsed() >= Duration::from_millis(400),
        "closed after {:?}",
        opened.elapsed()
    );
}
