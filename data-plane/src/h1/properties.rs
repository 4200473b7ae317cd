//! Property tests for the HTTP/1.1 engine's readers: the request head parser, the
//! chunked scanner and the response head parser never panic on any bytes; a request
//! head we encode reads back the same upstream; and, differentially, wherever we accept
//! a request, hyper's server reads the same bytes as the same message ending at the same
//! place with the same body (the smuggling property: where two readers could disagree on
//! where a message ends, we refuse). The chunk-size line is checked against httparse's.
//!
//! Cases: proptest's default (256) in the test command; `PROPTEST_CASES=100000 cargo
//! test -p routemaster-data-plane --lib properties` is the longer run for a bench
//! machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::Chunked;
use super::head::{Framing, RequestId};
use super::request::{Next, prepare};
use super::response::{self, ClientSide};
use crate::state::ProxyState;

const CLIENT: &str = "192.0.2.7:50000";
const SECOND: &[u8] = b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n";

/// A proxy state with one catch-all route to an address that is never dialled.
fn state() -> Arc<ProxyState> {
    static STATE: std::sync::OnceLock<Arc<ProxyState>> = std::sync::OnceLock::new();
    Arc::clone(STATE.get_or_init(|| {
        let yaml = "services:\n  - { name: up, instances: [{ address: \"127.0.0.1:9\" }] }\nroutes:\n  - { id: all, forward: { service: up } }\n";
        let path = Path::new("properties.yaml");
        let config = crate::file_source::parse(path, yaml).unwrap_or_else(|e| panic!("{e}"));
        let state = Arc::new(ProxyState::new());
        state.apply(crate::file_source::snapshot(path, 1, config));
        state
    }))
}

fn client() -> SocketAddr {
    CLIENT.parse().unwrap_or_else(|_| unreachable!())
}

/// How our engine reads a request: refused, not complete, or a message ending at `end`
/// whose body payload is `payload`, sent upstream as `upstream` (head and body).
#[derive(Debug, PartialEq)]
enum Ours {
    Refused,
    Incomplete,
    Message {
        end: usize,
        payload: Vec<u8>,
        upstream: Vec<u8>,
    },
}

fn ours(buf: &[u8]) -> Ours {
    let req = match prepare(buf, 64 * 1024, client(), &state()) {
        Err(_) => return Ours::Refused,
        Ok(None) => return Ours::Incomplete,
        Ok(Some(req)) => req,
    };
    let mut upstream = match req.next {
        Next::Forward { head, .. } => head,
        Next::Respond(..) => return Ours::Refused,
        Next::Bridge(_) => unreachable!("these properties route to http1 services only"),
    };
    let mut rest = buf[req.head_len..].to_vec();
    let (end, payload) = match req.body {
        Framing::Empty => (req.head_len, Vec::new()),
        Framing::Length(n) => match usize::try_from(n) {
            Ok(n) if n <= rest.len() => {
                upstream.extend_from_slice(&rest[..n]);
                (req.head_len + n, rest[..n].to_vec())
            }
            _ => return Ours::Incomplete,
        },
        Framing::Chunked => {
            let mut ranges = Vec::new();
            match Chunked::new().scan(&rest, |r| ranges.push(r)) {
                Err(_) => return Ours::Refused,
                Ok(p) if p.done => {
                    let payload = ranges.into_iter().flat_map(|r| rest[r].to_vec()).collect();
                    let n = p.compact(&mut rest, 0);
                    upstream.extend_from_slice(&rest[..n]);
                    (req.head_len + p.consumed, payload)
                }
                Ok(_) => return Ours::Incomplete,
            }
        }
        Framing::UntilClose => return Ours::Refused,
    };
    Ours::Message {
        end,
        payload,
        upstream,
    }
}

/// How hyper's HTTP/1.1 server reads the same bytes: each request's target and body
/// (or `None` when its body failed), once it has read `want` requests, failed, or 2 s
/// passed. The write side stays open (hyper stops at a half-close).
fn hyper_reads(buf: &[u8], want: usize) -> Vec<(String, Option<Vec<u8>>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let (mut near, far) = tokio::io::duplex(1 << 20);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let sink = Arc::clone(&sink);
            async move {
                let target = req.uri().to_string();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .ok()
                    .map(|b| b.to_bytes().to_vec());
                if let Ok(mut seen) = sink.lock() {
                    seen.push((target, body));
                }
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
            }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(far), service);
        let count = || seen.lock().map_or(0, |s| s.len());
        let _ = near.write_all(buf).await;
        let read = async {
            // Responses are read so the server never blocks on a full pipe.
            let mut out = [0u8; 4096];
            while count() < want {
                let read = tokio::time::timeout(Duration::from_millis(5), near.read(&mut out));
                if let Ok(Ok(0) | Err(_)) = read.await {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::select! {
                _ = conn => {}
                () = read => {}
            }
        })
        .await;
        seen.lock().map(|s| s.clone()).unwrap_or_default()
    })
}

/// A header line from the shapes request smuggling is made of.
fn framing_line() -> impl Strategy<Value = String> {
    let cl = prop_oneof![
        4 => Just("5"), 2 => Just("11"),
        1 => Just("0"), 1 => Just("5"), 1 => Just("11"), 1 => Just("05"), 1 => Just("+5"), 1 => Just("-1"), 1 => Just("5, 5"),
        1 => Just("5,6"), 1 => Just("5 5"), 1 => Just("abc"), 1 => Just("99999999999999999999"), 1 => Just(""),
    ];
    let te = prop_oneof![
        6 => Just("chunked"),
        1 => Just("chunked"), 1 => Just("Chunked"), 1 => Just("chunked "), 1 => Just("xchunked"),
        1 => Just("chunked, identity"), 1 => Just("identity"), 1 => Just("gzip, chunked"),
        1 => Just("\"chunked\""), 1 => Just("chunked\t"), 1 => Just("chunked;q=1"), 1 => Just(","),
        1 => Just("chunked,"),
    ];
    let name = prop_oneof![
        4 => Just(("Transfer-Encoding", ": ")),
        2 => Just(("Content-Length", ": ")),
        1 => Just(("Content-Length", ": ")), 1 => Just(("content-length", ":")),
        1 => Just(("Content-Length", " : ")), 1 => Just(("Content_Length", ": ")),
        1 => Just(("Transfer-Encoding", ": ")), 1 => Just(("transfer-encoding", ":\t")),
        1 => Just(("Transfer-Encoding", " : ")), 1 => Just(("Transfer_Encoding", ": ")),
        1 => Just((" Transfer-Encoding", ": ")),
    ];
    (name, cl, te).prop_map(|((name, sep), cl, te)| {
        let value = if name.to_ascii_lowercase().contains("length") {
            cl
        } else {
            te
        };
        format!("{name}{sep}{value}\r\n")
    })
}

/// A chunked-ish body: sizes, extensions, line ends and trailers with the usual tricks.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let size = prop_oneof![
        8 => Just("5"),
        1 => Just("5"), 1 => Just("05"), 1 => Just("0x5"), 1 => Just("5;a=b"), 1 => Just("5 ;a"), 1 => Just("5 "),
        1 => Just(" 5"), 1 => Just("-5"), 1 => Just("00000000000000005"), 1 => Just("5\r"), 1 => Just("5;a\u{b}"),
    ];
    let eol = prop_oneof![8 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r")];
    let trailer = prop_oneof![
        6 => Just(""),
        1 => Just(""), 1 => Just("X: y\r\n"), 1 => Just("X-T : a\r\n"), 1 => Just(" b\r\n"),
        1 => Just("GET /smuggled HTTP/1.1\r\nHost: h\r\n"), 1 => Just("X:\r\n"),
        1 => Just("Content-Length: 3\r\n"),
    ];
    (size, eol, any::<bool>(), trailer).prop_map(|(size, eol, two, trailer)| {
        let mut b = format!("{size}{eol}hello\r\n");
        if two {
            b.push_str("6\r\n world\r\n");
        }
        b.push_str("0\r\n");
        b.push_str(trailer);
        b.push_str("\r\n");
        b.into_bytes()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => chunked_body(),
        1 => Just(b"hello".to_vec()),
        1 => Just(b"hello world".to_vec()),
        1 => Just(b"0\r\n\r\n".to_vec()),
        1 => Just(Vec::new()),
    ]
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(framing_line(), 0..=2), body()).prop_map(|(lines, body)| {
        let mut m = b"POST /first HTTP/1.1\r\nHost: h\r\n".to_vec();
        for l in lines {
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(b"\r\n");
        m.extend_from_slice(&body);
        m.extend_from_slice(SECOND);
        m
    })
}

proptest! {
    #[test]
    fn request_parser_never_panics(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ours(&buf);
    }

    #[test]
    fn request_parser_never_panics_on_near_requests(
        mut buf in message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        for (at, byte) in flips {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        let _ = ours(&buf);
    }

    #[test]
    fn chunked_scanner_never_panics(buf in prop::collection::vec(any::<u8>(), 0..512), step in 1usize..64) {
        let mut c = Chunked::new();
        let mut pending = Vec::new();
        for piece in buf.chunks(step) {
            pending.extend_from_slice(piece);
            match c.scan(&pending, |_| {}) {
                Ok(p) => {
                    prop_assert!(p.forward <= p.consumed && p.consumed <= pending.len());
                    let n = p.compact(&mut pending, 0);
                    pending.drain(..n);
                    if p.done { break; }
                }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn response_parser_never_panics(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut out = Vec::new();
        let side = ClientSide { http10: false, head_method: false, keep_alive: true, websocket: false };
        let _ = response::prepare(&buf, side, &RequestId::from_client_or_new(None), None, 64 * 1024, &mut out);
    }

    /// Chunked bodies we encode are read back as the same payload, and what is passed
    /// on is the same framing without the trailers, however the bytes arrive.
    #[test]
    fn chunked_round_trip(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..5),
        ext in prop::option::of("[a-z]{1,5}=[a-z0-9]{0,5}"),
        trailers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..3),
        step in 1usize..50,
    ) {
        let mut framing = Vec::new();
        let mut encoded = Vec::new();
        for c in &chunks {
            let size = format!("{:x}", c.len());
            let line = match &ext { Some(e) => format!("{size};{e}\r\n"), None => format!("{size}\r\n") };
            for out in [&mut framing, &mut encoded] {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
        }
        framing.extend_from_slice(b"0\r\n\r\n");
        encoded.extend_from_slice(b"0\r\n");
        for (name, value) in &trailers {
            encoded.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
        }
        encoded.extend_from_slice(b"\r\n");
        encoded.extend_from_slice(SECOND);

        let mut c = Chunked::new();
        let (mut pending, mut payload, mut passed, mut total) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for piece in encoded.chunks(step) {
            pending.extend_from_slice(piece);
            let p = c.scan(&pending, |r| payload.extend_from_slice(&pending[r]))
                .map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&encoded))))?;
            total += p.consumed;
            let n = p.compact(&mut pending, 0);
            passed.extend_from_slice(&pending[..n]);
            pending.drain(..n);
            if p.done { break; }
        }
        prop_assert_eq!(payload, chunks.concat());
        prop_assert_eq!(passed, framing);
        prop_assert_eq!(total, encoded.len() - SECOND.len());
    }

    /// Differential: any chunk-size line we accept, httparse reads as the same size.
    #[test]
    fn chunk_sizes_agree_with_httparse(line in "[0-9a-fA-F]{1,17}([ \t]{0,2};[ -~]{0,8})?") {
        let input = format!("{line}\r\n");
        if Chunked::new().scan(input.as_bytes(), |_| {}).is_ok() {
            let digits: String = line.chars().take_while(char::is_ascii_hexdigit).collect();
            let size = u64::from_str_radix(&digits, 16)
                .map_err(|e| TestCaseError::fail(format!("{line:?} accepted: {e}")))?;
            match httparse::parse_chunk_size(input.as_bytes()) {
                Ok(httparse::Status::Complete((_, theirs))) => prop_assert_eq!(size, theirs, "{:?}", line),
                other => prop_assert!(false, "{line:?}: we read {size}, httparse {other:?}"),
            }
        }
    }

    /// Request heads we encode go upstream with the same method, target, host and
    /// fields, in order.
    #[test]
    fn request_heads_round_trip(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("PATCH"), Just("OPTIONS")],
        path in "(/[a-zA-Z0-9_~-]{1,8}){1,4}/?(\\?[a-z0-9=&]{0,10})?",
        host in "[a-z]{1,10}(\\.[a-z]{1,6}){0,2}(:[1-9][0-9]{0,3})?",
        fields in prop::collection::vec(("x-[a-z]{1,10}", "[!-~]([ !-~]{0,20}[!-~])?"), 0..6),
    ) {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in &fields {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        let req = prepare(raw.as_bytes(), 64 * 1024, client(), &state())
            .map_err(|e| TestCaseError::fail(format!("{e}: {raw:?}")))?
            .ok_or_else(|| TestCaseError::fail("incomplete"))?;
        prop_assert_eq!(req.head_len, raw.len());
        let Next::Forward { head, .. } = req.next else {
            return Err(TestCaseError::fail("not forwarded"));
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut up = httparse::Request::new(&mut headers);
        let parsed = up.parse(&head).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert!(parsed.is_complete());
        prop_assert_eq!(up.method, Some(method));
        prop_assert_eq!(up.path, Some(path.as_str()));
        let get = |n: &str| up.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).map(|h| h.value.to_vec()).collect::<Vec<_>>();
        prop_assert_eq!(get("host"), vec![host.as_bytes().to_vec()]);
        let theirs: Vec<(String, Vec<u8>)> = up.headers.iter()
            .filter(|h| h.name.starts_with("x-") && !h.name.starts_with("x-forwarded") && h.name != "x-request-id")
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        let sent: Vec<(String, Vec<u8>)> = fields.iter()
            .filter(|(n, _)| !n.starts_with("x-forwarded") && n != "x-request-id")
            .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(theirs, sent);
        super::buffers::give(head);
    }
}

proptest! {
    // Each case runs a hyper server; fewer cases keep the test command quick.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]

    /// The smuggling property, on both sides of the proxy. Upstream: what we send for a
    /// request we accept is read by hyper (a strict server) as exactly that request,
    /// with the same body, and the request after it starts where we say. Downstream:
    /// where hyper also accepts the client's bytes, it reads the same message ending at
    /// the same place (hyper refusing what RFC 9110 allows, such as `Content-Length:
    /// 5, 5`, is no disagreement on where the message ends: we send one clean value).
    #[test]
    fn where_we_accept_hyper_reads_the_same_message(buf in message()) {
        if let Ours::Message { end, payload, upstream } = ours(&buf) {
            let shown = String::from_utf8_lossy(&buf);
            let mut sent = upstream;
            sent.extend_from_slice(SECOND);
            let theirs = hyper_reads(&sent, 2);
            prop_assert_eq!(theirs.len(), 2, "{:?} went up as {:?}: hyper read {:?}", shown, String::from_utf8_lossy(&sent), theirs);
            prop_assert_eq!(&theirs[0].0, "/first", "{:?}", shown);
            prop_assert_eq!(theirs[0].1.as_deref(), Some(payload.as_slice()), "upstream body of {:?}", shown);
            prop_assert_eq!(&theirs[1].0, "/second", "{:?}", shown);

            let pipelined = &buf[end..] == SECOND;
            let theirs = hyper_reads(&buf, if pipelined { 2 } else { 1 });
            if let Some((target, Some(body))) = theirs.first() {
                prop_assert_eq!(target, "/first", "{:?}", shown);
                prop_assert_eq!(body, &payload, "body of {:?}", shown);
                if pipelined {
                    prop_assert_eq!(theirs.len(), 2, "{:?}: hyper read {:?}", shown, theirs);
                    prop_assert_eq!(&theirs[1].0, "/second", "{:?}", shown);
                }
            }
        }
    }
}

#[test]
fn the_smuggling_property_can_fail() {
    // A reader that ignored Transfer-Encoding would end this message early: hyper
    // reads it as chunked, so `ours` refusing it is what keeps the property true.
    let buf = b"POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(ours(buf), Ours::Refused);
    let theirs = hyper_reads(buf, 2);
    assert_eq!(theirs.first().map(|t| t.0.as_str()), Some("/first"));
    assert_eq!(theirs[0].1.as_deref(), Some(&b"hello"[..]));
}
