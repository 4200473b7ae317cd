//! Adversarial input against a real `routemaster-proxy` (standalone, short timeouts:
//! header read 1 s, I/O 1 s, keep-alive 2 s) over raw sockets on 127.0.0.1: one table
//! of `(name, bytes, expectation, what the backends may see)` rows, run in one loop.
//!
//! The backends are this file's own strict HTTP/1.1 servers, one per service (`/public`
//! and `/admin`, so a request routed to the wrong one shows): CRLF-only lines, a token
//! and the colon right after it, exactly one framing field, strict chunk sizes. They
//! record every request (method, target, fields, body, trailers) and every byte they
//! could not parse, and answer `200 ok <n>`.
//!
//! After every row: the client saw the expected answer — after a refused framing, a
//! closed connection (a follow-up request on it gets nothing); after a success, the
//! follow-up is served, which shows the proxy found the request boundary exactly; a
//! fresh `GET /public/ok` gets 200 (alive); and no backend saw `smuggled` anywhere,
//! unparseable bytes, trailer fields, hop-by-hop or ambiguous framing fields, or a
//! request without exactly one `host`, `x-forwarded-proto: http` and `x-request-id` (the
//! proxy wrote every head). At the end nothing is in flight and no connection is held.
//!
//! Attacks: CL.TE, TE.CL and TE.TE obfuscations; Content-Length forms; chunk-size and
//! trailer tricks (a request smuggled as trailer lines); request-line and field-line
//! malformations; oversized heads; path escapes (dot segments behind `%2e`, `%2F`, `;`,
//! `\`, `%5C`, overlong UTF-8, double encoding); Host/authority confusion (userinfo,
//! lists, ports, absolute-form vs Host); CONNECT; h2c and WebSocket upgrades; HTTP/2
//! with prior knowledge from hand-made frames and HPACK literals (H2.CL, H2.TE, CR/LF in
//! fields, `host` vs `:authority`, rapid reset, CONTINUATION flood); slowloris, a silent
//! connection, a stalled body; noise and a TLS ClientHello on the plain port.
//!
//! Judgement calls (RFC 9110 / 9112 / 9113), each also noted at its row:
//! - A 4xx from the routing phase (bad path or absolute-form authority, no route,
//!   CONNECT 405) follows a head with certain framing and no body, so the connection is
//!   kept (RFC 9112 §9.3: persistence is the default) and the follow-up is served; with
//!   an unread body it is closed. Every framing or head-syntax error closes.
//! - `HTTP/1.2` is 400, although RFC 9110 §2.5 says a higher minor version SHOULD be
//!   served as 1.1 (there is no 1.2; refusing is the strict side).
//! - Single SP in the request line; no lenient whitespace (RFC 9112 §3 allows either).
//! - A lowercase `get` is another method (RFC 9110 §9.1) and is forwarded as it is.
//! - The only upgrade is WebSocket (a GET with `Connection: upgrade` and exactly
//!   `Upgrade: websocket`), sent up as exactly that pair; any other `Upgrade` (h2c),
//!   `HTTP2-Settings` and `Connection` are hop-by-hop and dropped, and the request is
//!   served as plain HTTP/1.1 (RFC 9113 §3.1 deprecates the h2c upgrade).
//! - A transfer coding other than exactly `chunked` (`xchunked`, `chunked, identity`)
//!   is 501 (RFC 9112 §6.1) where §6.3 rule 4 would have 400; both refuse and close.
//! - Trailer fields are checked, then dropped (RFC 9110 §6.5.1, RFC 9112 §7.1.2 allow
//!   discarding them).
//! - A chunk size has at most 16 hex digits, leading zeros included.
//! - A head over 64 KiB is 431 even when the target is what is long (414 would also do).
//! - A body that stalls before the upstream answered gets 408 (the client is to blame,
//!   and it is counted as a downstream error), then the connection closes.
//! - A 4xx from the routing phase (bad path or host, 404, 405) on a request without a
//!   body keeps the connection open: its framing is certain, and the next request on
//!   the connection is served (rows check it). With a body it closes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{start, svc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The host every route serves.
const HOST: &str = "www.example.com";
/// `Host` line for hand-written heads.
const H: &str = "Host: www.example.com\r\n";
/// The liveness probe, on a fresh connection after every case.
const PROBE_PATH: &str = "/public/ok";
/// Sent on the same connection after a case's answers: must be served (the proxy
/// found the right request boundary) or meet a closed connection.
const FOLLOW_UP_PATH: &str = "/public/follow-up";
/// Longest wait for one response.
const RESPONSE_WAIT: Duration = Duration::from_secs(3);
/// Longest wait for the proxy to close after an error answer.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------
// The recording backend: a strict HTTP/1.1 server of its own.
// ---------------------------------------------------------------------------------

/// One request as a backend read it.
#[derive(Debug, Clone, Default)]
struct Seen {
    backend: &'static str,
    method: String,
    target: String,
    /// Lowercased names, trimmed values, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Non-empty lines of a chunked trailer section.
    trailers: Vec<String>,
    /// The whole message arrived (else the proxy closed mid-body).
    complete: bool,
}

impl Seen {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn is_harness(&self) -> bool {
        self.target == PROBE_PATH || self.target == FOLLOW_UP_PATH
    }

    fn describe(&self) -> String {
        format!(
            "{} saw {} {} {:?} body {:?} trailers {:?}{}",
            self.backend,
            self.method,
            self.target,
            self.headers,
            String::from_utf8_lossy(&self.body),
            self.trailers,
            if self.complete { "" } else { " (incomplete)" }
        )
    }
}

#[derive(Debug, Default)]
struct Log {
    seen: Vec<Seen>,
    /// Bytes a backend could not parse as a request, described.
    garbage: Vec<String>,
    /// Connections in the middle of a request right now.
    busy: usize,
    answered: u64,
}

#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

impl Recorder {
    fn marks(&self) -> (usize, usize) {
        let log = self.0.lock().unwrap();
        (log.seen.len(), log.garbage.len())
    }

    fn since(&self, (seen, garbage): (usize, usize)) -> (Vec<Seen>, Vec<String>) {
        let log = self.0.lock().unwrap();
        (log.seen[seen..].to_vec(), log.garbage[garbage..].to_vec())
    }

    fn busy(&self) -> usize {
        self.0.lock().unwrap().busy
    }
}

async fn start_backend(name: &'static str, rec: Recorder) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_recorded(name, stream, rec.clone()));
        }
    });
    addr
}

/// Why reading a request stopped.
enum Bad {
    /// The connection ended.
    Eof,
    /// Bytes that are not a well-formed request.
    Garbage(String),
}

fn garbage(why: &str, bytes: &[u8]) -> Bad {
    let shown = &bytes[..bytes.len().min(200)];
    Bad::Garbage(format!("{why}: {:?}", String::from_utf8_lossy(shown)))
}

/// A backend connection's read side with its unconsumed bytes.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn fill(&mut self) -> Result<(), Bad> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => Err(Bad::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// One CRLF-terminated line, without the CRLF. A bare LF or CR is garbage.
    async fn line(&mut self) -> Result<Vec<u8>, Bad> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                if i == 0 || self.buf[i - 1] != b'\r' {
                    return Err(garbage("bare LF", &self.buf[..=i]));
                }
                let line: Vec<u8> = self.buf.drain(..=i).take(i - 1).collect();
                if line.contains(&b'\r') {
                    return Err(garbage("bare CR", &line));
                }
                return Ok(line);
            }
            if self.buf.len() > 256 * 1024 {
                return Err(garbage("line too long", &self.buf));
            }
            self.fill().await?;
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, Bad> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Serves one upstream connection: request after request, each read strictly and
/// answered `200 ok <n>`; anything unparseable is recorded and ends the connection.
async fn serve_recorded(name: &'static str, stream: TcpStream, rec: Recorder) {
    let mut wire = Wire {
        stream,
        buf: Vec::new(),
    };
    loop {
        if wire.buf.is_empty() && wire.fill().await.is_err() {
            return; // closed between requests: fine
        }
        rec.0.lock().unwrap().busy += 1;
        let mut seen = Seen {
            backend: name,
            ..Seen::default()
        };
        let result = read_request(&mut wire, &mut seen).await;
        let answer = {
            let mut log = rec.0.lock().unwrap();
            log.busy -= 1;
            match result {
                Ok(()) => {
                    seen.complete = true;
                    log.seen.push(seen);
                    log.answered += 1;
                    Some(format!("ok {}", log.answered))
                }
                Err(Bad::Eof) if seen.method.is_empty() => {
                    log.garbage.push(format!(
                        "{name}: connection closed inside a request head: {:?}",
                        String::from_utf8_lossy(&wire.buf)
                    ));
                    None
                }
                Err(Bad::Eof) => {
                    log.seen.push(seen);
                    None
                }
                Err(Bad::Garbage(why)) => {
                    log.garbage.push(format!("{name}: {why}"));
                    if !seen.method.is_empty() {
                        log.seen.push(seen);
                    }
                    None
                }
            }
        };
        let Some(body) = answer else { return };
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: {name}\r\n\r\n{body}",
            body.len()
        );
        if wire.stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request: request line, field lines, then a Content-Length or chunked body
/// (exactly one framing, RFC 9112 §6.3). Fills `seen` as it goes.
async fn read_request(w: &mut Wire, seen: &mut Seen) -> Result<(), Bad> {
    let line = w.line().await?;
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = words[..] else {
        return Err(garbage("request line", &line));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(garbage("method", &line));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(garbage("request target", &line));
    }
    if version != b"HTTP/1.1" {
        return Err(garbage("version", &line));
    }
    seen.method = String::from_utf8_lossy(method).into_owned();
    seen.target = String::from_utf8_lossy(target).into_owned();
    loop {
        let line = w.line().await?;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(garbage("field line without a colon", &line));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(garbage("field name", &line));
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)
        {
            return Err(garbage("field value", &line));
        }
        seen.headers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value.trim_ascii()).into_owned(),
        ));
    }
    let coding: Vec<String> = seen
        .values("transfer-encoding")
        .into_iter()
        .map(str::to_owned)
        .collect();
    let length: Vec<String> = seen
        .values("content-length")
        .into_iter()
        .map(str::to_owned)
        .collect();
    match (&coding[..], &length[..]) {
        ([], []) => Ok(()),
        ([], [n]) => {
            if n.is_empty() || n.len() > 12 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(garbage("content-length", n.as_bytes()));
            }
            seen.body = w.exact(n.parse().unwrap()).await?;
            Ok(())
        }
        ([c], []) if c.eq_ignore_ascii_case("chunked") => read_chunked(w, seen).await,
        _ => Err(garbage(
            "ambiguous framing",
            format!("{coding:?} {length:?}").as_bytes(),
        )),
    }
}

async fn read_chunked(w: &mut Wire, seen: &mut Seen) -> Result<(), Bad> {
    loop {
        let line = w.line().await?;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 8 {
            return Err(garbage("chunk size", &line));
        }
        // RFC 9112 §7.1.1: BWS, then `;` and the extensions.
        let rest = &line[digits..];
        let ext = rest.trim_ascii_start();
        if !rest.is_empty() && !ext.starts_with(b";") {
            return Err(garbage("chunk size line", &line));
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap(), 16)
            .map_err(|_| garbage("chunk size", &line))?;
        if size == 0 {
            break;
        }
        let data = w.exact(size).await?;
        seen.body.extend_from_slice(&data);
        if w.exact(2).await? != b"\r\n" {
            return Err(garbage("chunk data not followed by CRLF", &data));
        }
    }
    loop {
        let line = w.line().await?;
        if line.is_empty() {
            return Ok(());
        }
        seen.trailers
            .push(String::from_utf8_lossy(&line).into_owned());
    }
}

/// What every request at a backend must look like, whatever the client sent.
fn invariant_violations(seen: &[Seen], garbage: &[String]) -> Vec<String> {
    let mut out: Vec<String> = garbage
        .iter()
        .map(|g| format!("unparseable bytes upstream: {g}"))
        .collect();
    for s in seen {
        let mut problems = Vec::new();
        let everything = format!(
            "{} {} {:?} {} {:?}",
            s.method,
            s.target,
            s.headers,
            String::from_utf8_lossy(&s.body),
            s.trailers
        );
        if everything.to_ascii_lowercase().contains("smuggled") {
            problems.push("a smuggled request (or part of one) reached it");
        }
        if !s.trailers.is_empty() {
            problems.push("trailer fields were forwarded");
        }
        if s.values("x-forwarded-proto") != ["http"] {
            problems.push("not exactly one `x-forwarded-proto: http`");
        }
        if s.values("x-request-id").len() != 1 {
            problems.push("not exactly one x-request-id");
        }
        if s.values("host").len() != 1 {
            problems.push("not exactly one host");
        }
        // A WebSocket upgrade is the one hop-by-hop pair we send (and only as exactly
        // `connection: upgrade` + `upgrade: websocket` on a GET).
        let websocket = s.method == "GET"
            && s.values("upgrade") == ["websocket"]
            && s.values("connection") == ["upgrade"];
        let hops: &[&str] = if websocket {
            &["te", "trailer", "keep-alive", "proxy-connection"]
        } else {
            &[
                "connection",
                "upgrade",
                "te",
                "trailer",
                "keep-alive",
                "proxy-connection",
            ]
        };
        for hop in hops {
            if !s.values(hop).is_empty() {
                problems.push("a hop-by-hop field was forwarded");
            }
        }
        if s.values("content-length").len() > 1
            || (!s.values("content-length").is_empty() && !s.values("transfer-encoding").is_empty())
        {
            problems.push("ambiguous framing fields");
        }
        for p in problems {
            out.push(format!("{p}: {}", s.describe()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// The client side: raw HTTP/1.1 on a socket.
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
enum Event {
    Response(Resp),
    /// EOF or a reset; the bytes of an incomplete response, if any.
    Closed(String),
    /// Nothing happened within the wait.
    Silent,
}

struct Client {
    read: OwnedReadHalf,
    /// `None` once handed to a pacing task.
    write: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (read, write) = stream.into_split();
        Self {
            read,
            write: Some(write),
            buf: Vec::new(),
        }
    }

    /// Writes `bytes`; errors are ignored (the proxy may have answered and closed).
    async fn send(&mut self, bytes: &[u8]) {
        if let Some(w) = self.write.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(3), w.write_all(bytes)).await;
        }
    }

    /// The next response, or how the connection ended, within `wait`.
    async fn next(&mut self, wait: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(resp) = self.parse() {
                return Event::Response(resp);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.read.read(&mut chunk)).await {
                Err(_) => return Event::Silent,
                Ok(Ok(0)) => return Event::Closed(String::from_utf8_lossy(&self.buf).into()),
                Ok(Err(_)) => return Event::Closed(String::from_utf8_lossy(&self.buf).into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A complete response at the start of the buffer (Content-Length bodies only;
    /// none when absent), consumed.
    fn parse(&mut self) -> Option<Resp> {
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        if self.buf.len() < head_end + len {
            return None;
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + len]).into_owned();
        self.buf.drain(..head_end + len);
        Some(Resp {
            status_line,
            status,
            headers,
            body,
        })
    }
}

fn follow_up() -> Vec<u8> {
    format!("GET {FOLLOW_UP_PATH} HTTP/1.1\r\n{H}\r\n").into_bytes()
}

/// `GET /public/ok` on a fresh connection: the proxy is alive and serving.
async fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut c = Client::connect(addr).await;
    c.send(format!("GET {PROBE_PATH} HTTP/1.1\r\n{H}Connection: close\r\n\r\n").as_bytes())
        .await;
    match c.next(RESPONSE_WAIT).await {
        Event::Response(r) if r.status == 200 && r.body.starts_with("ok ") => Ok(()),
        other => Err(format!("liveness probe: got {other:?}")),
    }
}

// ---------------------------------------------------------------------------------
// HTTP/2 frames by hand.
// ---------------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK "literal header field without indexing — new name", no Huffman.
fn hpack(name: &str, value: &[u8]) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value);
    out
}

/// A request's header block: the four pseudo-fields, then `extra`.
fn h2_block(method: &str, path: &[u8], authority: &[u8], extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = [
        hpack(":method", method.as_bytes()),
        hpack(":scheme", b"http"),
        hpack(":authority", authority),
        hpack(":path", path),
    ]
    .concat();
    for (name, value) in extra {
        block.extend(hpack(name, value));
    }
    block
}

/// The client preface and an empty SETTINGS, then `frames`.
fn h2_connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

/// Reads an HPACK integer with an `n`-bit prefix at `block[*i]`.
fn hpack_int(block: &[u8], i: &mut usize, n: u32) -> Option<usize> {
    let max = (1usize << n) - 1;
    let mut v = usize::from(*block.get(*i)?) & max;
    *i += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*i)?;
        *i += 1;
        v += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            return Some(v);
        }
    }
}

/// Decodes a Huffman string made of digits only (RFC 7541 Appendix B codes).
fn huffman_digits(raw: &[u8]) -> Option<String> {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in raw {
        for k in (0..8).rev() {
            acc = acc << 1 | u32::from(byte >> k & 1);
            bits += 1;
            match (bits, acc) {
                (5, 0..=2) => out.push(char::from(b'0' + acc as u8)),
                (6, 0b011001..=0b011111) => out.push(char::from(b'0' + (acc - 0b010110) as u8)),
                (b, _) if b < 6 => continue,
                // Possibly the padding (a prefix of EOS: up to 7 one bits).
                (b, a) if b < 8 && a == (1 << b) - 1 => continue,
                _ => return None,
            }
            (acc, bits) = (0, 0);
        }
    }
    // Padding: at most 7 one bits.
    (bits < 8 && acc == (1 << bits) - 1).then_some(out)
}

/// The `:status` at the start of a response header block, when the encoder put it
/// there as a static-table index or a literal with the `:status` name index.
fn h2_status(block: &[u8]) -> Option<u16> {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let mut i = 0;
    while block.get(i)? & 0xe0 == 0x20 {
        hpack_int(block, &mut i, 5)?; // dynamic table size update
    }
    let first = *block.get(i)?;
    let index = if first & 0x80 != 0 {
        let idx = hpack_int(block, &mut i, 7)?;
        return STATIC.get(idx.checked_sub(8)?).copied();
    } else if first & 0xc0 == 0x40 {
        hpack_int(block, &mut i, 6)?
    } else if first & 0xe0 == 0 {
        hpack_int(block, &mut i, 4)?
    } else {
        return None;
    };
    if !(8..=14).contains(&index) {
        return None;
    }
    let huffman = *block.get(i)? & 0x80 != 0;
    let len = hpack_int(block, &mut i, 7)?;
    let raw = block.get(i..i + len)?;
    let text = if huffman {
        huffman_digits(raw)?
    } else {
        String::from_utf8(raw.to_vec()).ok()?
    };
    text.parse().ok()
}

/// What came back on an HTTP/2 connection.
#[derive(Debug, Default)]
struct H2Seen {
    /// `:status` of stream 1.
    status: Option<u16>,
    /// RST_STREAM error code for stream 1.
    reset: Option<u32>,
    /// RST_STREAM frames for other streams.
    other_resets: usize,
    /// GOAWAY error code.
    goaway: Option<u32>,
    closed: bool,
}

// ---------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------

/// How the bytes go on the wire.
enum Delivery {
    /// All at once (one write).
    Burst(Vec<u8>),
    /// `head` at once, then `trickle` one byte every `every`; liveness probes run on
    /// other connections meanwhile.
    Trickle {
        head: Vec<u8>,
        trickle: Vec<u8>,
        every: Duration,
    },
}

/// After a case's answers, on the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Closed: nothing more is read from it (a follow-up request meets EOF).
    Close,
    /// Still open and a follow-up request gets 200: the boundary was found.
    Serve,
}

/// What the client must see.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Responses with these statuses, in order (each carries an x-request-id), then
    /// [`After`].
    Answers(&'static [u16], After),
    /// One of these statuses then close, or a close without any response (a framing
    /// error found once the head had gone upstream can only close).
    StatusOrClosed(&'static [u16]),
    /// Closed without a response.
    Closed,
    /// HTTP/2: stream 1 gets this `:status`.
    H2Status(u16),
    /// HTTP/2: stream 1 is refused — RST_STREAM, GOAWAY, a 4xx `:status` or a close;
    /// never a 2xx.
    H2Refused,
    /// HTTP/2: the connection is closed (a GOAWAY may come first).
    H2Ends,
}

/// A request a backend must have seen for this case.
#[derive(Debug, Clone)]
struct Saw {
    backend: &'static str,
    method: &'static str,
    target: String,
    body: &'static [u8],
    has: Vec<(&'static str, String)>,
    lacks: Vec<&'static str>,
}

fn saw(method: &'static str, target: &str) -> Saw {
    Saw {
        backend: "public",
        method,
        target: target.to_owned(),
        body: b"",
        has: Vec::new(),
        lacks: Vec::new(),
    }
}

impl Saw {
    fn at(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }
    fn body(mut self, body: &'static [u8]) -> Self {
        self.body = body;
        self
    }
    fn has(mut self, name: &'static str, value: &str) -> Self {
        self.has.push((name, value.to_owned()));
        self
    }
    fn lacks(mut self, names: &[&'static str]) -> Self {
        self.lacks.extend_from_slice(names);
        self
    }

    fn mismatch(&self, s: &Seen) -> Option<String> {
        let mut why = Vec::new();
        if s.backend != self.backend {
            why.push(format!("backend {} (want {})", s.backend, self.backend));
        }
        if s.method != self.method || s.target != self.target {
            why.push(format!(
                "request {} {} (want {} {})",
                s.method, s.target, self.method, self.target
            ));
        }
        if s.body != self.body {
            why.push(format!("body {:?}", String::from_utf8_lossy(&s.body)));
        }
        if !s.complete {
            why.push("incomplete".to_owned());
        }
        for (name, value) in &self.has {
            if s.values(name) != [value.as_str()] {
                why.push(format!("{name}: {:?} (want {value:?})", s.values(name)));
            }
        }
        for name in &self.lacks {
            if !s.values(name).is_empty() {
                why.push(format!("{name} present: {:?}", s.values(name)));
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// What the backends must have seen for a case (besides the invariants, and not
/// counting the probe and follow-up requests).
#[derive(Debug, Clone)]
enum Backend {
    Nothing,
    /// No complete request (the head of one the proxy then gave up on may arrive).
    NoneComplete,
    AtMost(usize),
    Exactly(Vec<Saw>),
}

struct Case {
    name: &'static str,
    delivery: Delivery,
    expect: Expect,
    backend: Backend,
    /// The whole exchange must be over within this.
    deadline: Duration,
}

fn row(name: &'static str, bytes: impl Into<Vec<u8>>, expect: Expect, backend: Backend) -> Case {
    Case {
        name,
        delivery: Delivery::Burst(bytes.into()),
        expect,
        backend,
        deadline: Duration::from_secs(6),
    }
}

/// These answers, then the connection is closed.
fn closes(statuses: &'static [u16]) -> Expect {
    Expect::Answers(statuses, After::Close)
}

/// These answers, then the connection serves a follow-up request.
fn serves(statuses: &'static [u16]) -> Expect {
    Expect::Answers(statuses, After::Serve)
}

// ---------------------------------------------------------------------------------
// Running a case.
// ---------------------------------------------------------------------------------

async fn run_h1(addr: SocketAddr, case: &Case) -> Result<String, String> {
    let mut c = Client::connect(addr).await;
    let mut pacer = None;
    let mut probes = None;
    match &case.delivery {
        Delivery::Burst(bytes) => c.send(bytes).await,
        Delivery::Trickle {
            head,
            trickle,
            every,
        } => {
            c.send(head).await;
            let mut write = c.write.take().unwrap();
            let (trickle, every) = (trickle.clone(), *every);
            pacer = Some(tokio::spawn(async move {
                for b in trickle {
                    if write.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(every).await;
                }
                // Keep our side open (no FIN) until the case is over.
                std::future::pending::<()>().await;
            }));
            // Other clients are served while this one dawdles.
            probes = Some(tokio::spawn(async move {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    probe(addr).await?;
                }
                Ok::<(), String>(())
            }));
        }
    }
    let result = expect_h1(&mut c, case.expect).await;
    if let Some(pacer) = pacer {
        pacer.abort();
    }
    if let Some(probes) = probes {
        probes
            .await
            .unwrap()
            .map_err(|e| format!("while this client dawdled, {e}"))?;
    }
    result
}

async fn expect_h1(c: &mut Client, expect: Expect) -> Result<String, String> {
    match expect {
        Expect::Answers(statuses, after) => {
            for (i, want) in statuses.iter().enumerate() {
                let r = match c.next(RESPONSE_WAIT).await {
                    Event::Response(r) if r.status == *want => r,
                    other => return Err(format!("answer {}: want {want}, got {other:?}", i + 1)),
                };
                if !r.status_line.starts_with("HTTP/1.1 ") {
                    return Err(format!("status line {:?}", r.status_line));
                }
                if r.header("x-request-id").is_none() {
                    return Err(format!("answer {} has no x-request-id: {r:?}", i + 1));
                }
                let says_close = r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if after == After::Close && i + 1 == statuses.len() && !says_close {
                    return Err(format!(
                        "the {want} before a close lacks `connection: close`"
                    ));
                }
            }
            // The same connection must be closed, or serve the next request.
            c.send(&follow_up()).await;
            match (after, c.next(CLOSE_WAIT).await) {
                (After::Close, Event::Closed(rest)) if rest.is_empty() => {
                    Ok(format!("{statuses:?}, closed"))
                }
                (After::Serve, Event::Response(r))
                    if r.status == 200 && r.header("x-backend") == Some("public") =>
                {
                    Ok(format!("{statuses:?}, follow-up served"))
                }
                (After::Close, other) => Err(format!(
                    "the connection stayed open after the answer: a follow-up request got {other:?}"
                )),
                (After::Serve, other) => Err(format!(
                    "a follow-up request on the same connection got {other:?}"
                )),
            }
        }
        Expect::StatusOrClosed(codes) => match c.next(RESPONSE_WAIT).await {
            Event::Closed(rest) if rest.is_empty() => Ok("closed, no response".into()),
            Event::Response(r) if codes.contains(&r.status) => match c.next(CLOSE_WAIT).await {
                Event::Closed(rest) if rest.is_empty() => Ok(format!("{}, closed", r.status)),
                other => Err(format!("not closed after the {}: {other:?}", r.status)),
            },
            other => Err(format!("want one of {codes:?} or a close, got {other:?}")),
        },
        Expect::Closed => match c.next(RESPONSE_WAIT).await {
            Event::Closed(rest) if rest.is_empty() => Ok("closed, no response".into()),
            other => Err(format!("want a close without a response, got {other:?}")),
        },
        Expect::H2Status(_) | Expect::H2Refused | Expect::H2Ends => {
            unreachable!("HTTP/2 cases run in run_h2")
        }
    }
}

async fn run_h2(
    addr: SocketAddr,
    bytes: &[u8],
    expect: Expect,
    wait: Duration,
) -> Result<String, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tx.send(bytes.to_vec()).unwrap();
    // Writes in its own task, so a flood the server stops reading cannot block us.
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if write.write_all(&b).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    });
    let mut got = H2Seen::default();
    let mut buf = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf.drain(..9 + len).skip(9).collect();
            let code = |at: usize| {
                payload
                    .get(at..at + 4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            };
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = tx.send(frame(SETTINGS, ACK, 0, &[]));
                }
                HEADERS if stream == 1 => got.status = got.status.or_else(|| h2_status(&payload)),
                RST_STREAM if stream == 1 => got.reset = code(0),
                RST_STREAM => got.other_resets += 1,
                GOAWAY => got.goaway = code(4),
                _ => {}
            }
        }
        let settled = match expect {
            Expect::H2Ends => false,
            _ => got.status.is_some() || got.reset.is_some() || got.goaway.is_some(),
        };
        if settled || got.closed {
            break;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(end, read.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => got.closed = true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    writer.abort();
    let refused = got.reset.is_some() || got.goaway.is_some() || got.closed;
    let ok = match expect {
        Expect::H2Status(want) => got.status == Some(want),
        Expect::H2Refused => match got.status {
            Some(status) => status >= 400,
            None => refused,
        },
        Expect::H2Ends => got.closed,
        _ => unreachable!("HTTP/1.1 cases run in run_h1"),
    };
    if ok {
        Ok(format!("{got:?}"))
    } else {
        Err(format!("want {expect:?}, got {got:?}"))
    }
}

/// Waits (bounded) until no backend connection is in the middle of a request.
async fn settle(rec: &Recorder) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while rec.busy() > 0 {
        if Instant::now() > deadline {
            return Err("a backend connection is still inside a request after 5s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn check_backend(want: &Backend, seen: &[&Seen]) -> Vec<String> {
    let list = || {
        seen.iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join("\n      ")
    };
    match want {
        Backend::Nothing if !seen.is_empty() => {
            vec![format!(
                "no request should reach a backend, but:\n      {}",
                list()
            )]
        }
        Backend::NoneComplete if seen.iter().any(|s| s.complete) => {
            vec![format!(
                "no complete request should reach a backend, but:\n      {}",
                list()
            )]
        }
        Backend::AtMost(n) if seen.len() > *n => {
            vec![format!(
                "at most {n} requests should reach a backend, got {}",
                seen.len()
            )]
        }
        Backend::Exactly(saws) if saws.len() != seen.len() => vec![format!(
            "want {} request(s) upstream, got {}:\n      {}",
            saws.len(),
            seen.len(),
            list()
        )],
        Backend::Exactly(saws) => saws
            .iter()
            .zip(seen)
            .filter_map(|(w, s)| {
                w.mismatch(s)
                    .map(|m| format!("upstream request: {m}\n      {}", s.describe()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------
// Payloads.
// ---------------------------------------------------------------------------------

/// What a successful smuggling attack would make a backend read on its own.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: www.example.com\r\n\r\n";

/// `POST target` with `Host`, then `fields` (complete lines), then `body`.
fn post(target: &str, fields: &str, body: &str) -> Vec<u8> {
    format!("POST {target} HTTP/1.1\r\n{H}{fields}\r\n{body}").into_bytes()
}

/// `GET target` with `Host` and `fields`.
fn get(target: &str, fields: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\n{H}{fields}\r\n").into_bytes()
}

/// A chunked POST whose body is `chunked` (framing included).
fn chunked(target: &str, chunked: &str) -> Vec<u8> {
    post(target, "Transfer-Encoding: chunked\r\n", chunked)
}

/// Deterministic noise.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A plausible TLS 1.3 ClientHello for www.example.com offering h2 and http/1.1.
fn client_hello() -> Vec<u8> {
    fn u16be(n: usize) -> [u8; 2] {
        u16::try_from(n).unwrap().to_be_bytes()
    }
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend(u16be(data.len()));
        out.extend_from_slice(data);
    }
    let sni = HOST.as_bytes();
    let mut exts = Vec::new();
    let mut name = u16be(sni.len() + 3).to_vec();
    name.push(0);
    name.extend(u16be(sni.len()));
    name.extend_from_slice(sni);
    ext(&mut exts, 0x0000, &name);
    ext(&mut exts, 0x000a, &[0, 4, 0, 0x1d, 0, 0x17]); // x25519, secp256r1
    ext(&mut exts, 0x000d, &[0, 4, 0x04, 0x03, 0x08, 0x04]); // signature algorithms
    let alpn = [&[2u8][..], b"h2", &[8], b"http/1.1"].concat();
    ext(&mut exts, 0x0010, &[&u16be(alpn.len())[..], &alpn].concat());
    ext(&mut exts, 0x002b, &[4, 3, 4, 3, 3]); // TLS 1.3, 1.2
    let mut key_share = vec![0, 0x24, 0, 0x1d, 0, 0x20];
    key_share.extend(noise(32));
    ext(&mut exts, 0x0033, &key_share);
    let mut hello = vec![3, 3];
    hello.extend(noise(32)); // random
    hello.push(32);
    hello.extend(noise(64)[32..].iter()); // legacy session id
    hello.extend([0, 6, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]); // cipher suites
    hello.extend([1, 0]); // null compression
    hello.extend(u16be(exts.len()));
    hello.extend(exts);
    let mut handshake = vec![1];
    handshake.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 3, 1];
    record.extend(u16be(handshake.len()));
    record.extend(handshake);
    record
}

/// 1000 streams opened and cancelled at once (CVE-2023-44487).
fn rapid_reset() -> Vec<u8> {
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .flat_map(|i| {
            let id = 2 * i + 1;
            let block = h2_block("GET", b"/public/rapid-reset", HOST.as_bytes(), &[]);
            [
                frame(HEADERS, END_STREAM | END_HEADERS, id, &block),
                frame(RST_STREAM, 0, id, &8u32.to_be_bytes()), // CANCEL
            ]
        })
        .collect();
    h2_connection(&frames)
}

/// A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION
/// frames of 16 KiB totalling over 1 MiB (CVE-2024-27316 and kin).
fn continuation_flood() -> Vec<u8> {
    let mut frames = vec![frame(
        HEADERS,
        END_STREAM,
        1,
        &h2_block("GET", b"/public/continuation", HOST.as_bytes(), &[]),
    )];
    let field = hpack("x-flood", &[b'a'; 100]);
    let filler: Vec<u8> = field.iter().copied().cycle().take(16 * 1024).collect();
    for _ in 0..70 {
        frames.push(frame(CONTINUATION, 0, 1, &filler));
    }
    h2_connection(&frames)
}

// ---------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------

fn cases() -> Vec<Case> {
    use Backend::{AtMost, Exactly, NoneComplete, Nothing};
    use Expect::{Closed, H2Ends, H2Refused, H2Status, StatusOrClosed};
    let s = SMUGGLED;
    // A body that ends at its zero chunk for a TE reader and runs on for a CL reader.
    let zero_then = format!("0\r\n\r\n{s}");
    let cl_all = format!("Content-Length: {}\r\n", zero_then.len());
    let hello = "5\r\nhello\r\n0\r\n\r\n";
    let bad_chunk = |body: &str| chunked("/public/chunk", body);

    vec![
        // --- Content-Length vs Transfer-Encoding (RFC 9112 §6.1, §6.3) ---
        // §6.1: a server MAY reject a message with both, and must close after it
        // (it cannot know where the message ends for the next hop).
        row(
            "CL.TE: Content-Length then Transfer-Encoding",
            post(
                "/public/clte",
                &format!("{cl_all}Transfer-Encoding: chunked\r\n"),
                &zero_then,
            ),
            closes(&[400]),
            Nothing,
        ),
        row(
            "TE.CL: Transfer-Encoding then Content-Length",
            post(
                "/public/tecl",
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{:x}\r\n{s}\r\n0\r\n\r\n", s.len()),
            ),
            closes(&[400]),
            Nothing,
        ),
        // Judgement: RFC 9112 §6.1 says 501 for a coding not understood, §6.3 rule 4
        // says 400 when chunked is not the final coding; both refuse and close. 501.
        row(
            "TE.TE: xchunked",
            post("/public/te", "Transfer-Encoding: xchunked\r\n", &zero_then),
            closes(&[501]),
            Nothing,
        ),
        // §5.1: whitespace between name and colon MUST be rejected with 400.
        row(
            "TE.TE: space before the colon",
            post(
                "/public/te",
                &format!("Transfer-Encoding : chunked\r\n{cl_all}"),
                &zero_then,
            ),
            closes(&[400]),
            Nothing,
        ),
        // Judgement: a coding list whose only member we can frame is `chunked`: any
        // other member (identity was dropped from the registry) is 501, not ignored.
        row(
            "TE.TE: chunked and identity on two lines",
            post(
                "/public/te",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                &zero_then,
            ),
            closes(&[501]),
            Nothing,
        ),
        row(
            "TE.TE: chunked, identity",
            post(
                "/public/te",
                "Transfer-Encoding: chunked, identity\r\n",
                &zero_then,
            ),
            closes(&[501]),
            Nothing,
        ),
        row(
            "TE.TE: identity, chunked",
            post(
                "/public/te",
                "Transfer-Encoding: identity, chunked\r\n",
                &zero_then,
            ),
            closes(&[501]),
            Nothing,
        ),
        // §6.1: chunked MUST NOT be applied more than once; refused rather than
        // de-chunked once (a backend would de-chunk twice).
        row(
            "TE.TE: chunked on two lines",
            post(
                "/public/te",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                hello,
            ),
            closes(&[501]),
            Nothing,
        ),
        // §5.6.3: OWS may be a tab; this is a valid chunked request.
        row(
            "TE: tab as OWS (valid)",
            post("/public/te-tab", "Transfer-Encoding:\tchunked\r\n", hello),
            serves(&[200]),
            Exactly(vec![
                saw("POST", "/public/te-tab")
                    .body(b"hello")
                    .has("transfer-encoding", "chunked"),
            ]),
        ),
        // §7: coding names are case-insensitive.
        row(
            "TE: CHUNKED in capitals (valid)",
            post("/public/te-caps", "Transfer-Encoding: CHUNKED\r\n", hello),
            serves(&[200]),
            Exactly(vec![
                saw("POST", "/public/te-caps")
                    .body(b"hello")
                    .has("transfer-encoding", "chunked"),
            ]),
        ),
        // §5.2: obs-fold in a request MUST be rejected (400) or replaced by SP;
        // rejected.
        row(
            "TE.TE: obs-fold continuation line",
            post(
                "/public/te",
                &format!("Transfer-Encoding:\r\n chunked\r\n{cl_all}"),
                &zero_then,
            ),
            closes(&[400]),
            Nothing,
        ),
        row(
            "TE.TE: quoted \"chunked\"",
            post(
                "/public/te",
                "Transfer-Encoding: \"chunked\"\r\n",
                &zero_then,
            ),
            closes(&[501]),
            Nothing,
        ),
        // Not a token problem (`_` is a tchar) but CGI maps `_` and `-` to the same
        // variable: refused as a framing-field look-alike.
        row(
            "TE.TE: Transfer_Encoding (underscore)",
            post(
                "/public/te",
                &format!("Transfer_Encoding: chunked\r\n{cl_all}"),
                &zero_then,
            ),
            closes(&[400]),
            Nothing,
        ),
        row(
            "CL: Content_Length (underscore)",
            post("/public/cl", "Content_Length: 5\r\n", "hello"),
            closes(&[400]),
            Nothing,
        ),
        // §5.5: field values are VCHAR/obs-text/SP/HTAB; VT and NUL are invalid.
        row(
            "TE.TE: vertical tab in the value",
            post("/public/te", "Transfer-Encoding: chunked\x0b\r\n", hello),
            closes(&[400]),
            Nothing,
        ),
        row(
            "TE.TE: NUL in the value",
            post("/public/te", "Transfer-Encoding: chun\0ked\r\n", hello),
            closes(&[400]),
            Nothing,
        ),
        // §6.1: a server that receives TE in HTTP/1.0 MUST treat framing as faulty
        // and close.
        row(
            "TE in HTTP/1.0",
            format!("POST /public/te HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n{zero_then}"),
            closes(&[400]),
            Nothing,
        ),
        // --- Content-Length values (RFC 9110 §8.6, RFC 9112 §6.3 rule 5) ---
        row(
            "CL: +5",
            post("/public/cl", "Content-Length: +5\r\n", "hello"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "CL: -1",
            post("/public/cl", "Content-Length: -1\r\n", "hello"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "CL: 0x5",
            post("/public/cl", "Content-Length: 0x5\r\n", "hello"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "CL: 5, 6",
            post("/public/cl", "Content-Length: 5, 6\r\n", "hello!"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "CL: two lines 5 and 6",
            post(
                "/public/cl",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "hello!",
            ),
            closes(&[400]),
            Nothing,
        ),
        // §8.6: identical repeated values MAY be accepted as one; we forward one line.
        row(
            "CL: two identical lines (valid)",
            post(
                "/public/cl-twice",
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                "hello",
            ),
            serves(&[200]),
            Exactly(vec![
                saw("POST", "/public/cl-twice")
                    .body(b"hello")
                    .has("content-length", "5"),
            ]),
        ),
        row(
            "CL: 5, 5 (valid)",
            post("/public/cl-list", "Content-Length: 5, 5\r\n", "hello"),
            serves(&[200]),
            Exactly(vec![
                saw("POST", "/public/cl-list")
                    .body(b"hello")
                    .has("content-length", "5"),
            ]),
        ),
        // 1*DIGIT allows leading zeros; the value goes upstream canonical.
        row(
            "CL: 005 (valid)",
            post("/public/cl-zeros", "Content-Length: 005\r\n", "hello"),
            serves(&[200]),
            Exactly(vec![
                saw("POST", "/public/cl-zeros")
                    .body(b"hello")
                    .has("content-length", "5"),
            ]),
        ),
        row(
            "CL: 20 digits (beyond u64)",
            post(
                "/public/cl",
                "Content-Length: 18446744073709551621\r\n",
                "hello",
            ),
            closes(&[400]),
            Nothing,
        ),
        // What follows a Content-Length body is the next request, and it is read
        // and routed by us (our x-forwarded-* and x-request-id on both).
        row(
            "CL shorter than the data: the rest is the next request",
            post(
                "/public/short",
                "Content-Length: 5\r\n",
                &format!("helloGET /public/second HTTP/1.1\r\n{H}X-Pipelined: yes\r\n\r\n"),
            ),
            serves(&[200, 200]),
            Exactly(vec![
                saw("POST", "/public/short").body(b"hello"),
                saw("GET", "/public/second").has("x-pipelined", "yes"),
            ]),
        ),
        // The same after a chunked body: the zero chunk ends it exactly.
        row(
            "chunked body then a pipelined request",
            chunked(
                "/public/chunked-first",
                &format!("{hello}GET /public/second HTTP/1.1\r\n{H}X-Pipelined: yes\r\n\r\n"),
            ),
            serves(&[200, 200]),
            Exactly(vec![
                saw("POST", "/public/chunked-first").body(b"hello"),
                saw("GET", "/public/second").has("x-pipelined", "yes"),
            ]),
        ),
        // What a TE-only backend would read as a second request after the zero chunk
        // is read by us as one: routed (no route for /smuggled: 404), never relayed.
        row(
            "a request after the zero chunk is ours to route",
            chunked("/public/zero", &zero_then),
            serves(&[200, 404]),
            Exactly(vec![saw("POST", "/public/zero")]),
        ),
        // --- chunk-size lines (RFC 9112 §7.1): `1*HEXDIG [BWS ; ext] CRLF` ---
        // A malformed chunk found with the head in hand is 400; found after the head
        // went upstream it can only close both sides.
        row(
            "chunk size 0x5",
            bad_chunk("0x5\r\nhello\r\n0\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "chunk size with a leading space",
            bad_chunk(" 5\r\nhello\r\n0\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        // BWS is only allowed before `;`: a bare trailing space is refused.
        row(
            "chunk size with a trailing space and no extension",
            bad_chunk("5 \r\nhello\r\n0\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "chunk size -5",
            bad_chunk("-5\r\nhello\r\n0\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        // Judgement: at most 16 hex digits, leading zeros included.
        row(
            "chunk size of 17 hex digits (value 5)",
            bad_chunk("00000000000000005\r\nhello\r\n0\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "chunk size beyond 2^64",
            bad_chunk("FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "chunk size line ended by a bare LF",
            bad_chunk(&format!("5\nhello\r\n0\r\n\r\n{s}")),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "chunk data longer than its size",
            bad_chunk(&format!("5\r\nhello{s}\r\n0\r\n\r\n")),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "chunk extension 5;ext=x (valid)",
            chunked("/public/chunk-ext", "5;ext=x\r\nhello\r\n0\r\n\r\n"),
            serves(&[200]),
            Exactly(vec![saw("POST", "/public/chunk-ext").body(b"hello")]),
        ),
        row(
            "chunk extension after BWS, 5 ;ext (valid)",
            chunked("/public/chunk-bws", "5 ;ext\r\nhello\r\n0\r\n\r\n"),
            serves(&[200]),
            Exactly(vec![saw("POST", "/public/chunk-bws").body(b"hello")]),
        ),
        // --- trailer section (RFC 9112 §7.1.2): field lines only, then dropped ---
        row(
            "trailer: a request smuggled as trailer lines",
            bad_chunk(&format!("5\r\nhello\r\n0\r\nX: y\r\n{s}")),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "trailer: obs-fold",
            bad_chunk("5\r\nhello\r\n0\r\nX-A: a\r\n b\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        row(
            "trailer: space before the colon",
            bad_chunk("5\r\nhello\r\n0\r\nX-A : a\r\n\r\n"),
            StatusOrClosed(&[400]),
            NoneComplete,
        ),
        // §7.1.2: a recipient may discard trailers; the backend gets the body only.
        row(
            "trailer: a valid X-Sum is dropped",
            chunked("/public/trailer", "5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"),
            serves(&[200]),
            Exactly(vec![saw("POST", "/public/trailer").body(b"hello")]),
        ),
        // --- request line (RFC 9112 §3) ---
        // §3: single SP separators. Lenient whitespace parsing is allowed (MAY) but
        // not done: refusing is the safe side of the "parsers could disagree" rule.
        row(
            "request line: double space",
            format!("GET  /public/x HTTP/1.1\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "request line: trailing space",
            format!("GET /public/x HTTP/1.1 \r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "request line: tabs as separators",
            format!("GET\t/public/x\tHTTP/1.1\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        // Judgement: RFC 9110 §2.5 says a higher minor version SHOULD be served as
        // 1.1; there is no HTTP/1.2, and refusing unknown versions is the strict side
        // (505 would be the more specific code).
        row(
            "request line: HTTP/1.2",
            format!("GET /public/x HTTP/1.2\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "request line: HTTP/2.0 with an HTTP/1 head",
            format!("GET /public/x HTTP/2.0\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "request line: lowercase version",
            format!("GET /public/x http/1.1\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "request line: non-ASCII target",
            format!("GET /public/caf\u{e9} HTTP/1.1\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "request line: HTTP/0.9 style, no version",
            "GET /public/x\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        // Judgement: methods are case-sensitive (RFC 9110 §9.1), so `get` is an
        // unknown extension method, which a proxy forwards as it is.
        row(
            "request line: lowercase method",
            format!("get /public/lower HTTP/1.1\r\n{H}\r\n"),
            serves(&[200]),
            Exactly(vec![saw("get", "/public/lower")]),
        ),
        // RFC 9112 §3 suggests 414 for a long target; the whole head is over the
        // 64 KiB limit, which is 431 here.
        row(
            "request line: 70 KiB target",
            format!("GET /public/{} HTTP/1.1\r\n{H}\r\n", "a".repeat(70 * 1024)),
            closes(&[431]),
            Nothing,
        ),
        // --- field lines (RFC 9112 §5, RFC 9110 §5.5) ---
        row(
            "field: space before the colon",
            get("/public/x", "X-A : b\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "field: no colon",
            get("/public/x", "X-A b\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "field: name is not a token",
            get("/public/x", "X(A): b\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "field: NUL in a value",
            get("/public/x", "X-A: a\0b\r\n"),
            closes(&[400]),
            Nothing,
        ),
        // RFC 9112 §2.2: a bare CR MUST be treated as invalid (or replaced by SP).
        row(
            "field: bare CR in a value",
            get("/public/x", "X-A: a\rGET /smuggled HTTP/1.1\r\n"),
            closes(&[400]),
            Nothing,
        ),
        // RFC 9112 §2.2: whitespace before the first field line: reject or ignore.
        row(
            "field: whitespace before the first field line",
            format!("GET /public/x HTTP/1.1\r\n X-A: b\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        // RFC 9112 §3.2: more than one Host MUST be answered 400.
        row(
            "field: two Host lines",
            format!("GET /public/x HTTP/1.1\r\n{H}Host: evil.example\r\n\r\n"),
            closes(&[400]),
            Nothing,
        ),
        row(
            "field: 200 fields",
            get(
                "/public/x",
                &(0..200)
                    .map(|i| format!("X-F{i}: v\r\n"))
                    .collect::<String>(),
            ),
            closes(&[431]),
            Nothing,
        ),
        row(
            "field: one 100 KiB value",
            get(
                "/public/x",
                &format!("X-Big: {}\r\n", "a".repeat(100 * 1024)),
            ),
            closes(&[431]),
            Nothing,
        ),
        // --- paths: what we route on is what goes upstream (RFC 3986 §5.2.4) ---
        // Judgement (RFC 9112 §9.3, connections persist unless a side closes): a path
        // or authority refused while routing comes from a head whose framing is
        // certain (no body), so the 4xx keeps the connection; the follow-up request
        // on it is served, which shows the next boundary was found exactly. A refusal
        // with an unread body closes instead (rows after the path rows).
        row(
            "path: /public/%2e%2e/admin is /admin",
            get("/public/%2e%2e/admin", ""),
            serves(&[200]),
            Exactly(vec![saw("GET", "/admin").at("admin")]),
        ),
        row(
            "path: %2e%2e above the root",
            get("/public/%2e%2e/%2e%2e/x", ""),
            serves(&[400]),
            Nothing,
        ),
        // Only one decoding: %25 stays, so the backend gets the same literal path.
        row(
            "path: double encoding %252e%252e is not a dot segment",
            get("/public/%252e%252e/admin", ""),
            serves(&[200]),
            Exactly(vec![saw("GET", "/public/%252e%252e/admin")]),
        ),
        row(
            "path: %00",
            get("/public/a%00b", ""),
            serves(&[400]),
            Nothing,
        ),
        row(
            "path: overlong UTF-8 %c0%ae%c0%ae",
            get("/public/%c0%ae%c0%ae/admin", ""),
            serves(&[400]),
            Nothing,
        ),
        row(
            "path: overlong UTF-8, three bytes %e0%80%ae",
            get("/public/%e0%80%ae%e0%80%ae/admin", ""),
            serves(&[400]),
            Nothing,
        ),
        row(
            "path: raw backslash",
            get("/public/..\\admin", ""),
            serves(&[400]),
            Nothing,
        ),
        row(
            "path: %5c",
            get("/public/..%5cadmin", ""),
            serves(&[400]),
            Nothing,
        ),
        row(
            "path: ..;/ (Tomcat path parameter)",
            get("/public/..;/admin", ""),
            serves(&[400]),
            Nothing,
        ),
        row(
            "path: ..%2f",
            get("/public/..%2fadmin", ""),
            serves(&[400]),
            Nothing,
        ),
        // RFC 9112 §3.2: a target has no fragment.
        row(
            "path: # in the target",
            get("/public/x#/../../admin", ""),
            closes(&[400]),
            Nothing,
        ),
        // A routing refusal with a body it did not read must not keep the connection:
        // the body would be read as the next request.
        row(
            "refused path with a Content-Length body that hides a request",
            post(
                "/public/..%2fadmin",
                &format!("Content-Length: {}\r\n", s.len()),
                s,
            ),
            closes(&[400]),
            Nothing,
        ),
        row(
            "refused path with a chunked body that hides a request",
            chunked(
                "/public/..%2fadmin",
                &format!("{:x}\r\n{s}\r\n0\r\n\r\n", s.len()),
            ),
            closes(&[400]),
            Nothing,
        ),
        row(
            "no route, with a body that hides a request",
            format!(
                "POST /nowhere HTTP/1.1\r\n{H}Content-Length: {}\r\n\r\n{s}",
                s.len()
            ),
            closes(&[404]),
            Nothing,
        ),
        // --- Host and authority (RFC 9112 §3.2, RFC 3986 §3.2) ---
        row(
            "Host: localhost@internal.example",
            "GET /public/x HTTP/1.1\r\nHost: localhost@internal.example\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "Host: www.example.com:80@evil.example",
            "GET /public/x HTTP/1.1\r\nHost: www.example.com:80@evil.example\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "Host: a list",
            "GET /public/x HTTP/1.1\r\nHost: www.example.com, evil.example\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "Host: port 99999",
            "GET /public/x HTTP/1.1\r\nHost: www.example.com:99999\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "Host: empty port",
            "GET /public/x HTTP/1.1\r\nHost: www.example.com:\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "Host: space inside",
            "GET /public/x HTTP/1.1\r\nHost: www.exa mple.com\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "Host: empty",
            "GET /public/x HTTP/1.1\r\nHost: \r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "Host: missing in HTTP/1.1",
            "GET /public/x HTTP/1.1\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
        row(
            "absolute-form with userinfo",
            format!("GET http://u@www.example.com/public/x HTTP/1.1\r\n{H}\r\n"),
            serves(&[400]),
            Nothing,
        ),
        // RFC 9112 §3.2.2: the absolute-form's authority wins over Host, and what is
        // routed on is what the backend is told.
        row(
            "absolute-form wins over a different Host",
            "GET http://www.example.com/public/abs HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            serves(&[200]),
            Exactly(vec![
                saw("GET", "/public/abs")
                    .has("host", HOST)
                    .has("x-forwarded-host", HOST),
            ]),
        ),
        row(
            "absolute-form for another host is not routed by Host",
            format!("GET http://evil.example/public/x HTTP/1.1\r\n{H}\r\n"),
            serves(&[404]),
            Nothing,
        ),
        row(
            "CONNECT with an origin-form target",
            format!("CONNECT /public/x HTTP/1.1\r\n{H}\r\n"),
            closes(&[400]),
            Nothing,
        ),
        // RFC 9110 §9.3.6: without a 2xx the connection stays HTTP; 405, kept (the
        // same routing-phase judgement as for paths).
        row(
            "CONNECT www.example.com:443",
            format!("CONNECT www.example.com:443 HTTP/1.1\r\n{H}\r\n"),
            serves(&[405]),
            Nothing,
        ),
        // --- fields the proxy owns ---
        // Client copies of x-forwarded-proto/-host and an unusable x-request-id are
        // replaced, never passed on next to ours (x-forwarded-for is appended to).
        row(
            "spoofed x-forwarded-proto and x-forwarded-host are replaced",
            get(
                "/public/xf",
                "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Request-Id: \r\n",
            ),
            serves(&[200]),
            Exactly(vec![saw("GET", "/public/xf").has("x-forwarded-host", HOST)]),
        ),
        // RFC 9110 §7.6.1: fields named in Connection are hop-by-hop, but naming ours
        // must not strip what the proxy adds.
        row(
            "Connection naming the proxy's own fields cannot strip them",
            get(
                "/public/conn",
                "Connection: x-request-id, x-forwarded-proto, x-forwarded-host, x-forwarded-for, host\r\n",
            ),
            serves(&[200]),
            Exactly(vec![
                saw("GET", "/public/conn")
                    .has("x-forwarded-host", HOST)
                    .has("x-forwarded-for", "127.0.0.1"),
            ]),
        ),
        // Connection naming an ordinary field removes it (RFC 9110 §7.6.1).
        row(
            "Connection naming an ordinary field removes it",
            get("/public/conn2", "Connection: x-secret\r\nX-Secret: 1\r\n"),
            serves(&[200]),
            Exactly(vec![saw("GET", "/public/conn2").lacks(&["x-secret"])]),
        ),
        // --- upgrades (RFC 9110 §7.8, RFC 9113 §3.1: h2c upgrade is obsolete) ---
        row(
            "h2c upgrade is answered as HTTP/1.1 and not passed on",
            get(
                "/public/h2c",
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
            ),
            serves(&[200]),
            Exactly(vec![saw("GET", "/public/h2c").lacks(&[
                "upgrade",
                "http2-settings",
                "connection",
            ])]),
        ),
        // A WebSocket upgrade goes up as exactly `connection: upgrade` + `upgrade:
        // websocket`; this backend does not switch, so its 200 is a plain response and
        // the connection carries on (tests/websocket.rs covers the 101 and the tunnel).
        row(
            "WebSocket upgrade is passed on; a backend that declines answers plainly",
            get(
                "/public/ws",
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            ),
            serves(&[200]),
            Exactly(vec![
                saw("GET", "/public/ws")
                    .has("upgrade", "websocket")
                    .has("connection", "upgrade"),
            ]),
        ),
        // --- HTTP/2 with prior knowledge on the same port (RFC 9113) ---
        row(
            "h2: a plain GET (control)",
            h2_connection(&[frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                &h2_block("GET", b"/public/h2", HOST.as_bytes(), &[]),
            )]),
            H2Status(200),
            Exactly(vec![saw("GET", "/public/h2")]),
        ),
        // The DATA-frame control for the H2.CL row below: a matching length is relayed.
        row(
            "h2: POST with a matching content-length (control)",
            h2_connection(&[
                frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &h2_block(
                        "POST",
                        b"/public/h2post",
                        HOST.as_bytes(),
                        &[("content-length", b"5")],
                    ),
                ),
                frame(DATA, END_STREAM, 1, b"hello"),
            ]),
            H2Status(200),
            Exactly(vec![
                saw("POST", "/public/h2post")
                    .body(b"hello")
                    .has("content-length", "5"),
            ]),
        ),
        // RFC 9113 §8.3.1: a server SHOULD treat a Host naming another entity than
        // :authority as malformed: 400, nothing relayed.
        row(
            "h2: host differing from :authority",
            h2_connection(&[frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                &h2_block(
                    "GET",
                    b"/public/h2host",
                    HOST.as_bytes(),
                    &[("host", b"evil.example")],
                ),
            )]),
            H2Status(400),
            Nothing,
        ),
        // RFC 9113 §8.1.1: DATA beyond content-length is malformed (stream error).
        row(
            "h2: H2.CL, content-length 0 with a smuggled request in DATA",
            h2_connection(&[
                frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &h2_block(
                        "POST",
                        b"/public/h2cl",
                        HOST.as_bytes(),
                        &[("content-length", b"0")],
                    ),
                ),
                frame(DATA, END_STREAM, 1, s.as_bytes()),
            ]),
            H2Refused,
            AtMost(1),
        ),
        // RFC 9113 §8.2.2: connection-specific fields make a request malformed.
        row(
            "h2: H2.TE, transfer-encoding: chunked",
            h2_connection(&[
                frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &h2_block(
                        "POST",
                        b"/public/h2te",
                        HOST.as_bytes(),
                        &[("transfer-encoding", b"chunked")],
                    ),
                ),
                frame(DATA, END_STREAM, 1, zero_then.as_bytes()),
            ]),
            H2Refused,
            Nothing,
        ),
        // RFC 9113 §8.2.1: CR, LF or NUL in a field value is malformed.
        row(
            "h2: CRLF inside a field value",
            h2_connection(&[frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                &h2_block(
                    "GET",
                    b"/public/h2crlf",
                    HOST.as_bytes(),
                    &[("x", format!("a\r\n{s}").as_bytes())],
                ),
            )]),
            H2Refused,
            Nothing,
        ),
        row(
            "h2: CRLF inside :path",
            h2_connection(&[frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                &h2_block(
                    "GET",
                    format!("/public/x HTTP/1.1\r\n{H}\r\n{s}").as_bytes(),
                    HOST.as_bytes(),
                    &[],
                ),
            )]),
            H2Refused,
            Nothing,
        ),
        row(
            "h2: userinfo in :authority",
            h2_connection(&[frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                &h2_block("GET", b"/public/x", b"u@www.example.com", &[]),
            )]),
            H2Refused,
            Nothing,
        ),
        row(
            "h2: rapid reset, 1000 streams opened and cancelled",
            rapid_reset(),
            H2Ends,
            AtMost(32),
        ),
        row(
            "h2: CONTINUATION flood over 1 MiB",
            continuation_flood(),
            H2Ends,
            Nothing,
        ),
        // --- slow clients (RFC 9112 §9.5: a server may close idle connections) ---
        Case {
            name: "slowloris: a head one byte every 300 ms",
            delivery: Delivery::Trickle {
                head: Vec::new(),
                trickle: b"GET /public/slowloris HTTP/1.1\r\nHo".to_vec(),
                every: Duration::from_millis(300),
            },
            expect: StatusOrClosed(&[408]),
            backend: Nothing,
            deadline: Duration::from_millis(2500),
        },
        Case {
            name: "a connection that never sends a byte",
            delivery: Delivery::Burst(Vec::new()),
            expect: Closed,
            backend: Nothing,
            deadline: Duration::from_millis(2500),
        },
        Case {
            name: "slow body: Content-Length 100, one byte every 1.5 s",
            delivery: Delivery::Trickle {
                head: format!("POST /public/slow-body HTTP/1.1\r\n{H}Content-Length: 100\r\n\r\n")
                    .into_bytes(),
                trickle: vec![b'a'; 100],
                every: Duration::from_millis(1500),
            },
            expect: closes(&[408]),
            backend: NoneComplete,
            deadline: Duration::from_millis(3500),
        },
        // --- not HTTP at all ---
        row("4 KiB of noise", noise(4096), closes(&[400]), Nothing),
        row(
            "a TLS ClientHello on the plain port",
            client_hello(),
            StatusOrClosed(&[400]),
            Nothing,
        ),
        row(
            "a broken HTTP/2 preface",
            "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
            closes(&[400]),
            Nothing,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_never_reach_a_backend_unchecked() {
    let rec = Recorder::default();
    let public = start_backend("public", rec.clone()).await;
    let admin = start_backend("admin", rec.clone()).await;
    let yaml = format!(
        "services:\n{}{}routes:\n  - id: public\n    hosts: [{HOST}]\n    path: {{ prefix: /public }}\n    forward: {{ service: public }}\n  - id: admin\n    hosts: [{HOST}]\n    path: {{ prefix: /admin }}\n    forward: {{ service: admin }}\n",
        svc("public", &[public]),
        svc("admin", &[admin]),
    );
    let p = start(
        "adversarial",
        &yaml,
        &[
            "--header-read-timeout",
            "1s",
            "--io-timeout",
            "1s",
            "--keepalive-timeout",
            "2s",
        ],
    )
    .await;
    let addr = p.proxy.addr;
    probe(addr)
        .await
        .expect("the proxy serves before the attacks");

    let suite = Instant::now();
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let marks = rec.marks();
        let started = Instant::now();
        let h2 = matches!(
            case.expect,
            Expect::H2Status(_) | Expect::H2Refused | Expect::H2Ends
        );
        let outcome = match &case.delivery {
            Delivery::Burst(bytes) if h2 => run_h2(addr, bytes, case.expect, case.deadline).await,
            _ => tokio::time::timeout(case.deadline + Duration::from_secs(5), run_h1(addr, case))
                .await
                .unwrap_or_else(|_| Err("the exchange hung".into())),
        };
        let took = started.elapsed();
        let (note, mut problems) = match outcome {
            Ok(note) => (note, Vec::new()),
            Err(e) => (String::new(), vec![e]),
        };
        if took > case.deadline {
            problems.push(format!("took {took:?}, bound {:?}", case.deadline));
        }
        problems.extend(settle(&rec).await.err());
        let (seen, _) = rec.since(marks);
        let ours: Vec<&Seen> = seen.iter().filter(|s| !s.is_harness()).collect();
        problems.extend(check_backend(&case.backend, &ours));
        problems.extend(probe(addr).await.err());
        let (seen, garbage) = rec.since(marks);
        problems.extend(invariant_violations(&seen, &garbage));
        eprintln!(
            "{:>6} ms  {}: {note}, {} upstream{}",
            took.as_millis(),
            case.name,
            ours.len(),
            if problems.is_empty() { "" } else { "  FAILED" }
        );
        if !problems.is_empty() {
            failures.push(format!("[{}]\n    {}", case.name, problems.join("\n    ")));
        }
    }
    // Nothing is left behind: every request finished, every connection released
    // (an error answer lingers up to 2 s for the client to read it).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = p.admin("/stats").await.json();
        if stats["in_flight"] == 0 && stats["open_connections"] == 0 {
            break;
        }
        if Instant::now() > deadline {
            failures.push(format!("[after all cases] still held after 5 s: {stats}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{} cases in {:?}", cases.len(), suite.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The recording backend is the suite's detector: bytes sent straight to it that the
/// proxy must never produce are flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_backend_flags_what_the_suite_looks_for() {
    let rec = Recorder::default();
    let addr = start_backend("public", rec.clone()).await;
    let ours = "host: h\r\nx-forwarded-proto: http\r\nx-request-id: 1\r\n";
    // (bytes, part of the violation they must cause)
    let cases: Vec<(String, &str)> = vec![
        (format!("GET /smuggled HTTP/1.1\r\n{ours}\r\n"), "smuggled"),
        (
            format!("POST /a HTTP/1.1\r\n{ours}content-length: 13\r\n\r\nGET /smuggled"),
            "smuggled",
        ),
        (
            format!(
                "POST /a HTTP/1.1\r\n{ours}transfer-encoding: chunked\r\n\r\n0\r\nx-sum: 1\r\n\r\n"
            ),
            "trailer",
        ),
        (
            "GET /a HTTP/1.1\r\nhost: h\r\n\r\n".into(),
            "x-forwarded-proto",
        ),
        (
            "GET /a HTTP/1.1\r\nhost: h\r\nx-forwarded-proto: http\r\n\r\n".into(),
            "x-request-id",
        ),
        (
            format!("GET /a HTTP/1.1\r\n{ours}x-a : b\r\n\r\n"),
            "field name",
        ),
        (
            format!("POST /a HTTP/1.1\r\n{ours}content-length: 2\r\n\r\nokGARBAGE\r\n\r\n"),
            "request line",
        ),
        (
            format!("GET /a HTTP/1.1\r\n{ours}x-a: b\nx-b: c\r\n\r\n"),
            "bare LF",
        ),
        (
            format!("GET /a HTTP/1.1\r\n{ours}x-a: b\rc\r\n\r\n"),
            "bare CR",
        ),
        (
            format!(
                "POST /a HTTP/1.1\r\n{ours}content-length: 1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "ambiguous framing",
        ),
        (
            format!(
                "POST /a HTTP/1.1\r\n{ours}transfer-encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n"
            ),
            "chunk size line",
        ),
        (
            format!("GET /a HTTP/1.1\r\n{ours}upgrade: h2c\r\n\r\n"),
            "hop-by-hop",
        ),
        (format!("GET /a HTTP/1.0\r\n{ours}\r\n"), "version"),
    ];
    for (bytes, want) in &cases {
        let marks = rec.marks();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut sink))
            .await
            .expect("the backend did not close")
            .unwrap();
        settle(&rec).await.unwrap();
        let (seen, garbage) = rec.since(marks);
        let found = invariant_violations(&seen, &garbage);
        assert!(
            found.iter().any(|v| v.contains(want)),
            "{bytes:?} should be flagged with {want:?}: {found:?}"
        );
    }
    // The HTTP/2 `:status` reader: static index, plain literal, Huffman literal with
    // 7 bits of padding ("403").
    assert_eq!(h2_status(&[0x88]), Some(200));
    assert_eq!(h2_status(&[0x3f, 0xe1, 0x1f, 0x8d]), Some(404));
    assert_eq!(h2_status(&[0x08, 0x03, b'4', b'0', b'5']), Some(405));
    assert_eq!(h2_status(&[0x48, 0x83, 0x68, 0x0c, 0xff]), Some(403));
    assert_eq!(h2_status(&[0x82]), None);
    // And a clean request is not flagged.
    let marks = rec.marks();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("POST /a HTTP/1.1\r\n{ours}transfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut c = Client {
        read: s.into_split().0,
        write: None,
        buf: Vec::new(),
    };
    assert!(matches!(c.next(RESPONSE_WAIT).await, Event::Response(r) if r.status == 200));
    let (seen, garbage) = rec.since(marks);
    assert_eq!(invariant_violations(&seen, &garbage), Vec::<String>::new());
    assert_eq!(seen[0].body, b"hello");
}
