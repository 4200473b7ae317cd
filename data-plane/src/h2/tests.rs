//! The connection state machine ([`super::conn`]) over `tokio::io::duplex`: through an
//! independent client (hyper's), and frame by frame for what a client should not do.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::conn::{Config, MAX_CONCURRENT_STREAMS, RESET_BUDGET, Service};
use super::frame::{self, Head, Reason};
use super::hpack;
use crate::body::BoxError;
use crate::upstream::RequestBody;

/// The longest any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

type TestBody = UnsyncBoxBody<Bytes, BoxError>;
type Respond = Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>;
type Handler = Arc<dyn Fn(Request<RequestBody>) -> Respond + Send + Sync>;

/// A service that counts its calls and hands each request to `handler`.
#[derive(Clone)]
struct TestService {
    handler: Handler,
    calls: Arc<AtomicUsize>,
}

impl Service for TestService {
    type Body = TestBody;

    fn call(&mut self, req: Request<RequestBody>) -> Respond {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.handler)(req)
    }
}

fn service<F, Fut>(f: F) -> TestService
where
    F: Fn(Request<RequestBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    TestService {
        handler: Arc::new(move |req| Box::pin(f(req))),
        calls: Arc::default(),
    }
}

fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Echoes the request body (and its trailers) back as the response body.
fn echo() -> TestService {
    service(
        |req: Request<RequestBody>| async move { Response::new(req.into_body().boxed_unsync()) },
    )
}

/// `count` chunks of `chunk` bytes each, then the end — or an error after `fail_after`
/// chunks.
struct Chunks {
    chunk: Bytes,
    count: usize,
    fail_after: Option<usize>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.fail_after == Some(0) {
            return Poll::Ready(Some(Err("the upstream went away".into())));
        }
        if self.count == 0 {
            return Poll::Ready(None);
        }
        self.count -= 1;
        if let Some(n) = self.fail_after.as_mut() {
            *n -= 1;
        }
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

fn chunks(chunk: usize, count: usize, fail_after: Option<usize>) -> TestBody {
    Chunks {
        chunk: Bytes::from(vec![b'z'; chunk]),
        count,
        fail_after,
    }
    .boxed_unsync()
}

/// Sends on its channel when dropped: a request future that was dropped says so.
struct OnDrop(Option<oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A server on one end of a duplex pipe.
struct Server {
    calls: Arc<AtomicUsize>,
    drain: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Resolves the drain future given to `serve`.
    fn drain(&mut self) {
        let _ = self.drain.take().expect("drained once").send(());
    }

    async fn ended(self) {
        let result = timeout(WAIT, self.task)
            .await
            .expect("the connection did not end")
            .expect("the connection's task panicked");
        result.expect("the connection ended with an I/O error");
    }
}

fn start(svc: TestService, pipe: usize) -> (DuplexStream, Server) {
    start_with(svc, pipe, Duration::from_secs(60))
}

fn start_with(svc: TestService, pipe: usize, idle_timeout: Duration) -> (DuplexStream, Server) {
    let (client, server) = tokio::io::duplex(pipe);
    let calls = Arc::clone(&svc.calls);
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let drain = async move {
        if drain_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let config = Config {
        max_header_bytes: 16 * 1024,
        idle_timeout,
    };
    let task = tokio::spawn(super::serve(server, Vec::new(), svc, config, drain));
    (
        client,
        Server {
            calls,
            drain: Some(drain_tx),
            task,
        },
    )
}

// ---- through hyper's client ----

type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

async fn hyper_client(io: DuplexStream) -> hyper::client::conn::http2::SendRequest<ClientBody> {
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            // The protocol's default windows, so long bodies need WINDOW_UPDATEs.
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .expect("the HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

fn request(method: &str, path: &str, body: ClientBody) -> Request<ClientBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://test.example{path}"))
        .body(body)
        .expect("a valid request")
}

fn client_full(data: impl Into<Bytes>) -> ClientBody {
    Full::new(data.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn hyper_client_exchanges() {
    // (name, server's service, request, expected status, expected body length, trailers)
    struct Case {
        name: &'static str,
        svc: TestService,
        method: &'static str,
        body: Bytes,
        want_body: Option<Bytes>,
        want_len: usize,
        want_trailer: Option<(&'static str, &'static str)>,
    }
    let mib = pattern(1 << 20, 7);
    let cases = vec![
        Case {
            name: "GET with an empty body",
            svc: service(|_req| async { Response::new(empty()) }),
            method: "GET",
            body: Bytes::new(),
            want_body: Some(Bytes::new()),
            want_len: 0,
            want_trailer: None,
        },
        Case {
            name: "POST echo of 1 MiB (windows both ways)",
            svc: echo(),
            method: "POST",
            body: mib.clone(),
            want_body: Some(mib.clone()),
            want_len: mib.len(),
            want_trailer: None,
        },
        Case {
            name: "response trailers",
            svc: service(|_req| async {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                    Ok(Frame::data(Bytes::from_static(b"hello"))),
                    Ok(Frame::trailers(trailers)),
                ];
                Response::new(StreamBody::new(tokio_stream::iter(frames)).boxed_unsync())
            }),
            method: "GET",
            body: Bytes::new(),
            want_body: Some(Bytes::from_static(b"hello")),
            want_len: 5,
            want_trailer: Some(("grpc-status", "0")),
        },
        Case {
            name: "5 MiB streamed in 16 KiB chunks",
            svc: service(|_req| async { Response::new(chunks(16 * 1024, 320, None)) }),
            method: "GET",
            body: Bytes::new(),
            want_body: None,
            want_len: 5 << 20,
            want_trailer: None,
        },
        Case {
            name: "1 MiB read whole before the response",
            svc: service(|req: Request<RequestBody>| async move {
                let body = req.into_body().collect().await.expect("the request body");
                Response::new(full(body.to_bytes()))
            }),
            method: "POST",
            body: mib.clone(),
            want_body: Some(mib.clone()),
            want_len: mib.len(),
            want_trailer: None,
        },
        Case {
            name: "a response before the request body is read (RST_STREAM NO_ERROR)",
            svc: service(|_req| async { Response::new(full("early")) }),
            method: "POST",
            body: mib.clone(),
            want_body: Some(Bytes::from_static(b"early")),
            want_len: 5,
            want_trailer: None,
        },
    ];
    for case in cases {
        let (io, server) = start(case.svc, 64 * 1024);
        let mut send = hyper_client(io).await;
        let exchange = async {
            let resp = send
                .send_request(request(case.method, "/", client_full(case.body)))
                .await
                .expect("a response");
            assert_eq!(resp.status(), StatusCode::OK, "{}", case.name);
            resp.into_body().collect().await.expect("the whole body")
        };
        let collected = timeout(WAIT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{}: timed out", case.name));
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        assert_eq!(body.len(), case.want_len, "{}", case.name);
        if let Some(want) = case.want_body {
            assert!(body == want, "{}: the body differs", case.name);
        }
        match case.want_trailer {
            Some((name, value)) => {
                let trailers = trailers.unwrap_or_else(|| panic!("{}: no trailers", case.name));
                assert_eq!(
                    trailers.get(name).map(|v| v.as_bytes()),
                    Some(value.as_bytes())
                );
            }
            None => assert!(trailers.is_none(), "{}: unexpected trailers", case.name),
        }
        assert_eq!(server.calls.load(Ordering::SeqCst), 1, "{}", case.name);
        drop(send);
        server.ended().await;
    }
}

#[tokio::test]
async fn request_trailers_reach_the_service() {
    let (io, server) = start(echo(), 64 * 1024);
    let mut send = hyper_client(io).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"part one, "))),
        Ok(Frame::data(Bytes::from_static(b"part two"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(tokio_stream::iter(frames)).boxed_unsync();
    let collected = timeout(WAIT, async {
        let resp = send
            .send_request(request("POST", "/", body))
            .await
            .expect("a response");
        resp.into_body().collect().await.expect("the whole body")
    })
    .await
    .expect("timed out");
    let trailers = collected.trailers().cloned().expect("trailers echoed");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"abc"[..])
    );
    assert_eq!(&collected.to_bytes()[..], b"part one, part two");
    drop(send);
    server.ended().await;
}

#[tokio::test]
async fn fifty_concurrent_streams() {
    concurrent_echoes(echo(), 50, 20_000, 1000).await;
}

/// The request bodies are read by tasks of their own and the responses wait for them,
/// so stream wakers fire from other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_woken_from_other_threads() {
    let svc = service(|req: Request<RequestBody>| async move {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let body = req.into_body().collect().await.map(|c| c.to_bytes());
            let _ = tx.send(body);
        });
        let body = rx.await.expect("the reader").expect("the request body");
        Response::new(full(body))
    });
    concurrent_echoes(svc, 50, 100_000, 3000).await;
    concurrent_echoes(echo(), 50, 100_000, 3000).await;
}

/// `n` concurrent POSTs of `base + i * step` bytes, each echoed.
async fn concurrent_echoes(svc: TestService, n: u8, base: usize, step: usize) {
    let (io, server) = start(svc, 64 * 1024);
    let send = hyper_client(io).await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let body = pattern(base + usize::from(i) * step, i);
            let resp = send
                .send_request(request("POST", "/", client_full(body.clone())))
                .await
                .expect("a response");
            let got = resp.into_body().collect().await.expect("a body").to_bytes();
            assert!(got == body, "stream {i}: the echo differs");
        }));
    }
    for task in tasks {
        timeout(WAIT, task)
            .await
            .expect("timed out")
            .expect("a stream's task panicked");
    }
    assert_eq!(server.calls.load(Ordering::SeqCst), usize::from(n));
    drop(send);
    server.ended().await;
}

// ---- frame by frame ----

/// A client that writes frames itself and reads the server's back.
struct Raw {
    io: DuplexStream,
    buf: BytesMut,
}

impl Raw {
    /// The preface and the client's SETTINGS (`settings`: id, value).
    async fn connect(io: DuplexStream, settings: &[(u16, u32)]) -> Raw {
        let mut raw = Raw {
            io,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::from(frame::PREFACE);
        frame::put_settings(&mut out, settings);
        raw.write(&out).await;
        raw
    }

    async fn write(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.io.write_all(bytes))
            .await
            .expect("timed out writing")
            .expect("the server's end is open");
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame::put_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        self.write(&out).await;
    }

    /// A GET for `path` on `stream`.
    async fn get(&mut self, stream: u32, path: &str) {
        let block = request_to("GET", "test.example", path, &[]);
        self.send(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            stream,
            &block,
        )
        .await;
    }

    /// The next frame, or `None` once the server has closed the connection.
    async fn next(&mut self) -> Option<(Head, Bytes)> {
        timeout(WAIT, async {
            loop {
                if self.buf.len() >= frame::HEADER_LEN {
                    let head = Head::parse(&self.buf);
                    if self.buf.len() >= frame::HEADER_LEN + head.len {
                        let mut f = self.buf.split_to(frame::HEADER_LEN + head.len);
                        f.advance(frame::HEADER_LEN);
                        return Some((head, f.freeze()));
                    }
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a frame")
    }

    /// The next frame other than SETTINGS and WINDOW_UPDATE (connection bookkeeping).
    async fn next_significant(&mut self) -> Option<(Head, Bytes)> {
        loop {
            let f = self.next().await?;
            if f.0.kind != frame::SETTINGS && f.0.kind != frame::WINDOW_UPDATE {
                return Some(f);
            }
        }
    }

    /// Expects a GOAWAY (returns its last stream and reason), then the end.
    async fn goaway(&mut self) -> (u32, Reason) {
        let (head, payload) = self
            .next_significant()
            .await
            .expect("a GOAWAY before the end");
        assert_eq!(head.kind, frame::GOAWAY, "expected GOAWAY, got {head:?}");
        let last = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
        let reason = Reason(u32::from_be_bytes(
            payload[4..8].try_into().expect("4 bytes"),
        ));
        self.eof().await;
        (last, reason)
    }

    async fn eof(&mut self) {
        while let Some((head, _)) = self.next().await {
            assert!(
                head.kind == frame::SETTINGS || head.kind == frame::WINDOW_UPDATE,
                "unexpected {head:?} before the end"
            );
        }
    }

    /// Expects RST_STREAM on `stream`, returning its reason.
    async fn rst(&mut self, stream: u32) -> Reason {
        let (head, payload) = self.next_significant().await.expect("an RST_STREAM");
        assert_eq!(
            (head.kind, head.stream),
            (frame::RST_STREAM, stream),
            "expected RST_STREAM on {stream}, got {head:?}"
        );
        Reason(u32::from_be_bytes(
            payload[..4].try_into().expect("4 bytes"),
        ))
    }
}

/// A request's header block: the pseudo-fields over plain HTTP, then `extra`.
fn request_to(method: &str, authority: &str, path: &str, extra: &[(&str, &str)]) -> BytesMut {
    let pseudo = [
        (":method", method),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ];
    request_block(&[&pseudo[..], extra].concat())
}

fn request_block(fields: &[(&str, &str)]) -> BytesMut {
    let mut block = BytesMut::new();
    for (name, value) in fields {
        hpack::encode_field(name.as_bytes(), value.as_bytes(), false, &mut block);
    }
    block
}

fn ok_service() -> TestService {
    service(|_req| async { Response::new(full("ok")) })
}

#[tokio::test]
async fn the_server_speaks_first_and_answers_settings_and_ping() {
    let (io, server) = start(ok_service(), 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    let (head, payload) = raw.next().await.expect("the server's SETTINGS");
    assert_eq!(
        (head.kind, head.flags, head.stream),
        (frame::SETTINGS, 0, 0)
    );
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
            )
        })
        .collect();
    assert!(settings.contains(&(
        frame::SETTINGS_MAX_CONCURRENT_STREAMS,
        MAX_CONCURRENT_STREAMS as u32
    )));
    assert!(settings.contains(&(frame::SETTINGS_MAX_HEADER_LIST_SIZE, 16 * 1024)));
    let (head, _) = raw.next().await.expect("the connection window's update");
    assert_eq!((head.kind, head.stream), (frame::WINDOW_UPDATE, 0));
    let (head, _) = raw.next().await.expect("the SETTINGS ack");
    assert_eq!((head.kind, head.flags), (frame::SETTINGS, frame::ACK));

    raw.send(frame::PING, 0, 0, b"12345678").await;
    let (head, payload) = raw.next().await.expect("the PING ack");
    assert_eq!(
        (head.kind, head.flags, head.stream),
        (frame::PING, frame::ACK, 0)
    );
    assert_eq!(&payload[..], b"12345678");

    // A request on the same connection, then the client goes away.
    raw.get(1, "/").await;
    let (head, _) = raw.next_significant().await.expect("the response head");
    assert_eq!((head.kind, head.stream), (frame::HEADERS, 1));
    let (head, payload) = raw.next_significant().await.expect("the response body");
    assert_eq!((head.kind, head.flags), (frame::DATA, frame::END_STREAM));
    assert_eq!(&payload[..], b"ok");
    drop(raw);
    server.ended().await;
}

#[tokio::test]
async fn connection_errors_are_answered_with_goaway() {
    let mut over = BytesMut::new();
    frame::put_head(&mut over, frame::DEFAULT_MAX_FRAME + 1, frame::DATA, 0, 1);
    over.extend_from_slice(&[0; 64]);
    let mut rows: Vec<(&str, Vec<u8>, Reason)> = vec![(
        "a frame over 16 KiB",
        over.to_vec(),
        Reason::FRAME_SIZE_ERROR,
    )];
    let mut frames = |name, kind, flags, stream, payload: &[u8], reason| {
        let mut b = BytesMut::new();
        frame::put_head(&mut b, payload.len(), kind, flags, stream);
        b.extend_from_slice(payload);
        rows.push((name, b.to_vec(), reason));
    };
    let get = request_to("GET", "a", "/", &[]);
    frames(
        "DATA on an idle stream",
        frame::DATA,
        frame::END_STREAM,
        1,
        b"x",
        Reason::PROTOCOL_ERROR,
    );
    frames(
        "HEADERS on an even stream",
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        2,
        &get,
        Reason::PROTOCOL_ERROR,
    );
    frames(
        "WINDOW_UPDATE overflowing the connection's window",
        frame::WINDOW_UPDATE,
        0,
        0,
        &0x7fff_ffffu32.to_be_bytes(),
        Reason::FLOW_CONTROL_ERROR,
    );
    frames(
        "a zero connection window increment",
        frame::WINDOW_UPDATE,
        0,
        0,
        &0u32.to_be_bytes(),
        Reason::PROTOCOL_ERROR,
    );
    frames(
        "CONTINUATION without HEADERS",
        frame::CONTINUATION,
        frame::END_HEADERS,
        1,
        &get,
        Reason::PROTOCOL_ERROR,
    );
    frames(
        "PUSH_PROMISE from the client",
        frame::PUSH_PROMISE,
        frame::END_HEADERS,
        1,
        &[0, 0, 0, 2],
        Reason::PROTOCOL_ERROR,
    );
    frames(
        "a PING of 7 bytes",
        frame::PING,
        0,
        0,
        b"1234567",
        Reason::FRAME_SIZE_ERROR,
    );
    frames(
        "an undecodable header block",
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        Reason::COMPRESSION_ERROR,
    );
    frames(
        "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
        frame::SETTINGS,
        0,
        0,
        &[0, 4, 0x80, 0, 0, 0],
        Reason::FLOW_CONTROL_ERROR,
    );
    for (name, bytes, want) in rows {
        let (io, server) = start(ok_service(), 64 * 1024);
        let mut raw = Raw::connect(io, &[]).await;
        raw.write(&bytes).await;
        let (last, reason) = raw.goaway().await;
        assert_eq!(reason, want, "{name}");
        assert_eq!(last, 0, "{name}");
        assert_eq!(server.calls.load(Ordering::SeqCst), 0, "{name}");
        server.ended().await;
    }
}

#[tokio::test]
async fn the_first_frame_must_be_settings() {
    let (io, server) = start(ok_service(), 64 * 1024);
    let mut raw = Raw {
        io,
        buf: BytesMut::new(),
    };
    raw.write(frame::PREFACE).await;
    raw.send(frame::PING, 0, 0, b"12345678").await;
    assert_eq!(raw.goaway().await, (0, Reason::PROTOCOL_ERROR));
    server.ended().await;
}

#[tokio::test]
async fn malformed_requests_are_reset_and_never_reach_the_service() {
    let base = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", "/"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let rows: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("an uppercase field name", with(&[("X-Upper", "1")])),
        ("no :path", base[..3].to_vec()),
        (
            "a connection-specific field",
            with(&[("connection", "close")]),
        ),
        ("an unknown pseudo-field", with(&[(":foo", "bar")])),
        (
            "END_STREAM with a nonzero content-length",
            with(&[("content-length", "3")]),
        ),
    ];
    for (name, fields) in rows {
        let (io, server) = start(ok_service(), 64 * 1024);
        let mut raw = Raw::connect(io, &[]).await;
        let block = request_block(&fields);
        raw.send(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &block,
        )
        .await;
        assert_eq!(raw.rst(1).await, Reason::PROTOCOL_ERROR, "{name}");
        // The connection goes on.
        raw.get(3, "/").await;
        let (head, _) = raw.next_significant().await.expect("a response");
        assert_eq!((head.kind, head.stream), (frame::HEADERS, 3), "{name}");
        assert_eq!(server.calls.load(Ordering::SeqCst), 1, "{name}");
        drop(raw);
        server.ended().await;
    }
}

/// A waiting request: the sender that releases it, and what says it was dropped.
type Waiting = (oneshot::Sender<()>, oneshot::Receiver<()>);

/// A service that tells the test it was called (with a sender that releases it) and
/// waits; dropped, it says so.
fn waiting() -> (TestService, mpsc::UnboundedReceiver<Waiting>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Mutex::new(tx);
    let svc = service(move |_req| {
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
        let _ = tx
            .lock()
            .expect("not poisoned")
            .send((release_tx, dropped_rx));
        async move {
            let _guard = OnDrop(Some(dropped_tx));
            let _ = release_rx.await;
            Response::new(full("done"))
        }
    });
    (svc, rx)
}

#[tokio::test]
async fn a_client_reset_drops_the_request_future() {
    let (svc, mut called) = waiting();
    let (io, server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    raw.get(1, "/").await;
    let (_release, dropped) = timeout(WAIT, called.recv())
        .await
        .expect("timed out")
        .expect("called");
    raw.send(frame::RST_STREAM, 0, 1, &8u32.to_be_bytes()).await;
    timeout(WAIT, dropped)
        .await
        .expect("the request future was not dropped")
        .expect("dropped, not forgotten");
    // Nothing is sent for the reset stream.
    raw.send(frame::PING, 0, 0, b"barrier!").await;
    let (head, _) = raw.next_significant().await.expect("the PING ack");
    assert_eq!(head.kind, frame::PING);
    drop(raw);
    server.ended().await;
}

#[tokio::test]
async fn streams_over_the_limit_are_refused() {
    let (svc, mut called) = waiting();
    let (io, server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    let mut held = Vec::new();
    for i in 0..MAX_CONCURRENT_STREAMS as u32 {
        raw.get(2 * i + 1, "/").await;
    }
    for _ in 0..MAX_CONCURRENT_STREAMS {
        held.push(
            timeout(WAIT, called.recv())
                .await
                .expect("timed out")
                .expect("called"),
        );
    }
    let over = 2 * MAX_CONCURRENT_STREAMS as u32 + 1;
    raw.get(over, "/").await;
    assert_eq!(raw.rst(over).await, Reason::REFUSED_STREAM);
    // One completes: a new stream is taken again.
    let (release, _) = held.pop().expect("held");
    let _ = release.send(());
    let (head, _) = raw.next_significant().await.expect("the response");
    assert_eq!(head.kind, frame::HEADERS);
    let (head, _) = raw.next_significant().await.expect("its body");
    assert_eq!((head.kind, head.flags), (frame::DATA, frame::END_STREAM));
    raw.get(over + 2, "/").await;
    let _last = timeout(WAIT, called.recv())
        .await
        .expect("the stream after one completed is served")
        .expect("called");
    assert_eq!(
        server.calls.load(Ordering::SeqCst),
        MAX_CONCURRENT_STREAMS + 1
    );
    drop(raw);
    server.ended().await;
}

#[tokio::test]
async fn drain_sends_goaway_and_lets_the_stream_in_flight_finish() {
    let (svc, mut called) = waiting();
    let (io, mut server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    raw.get(1, "/").await;
    let (release, _dropped) = timeout(WAIT, called.recv())
        .await
        .expect("timed out")
        .expect("called");
    server.drain();
    let (head, payload) = raw.next_significant().await.expect("a GOAWAY");
    assert_eq!(head.kind, frame::GOAWAY);
    assert_eq!(&payload[..4], &1u32.to_be_bytes(), "the last stream");
    assert_eq!(&payload[4..8], &Reason::NO_ERROR.0.to_be_bytes());
    // A stream opened after the GOAWAY is not served.
    raw.get(3, "/").await;
    raw.send(frame::PING, 0, 0, b"barrier!").await;
    let (head, _) = raw.next_significant().await.expect("the PING ack");
    assert_eq!(head.kind, frame::PING);
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    // The stream in flight completes, then the connection ends.
    let _ = release.send(());
    let (head, _) = raw.next_significant().await.expect("the response");
    assert_eq!((head.kind, head.stream), (frame::HEADERS, 1));
    let (head, payload) = raw.next_significant().await.expect("its body");
    assert_eq!(
        (head.kind, head.flags, head.stream),
        (frame::DATA, frame::END_STREAM, 1)
    );
    assert_eq!(&payload[..], b"done");
    raw.eof().await;
    server.ended().await;
}

#[tokio::test]
async fn a_response_body_failing_midway_resets_the_stream() {
    let svc = service(|_req| async { Response::new(chunks(1000, 10, Some(3))) });
    let (io, server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    raw.get(1, "/").await;
    let (head, _) = raw.next_significant().await.expect("the response head");
    assert_eq!(head.kind, frame::HEADERS);
    let mut data = 0;
    loop {
        let (head, payload) = raw.next_significant().await.expect("a frame");
        if head.kind == frame::DATA {
            assert_eq!(
                head.flags & frame::END_STREAM,
                0,
                "a failed body is not ended"
            );
            data += payload.len();
            continue;
        }
        assert_eq!((head.kind, head.stream), (frame::RST_STREAM, 1));
        assert_eq!(&payload[..], &Reason::INTERNAL_ERROR.0.to_be_bytes());
        break;
    }
    assert_eq!(data, 3000);
    drop(raw);
    server.ended().await;
}

#[tokio::test]
async fn more_window_unblocks_data_waiting_for_it() {
    let larger_initial = {
        let mut settings = BytesMut::new();
        frame::put_settings(
            &mut settings,
            &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1000)],
        );
        settings
    };
    let stream_update = {
        let mut update = BytesMut::new();
        frame::put_window_update(&mut update, 1, 100);
        update
    };
    // (how the window grows, the frames that grow it)
    let rows = [
        ("a larger SETTINGS_INITIAL_WINDOW_SIZE", larger_initial),
        ("a stream WINDOW_UPDATE", stream_update),
    ];
    for (name, more) in rows {
        let svc = service(|_req| async { Response::new(full(vec![b'w'; 100])) });
        let (io, server) = start(svc, 64 * 1024);
        let mut raw = Raw::connect(io, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 10)]).await;
        raw.get(1, "/").await;
        let (head, _) = raw.next_significant().await.expect("the response head");
        assert_eq!(head.kind, frame::HEADERS, "{name}");
        let (head, payload) = raw.next_significant().await.expect("the first data");
        assert_eq!(
            (head.kind, head.flags, payload.len()),
            (frame::DATA, 0, 10),
            "{name}"
        );
        // Nothing more until the window grows (the PING ack comes first).
        raw.send(frame::PING, 0, 0, b"barrier!").await;
        let (head, _) = raw.next_significant().await.expect("the PING ack");
        assert_eq!(head.kind, frame::PING, "{name}");
        raw.write(&more).await;
        let (head, payload) = raw.next_significant().await.expect("the rest");
        assert_eq!(
            (head.kind, head.flags, payload.len()),
            (frame::DATA, frame::END_STREAM, 90),
            "{name}"
        );
        drop(raw);
        server.ended().await;
    }
}

/// A client that sends PINGs and never reads: the server stops reading once its write
/// buffer is full (the client's writes block), and answers every PING once it reads.
#[tokio::test]
async fn a_client_that_does_not_read_is_not_read() {
    // Pipes smaller and larger than the write buffer's high-water mark: with the larger
    // one, a reader that catches up takes the whole write buffer in one write.
    for pipe in [16 * 1024, 256 * 1024] {
        unread_pings(pipe).await;
    }
}

async fn unread_pings(pipe: usize) {
    let (io, server) = start(ok_service(), pipe);
    let raw = Raw::connect(io, &[]).await;
    let (mut rd, mut wr) = tokio::io::split(raw.io);
    let mut ping = BytesMut::new();
    frame::put_head(&mut ping, 8, frame::PING, 0, 0);
    ping.extend_from_slice(b"pingpong");
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 256)
        .collect();
    // Write until the server stops taking bytes (bounded: at most 4 MiB).
    let mut written = 0usize;
    loop {
        let at = written % burst.len();
        match timeout(Duration::from_millis(300), wr.write(&burst[at..])).await {
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break,
        }
        assert!(
            written < 4 << 20,
            "the server kept reading from a client that does not read"
        );
    }
    // What it took: two pipes, its write buffer's high-water mark, a read buffer.
    assert!(
        written < 2 * pipe + 512 * 1024,
        "the server took {written} bytes"
    );
    // The client reads again: every PING is answered.
    let rest = (ping.len() - written % ping.len()) % ping.len();
    let pings = (written + rest) / ping.len();
    let tail = ping[ping.len() - rest..].to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&tail)
            .await
            .expect("the rest of the last PING");
        wr
    });
    let mut buf = BytesMut::new();
    let mut acks = 0;
    timeout(WAIT, async {
        while acks < pings {
            while buf.len() >= frame::HEADER_LEN {
                let head = Head::parse(&buf);
                if buf.len() < frame::HEADER_LEN + head.len {
                    break;
                }
                if head.kind == frame::PING {
                    assert_eq!(head.flags, frame::ACK);
                    acks += 1;
                }
                buf.advance(frame::HEADER_LEN + head.len);
            }
            if acks < pings {
                // Large reads: the server's whole write buffer may fit in the pipe.
                buf.reserve(1 << 20);
                let n = rd.read_buf(&mut buf).await.expect("read");
                assert!(
                    n > 0,
                    "the server closed with {acks} of {pings} PINGs answered"
                );
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {acks} of {pings} PINGs were answered"));
    let wr = writer.await.expect("the writer");
    drop(rd.unsplit(wr));
    server.ended().await;
}

#[tokio::test]
async fn rapid_resets_are_answered_with_enhance_your_calm() {
    let (svc, mut called) = waiting();
    let (io, server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    let mut last = 0;
    let mut held = Vec::new();
    for i in 0..=RESET_BUDGET as u32 {
        last = 2 * i + 1;
        raw.get(last, "/").await;
        held.push(timeout(WAIT, called.recv()).await.expect("timed out"));
        raw.send(frame::RST_STREAM, 0, last, &8u32.to_be_bytes())
            .await;
    }
    assert_eq!(raw.goaway().await, (last, Reason::ENHANCE_YOUR_CALM));
    server.ended().await;
}

#[tokio::test]
async fn a_header_block_in_continuation_frames() {
    let (io, server) = start(ok_service(), 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    let block = request_to("GET", "a", "/", &[("x-long", &"v".repeat(12_000))]);
    let (first, rest) = block.split_at(10);
    let (second, third) = rest.split_at(6_000);
    raw.send(frame::HEADERS, frame::END_STREAM, 1, first).await;
    raw.send(frame::CONTINUATION, 0, 1, second).await;
    raw.send(frame::CONTINUATION, frame::END_HEADERS, 1, third)
        .await;
    let (head, _) = raw.next_significant().await.expect("the response");
    assert_eq!((head.kind, head.stream), (frame::HEADERS, 1));
    let (head, _) = raw.next_significant().await.expect("its body");
    assert_eq!((head.kind, head.flags), (frame::DATA, frame::END_STREAM));
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    // Another frame between HEADERS and its CONTINUATION is a connection error.
    raw.send(frame::HEADERS, frame::END_STREAM, 3, first).await;
    raw.send(frame::PING, 0, 0, b"12345678").await;
    let (last, reason) = raw.goaway().await;
    assert_eq!(reason, Reason::PROTOCOL_ERROR);
    assert!(last == 1 || last == 3, "last stream {last}");
    server.ended().await;
}

#[tokio::test]
async fn request_data_errors_reset_the_stream() {
    let post = request_to("POST", "a", "/", &[]);
    let post_3 = request_to("POST", "a", "/", &[("content-length", "3")]);
    let chunk = vec![0u8; frame::DEFAULT_MAX_FRAME];
    // (name, header block, DATA payloads (the last with END_STREAM), expected reason)
    let rows: Vec<(&str, &BytesMut, Vec<&[u8]>, Reason)> = vec![
        (
            "more DATA than the stream's window",
            &post,
            vec![&chunk, &chunk, &chunk, &chunk, b"x"],
            Reason::FLOW_CONTROL_ERROR,
        ),
        (
            "more DATA than content-length",
            &post_3,
            vec![b"abcd"],
            Reason::PROTOCOL_ERROR,
        ),
        (
            "less DATA than content-length",
            &post_3,
            vec![b"ab"],
            Reason::PROTOCOL_ERROR,
        ),
    ];
    for (name, block, data, want) in rows {
        // The service holds the body unread, so the stream's window never reopens.
        let (svc, mut called) = waiting();
        let (io, server) = start(svc, 256 * 1024);
        let mut raw = Raw::connect(io, &[]).await;
        raw.send(frame::HEADERS, frame::END_HEADERS, 1, block).await;
        let _held = timeout(WAIT, called.recv()).await.expect("timed out");
        let n = data.len();
        for (i, payload) in data.into_iter().enumerate() {
            let flags = if i + 1 == n { frame::END_STREAM } else { 0 };
            raw.send(frame::DATA, flags, 1, payload).await;
        }
        assert_eq!(raw.rst(1).await, want, "{name}");
        drop(raw);
        server.ended().await;
    }
}

#[tokio::test]
async fn padded_data_is_stripped_and_its_window_returned() {
    let (io, server) = start(echo(), 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    let post = request_to("POST", "a", "/", &[]);
    raw.send(frame::HEADERS, frame::END_HEADERS, 1, &post).await;
    let mut padded = vec![10u8];
    padded.extend_from_slice(b"hello");
    padded.extend_from_slice(&[0; 10]);
    raw.send(frame::DATA, frame::PADDED | frame::END_STREAM, 1, &padded)
        .await;
    let mut body = Vec::new();
    let mut window = 0;
    loop {
        let (head, payload) = raw.next().await.expect("a frame");
        match head.kind {
            frame::WINDOW_UPDATE if head.stream == 1 => {
                window += u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
            }
            frame::DATA => {
                body.extend_from_slice(&payload);
                if head.flags & frame::END_STREAM != 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    assert_eq!(body, b"hello");
    assert_eq!(window, 11, "the pad length byte and the padding");
    drop(raw);
    server.ended().await;
}

#[tokio::test]
async fn the_connection_ends_after_goaway_once_its_streams_do() {
    // The client's GOAWAY: the stream in flight finishes, then the connection ends.
    let (svc, mut called) = waiting();
    let (io, server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    raw.get(1, "/").await;
    let (release, _dropped) = timeout(WAIT, called.recv())
        .await
        .expect("timed out")
        .expect("called");
    let mut goaway = 1u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    raw.send(frame::GOAWAY, 0, 0, &goaway).await;
    let _ = release.send(());
    let (head, _) = raw.next_significant().await.expect("the response");
    assert_eq!((head.kind, head.stream), (frame::HEADERS, 1));
    let (head, _) = raw.next_significant().await.expect("its body");
    assert_eq!((head.kind, head.flags), (frame::DATA, frame::END_STREAM));
    raw.eof().await;
    server.ended().await;

    // A drain with no stream open: GOAWAY, then the end at once.
    let (io, mut server) = start(ok_service(), 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    raw.send(frame::PING, 0, 0, b"barrier!").await;
    let (head, _) = raw.next_significant().await.expect("the PING ack");
    assert_eq!(head.kind, frame::PING);
    server.drain();
    assert_eq!(raw.goaway().await, (0, Reason::NO_ERROR));
    server.ended().await;
}

#[tokio::test]
async fn a_second_goaway_does_not_raise_the_last_stream() {
    // RFC 9113 §6.8: the last stream identifier of later GOAWAYs must not increase.
    let (svc, mut called) = waiting();
    let (io, mut server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    raw.get(1, "/").await;
    let _held = timeout(WAIT, called.recv()).await.expect("timed out");
    server.drain();
    let (head, payload) = raw.next_significant().await.expect("a GOAWAY");
    assert_eq!(head.kind, frame::GOAWAY);
    assert_eq!(&payload[..4], &1u32.to_be_bytes());
    // Opened after the GOAWAY (not processed), then a connection error.
    raw.get(3, "/").await;
    raw.send(frame::PING, 0, 0, b"1234567").await;
    assert_eq!(raw.goaway().await, (1, Reason::FRAME_SIZE_ERROR));
    server.ended().await;
}

#[tokio::test]
async fn large_windows_and_frames_with_a_reader_that_takes_it_all_at_once() {
    let svc = service(|_req| async { Response::new(chunks(100_000, 50, None)) });
    let (io, server) = start(svc, 256 * 1024);
    let max_frame = 1 << 20;
    let mut raw = Raw::connect(
        io,
        &[
            (frame::SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff),
            (frame::SETTINGS_MAX_FRAME_SIZE, max_frame),
        ],
    )
    .await;
    raw.send(
        frame::WINDOW_UPDATE,
        0,
        0,
        &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
    )
    .await;
    raw.get(1, "/").await;
    let mut total = 0;
    let mut largest = 0;
    loop {
        raw.buf.reserve(1 << 20);
        let (head, payload) = raw.next_significant().await.expect("a frame");
        if head.kind != frame::DATA {
            assert_eq!(head.kind, frame::HEADERS);
            continue;
        }
        total += payload.len();
        largest = largest.max(payload.len());
        if head.flags & frame::END_STREAM != 0 {
            break;
        }
    }
    assert_eq!(total, 5_000_000);
    assert!(largest > frame::DEFAULT_MAX_FRAME && largest <= max_frame as usize);
    drop(raw);
    server.ended().await;
}

/// A response body that never ends; dropped, it says so.
struct Endless {
    _guard: OnDrop,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn a_client_reset_drops_the_response_body_and_costs_no_budget() {
    let (tx, mut dropped) = mpsc::unbounded_channel::<oneshot::Receiver<()>>();
    let tx = Mutex::new(tx);
    let svc = service(move |_req| {
        let (drop_tx, drop_rx) = oneshot::channel();
        let _ = tx.lock().expect("not poisoned").send(drop_rx);
        async move {
            Response::new(
                Endless {
                    _guard: OnDrop(Some(drop_tx)),
                }
                .boxed_unsync(),
            )
        }
    });
    let (io, server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    // More than the rapid-reset budget, each reset after its response started.
    for i in 0..40u32 {
        let id = 2 * i + 1;
        raw.get(id, "/").await;
        let (head, _) = raw.next_significant().await.expect("the response head");
        assert_eq!((head.kind, head.stream), (frame::HEADERS, id));
        raw.send(frame::RST_STREAM, 0, id, &8u32.to_be_bytes())
            .await;
        let dropped = timeout(WAIT, dropped.recv())
            .await
            .expect("timed out")
            .expect("called");
        timeout(WAIT, dropped)
            .await
            .expect("the response body was not dropped")
            .expect("dropped, not forgotten");
    }
    raw.send(frame::PING, 0, 0, b"barrier!").await;
    let (head, _) = raw.next_significant().await.expect("the PING ack");
    assert_eq!(head.kind, frame::PING, "no GOAWAY");
    drop(raw);
    server.ended().await;
}

#[tokio::test]
async fn resets_the_client_provokes_count_against_the_budget() {
    // DATA over the declared content-length makes the server reset the stream
    // ("MadeYouReset", CVE-2025-8671): the same budget as the client's own resets.
    let post = request_to("POST", "a", "/", &[("content-length", "3")]);
    let (svc, mut called) = waiting();
    let (io, server) = start(svc, 256 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    let mut held = Vec::new();
    let mut last = 0;
    for i in 0..=RESET_BUDGET as u32 {
        last = 2 * i + 1;
        raw.send(frame::HEADERS, frame::END_HEADERS, last, &post)
            .await;
        held.push(timeout(WAIT, called.recv()).await.expect("timed out"));
        raw.send(frame::DATA, frame::END_STREAM, last, b"abcd")
            .await;
        if i < RESET_BUDGET as u32 {
            assert_eq!(raw.rst(last).await, Reason::PROTOCOL_ERROR, "stream {last}");
        }
    }
    assert_eq!(raw.rst(last).await, Reason::PROTOCOL_ERROR);
    assert_eq!(raw.goaway().await, (last, Reason::ENHANCE_YOUR_CALM));
    server.ended().await;
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_after_the_idle_timeout_and_a_busy_one_does_not() {
    let idle = Duration::from_millis(150);
    // Busy past the timeout: the stream in flight keeps the connection; once it is
    // done, the idle clock starts.
    let (svc, mut called) = waiting();
    let (io, server) = start_with(svc, 64 * 1024, idle);
    let mut raw = Raw::connect(io, &[]).await;
    raw.get(1, "/").await;
    let (release, _dropped) = timeout(WAIT, called.recv())
        .await
        .expect("timed out")
        .expect("called");
    tokio::time::sleep(3 * idle).await; // the condition under test is time itself
    raw.send(frame::PING, 0, 0, b"stillok?").await;
    let (head, _) = raw.next_significant().await.expect("the PING ack");
    assert_eq!(head.kind, frame::PING, "the busy connection is still open");
    let _ = release.send(());
    let done = tokio::time::Instant::now();
    let (head, _) = raw.next_significant().await.expect("the response");
    assert_eq!((head.kind, head.stream), (frame::HEADERS, 1));
    let (head, _) = raw.next_significant().await.expect("its body");
    assert_eq!(head.kind, frame::DATA);
    assert_eq!(raw.goaway().await, (1, Reason::NO_ERROR));
    assert!(
        done.elapsed() >= idle,
        "GOAWAY came after {:?}",
        done.elapsed()
    );
    server.ended().await;
}

#[tokio::test]
async fn a_request_body_read_elsewhere_fails_when_the_connection_goes() {
    // The body is handed off (as hyper's client does with an upload) and the response
    // goes out at once; then the client vanishes mid-upload. The reader must see an
    // error, not wait forever.
    let (tx, mut rx) = mpsc::unbounded_channel::<bool>();
    let tx = Mutex::new(tx);
    let svc = service(move |req: Request<RequestBody>| {
        let tx = tx.lock().expect("not poisoned").clone();
        tokio::spawn(async move {
            let failed = req.into_body().collect().await.is_err();
            let _ = tx.send(failed);
        });
        async { Response::new(chunks(1024, 1000, None)) }
    });
    let (io, server) = start(svc, 64 * 1024);
    let mut raw = Raw::connect(io, &[]).await;
    let post = request_to("POST", "a", "/", &[]);
    raw.send(frame::HEADERS, frame::END_HEADERS, 1, &post).await;
    raw.send(frame::DATA, 0, 1, b"part of it").await;
    let (head, _) = raw.next_significant().await.expect("the response head");
    assert_eq!(head.kind, frame::HEADERS);
    drop(raw);
    let failed = timeout(WAIT, rx.recv())
        .await
        .expect("the body reader never finished")
        .expect("sent");
    assert!(failed, "a cut-off body must read as an error");
    let _ = timeout(WAIT, server.task)
        .await
        .expect("the connection ended");
}

#[tokio::test]
async fn a_lowered_header_table_size_is_acknowledged_in_the_next_header_block() {
    let (io, server) = start(ok_service(), 64 * 1024);
    let mut raw = Raw::connect(io, &[(frame::SETTINGS_HEADER_TABLE_SIZE, 0)]).await;
    raw.get(1, "/").await;
    let (head, block) = raw.next_significant().await.expect("the response head");
    assert_eq!(head.kind, frame::HEADERS);
    assert_eq!(block[0], 0x20, "a size update to 0 first: {block:?}");
    // Only once.
    raw.get(3, "/").await;
    let (head, _) = raw.next_significant().await.expect("the first body");
    assert_eq!(head.kind, frame::DATA);
    let (head, block) = raw.next_significant().await.expect("the second head");
    assert_eq!((head.kind, head.stream), (frame::HEADERS, 3));
    assert_ne!(block[0] & 0xe0, 0x20, "no second size update: {block:?}");
    drop(raw);
    server.ended().await;
}

#[tokio::test]
async fn a_zero_idle_timeout_turns_the_idle_close_off() {
    let (io, server) = start_with(ok_service(), 64 * 1024, Duration::ZERO);
    let mut raw = Raw::connect(io, &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the condition is time itself
    raw.get(1, "/").await;
    let (head, _) = raw
        .next_significant()
        .await
        .expect("the response, no GOAWAY");
    assert_eq!((head.kind, head.stream), (frame::HEADERS, 1));
    drop(raw);
    server.ended().await;
}
