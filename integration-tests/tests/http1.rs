//! The HTTP/1.1 engine on real sockets: strict request framing, bodies streamed both
//! ways, every upstream framing relayed, upstream connection reuse (and a stale pooled
//! connection never failing a request), pipelining and the keep-alive timeout. The
//! upstream here is scripted byte by byte so each case is exactly what it says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use routemaster_integration_tests::backend::EchoBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: (&str, &str) = ("host", "www.example.com");

fn routes(addr: SocketAddr) -> String {
    format!(
        "services:\n{}routes:\n  - id: all\n    hosts: [www.example.com]\n    path: {{ prefix: / }}\n    forward: {{ service: up }}\n",
        svc("up", &[addr])
    )
}

/// An upstream that answers by path, one request after another per connection, and
/// counts the connections it accepted. `/close-after` closes the connection 20 ms
/// after answering, without saying so (as servers with a short idle timeout do).
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_scripted(stream));
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_scripted(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let reply: &[u8] = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            "/until-close" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of this until close",
            "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n",
            "/early" => b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!",
            "/interim" => b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        };
        if path == "/silent" {
            // Takes the request and never answers (nor closes).
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if stream.write_all(reply).await.is_err() {
            return;
        }
        match path.as_str() {
            "/until-close" => return,
            // Answered without reading the body; drain it like a polite server would.
            "/early" => {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            "/close-after" => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
            _ => {}
        }
    }
}

/// Sends `request` on a fresh connection and reads until EOF (bounded).
async fn exchange_until_close(addr: SocketAddr, request: &[u8]) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("the proxy did not close the connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_unsupported_request_framing_is_refused() {
    let echo = EchoBackend::start("echo").await;
    let p = start("framing", &routes(echo.addr), &[]).await;
    let h = "Host: www.example.com\r\n";
    // (request, status)
    let cases: Vec<(String, u16)> = vec![
        (
            format!(
                "POST /a HTTP/1.1\r\n{h}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: 1, 2\r\n\r\nab"),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n"),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: gzip\r\n\r\n"),
            501,
        ),
        (
            format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            501,
        ),
        (
            format!("POST /a HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400,
        ),
        (format!("GET /a HTTP/1.1\r\n{h}{h}\r\n"), 400),
        (format!("GET /caf\u{e9} HTTP/1.1\r\n{h}\r\n"), 400),
        (format!("GET /a HTTP/2.0\r\n{h}\r\n"), 400),
        // the well-formed ones reach the backend
        (
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: 3, 3\r\n\r\nabc"),
            200,
        ),
        (
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            ),
            200,
        ),
    ];
    for (request, status) in &cases {
        let reply = raw_request(p.proxy.addr, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e:#}"));
        assert_eq!(reply.status, *status, "{request:?}: {}", reply.body);
        if *status == 200 {
            let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(echo["body_len"], 3, "{request:?}");
        } else {
            assert!(reply.header("x-request-id").is_some(), "{request:?}");
        }
    }
    assert_eq!(
        echo.hits(),
        2,
        "only the well-formed requests are forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let echo = EchoBackend::start("echo").await;
    let p = start("bodies", &routes(echo.addr), &[]).await;

    // A 4 MiB upload with a length: far more than any buffer of ours.
    let big = Bytes::from(vec![b'x'; 4 << 20]);
    let req = http::Request::post(p.proxy.url("/upload"))
        .header("host", "www.example.com")
        .body(Full::new(big))
        .unwrap();
    let reply = p.client.send(req).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body_len"], 4 << 20);

    // A chunked upload sent in pieces, with Expect: 100-continue.
    let mut s = TcpStream::connect(p.proxy.addr).await.unwrap();
    s.write_all(b"POST /chunks HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut interim))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    for piece in [&b"4\r\nabcd\r\n"[..], b"3\r\nefg\r\n", b"0\r\n\r\n"] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(echo["body_len"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_framing_is_relayed() {
    let up = Scripted::start().await;
    let p = start("framings", &routes(up.addr), &[]).await;

    // Chunked to an HTTP/1.1 client: passed through (hyper's client decodes it).
    let reply = p.get("/chunked", &[HOST]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hello world");

    // Chunked to an HTTP/1.0 client: decoded, then the connection closes.
    let raw = exchange_until_close(
        p.proxy.addr,
        b"GET /chunked HTTP/1.0\r\nHost: www.example.com\r\n\r\n",
    )
    .await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "hello world");

    // No framing at all: relayed until the upstream closes, and so is the client's.
    let raw = exchange_until_close(
        p.proxy.addr,
        b"GET /until-close HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    )
    .await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "all of this until close");

    // HEAD keeps the length but has no body; 1xx interim responses are skipped.
    let raw = exchange_until_close(
        p.proxy.addr,
        b"HEAD /head HTTP/1.1\r\nHost: www.example.com\r\n\r\nGET /interim HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut responses = raw.split("HTTP/1.1 ").skip(1);
    let head = responses.next().unwrap();
    assert!(head.starts_with("200"), "{raw}");
    assert!(head.contains("content-length: 11\r\n"), "{raw}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "HEAD response has a body: {raw}"
    );
    let interim = responses.next().unwrap();
    assert!(
        interim.starts_with("200") && interim.ends_with("\r\n\r\nfinal"),
        "{raw}"
    );
    assert!(responses.next().is_none(), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_reaches_the_client_and_closes_the_connection() {
    let up = Scripted::start().await;
    let p = start("early", &routes(up.addr), &[]).await;
    let mut s = TcpStream::connect(p.proxy.addr).await.unwrap();
    // 1 MiB announced, 1 KiB sent: the upstream answers 413 before reading any of it.
    s.write_all(
        b"POST /early HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 1048576\r\n\r\n",
    )
    .await
    .unwrap();
    s.write_all(&[b'x'; 1024]).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(&mut s))
        .await
        .expect("no answer while the upload was still incomplete")
        .unwrap();
    assert_eq!(reply.status, 413);
    assert_eq!(reply.body, "big!");
    assert_eq!(
        reply.header("connection"),
        Some("close"),
        "{:?}",
        reply.headers
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upstreams_and_clients_are_cut_off_by_the_io_timeout() {
    let up = Scripted::start().await;
    let p = start("io-timeout", &routes(up.addr), &["--io-timeout", "300ms"]).await;
    // An upstream that takes the request and never answers: 504, not a hang.
    let started = Instant::now();
    let reply = p.get("/silent", &[HOST]).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "after {took:?}"
    );

    // A client that stops sending its body halfway (to a backend that waits for all
    // of it): the connection is closed.
    let echo = EchoBackend::start("echo").await;
    let p = start(
        "io-timeout-body",
        &routes(echo.addr),
        &["--io-timeout", "300ms"],
    )
    .await;
    let mut s = TcpStream::connect(p.proxy.addr).await.unwrap();
    s.write_all(
        b"POST /plain HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 100\r\n\r\nhalf",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(250),
        "closed after only {took:?}"
    );
    // ... with a 408 that blames the client, counted as a downstream error.
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 408 "), "{rest}");
    let stats = p.admin("/stats").await.json();
    assert_eq!(stats["upstream_errors"], 0, "{stats}");

    // A slow but steady upload that takes longer than the I/O timeout in all is not
    // timed out: the upstream owes no answer before it has the whole body.
    let mut s = TcpStream::connect(p.proxy.addr).await.unwrap();
    s.write_all(b"POST /plain HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 6\r\n\r\n")
        .await
        .unwrap();
    for byte in b"steady" {
        tokio::time::sleep(Duration::from_millis(150)).await; // pacing, not synchronisation
        s.write_all(&[*byte]).await.unwrap();
    }
    let reply = read_reply(&mut s).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("\"body_len\":6"), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_stale_ones_never_fail_a_request() {
    let up = Scripted::start().await;
    let p = start("reuse", &routes(up.addr), &["--workers", "1"]).await;
    for _ in 0..20 {
        assert_eq!(p.get("/plain", &[HOST]).await.status, 200);
    }
    assert_eq!(
        up.accepted(),
        1,
        "20 sequential requests share one upstream connection"
    );

    // The upstream closes each connection right after answering: the pooled one is
    // stale by the next request, which must still succeed.
    let started = up.accepted();
    for i in 0..10 {
        let reply = p.get("/close-after", &[HOST]).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // The first of them still rides the warm connection; each later one needs a new one.
    assert_eq!(
        up.accepted() - started,
        9,
        "each closed connection was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let echo = EchoBackend::start("echo").await;
    let p = start("pipeline", &routes(echo.addr), &[]).await;
    let raw = exchange_until_close(
        p.proxy.addr,
        b"GET /one HTTP/1.1\r\nHost: www.example.com\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 2\r\n\r\nhi\
          GET /three HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let uris: Vec<&str> = raw
        .match_indices("\"uri\":\"")
        .map(|(i, m)| {
            let rest = &raw[i + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(uris, ["/one", "/two", "/three"], "{raw}");
    assert_eq!(raw.matches("HTTP/1.1 200 ").count(), 3, "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_close_after_the_keepalive_timeout() {
    let echo = EchoBackend::start("echo").await;
    let p = start(
        "keepalive",
        &routes(echo.addr),
        &["--keepalive-timeout", "300ms"],
    )
    .await;
    let mut s = TcpStream::connect(p.proxy.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut s).await.unwrap();
    assert_eq!(reply.status, 200);
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let idle = idle_from.elapsed();
    assert!(read.is_ok(), "still open after {idle:?}");
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    assert!(
        idle >= Duration::from_millis(250),
        "closed after only {idle:?}"
    );
}
