//! gRPC through the proxy with real peers: Debian's python3-grpcio as the server (an
//! `h2c` service, generic handlers on raw bytes) and as the client, over HTTP/2 with
//! prior knowledge on both sides. Unary and server-streaming calls, an upstream status
//! with its details and trailing metadata intact, and the proxy's own failures as gRPC
//! statuses (no route → UNIMPLEMENTED; dead instance, no instances, route timeout →
//! UNAVAILABLE).
//! An HTTP/1.1 client reaches the h2c server too (through the shared HTTP/2 client), and
//! a `grpc-timeout` shorter than the route's timeout ends a slow call with
//! DEADLINE_EXCEEDED.

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
async fn an_http1_client_reaches_an_h2c_grpc_server() {
    let (_server, echo) = grpc_server().await;
    let p = start("grpc-h1", &routes(echo), &[]).await;
    // A gRPC server answers over HTTP/2 only: the HTTP/1.1 engine hands the request to
    // the shared HTTP/2 client. An empty body is no gRPC message, so the server's
    // answer is a trailers-only error status, which arrives as response headers.
    let reply = raw_request(
        p.proxy.addr,
        b"POST /echo.Echo/Unary HTTP/1.1\r\nHost: h\r\nContent-Type: application/grpc\r\nTE: trailers\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.header("grpc-status").is_some_and(|s| s != "0"),
        "{reply:?}"
    );
}

/// `grpc-timeout` shorter than the route's timeout is the call's deadline: the proxy
/// ends the call itself with a trailers-only DEADLINE_EXCEEDED naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_timeout_shorter_than_the_route_timeout_is_deadline_exceeded() {
    let (_server, echo) = grpc_server().await;
    let yaml = format!(
        "{}\x20 - {{ id: deadline, path: {{ exact: /deadline.Echo/Slow }}, forward: {{ service: echo, rewrite_path: /echo.Echo/Slow, timeout: 10s }} }}\n",
        routes(echo)
    );
    let p = start("grpc-deadline", &yaml, &[]).await;

    // What the proxy answers itself (a raw HTTP/2 client: it keeps no deadline of its
    // own): HTTP 200, grpc-status 4 and a message, after ~300 ms, not the server's 3 s.
    let client = routemaster_integration_tests::client::HttpClient::h2c();
    let framed = bytes::Bytes::from_static(&[0, 0, 0, 0, 1, b'x']);
    let started = std::time::Instant::now();
    let reply = client
        .send(
            http::Request::post(p.proxy.url("/deadline.Echo/Slow"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", "300m")
                .body(http_body_util::Full::new(framed))
                .unwrap(),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), Some("4"), "{reply:?}");
    let message = reply.header("grpc-message").unwrap_or_default();
    assert!(message.contains("grpc-timeout"), "{message}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A real gRPC client with a deadline: DEADLINE_EXCEEDED.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(PYTHON)
            .arg("-c")
            .arg(
                "import sys, grpc\n\
                 ch = grpc.insecure_channel(sys.argv[1])\n\
                 slow = ch.unary_unary('/deadline.Echo/Slow', request_serializer=lambda b: b, response_deserializer=lambda b: b)\n\
                 try:\n    slow(b'x', timeout=0.5)\n    print('no error')\n\
                 except grpc.RpcError as e:\n    print(e.code().name, e.details())\n",
            )
            .arg(p.proxy.addr.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the gRPC client timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("DEADLINE_EXCEEDED"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
