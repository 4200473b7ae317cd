//! Mirrored comparison (shadow mode, part 2) on the proxy: a copy of a sampled request
//! goes to the route's candidate service (and, with `compare.baseline`, a second copy to
//! the primary's own service), and the candidate's response is compared with the one
//! the client got. The rules (what differs, what is noise, the verdict) are
//! `routemaster_common::mirror`; this module owns the I/O and the tallies.
//!
//! One [`Mirroring`] for both engines, taking its copy and the primary's response where
//! each has them: the shared forwarding path ([`crate::proxy::Proxy::forward`], HTTP/2
//! clients and HTTP/1.1 clients of h2c/h2/https services) from `http` types; the
//! HTTP/1.1 engine's own exchange from the head bytes it wrote and read
//! ([`Mirroring::prepare_head`], [`MirrorSlot`]), its relay feeding the [`Tee`] the body
//! the client gets (chunked framing removed). The engine's worker only copies those
//! head bytes; the mirror thread parses and marks them: parsing the copy into a header
//! map on the worker (a dozen allocations freed on another thread) cost the worker
//! 4-13 µs of CPU per mirrored request, 1.8-3.7 µs with the bytes only. Both use the
//! worker's one [`MirrorQueue`]
//! and, for sending, the process's low-priority mirror thread ([`thread`]),
//! which sends the GET and HEAD copies for one `http1` endpoint that a tick brings
//! pipelined on one connection in one write ([`crate::h1::client::pipeline`]): the
//! kernel's work per copy (a loopback send runs the receiver's TCP path in the sender's
//! context) and the wake-ups per answer were most of a copy's cost.
//!
//! The mirror never delays or fails the client's request: the copies are sent by a
//! spawned task after the primary's response head is in, at most [`MAX_IN_FLIGHT`] per
//! worker (more → `dropped`, counted), each bounded by the mirror's `timeout`; the
//! primary's body is observed as it streams to the client ([`Tee`], up to `max_body`,
//! then length + hash only) and never held back. Requests with a body are not mirrored
//! (`dropped`): the engine streams request bodies and keeps no copy.
//!
//! Here: the worker's side (the copy, the [`Tee`], the hand-over). [`thread`]: the
//! mirror thread, its tick and pipelines. [`exchange`]: a copy's own exchange and the
//! verdict. [`tally`]: a route's counters, recent misses and learnt noise.

mod exchange;
mod tally;
mod thread;

pub use tally::{MirrorCounts, MirrorTally, RESULTS};

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use routemaster_common::mirror::{Compare, fnv1a, fnv1a_update};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use exchange::run;
use thread::{Job, MirrorRuntime, Senders, direct};

use crate::compile::MirrorTarget;
use crate::forwarding::is_hop_by_hop;
use crate::proxy::Proxy;
use crate::upstream::Clients;

/// Mirrored exchanges in progress per worker; beyond, copies are dropped.
pub const MAX_IN_FLIGHT: usize = 256;

/// Marks the copies so candidates can tell (and never mirror them again).
pub static X_ROUTEMASTER_SHADOW: HeaderName = HeaderName::from_static("x-routemaster-shadow");

/// One worker's mirror capacity.
#[derive(Debug)]
pub struct MirrorQueue(Arc<Semaphore>);

impl Default for MirrorQueue {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_IN_FLIGHT)))
    }
}

impl MirrorQueue {
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A response as the comparison sees it: a copy's answer, or the primary's as the
/// client got it.
#[derive(Debug)]
pub struct Captured {
    status: u16,
    headers: HeaderMap,
    /// The whole body up to `max_body`; beyond, its length and hash.
    body: Result<Vec<u8>, (u64, u64)>,
}

/// A body as the comparison sees it: kept whole up to `max` bytes; beyond, only its
/// length and hash (what the primary's [`Tee`] and a copy's answer both keep).
#[derive(Debug)]
struct BodyCapture {
    max: usize,
    buf: Vec<u8>,
    len: u64,
    hash: u64,
    over: bool,
}

impl BodyCapture {
    fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            len: 0,
            hash: fnv1a(b""),
            over: false,
        }
    }

    fn push(&mut self, d: &[u8]) {
        self.len += d.len() as u64;
        self.hash = fnv1a_update(self.hash, d);
        if !self.over && self.buf.len() + d.len() <= self.max {
            self.buf.extend_from_slice(d);
        } else {
            self.over = true;
            self.buf = Vec::new();
        }
    }

    /// The body kept, or beyond `max` its length and hash.
    fn finish(&mut self) -> Result<Vec<u8>, (u64, u64)> {
        if self.over {
            Err((self.len, self.hash))
        } else {
            Ok(std::mem::take(&mut self.buf))
        }
    }
}

/// The primary's response head as the worker had it: the compared fields already taken
/// (the shared path, from `http` types), or the HTTP/1.1 engine's head bytes as they
/// came from the upstream, read on the mirror thread ([`PrimaryHead::read`]) so the
/// worker only copies them.
#[derive(Debug)]
enum PrimaryHead {
    Kept { status: u16, headers: HeaderMap },
    H1(Vec<u8>),
}

impl PrimaryHead {
    /// The status and the fields `compare` looks at.
    fn read(self, compare: &Compare) -> (u16, HeaderMap) {
        let head = match self {
            Self::Kept { status, headers } => return (status, headers),
            Self::H1(head) => head,
        };
        let mut fields = [httparse::EMPTY_HEADER; crate::h1::request::MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let status = match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => resp.code.unwrap_or(0),
            _ => 0,
        };
        let mut kept = HeaderMap::new();
        for name in compare.headers() {
            for f in resp.headers.iter() {
                if f.name.eq_ignore_ascii_case(name.as_str())
                    && let Ok(v) = HeaderValue::from_bytes(f.value)
                {
                    kept.append(name.clone(), v);
                }
            }
        }
        (status, kept)
    }
}

/// The primary's response as the client got it, sent by its [`Tee`] when the body has
/// streamed past; [`Captured`] once its head is read on the mirror thread.
#[derive(Debug)]
struct Primary {
    head: PrimaryHead,
    body: Result<Vec<u8>, (u64, u64)>,
}

/// Watches the primary's response body stream past (no copy beyond `max_body`, no
/// wait): when it ends, the captured response goes to the mirror task. Dropped before
/// the end (the client went away, the body failed): the task counts the copy dropped.
#[derive(Debug)]
pub struct Tee {
    head: PrimaryHead,
    body: BodyCapture,
    done: Option<oneshot::Sender<Primary>>,
}

impl Tee {
    pub fn data(&mut self, bytes: &[u8]) {
        self.body.push(bytes);
    }

    pub fn end(mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Primary {
                head: std::mem::replace(&mut self.head, PrimaryHead::H1(Vec::new())),
                body: self.body.finish(),
            });
        }
    }
}

/// A copy as the worker took it: the shared path's upstream request parts, or the
/// HTTP/1.1 engine's upstream head bytes as written for the primary. Parsed and marked
/// on the mirror thread ([`CopyOf::parts`]): on the worker, a copy is one allocation
/// and a `memcpy`, not a parse and a header map of a dozen allocations.
#[derive(Debug)]
enum CopyOf {
    Parts(http::request::Parts),
    Head(Vec<u8>),
}

impl CopyOf {
    /// The copy to send, marked (see [`mark`]); `None`: a head that does not parse.
    fn parts(self) -> Option<http::request::Parts> {
        let mut copy = match self {
            Self::Parts(p) => p,
            Self::Head(head) => copy_of_head(&head)?,
        };
        mark(&mut copy.headers);
        Some(copy)
    }
}

/// A sampled request's mirror, from the primary's send to the comparison.
#[derive(Debug)]
pub struct Mirroring {
    target: Arc<MirrorTarget>,
    tally: Option<Arc<MirrorTally>>,
    copy: Option<CopyOf>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Mirroring {
    /// Prepares the copy of the upstream request `parts` (as sent to the primary, after
    /// the route's filters). `None` means nothing is sent: the request has a body, or
    /// the worker's mirror queue is full (both counted as dropped).
    pub fn prepare(
        target: Arc<MirrorTarget>,
        tally: Option<Arc<MirrorTally>>,
        queue: &MirrorQueue,
        parts: &http::request::Parts,
        has_body: bool,
    ) -> Option<Self> {
        Self::prepare_with(target, tally, queue, has_body, || {
            let mut copy = Request::new(());
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = parts.uri.clone();
            *copy.headers_mut() = parts.headers.clone();
            CopyOf::Parts(copy.into_parts().0)
        })
    }

    /// [`Mirroring::prepare`] for the HTTP/1.1 engine, from the upstream request head
    /// exactly as written for the primary (`head`, ending with its empty line), kept as
    /// bytes until the mirror thread reads it.
    pub fn prepare_head(
        target: Arc<MirrorTarget>,
        tally: Option<Arc<MirrorTally>>,
        queue: &MirrorQueue,
        head: &[u8],
        has_body: bool,
    ) -> Option<Self> {
        Self::prepare_with(target, tally, queue, has_body, || {
            CopyOf::Head(head.to_vec())
        })
    }

    /// The one path every copy takes: the queue's permit, then the copy (`make`).
    fn prepare_with(
        target: Arc<MirrorTarget>,
        tally: Option<Arc<MirrorTally>>,
        queue: &MirrorQueue,
        has_body: bool,
        make: impl FnOnce() -> CopyOf,
    ) -> Option<Self> {
        let Some(permit) = (!has_body).then(|| queue.try_take()).flatten() else {
            if let Some(t) = &tally {
                t.dropped();
            }
            return None;
        };
        Some(Self {
            target,
            tally,
            copy: Some(make()),
            permit: Some(permit),
        })
    }

    /// Starts the mirror once the primary's response head is in: returns the [`Tee`]
    /// for the primary's body when the route compares (`None`: fire-and-forget).
    pub fn launch(
        self,
        clients: Arc<Clients>,
        status: u16,
        headers: &HeaderMap,
        head_only: bool,
    ) -> Option<Tee> {
        self.launch_with(clients, head_only, |compare| {
            let mut kept = HeaderMap::new();
            for name in compare.headers() {
                for v in headers.get_all(name) {
                    kept.append(name.clone(), v.clone());
                }
            }
            PrimaryHead::Kept {
                status,
                headers: kept,
            }
        })
    }

    /// [`Mirroring::launch`] for the HTTP/1.1 engine, from the primary's final response
    /// head as it came from the upstream (status line and fields, already validated):
    /// kept as bytes, read on the mirror thread when the route compares.
    pub fn launch_head(self, clients: Arc<Clients>, head: &[u8], head_only: bool) -> Option<Tee> {
        self.launch_with(clients, head_only, |_| PrimaryHead::H1(head.to_vec()))
    }

    /// Starts the mirror; `head(compare)` takes what the comparison needs of the
    /// primary's head.
    fn launch_with(
        mut self,
        clients: Arc<Clients>,
        head_only: bool,
        head: impl FnOnce(&Compare) -> PrimaryHead,
    ) -> Option<Tee> {
        let (tee, primary) = match self.target.mirror.compare() {
            Some(c) => {
                let (tx, rx) = oneshot::channel();
                let tee = Tee {
                    head: head(c),
                    body: BodyCapture::new(self.target.mirror.max_body()),
                    done: Some(tx),
                };
                if head_only {
                    tee.end();
                    (None, Some(rx))
                } else {
                    (Some(tee), Some(rx))
                }
            }
            None => (None, None),
        };
        let (Some(copy), Some(permit)) = (self.copy.take(), self.permit.take()) else {
            return tee;
        };
        let job = Job {
            target: Arc::clone(&self.target),
            tally: self.tally.take(),
            copy,
            primary,
            _permit: permit,
        };
        match MirrorRuntime::get(&clients) {
            Some(rt) => rt.submit(job),
            // No mirror thread could be started: the worker sends the copies itself
            // (on hyper's clients; the worker's own pool is its engine's), one
            // exchange each.
            None => {
                if let Some(job) = job.read() {
                    let senders = Senders {
                        clients,
                        pool: None,
                    };
                    let candidate = direct(&senders, &job.target.candidate, &job);
                    let baseline = job.baseline().map(|c| direct(&senders, c, &job));
                    drop(tokio::spawn(run(job, candidate, baseline)));
                }
            }
        }
        tee
    }
}

/// Marks a copy so candidates can tell: `x-routemaster-shadow: 1`, the host with the
/// `-shadow` suffix; it has no body, so no length.
fn mark(headers: &mut HeaderMap) {
    headers.remove(http::header::CONTENT_LENGTH);
    headers.insert(X_ROUTEMASTER_SHADOW.clone(), HeaderValue::from_static("1"));
    if let Some(h) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&shadow_host(h))
    {
        headers.insert(http::header::HOST, v);
    }
}

/// The copy of an HTTP/1.1 upstream request head: its method, target and fields but
/// those of this hop (hop-by-hop ones) and of this try (`x-routemaster-attempts`, which
/// the shared path adds after taking its copy). `None`: not a head we wrote.
fn copy_of_head(head: &[u8]) -> Option<http::request::Parts> {
    // The engine's own fields and the route's filter come on top of the client's.
    let mut fields = [httparse::EMPTY_HEADER; 2 * crate::h1::request::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let mut copy = Request::builder().method(req.method?).uri(req.path?);
    for f in req.headers.iter() {
        if !is_hop_by_hop(f.name) && !f.name.eq_ignore_ascii_case("x-routemaster-attempts") {
            copy = copy.header(f.name, f.value);
        }
    }
    copy.body(()).ok().map(|r| r.into_parts().0)
}

/// A prepared mirror on the HTTP/1.1 engine's exchange, launched by the try whose
/// response is relayed to the client (a retried request has several tries; the
/// others never launch it).
#[derive(Debug)]
pub struct MirrorSlot {
    mirroring: Mutex<Option<Mirroring>>,
    clients: Arc<Clients>,
}

impl MirrorSlot {
    /// The copy of a sampled request from its upstream head, with the worker's mirror
    /// queue and clients (those of the shared path, `proxy`). `None`: nothing is sent.
    pub fn prepare(
        target: Arc<MirrorTarget>,
        proxy: &Proxy,
        head: &[u8],
        has_body: bool,
    ) -> Option<Box<Self>> {
        let tally = proxy.state().shadow.mirror_tally(&target.route);
        let mirroring =
            Mirroring::prepare_head(target, tally, proxy.mirror_queue(), head, has_body)?;
        Some(Box::new(Self {
            mirroring: Mutex::new(Some(mirroring)),
            clients: Arc::clone(proxy.clients()),
        }))
    }

    /// Launches the mirror on the primary's final response head (see
    /// [`Mirroring::launch_head`]); later calls do nothing.
    pub fn launch_head(&self, head: &[u8], head_only: bool) -> Option<Tee> {
        let mirroring = lock(&self.mirroring).take()?;
        mirroring.launch_head(Arc::clone(&self.clients), head, head_only)
    }
}

/// `host` with Envoy's `-shadow` suffix on the host part (`a.example:8080` →
/// `a.example-shadow:8080`).
pub fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, port))
            if !h.ends_with(']')
                && port.bytes().all(|b| b.is_ascii_digit())
                && !h.contains(':') =>
        {
            format!("{h}-shadow:{port}")
        }
        _ if host.starts_with('[') => match host.rsplit_once("]:") {
            Some((h, port)) => format!("{h}]-shadow:{port}"),
            None => format!("{host}-shadow"),
        },
        _ => format!("{host}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts() {
        for (host, want) in [
            ("lms.example.com", "lms.example.com-shadow"),
            ("lms.example.com:8080", "lms.example.com-shadow:8080"),
            ("[::1]:8080", "[::1]-shadow:8080"),
            ("127.0.0.1:80", "127.0.0.1-shadow:80"),
        ] {
            assert_eq!(shadow_host(host), want);
        }
    }

    #[test]
    fn a_copy_is_taken_from_the_upstream_head_as_written() {
        let attempts = "x-routemaster-attempts: 1\r\n";
        for (head, want) in [
            (
                "GET /a?x=1 HTTP/1.1\r\nhost: lms.example\r\nx-request-id: r1\r\n\r\n".to_owned(),
                Some((
                    "GET",
                    "/a?x=1",
                    vec![
                        ("host", "lms.example-shadow"),
                        ("x-request-id", "r1"),
                        ("x-routemaster-shadow", "1"),
                    ],
                )),
            ),
            // Repeated fields stay, in order; a port stays after the suffix.
            (
                "HEAD / HTTP/1.1\r\naccept: a\r\naccept: b\r\nhost: h:8080\r\n\r\n".to_owned(),
                Some((
                    "HEAD",
                    "/",
                    vec![
                        ("accept", "a"),
                        ("accept", "b"),
                        ("host", "h-shadow:8080"),
                        ("x-routemaster-shadow", "1"),
                    ],
                )),
            ),
            // This hop's fields, the body's length and the try counter are not copied.
            (
                format!(
                    "GET /ws HTTP/1.1\r\nhost: h\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                     content-length: 0\r\n{attempts}\r\n"
                ),
                Some((
                    "GET",
                    "/ws",
                    vec![("host", "h-shadow"), ("x-routemaster-shadow", "1")],
                )),
            ),
            // A candidate may already be marked: still once.
            (
                "GET / HTTP/1.1\r\nx-routemaster-shadow: 1\r\n\r\n".to_owned(),
                Some(("GET", "/", vec![("x-routemaster-shadow", "1")])),
            ),
            // Not a complete head: no copy.
            ("GET / HTTP/1.1\r\nhost: h\r\n".to_owned(), None),
            ("\r\n\r\n".to_owned(), None),
        ] {
            let got = copy_of_head(head.as_bytes()).map(|mut c| {
                mark(&mut c.headers);
                let mut fields: Vec<(String, String)> = c
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                    .collect();
                fields.sort();
                (c.method.to_string(), c.uri.to_string(), fields)
            });
            let want = want.map(|(m, pq, fields)| {
                let mut fields: Vec<(String, String)> = fields
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect();
                fields.sort();
                (m.to_owned(), pq.to_owned(), fields)
            });
            assert_eq!(got, want, "{head:?}");
        }
    }

    #[test]
    fn the_tee_keeps_small_bodies_and_digests_big_ones() {
        let tee = |max| {
            let (tx, rx) = oneshot::channel();
            (
                Tee {
                    head: PrimaryHead::H1(Vec::new()),
                    body: BodyCapture::new(max),
                    done: Some(tx),
                },
                rx,
            )
        };
        let (mut small, mut rx) = tee(10);
        small.data(b"hello");
        small.data(b"world");
        small.end();
        assert_eq!(
            rx.try_recv().ok().map(|c| c.body),
            Some(Ok(b"helloworld".to_vec()))
        );
        let (mut big, mut rx) = tee(4);
        big.data(b"hello");
        big.end();
        assert_eq!(
            rx.try_recv().ok().map(|c| c.body),
            Some(Err((5, fnv1a(b"hello"))))
        );
        let (dropped, mut rx) = tee(4);
        drop(dropped);
        assert!(rx.try_recv().is_err());
    }
}
