//! gRPC through the proxy with real peers: Debian's python3-grpcio as the server (an
//! `h2c` service, generic handlers on raw bytes) and as the client, over HTTP/2 with
//! prior knowledge on both sides. Unary and server-streaming calls, an upstream status
//! with its details and trailing metadata intact, and the proxy's own failures as gRPC
//! statuses (no route → UNIMPLEMENTED; dead instance, no instances, route timeout →
//! UNAVAILABLE).
//! An HTTP/1.1 client routed to an h2c service gets a 502 naming the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PYTHON: &str = "/usr/bin/python3";

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The Python gRPC echo server, and its address.
async fn grpc_server() -> (Child, SocketAddr) {
    let mut child = Command::new(PYTHON)
        .arg(script("grpc_echo_server.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (scripts/test.sh installs python3-grpcio)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the gRPC server did not start")
        .unwrap()
        .expect("the gRPC server exited (is python3-grpcio installed?)");
    let port: u16 = line.rsplit(' ').next().unwrap().parse().unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn h2c_svc(name: &str, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        "  - {{ name: {name}, protocol: h2c, instances: [{}] }}\n",
        list.join(", ")
    )
}

fn routes(echo: SocketAddr) -> String {
    format!(
        "services:\n{}{}{}routes:\n\
         \x20 - {{ id: slow, path: {{ exact: /echo.Echo/Slow }}, forward: {{ service: echo, timeout: 300ms }} }}\n\
         \x20 - {{ id: echo, path: {{ prefix: /echo.Echo/ }}, forward: {{ service: echo }} }}\n\
         \x20 - {{ id: dead, path: {{ prefix: /dead.Dead/ }}, forward: {{ service: dead }} }}\n\
         \x20 - {{ id: empty, path: {{ prefix: /empty.Empty/ }}, forward: {{ service: empty }} }}\n",
        h2c_svc("echo", &[echo]),
        h2c_svc("dead", &[dead_port()]),
        h2c_svc("empty", &[]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_talks_to_a_python_grpc_server_through_the_proxy() {
    let (_server, echo) = grpc_server().await;
    let p = start("grpc", &routes(echo), &[]).await;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(PYTHON)
            .arg(script("grpc_client.py"))
            .arg(p.proxy.addr.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the gRPC client timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed:\n{stdout}\n{stderr}");
    for check in [
        "unary ok",
        "streaming ok",
        "upstream status ok",
        "no route ok: routemaster: no route matched; request id ",
        "dead upstream ok: routemaster: upstream connect failed; request id ",
        "no instances ok: routemaster: service \"empty\" has no instances; request id ",
        "route timeout ok: routemaster: upstream timed out; request id ",
    ] {
        assert!(
            stdout.contains(check),
            "{check} missing:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_routed_to_an_h2c_service_gets_a_502_naming_the_reason() {
    let (_server, echo) = grpc_server().await;
    let p = start("grpc-h1", &routes(echo), &[]).await;
    let reply = raw_request(
        p.proxy.addr,
        b"POST /echo.Echo/Unary HTTP/1.1\r\nHost: h\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("upstream speaks HTTP/2 only; use an HTTP/2 client"),
        "{}",
        reply.body
    );
}
