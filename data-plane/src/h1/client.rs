//! The engine's HTTP/1.1 upstream client for requests held as `http` parts: an HTTP/2
//! client's request to an `http1` service (and a mirror's copy) goes out on the same
//! per-worker pool and under the same head rules as the engine's own exchange, without
//! hyper's client (no task or channel per connection, no oneshot per response).
//!
//! Only requests whose body is all in hand take this path (none, or the bytes kept
//! for retries); a body still streaming from the client goes through hyper's client,
//! which sends and receives at the same time. The response body is read from the
//! connection by whoever polls [`UpstreamBody`] (hyper's HTTP/2 server, on the
//! stream's own task), and the connection goes back to the pool once the body has
//! been read to its last byte with nothing after it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Response, StatusCode, Version, header};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::chunked::Chunked;
use super::head::{Framing, put_field, put_u64};
use super::io::write_all_2;
use super::pool::UpstreamPool;
use super::response::{MAX_HEADERS, Reading, parse_head};
use crate::body::BoxError;
use crate::compile::Cluster;
use crate::error::ProxyError;
use crate::observe::metrics::{OpenConn, ServiceMetrics};

/// What one read asks the socket for at least.
const READ_SIZE: usize = 8 * 1024;

/// The request the client sends: its head as written (request line through the empty
/// line: phase 5's bytes, [`super::upstream_head`], or `http` parts encoded by
/// [`Outgoing::encode`]) and its whole body.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub head: &'a [u8],
    pub body: &'a Bytes,
    /// A `HEAD` request: its response has no body.
    pub head_method: bool,
    /// Safe to send twice (a stale pooled connection may then be retried).
    pub idempotent: bool,
}

impl<'a> Outgoing<'a> {
    /// A request held as `http` parts (the URI's path and query; `host` and every
    /// other field already in the map), its head encoded into `buf`.
    pub fn encode(parts: &http::request::Parts, body: &'a Bytes, buf: &'a mut Vec<u8>) -> Self {
        encode_head(parts, body.len(), buf);
        Self {
            head: buf,
            body,
            head_method: parts.method == http::Method::HEAD,
            idempotent: parts.method.is_idempotent(),
        }
    }
}

/// Where and how: the endpoint's `host:port`, the service's connection counters, its
/// cluster when it has `limits` (`max_pending` bounds the requests waiting for a new
/// connection, as on the engine's own exchange) and the largest response head accepted.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub authority: &'a http::uri::Authority,
    pub service: Option<&'a Arc<ServiceMetrics>>,
    pub limited: Option<&'a Cluster>,
    pub max_head: usize,
}

/// Sends `req` on a pooled connection to `to` and reads the response head. A reused
/// connection the upstream closed meanwhile gets the request again on a fresh one when
/// it cannot have been received (the write failed) or receiving it twice is harmless
/// (an idempotent method). Timeouts are the caller's: this future only ends when the
/// upstream answers or fails.
pub async fn send(
    pool: &Arc<UpstreamPool>,
    to: Target<'_>,
    req: Outgoing<'_>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let authority = to.authority.as_str();
    let pending = match to.limited {
        Some(cluster) => {
            let max = cluster.limits().map(|l| l.max_pending());
            Some(
                cluster
                    .load()
                    .try_pending(max)
                    .ok_or_else(|| ProxyError::Overloaded(cluster.name().into()))?,
            )
        }
        None => None,
    };
    let checkout = pool.checkout_for(authority, to.service).await;
    drop(pending);
    if let Some(s) = to.service {
        match &checkout {
            Ok(up) => s.connection(up.reused),
            Err(_) => s.connect_failed(),
        }
    }
    let mut up = checkout?;
    let answer = loop {
        match exchange(
            &mut up.stream,
            req.head,
            req.body,
            req.head_method,
            to.max_head,
        )
        .await
        {
            Ok(answer) => break answer,
            Err(Stale::Retry(e)) | Err(Stale::IfIdempotent(e)) if !up.reused => return Err(e),
            Err(Stale::IfIdempotent(e)) if !req.idempotent => return Err(e),
            Err(Stale::Retry(_) | Stale::IfIdempotent(_)) => {
                let fresh = pool.connect(authority).await;
                if let Some(s) = to.service {
                    match &fresh {
                        Ok(_) => s.connection(false),
                        Err(_) => s.connect_failed(),
                    }
                }
                up.stream = fresh?;
                up.open = OpenConn::new(to.service);
                up.reused = false;
            }
            Err(Stale::No(e)) => return Err(e),
        }
    };
    let (mut parts, framing, reusable, rest) = answer;
    parts.version = Version::HTTP_11;
    let conn = Conn {
        pool: Arc::clone(pool),
        authority: to.authority.clone(),
        stream: up.stream,
        open: up.open,
        reusable,
    };
    let state = match framing {
        Framing::Empty | Framing::Length(0) => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::Chunked(Chunked::new()),
        Framing::UntilClose => State::UntilClose,
    };
    let mut body = UpstreamBody {
        state,
        buf: rest,
        conn: Some(conn),
    };
    if matches!(body.state, State::Done) {
        body.finish();
    }
    Ok(Response::from_parts(parts, body))
}

/// Requests without bodies for one endpoint, encoded back to back for one write on one
/// connection ([`pipeline`]).
#[derive(Debug, Default)]
pub struct Pipeline {
    bytes: Vec<u8>,
    /// Where each request's bytes end in `bytes`, and whether it is a HEAD.
    requests: Vec<(usize, bool)>,
}

impl Pipeline {
    /// Whether a request may be pipelined: a safe method whose answer can be read
    /// without a body sent (GET, HEAD), so sending it again on a fresh connection is
    /// harmless.
    pub fn takes(method: &http::Method) -> bool {
        *method == http::Method::GET || *method == http::Method::HEAD
    }

    /// Adds `parts` (as for [`send`], without a body; `host`, when given, is added to
    /// its fields). The caller checks [`Pipeline::takes`].
    pub fn push(&mut self, parts: &http::request::Parts, host: Option<&HeaderValue>) {
        encode_head(parts, 0, &mut self.bytes);
        if let Some(host) = host {
            // Before the empty line that ends the head.
            self.bytes.truncate(self.bytes.len() - 2);
            put_field(&mut self.bytes, b"host", host.as_bytes());
            self.bytes.extend_from_slice(b"\r\n");
        }
        let head = parts.method == http::Method::HEAD;
        self.requests.push((self.bytes.len(), head));
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// The bytes of requests `from..`.
    fn from(&self, from: usize) -> &[u8] {
        let start = match from {
            0 => 0,
            i => self.requests[i - 1].0,
        };
        &self.bytes[start..]
    }
}

/// Where a pipeline's answers go, in the order of its requests: each request gets its
/// `head`, its body's bytes (framing removed) and `end`, or `failed` (perhaps after its
/// head, when the body was cut), exactly once.
pub trait Answers {
    fn head(&mut self, i: usize, parts: http::response::Parts);
    fn data(&mut self, i: usize, data: &[u8]);
    fn end(&mut self, i: usize);
    fn failed(&mut self, i: usize, e: &ProxyError);
}

/// Sends every request of `requests` to `authority` in one write on one pooled
/// connection and reads the answers in order (HTTP/1.1 pipelining, RFC 9112 §9.3.2):
/// one `send` and a few reads for the lot instead of a write and a read each. Only for
/// requests [`Pipeline::takes`]. Requests the upstream did not get to are sent again on
/// a fresh connection: after an answer that closes the connection (`connection:
/// close`, a body until close: the upstream processes nothing after it) and when a
/// reused connection turns out closed before any byte came back (stale). A connection
/// that breaks otherwise (closed or reset mid-answer, or after some answers without
/// saying so) fails the answer in progress and every one after it. Timeouts are the
/// caller's.
///
/// `settle`, when not zero: how long the connection stays off the runtime's reactor
/// after the write, so that answers arriving one by one wake nothing and are then read
/// together (the mirror thread's answers wait for its next tick anyway).
pub async fn pipeline(
    pool: &Arc<UpstreamPool>,
    authority: &http::uri::Authority,
    requests: &Pipeline,
    max_head: usize,
    settle: Duration,
    answers: &mut impl Answers,
) {
    let to = Conn1 {
        requests,
        max_head,
        settle,
    };
    let n = requests.len();
    let mut next = 0;
    // A stale pooled connection's slot, for the fresh connection that replaces it.
    let mut stale = None;
    while next < n {
        let (stream, open, reused) = match stale.take() {
            // Once more on a fresh one (`checkout` only reuses what is idle; the stale
            // ones are gone as they fail).
            Some(open) => match pool.connect(authority.as_str()).await {
                Ok(stream) => (stream, open, false),
                Err(e) => return fail_from(answers, next, n, &e),
            },
            None => match pool.checkout_for(authority.as_str(), None).await {
                Ok(up) => (up.stream, up.open, up.reused),
                Err(e) => return fail_from(answers, next, n, &e),
            },
        };
        let (stream, answered, end) = to.run(stream, next, answers).await;
        match (end, stream) {
            (PipeEnd::Done { clean: true }, Some(stream)) => {
                pool.checkin(authority.as_str(), stream, open);
                return;
            }
            (PipeEnd::Done { .. }, _) => return,
            // The upstream said it closes: the rest was never processed.
            (PipeEnd::Closing, _) => next = answered,
            (
                PipeEnd::Broken {
                    received: false, ..
                },
                _,
            ) if reused => {
                next = answered;
                stale = Some(open);
            }
            (PipeEnd::Broken { e, .. }, _) => return fail_from(answers, answered, n, &e),
        }
    }
}

fn fail_from(answers: &mut impl Answers, from: usize, n: usize, e: &ProxyError) {
    for i in from..n {
        answers.failed(i, e);
    }
}

/// How a pipeline's connection ended.
enum PipeEnd {
    /// Every request answered; `clean`: the connection may be reused.
    Done { clean: bool },
    /// The upstream closes after the last answer given, with requests left.
    Closing,
    /// Failed; `received`: some byte came back on this connection.
    Broken { e: ProxyError, received: bool },
}

/// What one connection of a pipeline does.
#[derive(Clone, Copy)]
struct Conn1<'a> {
    requests: &'a Pipeline,
    max_head: usize,
    settle: Duration,
}

impl Conn1<'_> {
    /// Writes requests `from..` on `stream` and reads their answers; returns the
    /// stream (unless lost while settling), the first request without a complete
    /// answer (all of them: `requests.len()`) and why it stopped. A failed answer in
    /// progress (head given, body cut) is failed here.
    async fn run(
        self,
        mut stream: TcpStream,
        from: usize,
        answers: &mut impl Answers,
    ) -> (Option<TcpStream>, usize, PipeEnd) {
        use tokio::io::AsyncWriteExt;
        let reset = |e: io::Error| ProxyError::UpstreamReset(e.into());
        let broken = |e: io::Error| PipeEnd::Broken {
            e: reset(e),
            received: false,
        };
        if let Err(e) = stream.write_all(self.requests.from(from)).await {
            return (Some(stream), from, broken(e));
        }
        if !self.settle.is_zero() {
            let off = match stream.into_std() {
                Ok(off) => off,
                Err(e) => return (None, from, broken(e)),
            };
            tokio::time::sleep(self.settle).await;
            stream = match TcpStream::from_std(off) {
                Ok(s) => s,
                Err(e) => return (None, from, broken(e)),
            };
        }
        let (answered, end) =
            on_connection(&mut stream, self.requests, from, self.max_head, answers).await;
        (Some(stream), answered, end)
    }
}

/// Reads the answers to requests `from..` (written) on `stream`; returns the first
/// request without a complete answer (all of them: `requests.len()`) and why it stopped.
/// A failed answer in progress (head given, body cut) is failed here.
async fn on_connection(
    stream: &mut TcpStream,
    requests: &Pipeline,
    from: usize,
    max_head: usize,
    answers: &mut impl Answers,
) -> (usize, PipeEnd) {
    let reset = |e: io::Error| ProxyError::UpstreamReset(e.into());
    let mut buf = super::buffers::take_shared(READ_SIZE);
    let mut received = false;
    // Reads more into `buf`: `Ok(false)` at the end of the stream.
    async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
        buf.reserve(READ_SIZE);
        Ok(stream.read_buf(buf).await? > 0)
    }
    let cut = || {
        ProxyError::UpstreamReset(
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed the connection before answering every pipelined request",
            )
            .into(),
        )
    };
    for i in from..requests.len() {
        let head_method = requests.requests[i].1;
        // The head.
        let (parts, framing, reusable) = loop {
            if !buf.is_empty() {
                match read_head(&mut buf, head_method, max_head) {
                    Ok(Some((parts, framing, reusable, rest))) => {
                        buf = rest;
                        break (parts, framing, reusable);
                    }
                    Ok(None) => {}
                    Err(e) => return (i, PipeEnd::Broken { e, received }),
                }
            }
            match fill(stream, &mut buf).await {
                Ok(true) => received = true,
                Ok(false) => return (i, PipeEnd::Broken { e: cut(), received }),
                Err(e) => {
                    return (
                        i,
                        PipeEnd::Broken {
                            e: reset(e),
                            received,
                        },
                    );
                }
            }
        };
        let mut parts = parts;
        parts.version = Version::HTTP_11;
        answers.head(i, parts);
        // The body.
        let body: Result<(), ProxyError> = async {
            match framing {
                Framing::Empty | Framing::Length(0) => Ok(()),
                Framing::Length(mut left) => loop {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    answers.data(i, &buf[..take]);
                    buf.advance(take);
                    left -= take as u64;
                    if left == 0 {
                        return Ok(());
                    }
                    if !fill(stream, &mut buf).await.map_err(reset)? {
                        return Err(BodyCut.into_error());
                    }
                },
                Framing::Chunked => {
                    let mut scanner = Chunked::new();
                    loop {
                        let progress = scanner
                            .scan(&buf, |r| answers.data(i, &buf[r]))
                            .map_err(|_| ProxyError::UpstreamProtocol("bad chunked body"))?;
                        buf.advance(progress.consumed);
                        if progress.done {
                            return Ok(());
                        }
                        if !fill(stream, &mut buf).await.map_err(reset)? {
                            return Err(BodyCut.into_error());
                        }
                    }
                }
                Framing::UntilClose => loop {
                    answers.data(i, &buf);
                    buf.clear();
                    if !fill(stream, &mut buf).await.map_err(reset)? {
                        return Ok(());
                    }
                },
            }
        }
        .await;
        if let Err(e) = body {
            answers.failed(i, &e);
            return (i + 1, PipeEnd::Broken { e, received: true });
        }
        answers.end(i);
        let last = i + 1 == requests.len();
        if !reusable || matches!(framing, Framing::UntilClose) {
            let end = if last {
                PipeEnd::Done { clean: false }
            } else {
                PipeEnd::Closing
            };
            return (i + 1, end);
        }
        if last {
            // An upstream that says more than it was asked is not trusted again.
            return (
                i + 1,
                PipeEnd::Done {
                    clean: buf.is_empty(),
                },
            );
        }
    }
    (
        requests.len(),
        PipeEnd::Done {
            clean: buf.is_empty(),
        },
    )
}

impl BodyCut {
    fn into_error(self) -> ProxyError {
        ProxyError::UpstreamReset(self.into())
    }
}

/// Writes the request head: the request line, every field of the map (`cookie`
/// crumbs joined into one line, RFC 9113 §8.2.3; `content-length` re-stated from the
/// body in hand), the empty line.
fn encode_head(parts: &http::request::Parts, body_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut cookies = 0;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        if name == header::COOKIE {
            cookies += 1;
            continue;
        }
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if cookies > 0 {
        out.extend_from_slice(b"cookie: ");
        for (i, crumb) in parts.headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(crumb.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    // A body, or a method whose request is expected to carry one: the length says
    // where it ends (an empty one included, so the upstream does not wait).
    let expects_body = matches!(
        parts.method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    );
    if body_len > 0 || expects_body {
        out.extend_from_slice(b"content-length: ");
        put_u64(out, body_len as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Why an exchange failed, and whether a fresh connection may try again.
enum Stale {
    /// Not received (the write failed): any request may be sent again.
    Retry(ProxyError),
    /// Closed before any response byte: maybe received, so only a safe request.
    IfIdempotent(ProxyError),
    No(ProxyError),
}

type Answer = (http::response::Parts, Framing, bool, BytesMut);

/// One exchange on `stream`: the head and body out, interim responses skipped, the
/// final head read. Returns it with the bytes read past it (the start of the body).
async fn exchange(
    stream: &mut TcpStream,
    head: &[u8],
    body: &Bytes,
    head_method: bool,
    max_head: usize,
) -> Result<Answer, Stale> {
    write_all_2(stream, head, body)
        .await
        .map_err(|e| Stale::Retry(ProxyError::UpstreamReset(e.into())))?;
    let mut buf = super::buffers::take_shared(READ_SIZE);
    let mut received = false;
    loop {
        if !buf.is_empty()
            && let Some(answer) = read_head(&mut buf, head_method, max_head).map_err(Stale::No)?
        {
            return Ok(answer);
        }
        buf.reserve(READ_SIZE);
        let n = stream.read_buf(&mut buf).await.map_err(|e| {
            let e = ProxyError::UpstreamReset(e.into());
            if received {
                Stale::No(e)
            } else {
                Stale::IfIdempotent(e)
            }
        })?;
        if n == 0 {
            let e = ProxyError::UpstreamReset(
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed before the response head",
                )
                .into(),
            );
            return Err(if received {
                Stale::No(e)
            } else {
                Stale::IfIdempotent(e)
            });
        }
        received = true;
    }
}

/// Parses the head at the start of `buf`: `None` while incomplete; an interim (1xx)
/// response is consumed and skipped. A final one is split off `buf` (its field values
/// become slices of it, no copy).
fn read_head(
    buf: &mut BytesMut,
    head_method: bool,
    max_head: usize,
) -> Result<Option<Answer>, ProxyError> {
    loop {
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let Some(len) = parse_head(&mut resp, buf, &mut storage, max_head)? else {
            return Ok(None);
        };
        let (Some(version), Some(code)) = (resp.version, resp.code) else {
            return Err(ProxyError::UpstreamProtocol("malformed status line"));
        };
        if code == 101 {
            // We never ask to switch (an HTTP/2 client's `upgrade` is not sent up).
            return Err(ProxyError::UpstreamProtocol("unrequested protocol switch"));
        }
        if (100..200).contains(&code) {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| ProxyError::UpstreamProtocol("bad status code"))?;
        let headers: &[httparse::Header<'_>] = resp.headers;
        let reading = Reading::of(version, code, head_method, headers)?;
        // What passes, as where its name and value lie in `buf` (the head is split off
        // `buf` before they are made): a usual head's fields on the stack, more in a Vec.
        let base = buf.as_ptr() as usize;
        let at = |piece: &[u8]| (piece.as_ptr() as usize - base) as u32;
        let mut few = [(0u32, 0u32, 0u32, 0u32); 16];
        let mut more = Vec::new();
        let mut passing = 0;
        // A `content-length` written as the number itself, to pass on as it came.
        let mut canonical_length = None;
        for (i, h) in headers.iter().enumerate() {
            if reading.passes(i, h.name) {
                let span = (
                    at(h.name.as_bytes()),
                    h.name.len() as u32,
                    at(h.value),
                    h.value.len() as u32,
                );
                match few.get_mut(passing) {
                    Some(slot) => *slot = span,
                    None => more.push(span),
                }
                passing += 1;
            } else if canonical_length.is_none()
                && h.name.eq_ignore_ascii_case("content-length")
                && !h.value.is_empty()
                && h.value.iter().all(u8::is_ascii_digit)
                && (h.value.len() == 1 || h.value[0] != b'0')
            {
                canonical_length = Some((at(h.value), h.value.len() as u32));
            }
        }
        // The length is re-stated: the body's when it has one, or the one a HEAD
        // (or 304) response says it would have had.
        let length = match reading.body {
            Framing::Length(n) => Some(n),
            Framing::Empty if reading.has_length && code != 204 => Some(reading.length(headers)?),
            _ => None,
        };
        let (body, reusable) = (reading.body, reading.upstream_reusable);
        let head = buf.split_to(len).freeze();
        let piece = |at: u32, len: u32| {
            let range = at as usize..at as usize + len as usize;
            head.get(range.clone())
                .map(|_| head.slice(range))
                .ok_or(ProxyError::UpstreamProtocol("malformed response head"))
        };
        let mut map = super::buffers::take_map(passing + 1);
        for &(name_at, name_len, value_at, value_len) in few.iter().take(passing).chain(&more) {
            let name = HeaderName::from_bytes(&piece(name_at, name_len)?)
                .map_err(|_| ProxyError::UpstreamProtocol("bad header name"))?;
            let value = HeaderValue::from_maybe_shared(piece(value_at, value_len)?)
                .map_err(|_| ProxyError::UpstreamProtocol("bad header value"))?;
            map.append(name, value);
        }
        if let Some(n) = length {
            // Every line agreed on `n` (`Reading`): a canonical one is `n` as text.
            let value = canonical_length
                .and_then(|(at, len)| piece(at, len).ok())
                .and_then(|v| HeaderValue::from_maybe_shared(v).ok())
                .unwrap_or_else(|| HeaderValue::from(n));
            map.insert(header::CONTENT_LENGTH, value);
        }
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.headers = map;
        return Ok(Some((parts, body, reusable, std::mem::take(buf))));
    }
}

/// The connection a response body is read from, and where it goes when done.
#[derive(Debug)]
struct Conn {
    pool: Arc<UpstreamPool>,
    authority: http::uri::Authority,
    stream: TcpStream,
    open: OpenConn,
    /// The response allows another request on it (framing and `Connection`).
    reusable: bool,
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// A response body read from an HTTP/1.1 upstream connection, framing removed
/// (chunked trailers are checked and dropped, as the engine does).
#[derive(Debug)]
pub struct UpstreamBody {
    state: State,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    conn: Option<Conn>,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream closed the connection in the middle of the response body")]
pub struct BodyCut;

impl UpstreamBody {
    /// The body ended: the connection goes back to the pool if the response allows
    /// and nothing came after the body (an upstream that says more than it was asked
    /// is not trusted with another request).
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(c) = self.conn.take()
            && c.reusable
            && self.buf.is_empty()
        {
            c.pool.checkin(c.authority.as_str(), c.stream, c.open);
            // Its storage is reclaimed for another response once the pieces handed on
            // are gone.
            super::buffers::give_shared(std::mem::take(&mut self.buf));
        }
    }

    /// Reads more into `buf`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut self.buf)
    }

    /// The next frame's bytes from `buf`, if any are there.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, BoxError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.state {
            State::Done => Ok(None),
            State::Length(left) => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                let data = self.buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            State::UntilClose => Ok(Some(self.buf.split().freeze())),
            State::Chunked(scanner) => {
                let mut data = BytesMut::new();
                let buf = &self.buf;
                let progress = scanner.scan(buf, |r| data.extend_from_slice(&buf[r]))?;
                self.buf.advance(progress.consumed);
                if progress.done {
                    self.finish();
                }
                Ok((!data.is_empty()).then(|| data.freeze()))
            }
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            match this.take_buffered() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if matches!(this.state, State::Done) => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(this.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyCut.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// An upstream that answers each request it reads with the next canned response,
    /// closing the connection after it when the canned response says so; the raw
    /// requests come out of the channel.
    async fn upstream(
        answers: Vec<(&'static str, bool)>,
    ) -> (String, mpsc::UnboundedReceiver<String>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            'conns: while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, SeqCst);
                loop {
                    let mut req = Vec::new();
                    let mut byte = [0u8; 1];
                    while !req.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte).await {
                            Ok(1) => req.push(byte[0]),
                            _ => continue 'conns,
                        }
                    }
                    let text = String::from_utf8(req).unwrap();
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |n| n.parse::<usize>().unwrap());
                    let mut body = vec![0u8; len];
                    s.read_exact(&mut body).await.unwrap();
                    tx.send(text + &String::from_utf8(body).unwrap()).unwrap();
                    let Some((answer, close)) = answers.next() else {
                        return;
                    };
                    s.write_all(answer.as_bytes()).await.unwrap();
                    if close {
                        continue 'conns;
                    }
                }
            }
        });
        (addr, rx, accepted)
    }

    fn pool() -> Arc<UpstreamPool> {
        Arc::new(UpstreamPool::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ))
    }

    fn get(method: http::Method, headers: &[(&'static str, &'static str)]) -> http::request::Parts {
        let mut req = http::Request::builder()
            .method(method)
            .uri("http://ignored/p?q=1");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    async fn call(
        pool: &Arc<UpstreamPool>,
        addr: &str,
        parts: &http::request::Parts,
        body: &str,
    ) -> Result<(Response<()>, String), ProxyError> {
        let authority = http::uri::Authority::try_from(addr).unwrap();
        let body = Bytes::copy_from_slice(body.as_bytes());
        let to = Target {
            authority: &authority,
            service: None,
            limited: None,
            max_head: 65536,
        };
        let mut head = Vec::new();
        let resp = send(pool, to, Outgoing::encode(parts, &body, &mut head)).await?;
        let (head, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|_| ProxyError::MalformedBody)?;
        Ok((
            Response::from_parts(head, ()),
            String::from_utf8(bytes.to_bytes().to_vec()).unwrap(),
        ))
    }

    #[tokio::test]
    async fn responses_are_read_by_their_framing_and_connections_reused_when_clean() {
        // (upstream's answer, status, body the client gets, fields it gets, reused next)
        type Fields = &'static [(&'static str, &'static str)];
        let cases: &[(&str, u16, &str, Fields, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
                200,
                "hello",
                &[("x-a", "1"), ("content-length", "5")],
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
                200,
                "hello world",
                &[],
                true,
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
                201,
                "ok",
                &[("content-length", "2")],
                true,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", 204, "", &[], true),
            // Hop-by-hop and connection-named fields stop here; `close` ends reuse.
            (
                "HTTP/1.1 200 OK\r\nconnection: close, x-secret\r\nx-secret: s\r\nkeep-alive: 5\r\ncontent-length: 1\r\n\r\n!",
                200,
                "!",
                &[("content-length", "1")],
                false,
            ),
            // Both framings: chunked wins, the connection is not trusted again.
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                200,
                "hi",
                &[],
                false,
            ),
            // HTTP/1.0 without keep-alive, body until close.
            (
                "HTTP/1.0 200 OK\r\n\r\nuntil close",
                200,
                "until close",
                &[],
                false,
            ),
        ];
        for (answer, status, body, fields, reused_next) in cases {
            let (addr, mut requests, accepted) = upstream(vec![
                (answer, !reused_next),
                ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            ])
            .await;
            let pool = pool();
            let parts = get(http::Method::GET, &[("host", "svc")]);
            let (resp, got) = call(&pool, &addr, &parts, "").await.unwrap();
            assert_eq!(resp.status().as_u16(), *status, "{answer:?}");
            assert_eq!(got, *body, "{answer:?}");
            let names: Vec<_> = resp.headers().keys().map(|k| k.as_str()).collect();
            assert_eq!(names.len(), fields.len(), "{answer:?}: {names:?}");
            for (n, v) in *fields {
                assert_eq!(resp.headers()[*n], *v, "{answer:?}");
            }
            assert!(requests.recv().await.is_some());
            // The next request: on the same connection exactly when it was clean.
            let (resp, _) = call(&pool, &addr, &parts, "").await.unwrap();
            assert_eq!(resp.status(), 200);
            let want = if *reused_next { 1 } else { 2 };
            assert_eq!(accepted.load(SeqCst), want, "{answer:?}: connections");
        }
    }

    #[tokio::test]
    async fn the_head_sent_up_is_the_map_with_cookies_joined_and_length_restated() {
        let (addr, mut requests, _) = upstream(vec![
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        ])
        .await;
        let pool = pool();
        let parts = get(
            http::Method::POST,
            &[
                ("host", "svc"),
                ("cookie", "a=1"),
                ("x-b", "2"),
                ("cookie", "c=3"),
                ("content-length", "99"),
            ],
        );
        call(&pool, &addr, &parts, "body").await.unwrap();
        assert_eq!(
            requests.recv().await.unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: svc\r\nx-b: 2\r\ncookie: a=1; c=3\r\ncontent-length: 4\r\n\r\nbody"
        );
        let parts = get(http::Method::GET, &[("host", "svc")]);
        call(&pool, &addr, &parts, "").await.unwrap();
        assert_eq!(
            requests.recv().await.unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: svc\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn bad_answers_are_errors_not_responses() {
        let cases = [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ];
        for answer in cases {
            let (addr, _requests, _) = upstream(vec![(answer, true)]).await;
            let parts = get(http::Method::GET, &[("host", "svc")]);
            let got = call(&pool(), &addr, &parts, "").await;
            assert!(
                matches!(got, Err(ProxyError::UpstreamProtocol(_))),
                "{answer:?}: {got:?}"
            );
        }
        // A body cut short is an error of the body, after the head.
        let (addr, _requests, _) = upstream(vec![(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            true,
        )])
        .await;
        let parts = get(http::Method::GET, &[("host", "svc")]);
        assert!(call(&pool(), &addr, &parts, "").await.is_err());
    }

    #[tokio::test]
    async fn a_stale_pooled_connection_is_retried_only_when_safe() {
        // The upstream answers, then closes each connection after its answer without
        // saying so: the pooled connection is stale by the next request.
        for (method, retried) in [(http::Method::GET, true), (http::Method::POST, false)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let served = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&served);
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let count = Arc::clone(&count);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = s.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&buf[..n]);
                        }
                        count.fetch_add(1, SeqCst);
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .unwrap();
                        // Read the next request's bytes, then close without answering.
                        let _ = s.read(&mut buf).await;
                    });
                }
            });
            let pool = pool();
            let parts = get(method.clone(), &[("host", "svc")]);
            call(&pool, &addr, &parts, "").await.unwrap();
            let second = call(&pool, &addr, &parts, "").await;
            assert_eq!(second.is_ok(), retried, "{method}: {second:?}");
            let want = if retried { 2 } else { 1 };
            assert_eq!(served.load(SeqCst), want, "{method}");
        }
    }
    /// An upstream scripted per connection: on its `c`-th connection it reads `reads`
    /// request heads, writes `reply`, then closes it (`close`) or waits for more. The
    /// request lines it read come out of the channel, by connection.
    async fn scripted(
        script: Vec<(usize, String, bool)>,
    ) -> (String, mpsc::UnboundedReceiver<(usize, Vec<String>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conns = Vec::new();
            for (c, (reads, reply, close)) in script.into_iter().enumerate() {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while seen.windows(4).filter(|w| *w == b"\r\n\r\n").count() < reads {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8(seen).unwrap();
                let lines = text
                    .split("\r\n\r\n")
                    .filter(|h| !h.is_empty())
                    .map(|h| h.lines().next().unwrap().to_owned())
                    .collect();
                tx.send((c, lines)).unwrap();
                s.write_all(reply.as_bytes()).await.unwrap();
                if !close {
                    conns.push(s);
                }
            }
            // Keeps the open ones open until the test ends.
            std::future::pending::<()>().await;
        });
        (addr, rx)
    }

    /// Each request's answer as text: `status:body`, or `error`.
    #[derive(Default)]
    struct Got(Vec<Option<String>>, Vec<bool>);

    impl Answers for Got {
        fn head(&mut self, i: usize, parts: http::response::Parts) {
            assert!(self.0[i].is_none() && !self.1[i], "answer {i} twice");
            self.0[i] = Some(format!("{}:", parts.status.as_u16()));
        }
        fn data(&mut self, i: usize, data: &[u8]) {
            self.0[i]
                .as_mut()
                .unwrap()
                .push_str(std::str::from_utf8(data).unwrap());
        }
        fn end(&mut self, i: usize) {
            assert!(!self.1[i]);
            self.1[i] = true;
        }
        fn failed(&mut self, i: usize, _: &ProxyError) {
            assert!(!self.1[i], "answer {i} failed after it ended");
            self.0[i] = Some("error".into());
            self.1[i] = true;
        }
    }

    #[tokio::test]
    async fn pipelined_answers_come_in_order_and_the_unanswered_are_sent_again_or_failed() {
        const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        const CLOSE: &str = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye";
        type Script = &'static [(usize, &'static str, bool)];
        // (what, methods of the requests, each connection's script, answers, request
        // lines each connection read, the connection is pooled after)
        type Lines = &'static [&'static [&'static str]];
        type Case = (
            &'static str,
            &'static [&'static str],
            Script,
            &'static [&'static str],
            Lines,
            bool,
        );
        let cases: &[Case] = &[
            (
                "in order, every framing",
                &["GET", "GET", "GET", "GET"],
                &[(
                    4,
                    "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na\
                     HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n2\r\nbc\r\n0\r\n\r\n\
                     HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
                     HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    false,
                )],
                &["200:a", "201:bc", "204:", "200:ok"],
                &[&[
                    "GET /0 HTTP/1.1",
                    "GET /1 HTTP/1.1",
                    "GET /2 HTTP/1.1",
                    "GET /3 HTTP/1.1",
                ]],
                true,
            ),
            (
                "a HEAD's answer has no body, whatever its length says",
                &["HEAD", "GET"],
                &[(
                    2,
                    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    false,
                )],
                &["200:", "200:ok"],
                &[&["HEAD /0 HTTP/1.1", "GET /1 HTTP/1.1"]],
                true,
            ),
            (
                "connection: close after the second: the third again on a fresh connection",
                &["GET", "GET", "GET"],
                &[
                    (
                        3,
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye",
                        true,
                    ),
                    (1, OK, false),
                ],
                &["200:ok", "200:bye", "200:ok"],
                &[
                    &["GET /0 HTTP/1.1", "GET /1 HTTP/1.1", "GET /2 HTTP/1.1"],
                    &["GET /2 HTTP/1.1"],
                ],
                true,
            ),
            (
                "a body until close ends the connection the same way",
                &["GET", "GET"],
                &[
                    (2, "HTTP/1.0 200 OK\r\n\r\nuntil close", true),
                    (1, CLOSE, true),
                ],
                &["200:until close", "200:bye"],
                &[
                    &["GET /0 HTTP/1.1", "GET /1 HTTP/1.1"],
                    &["GET /1 HTTP/1.1"],
                ],
                false,
            ),
            (
                "closed without notice after the first: the rest fail",
                &["GET", "GET", "GET"],
                &[(3, OK, true)],
                &["200:ok", "error", "error"],
                &[&["GET /0 HTTP/1.1", "GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]],
                false,
            ),
            (
                "closed in the middle of a body: that one and the rest fail",
                &["GET", "GET", "GET"],
                &[(
                    3,
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
                    true,
                )],
                &["200:ok", "error", "error"],
                &[&["GET /0 HTTP/1.1", "GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]],
                false,
            ),
            (
                "a malformed answer: it and the rest fail",
                &["GET", "GET"],
                &[(
                    2,
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokNOT HTTP\r\n\r\n",
                    false,
                )],
                &["200:ok", "error"],
                &[&["GET /0 HTTP/1.1", "GET /1 HTTP/1.1"]],
                false,
            ),
            (
                "more than was asked: answered, but the connection is not pooled",
                &["GET"],
                &[(
                    1,
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
                    false,
                )],
                &["200:ok"],
                &[&["GET /0 HTTP/1.1"]],
                false,
            ),
        ];
        // Read as the answers come, and after a while off the reactor.
        let settles = [Duration::ZERO, Duration::from_millis(2)];
        for ((what, methods, script, want, read, pooled), settle) in cases
            .iter()
            .flat_map(|c| settles.iter().map(move |s| (c, s)))
        {
            let script = script
                .iter()
                .map(|(n, r, c)| (*n, r.to_string(), *c))
                .collect();
            let (addr, mut lines) = scripted(script).await;
            let authority = http::uri::Authority::try_from(addr.as_str()).unwrap();
            let pool = pool();
            let mut requests = Pipeline::default();
            for (i, m) in methods.iter().enumerate() {
                let mut parts = get(http::Method::from_bytes(m.as_bytes()).unwrap(), &[]);
                parts.uri = format!("/{i}").parse().unwrap();
                let host = HeaderValue::from_static("svc-shadow");
                requests.push(&parts, Some(&host));
            }
            let mut got = Got(vec![None; methods.len()], vec![false; methods.len()]);
            tokio::time::timeout(
                Duration::from_secs(5),
                pipeline(&pool, &authority, &requests, 65536, *settle, &mut got),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: stuck"));
            let got: Vec<&str> = got
                .0
                .iter()
                .map(|a| a.as_deref().unwrap_or("none"))
                .collect();
            assert_eq!(got, *want, "{what}");
            for (c, want) in read.iter().enumerate() {
                let (conn, got) = lines.recv().await.unwrap();
                assert_eq!(
                    (conn, got.iter().map(String::as_str).collect::<Vec<_>>()),
                    (c, want.to_vec()),
                    "{what}"
                );
            }
            assert_eq!(pool.idle_count() == 1, *pooled, "{what}: pooled");
        }
    }

    #[tokio::test]
    async fn a_pipeline_on_a_stale_pooled_connection_goes_again_on_a_fresh_one() {
        // The first connection answers one request, then reads the next ones and closes
        // without answering (an upstream's idle close racing the reuse); the second
        // answers them.
        const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let (mut first, _) = listener.accept().await.unwrap();
            count.fetch_add(1, SeqCst);
            let _ = first.read(&mut buf).await;
            first.write_all(OK.as_bytes()).await.unwrap();
            let _ = first.read(&mut buf).await;
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            count.fetch_add(1, SeqCst);
            let mut seen = Vec::new();
            while seen.windows(4).filter(|w| *w == b"\r\n\r\n").count() < 2 {
                let n = second.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            second.write_all(OK.repeat(2).as_bytes()).await.unwrap();
            std::future::pending::<()>().await;
        });
        let authority = http::uri::Authority::try_from(addr.as_str()).unwrap();
        let pool = pool();
        let mut one = Pipeline::default();
        one.push(&get(http::Method::GET, &[("host", "h")]), None);
        let mut got = Got(vec![None], vec![false]);
        pipeline(&pool, &authority, &one, 65536, Duration::ZERO, &mut got).await;
        assert_eq!(got.0, vec![Some("200:ok".to_owned())]);
        let mut two = Pipeline::default();
        for _ in 0..2 {
            two.push(&get(http::Method::GET, &[("host", "h")]), None);
        }
        let mut got = Got(vec![None; 2], vec![false; 2]);
        pipeline(
            &pool,
            &authority,
            &two,
            65536,
            Duration::from_millis(1),
            &mut got,
        )
        .await;
        assert_eq!(
            got.0,
            vec![Some("200:ok".to_owned()), Some("200:ok".to_owned())]
        );
        assert_eq!(accepted.load(SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);
    }

    #[test]
    fn pipelined_heads_carry_the_host_given_and_only_safe_methods_are_taken() {
        let mut p = Pipeline::default();
        p.push(
            &get(http::Method::GET, &[("x-a", "1")]),
            Some(&HeaderValue::from_static("h-shadow")),
        );
        p.push(&get(http::Method::HEAD, &[("host", "h")]), None);
        assert_eq!(
            String::from_utf8(p.from(0).to_vec()).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nx-a: 1\r\nhost: h-shadow\r\n\r\nHEAD /p?q=1 HTTP/1.1\r\nhost: h\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8(p.from(1).to_vec()).unwrap(),
            "HEAD /p?q=1 HTTP/1.1\r\nhost: h\r\n\r\n"
        );
        for (m, taken) in [
            ("GET", true),
            ("HEAD", true),
            ("POST", false),
            ("PUT", false),
            ("DELETE", false),
            ("OPTIONS", false),
        ] {
            assert_eq!(
                Pipeline::takes(&http::Method::from_bytes(m.as_bytes()).unwrap()),
                taken,
                "{m}"
            );
        }
    }
}

#[cfg(test)]
mod head_tests {
    use super::*;

    /// The response head as the client will get it: passing fields in order (more than
    /// fit the stack array too), framing re-stated once, a canonical length as it came.
    #[test]
    fn response_heads_become_maps_with_the_length_restated() {
        let many: String = (0..20).map(|i| format!("x-f{i}: {i}\r\n")).collect();
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        // (the raw head, a HEAD request, the fields the client gets)
        type Case = (String, bool, Vec<(String, String)>);
        let cases: Vec<Case> = vec![
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\nConnection: keep-alive\r\n\r\nhello".into(),
                false,
                vec![pair("server", "s"), pair("content-length", "5")],
            ),
            // Not written as the number itself: re-stated.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 05\r\nx-a: 1\r\n\r\nhello".into(),
                false,
                vec![pair("x-a", "1"), pair("content-length", "5")],
            ),
            // Lines that agree: one.
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\nhello".into(),
                false,
                vec![pair("content-length", "5")],
            ),
            // A HEAD response states the length it would have had.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nx-a: 1\r\n\r\n".into(),
                true,
                vec![pair("x-a", "1"), pair("content-length", "10")],
            ),
            (
                format!("HTTP/1.1 200 OK\r\n{many}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                false,
                (0..20).map(|i| (format!("x-f{i}"), i.to_string())).collect(),
            ),
        ];
        for (raw, head_method, want) in cases {
            let mut buf = BytesMut::from(raw.as_bytes());
            let (parts, _, _, _) = read_head(&mut buf, head_method, 65536)
                .unwrap()
                .unwrap_or_else(|| panic!("incomplete: {raw:?}"));
            let got: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(n, v)| pair(n.as_str(), v.to_str().unwrap()))
                .collect();
            assert_eq!(got, want, "{raw:?}");
        }
    }
}
