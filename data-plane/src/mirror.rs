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
//! and, for sending, the process's low-priority mirror thread ([`MirrorRuntime`]),
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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use routemaster_common::mirror::{
    Compare, MirrorVerdict, NoiseSet, Observed, differences, fnv1a, fnv1a_update, verdict,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::body::FromUpstream;
use crate::compile::{Cluster, MirrorTarget};
use crate::error::ProxyError;
use crate::forwarding::is_hop_by_hop;
use crate::h1::UpstreamPool;
use crate::h1::client::{Answers, Outgoing, Pipeline, Target};
use crate::proxy::Proxy;
use crate::shadow::{MissSample, RECENT_MISSES};
use crate::upstream::{Clients, RequestBody};
use routemaster_common::model::Protocol;

/// Mirrored exchanges in progress per worker; beyond, copies are dropped.
pub const MAX_IN_FLIGHT: usize = 256;
/// Longest wait for the primary's body to finish streaming to the client.
const PRIMARY_WAIT: Duration = Duration::from_secs(60);
/// Differences kept in a miss sample.
const SAMPLE_DIFFERENCES: usize = 5;

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

/// One mirrored route declaration's evidence on this proxy, and the noise its baseline
/// taught.
#[derive(Debug)]
pub struct MirrorTally {
    route: Box<str>,
    fingerprint: u64,
    counts: [AtomicU64; 5],
    recent: Mutex<VecDeque<MissSample>>,
    noise: Mutex<NoiseSet>,
}

/// The verdicts in counter order.
pub const RESULTS: [&str; 5] = ["match", "miss", "noise", "error", "dropped"];

/// A mirror tally's numbers at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorCounts {
    pub route: String,
    pub fingerprint: u64,
    /// In [`RESULTS`] order.
    pub counts: [u64; 5],
    pub recent: Vec<MissSample>,
    pub noise: Vec<String>,
}

impl MirrorTally {
    pub fn new(route: &str, fingerprint: u64) -> Self {
        Self {
            route: route.into(),
            fingerprint,
            counts: Default::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_MISSES)),
            noise: Mutex::new(NoiseSet::default()),
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn count(&self, verdict: &MirrorVerdict) {
        let i = RESULTS
            .iter()
            .position(|r| *r == verdict.label())
            .unwrap_or(3);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a copy that was not sent.
    pub fn dropped(&self) {
        self.count(&MirrorVerdict::Dropped);
    }

    pub fn counts(&self) -> MirrorCounts {
        MirrorCounts {
            route: self.route.to_string(),
            fingerprint: self.fingerprint,
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            recent: lock(&self.recent).iter().cloned().collect(),
            noise: lock(&self.noise).patterns(),
        }
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

/// Where the copies are sent and compared: one thread per proxy process, at the lowest
/// CPU priority (`SCHED_IDLE`), running its own current-thread runtime with its own upstream
/// clients. On a worker's runtime, a mirror task ready to run (a candidate's response,
/// a comparison) sits in the same run queue as the clients' connections and delays
/// them; on its own low-priority thread the kernel runs the workers first, so the
/// mirror takes only CPU the client requests leave. Started on the first mirrored
/// request; it lives as long as the process.
struct MirrorRuntime {
    /// Mirrored exchanges handed over by the workers, taken by the mirror thread on its
    /// next tick (see [`MirrorRuntime::submit`]).
    queue: Arc<Mutex<Vec<Job<CopyOf>>>>,
}

/// One mirrored exchange: the copy (as a worker queued it, then read: `C`), where it
/// goes, and (when comparing) the primary's response to come.
#[derive(Debug)]
struct Job<C = http::request::Parts> {
    target: Arc<MirrorTarget>,
    tally: Option<Arc<MirrorTally>>,
    copy: C,
    primary: Option<oneshot::Receiver<Primary>>,
    /// The worker's queue slot, freed when the exchange ends.
    _permit: OwnedSemaphorePermit,
}

impl Job<CopyOf> {
    /// The job with its copy read ([`CopyOf::parts`]); `None` (counted dropped) when
    /// the copy's head does not parse.
    fn read(self) -> Option<Job> {
        let Job {
            target,
            tally,
            copy,
            primary,
            _permit,
        } = self;
        let Some(copy) = copy.parts() else {
            if let Some(t) = &tally {
                t.dropped();
            }
            return None;
        };
        Some(Job {
            target,
            tally,
            copy,
            primary,
            _permit,
        })
    }
}

impl Job {
    /// Where the second copy goes: the baseline's service, when the exchange compares
    /// and has one.
    fn baseline(&self) -> Option<&Arc<Cluster>> {
        match (self.target.mirror.compare(), &self.tally, &self.primary) {
            (Some(_), Some(_), Some(_)) => self.target.baseline.as_ref(),
            _ => None,
        }
    }
}

/// How often the mirror thread takes the queue while copies come, and while none has
/// come for [`QUIET_AFTER`] ticks (5 s): a copy waits at most this long to start (its
/// comparison waits for the primary's body anyway), and its answers are read a tick
/// after its pipeline was written. 5 ms rather than 1: a fifth of the wake-ups, and
/// deeper pipelines (at 4,000 req/s with compare, the mirror thread's CPU per client
/// request 15.0 -> 11.3 us). An exchange holds its place in the worker's
/// [`MAX_IN_FLIGHT`] for about two ticks, so at 5 ms a 100% mirror above ~25,000
/// requests/s per worker would drop copies: from [`FAST_FROM`] jobs a millisecond the
/// ticks are [`FAST_TICK`] (slots held ~2 ms, room for ~128,000/s per worker), back to
/// 5 ms below [`FAST_UNTIL`] (apart, so the tick does not flap at one rate).
const BUSY_TICK: Duration = Duration::from_millis(5);
const FAST_TICK: Duration = Duration::from_millis(1);
const QUIET_TICK: Duration = Duration::from_millis(20);
const QUIET_AFTER: u32 = 1000;
/// Queued jobs per millisecond (all workers) from which ticks are [`FAST_TICK`].
const FAST_FROM: usize = 12;
/// Jobs per millisecond under which fast ticks go back to [`BUSY_TICK`].
const FAST_UNTIL: usize = 6;

/// The tick after one that lasted `tick` and brought `jobs` (`idle_ticks`: ticks in a
/// row that brought none).
fn next_tick(tick: Duration, jobs: usize, idle_ticks: u32) -> Duration {
    if jobs == 0 {
        return if idle_ticks < QUIET_AFTER {
            BUSY_TICK
        } else {
            QUIET_TICK
        };
    }
    let per_ms = jobs / usize::try_from(tick.as_millis().max(1)).unwrap_or(usize::MAX);
    match tick {
        FAST_TICK if per_ms >= FAST_UNTIL => FAST_TICK,
        _ if per_ms >= FAST_FROM => FAST_TICK,
        _ => BUSY_TICK,
    }
}

impl std::fmt::Debug for MirrorRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorRuntime")
            .field("queued", &lock(&self.queue).len())
            .finish_non_exhaustive()
    }
}

impl MirrorRuntime {
    /// Hands a mirrored exchange to the mirror thread without waking it: a push under an
    /// uncontended lock, no syscall on the worker (a spawn onto another runtime writes
    /// its eventfd and switches to its thread once per mirrored request).
    fn submit(&self, job: Job<CopyOf>) {
        lock(&self.queue).push(job);
    }
}

/// The mirror thread's loop: every tick, start what the workers queued. Copies to an
/// `http1` endpoint with a method [`Pipeline::takes`] go out together, one pipeline
/// per endpoint (up to [`PIPELINE_DEPTH`] copies each) on one connection in one write;
/// the others as one exchange each.
async fn take_queue(queue: Arc<Mutex<Vec<Job<CopyOf>>>>, senders: Senders) {
    let mut idle_ticks = 0u32;
    let mut batch = Vec::new();
    let mut pipes: Vec<Pipe> = Vec::new();
    let mut tick = BUSY_TICK;
    loop {
        tokio::time::sleep(tick).await;
        std::mem::swap(&mut batch, &mut *lock(&queue));
        idle_ticks = if batch.is_empty() {
            idle_ticks.saturating_add(1)
        } else {
            0
        };
        tick = next_tick(tick, batch.len(), idle_ticks);
        if !batch.is_empty() {
            start(&mut batch, &senders, &mut pipes, tick);
        }
    }
}

/// Starts a tick's jobs (`batch`, left empty): each its exchange's task, and one task
/// per pipeline (`pipes`, a buffer kept across ticks).
fn start(batch: &mut Vec<Job<CopyOf>>, senders: &Senders, pipes: &mut Vec<Pipe>, tick: Duration) {
    for job in batch.drain(..).filter_map(Job::read) {
        let candidate = dispatch(senders, &job.target.candidate, &job, pipes);
        let baseline = job.baseline().map(|c| dispatch(senders, c, &job, pipes));
        drop(tokio::spawn(run(job, candidate, baseline)));
    }
    if let Some(pool) = &senders.pool {
        for pipe in pipes.drain(..) {
            drop(tokio::spawn(pipe.send(Arc::clone(pool), tick)));
        }
    }
}

/// Copies to one endpoint pipelined on one connection at most: deeper, a slow answer
/// holds up more of the others behind it.
const PIPELINE_DEPTH: usize = 32;

/// A copy's answer to come: its own exchange, or its place in a pipeline.
enum CopyAnswer {
    Direct(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Captured, String>> + Send>>),
    Piped(oneshot::Receiver<Result<Captured, String>>),
}

impl CopyAnswer {
    async fn get(self) -> Result<Captured, String> {
        match self {
            Self::Direct(f) => f.await,
            // The pipeline answers every copy before it ends; a pipeline that could not
            // (its task dropped with the thread's runtime) leaves no answer.
            Self::Piped(rx) => rx
                .await
                .unwrap_or_else(|_| Err("the mirror's pipeline ended without an answer".into())),
        }
    }
}

/// The copy of `job` to `cluster` as its own exchange.
fn direct(senders: &Senders, cluster: &Arc<Cluster>, job: &Job) -> CopyAnswer {
    let m = &job.target.mirror;
    CopyAnswer::Direct(Box::pin(send(
        senders,
        cluster,
        &job.copy,
        m.timeout(),
        m.max_body(),
    )))
}

/// The copy of `job` to `cluster`: into the tick's pipeline for its endpoint when it
/// can be pipelined, else its own exchange.
fn dispatch(
    senders: &Senders,
    cluster: &Arc<Cluster>,
    job: &Job,
    pipes: &mut Vec<Pipe>,
) -> CopyAnswer {
    if senders.pool.is_none()
        || cluster.protocol() != Protocol::Http1
        || !Pipeline::takes(&job.copy.method)
    {
        return direct(senders, cluster, job);
    }
    let endpoint = match cluster.pick(0) {
        Ok(e) => e,
        Err(_) => {
            let e = format!("no instance of {} to send to", cluster.name());
            return CopyAnswer::Direct(Box::pin(std::future::ready(Err(e))));
        }
    };
    let i = match pipes
        .iter()
        .position(|p| p.authority == *endpoint.authority() && p.requests.len() < PIPELINE_DEPTH)
    {
        Some(i) => i,
        None => {
            pipes.push(Pipe {
                authority: endpoint.authority().clone(),
                requests: Pipeline::default(),
                copies: Vec::new(),
                timeout: Duration::ZERO,
            });
            pipes.len() - 1
        }
    };
    let pipe = &mut pipes[i];
    pipe.requests.push(&job.copy, copy_host(&job.copy).as_ref());
    let m = &job.target.mirror;
    pipe.timeout = pipe.timeout.max(m.timeout());
    let (tx, rx) = oneshot::channel();
    pipe.copies.push(PipedCopy {
        answer: Some(tx),
        endpoint,
        timeout: m.timeout(),
        head: None,
        body: BodyCapture::new(m.max_body()),
    });
    CopyAnswer::Piped(rx)
}

/// One tick's copies to one endpoint.
struct Pipe {
    authority: http::uri::Authority,
    requests: Pipeline,
    copies: Vec<PipedCopy>,
    /// The longest of the copies' timeouts: the pipeline's own bound.
    timeout: Duration,
}

/// One pipelined copy's answer as it comes in.
struct PipedCopy {
    answer: Option<oneshot::Sender<Result<Captured, String>>>,
    endpoint: crate::compile::EndpointGuard,
    timeout: Duration,
    head: Option<http::response::Parts>,
    body: BodyCapture,
}

impl PipedCopy {
    fn answer(&mut self, result: Result<Captured, String>) {
        if let Some(tx) = self.answer.take() {
            self.endpoint.record(result.is_ok());
            let _ = tx.send(result);
        }
    }
}

impl Pipe {
    /// Sends the copies and hands each its answer; copies still unanswered when the
    /// pipeline's time is up are slower than their timeout.
    /// The answers are read from `tick` after the write (the mirror thread's tick).
    async fn send(mut self, pool: Arc<UpstreamPool>, tick: Duration) {
        let mut answers = PipeAnswers {
            copies: &mut self.copies,
            authority: &self.authority,
        };
        let sent = crate::h1::client::pipeline(
            &pool,
            &self.authority,
            &self.requests,
            MAX_HEAD,
            tick,
            &mut answers,
        );
        let _ = tokio::time::timeout(self.timeout, sent).await;
        for c in &mut self.copies {
            let timeout = c.timeout;
            c.answer(Err(format!("slower than the mirror timeout ({timeout:?})")));
        }
    }
}

/// [`Answers`] into a pipe's copies.
struct PipeAnswers<'a> {
    copies: &'a mut [PipedCopy],
    authority: &'a http::uri::Authority,
}

impl Answers for PipeAnswers<'_> {
    fn head(&mut self, i: usize, parts: http::response::Parts) {
        self.copies[i].head = Some(parts);
    }

    fn data(&mut self, i: usize, d: &[u8]) {
        self.copies[i].body.push(d);
    }

    fn end(&mut self, i: usize) {
        let c = &mut self.copies[i];
        let Some(parts) = c.head.take() else { return };
        let body = c.body.finish();
        c.answer(Ok(Captured {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }));
    }

    fn failed(&mut self, i: usize, e: &ProxyError) {
        let c = &mut self.copies[i];
        let name = c.endpoint.cluster().name().to_owned();
        c.answer(Err(format!("{name} {}: {e}", self.authority)));
    }
}

/// What a mirror task sends with: hyper's clients, and (on the mirror thread) an
/// HTTP/1.1 engine pool for `http1` services — a copy there costs what a proxied
/// request's upstream half costs on the engine, not a hyper client exchange.
#[derive(Debug)]
struct Senders {
    clients: Arc<Clients>,
    pool: Option<Arc<UpstreamPool>>,
}

/// The largest response head a copy's answer may have.
const MAX_HEAD: usize = 64 * 1024;

impl MirrorRuntime {
    /// The process's mirror runtime, started with clients configured like `like`;
    /// `None` when its thread could not be started.
    fn get(like: &Clients) -> Option<&'static Self> {
        static RUNTIME: std::sync::OnceLock<Option<MirrorRuntime>> = std::sync::OnceLock::new();
        RUNTIME
            .get_or_init(|| match Self::start(like) {
                Ok(rt) => Some(rt),
                Err(e) => {
                    tracing::warn!(error = %e, "no mirror thread: workers send mirror copies themselves");
                    None
                }
            })
            .as_ref()
    }

    fn start(like: &Clients) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle();
        let options = like.options();
        let pool = Arc::new(UpstreamPool::new(
            options.connect_timeout,
            options.idle_timeout,
        ));
        // Idle connections age out as on the workers: a sweep every half idle timeout.
        let sweeping = Arc::clone(&pool);
        let period = (options.idle_timeout / 2).max(Duration::from_millis(100));
        handle.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                sweeping.sweep();
            }
        });
        let queue = Arc::new(Mutex::new(Vec::new()));
        let taken = Arc::clone(&queue);
        let senders = Senders {
            clients: Arc::new(like.sibling()),
            pool: Some(pool),
        };
        std::thread::Builder::new()
            .name("mirror".into())
            .spawn(move || {
                lower_priority();
                runtime.block_on(take_queue(taken, senders));
            })?;
        Ok(Self { queue })
    }
}

/// Puts the calling thread (the mirror's) under `SCHED_IDLE`: it runs only when no
/// worker wants the CPU, and a worker that wakes preempts it at once (under nice 19 a
/// woken worker can still wait for the mirror's slice). Falls back to nice 19; best
/// effort: at the default priority the mirror still works, it only competes with the
/// workers on equal terms.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    let Err(idle) = idle else { return };
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), MIRROR_NICE)
    {
        tracing::warn!(sched_idle = ?idle, nice = %e, "mirror thread keeps the default priority");
    }
}

/// The mirror thread's nice value when `SCHED_IDLE` is refused: the lowest.
const MIRROR_NICE: i32 = 19;

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

/// One mirrored exchange: the copies' answers (`baseline` only when comparing with
/// one), then (when comparing) the verdict.
async fn run(job: Job, candidate: CopyAnswer, baseline: Option<CopyAnswer>) {
    let Job {
        target,
        tally,
        copy,
        primary,
        _permit,
    } = job;
    let candidate = candidate.get();
    let (Some(compare), Some(tally), Some(primary)) = (target.mirror.compare(), tally, primary)
    else {
        // Fire-and-forget: read and discard.
        let _ = candidate.await;
        return;
    };
    let baseline = async {
        match baseline {
            Some(b) => Some(b.get().await),
            None => None,
        }
    };
    let (candidate, baseline) = tokio::join!(candidate, baseline);
    let primary = match tokio::time::timeout(PRIMARY_WAIT, primary).await {
        Ok(Ok(Primary { head, body })) => {
            let (status, headers) = head.read(compare);
            Captured {
                status,
                headers,
                body,
            }
        }
        // The client's response did not complete: nothing to compare against.
        _ => {
            tally.dropped();
            return;
        }
    };
    let observe = |status: u16, headers: &HeaderMap, body: &Result<Vec<u8>, (u64, u64)>| {
        Observed::new(
            compare,
            status,
            |name| joined(headers, name),
            body.as_ref().map(Vec::as_slice).map_err(|e| *e),
        )
    };
    let primary_seen = observe(primary.status, &primary.headers, &primary.body);
    let result = match candidate {
        Err(reason) => MirrorVerdict::Error(reason),
        Ok(c) => {
            let candidate_seen = observe(c.status, &c.headers, &c.body);
            let diffs = differences(compare, &primary_seen, &candidate_seen);
            let mut noise = lock(&tally.noise);
            if let Some(Ok(b)) = &baseline {
                let baseline_seen = observe(b.status, &b.headers, &b.body);
                noise.learn(&differences(compare, &primary_seen, &baseline_seen));
            }
            verdict(diffs, &noise)
        }
    };
    tally.count(&result);
    let sample = match &result {
        MirrorVerdict::Miss(diffs) => Some((
            join(diffs, |d| format!("{}={}", d.path, d.primary)),
            join(diffs, |d| format!("{}={}", d.path, d.candidate)),
        )),
        MirrorVerdict::Error(reason) => {
            Some((primary.status.to_string(), format!("error: {reason}")))
        }
        _ => None,
    };
    if let Some((expected, actual)) = sample {
        let mut ring = lock(&tally.recent);
        if ring.len() == RECENT_MISSES {
            ring.pop_front();
        }
        ring.push_back(MissSample {
            at: SystemTime::now(),
            request_id: copy
                .headers
                .get(crate::forwarding::X_REQUEST_ID.clone())
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            method: copy.method.as_str().to_owned(),
            path: copy
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
            expected,
            actual,
        });
    }
}

fn join(
    diffs: &[routemaster_common::mirror::Difference],
    f: impl Fn(&routemaster_common::mirror::Difference) -> String,
) -> String {
    let mut parts: Vec<String> = diffs.iter().take(SAMPLE_DIFFERENCES).map(f).collect();
    if diffs.len() > SAMPLE_DIFFERENCES {
        parts.push(format!("… {} more", diffs.len() - SAMPLE_DIFFERENCES));
    }
    parts.join("; ")
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The `host` a copy needs added: a copy of an HTTP/2 upstream request has its host only
/// as the `:authority` (given the `-shadow` suffix, as the header is).
fn copy_host(copy: &http::request::Parts) -> Option<HeaderValue> {
    if copy.headers.contains_key(http::header::HOST) {
        return None;
    }
    copy.uri
        .authority()
        .and_then(|a| HeaderValue::from_str(&shadow_host(a.as_str())).ok())
}

/// Sends one copy to an endpoint of `cluster` and reads its response (bounded by
/// `timeout` overall, the body kept up to `max_body`).
fn send(
    senders: &Senders,
    cluster: &Arc<Cluster>,
    copy: &http::request::Parts,
    timeout: Duration,
    max_body: usize,
) -> impl std::future::Future<Output = Result<Captured, String>> + use<> {
    let clients = Arc::clone(&senders.clients);
    let pool = senders.pool.clone();
    let cluster = Arc::clone(cluster);
    let mut req = Request::new(RequestBody::full(Bytes::new()));
    *req.method_mut() = copy.method.clone();
    *req.headers_mut() = copy.headers.clone();
    let path = copy.uri.path_and_query().cloned();
    let host = copy_host(copy);
    async move {
        let endpoint = cluster
            .pick(0)
            .map_err(|_| format!("no instance of {} to send to", cluster.name()))?;
        let protocol = cluster.protocol();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if protocol.is_tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        uri.authority = Some(endpoint.authority().clone());
        uri.path_and_query = path;
        *req.uri_mut() = Uri::from_parts(uri).map_err(|e| e.to_string())?;
        *req.version_mut() = if protocol.is_http2() {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let exchange = async {
            let failed = |e: &dyn std::fmt::Display| {
                format!("{} {}: {e}", cluster.name(), endpoint.authority())
            };
            let resp = match pool {
                Some(pool) if protocol == Protocol::Http1 => {
                    let (mut head, _) = req.into_parts();
                    if let Some(host) = host {
                        head.headers.insert(http::header::HOST, host);
                    }
                    let to = Target {
                        authority: endpoint.authority(),
                        service: None,
                        limited: None,
                        max_head: MAX_HEAD,
                    };
                    let out = Outgoing {
                        parts: &head,
                        body: &Bytes::new(),
                    };
                    crate::h1::client::send(&pool, to, out)
                        .await
                        .map_err(|e| failed(&e))?
                        .map(|body| FromUpstream::H1 { body })
                }
                _ => clients
                    .request(protocol, cluster.tls(), endpoint.authority(), req)
                    .await
                    .map_err(|e| failed(&e))?
                    .map(|body| FromUpstream::Hyper { body }),
            };
            let (parts, mut body) = resp.into_parts();
            let mut captured = BodyCapture::new(max_body);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("body: {e}"))?;
                if let Some(d) = frame.data_ref() {
                    captured.push(d);
                }
            }
            Ok(Captured {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: captured.finish(),
            })
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("slower than the mirror timeout ({timeout:?})")));
        endpoint.record(result.is_ok());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_follows_the_rate_with_hysteresis() {
        for (tick, jobs, idle, want, why) in [
            (BUSY_TICK, 0, 0, BUSY_TICK, "none this tick, not yet quiet"),
            (BUSY_TICK, 0, QUIET_AFTER, QUIET_TICK, "quiet"),
            (FAST_TICK, 0, 1, BUSY_TICK, "none after fast ticks"),
            (QUIET_TICK, 1, 0, BUSY_TICK, "a job wakes it up"),
            (BUSY_TICK, 20, 0, BUSY_TICK, "4,000/s stays at 5 ms"),
            (BUSY_TICK, 59, 0, BUSY_TICK, "just under 12 a ms"),
            (BUSY_TICK, 60, 0, FAST_TICK, "12 a ms"),
            (FAST_TICK, 8, 0, FAST_TICK, "8 a ms keeps fast ticks"),
            (FAST_TICK, 6, 0, FAST_TICK, "6 a ms keeps fast ticks"),
            (FAST_TICK, 5, 0, BUSY_TICK, "under 6 a ms goes back"),
            (QUIET_TICK, 400, 0, FAST_TICK, "a burst after quiet"),
        ] {
            assert_eq!(next_tick(tick, jobs, idle), want, "{why}");
        }
    }

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

    /// Compared copies pipelined to a candidate that answers the first two and closes
    /// the connection without notice: the third and fourth copies are `error`s (their
    /// exchanges only; the clients' responses were never involved), and a copy with a
    /// method that is not pipelined goes out on its own.
    #[tokio::test]
    async fn copies_a_pipeline_left_unanswered_are_errors() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let lines_tx = lines_tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    // The pipelined four, or one OPTIONS.
                    loop {
                        let heads = seen.windows(4).filter(|w| *w == b"\r\n\r\n").count();
                        if heads == 4 || (heads == 1 && seen.starts_with(b"OPTIONS")) {
                            break;
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8(seen).unwrap();
                    let heads: Vec<String> = text
                        .split("\r\n\r\n")
                        .filter(|h| !h.is_empty())
                        .map(|h| h.lines().next().unwrap().to_owned())
                        .collect();
                    let n = if heads.len() == 4 { 2 } else { 1 };
                    lines_tx.send(heads).unwrap();
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
                    s.write_all(ok.repeat(n).as_bytes()).await.unwrap();
                });
            }
        });
        let yaml = format!(
            "services:\n  - name: lms\n    instances: [{{ address: \"{addr}\" }}]\n\
             routes:\n  - {{ id: r, path: {{ prefix: / }}, forward: {{ service: lms, mirror: \
             {{ service: lms, methods: [GET, OPTIONS], compare: {{ headers: [content-type] }} }} }} }}\n"
        );
        let target = crate::compile::mirror_target_for_tests(&yaml);
        let tally = Arc::new(MirrorTally::new("r", 1));
        let queue = MirrorQueue::default();
        let mut batch = Vec::new();
        for (i, method) in ["GET", "GET", "GET", "GET", "OPTIONS"]
            .into_iter()
            .enumerate()
        {
            let head = format!("{method} /{i} HTTP/1.1\r\nhost: lms\r\n\r\n");
            let mut m = Mirroring::prepare_head(
                Arc::clone(&target),
                Some(Arc::clone(&tally)),
                &queue,
                head.as_bytes(),
                false,
            )
            .unwrap();
            // The primary's response, already all in.
            let (tx, rx) = oneshot::channel();
            let mut tee = Tee {
                head: PrimaryHead::H1(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n"
                        .to_vec(),
                ),
                body: BodyCapture::new(1024),
                done: Some(tx),
            };
            tee.data(b"ok");
            tee.end();
            batch.push(Job {
                target: Arc::clone(&target),
                tally: Some(Arc::clone(&tally)),
                copy: m.copy.take().unwrap(),
                primary: Some(rx),
                _permit: m.permit.take().unwrap(),
            });
        }
        let senders = Senders {
            clients: Arc::new(Clients::new(&crate::upstream::UpstreamOptions::default())),
            pool: Some(Arc::new(UpstreamPool::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
            ))),
        };
        let mut pipes = Vec::new();
        start(&mut batch, &senders, &mut pipes, BUSY_TICK);
        assert!(batch.is_empty() && pipes.is_empty());
        let mut seen = vec![
            lines_rx.recv().await.unwrap(),
            lines_rx.recv().await.unwrap(),
        ];
        seen.sort();
        assert_eq!(
            seen,
            vec![
                vec![
                    "GET /0 HTTP/1.1",
                    "GET /1 HTTP/1.1",
                    "GET /2 HTTP/1.1",
                    "GET /3 HTTP/1.1"
                ],
                vec!["OPTIONS /4 HTTP/1.1"],
            ]
        );
        let counts = loop {
            let c = tally.counts();
            if c.counts.iter().sum::<u64>() == 5 {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // match, miss, noise, error, dropped
        assert_eq!(counts.counts, [3, 0, 0, 2, 0]);
        assert_eq!(counts.recent.len(), 2);
        for sample in &counts.recent {
            assert!(sample.actual.starts_with("error: lms "), "{sample:?}");
            assert!(["/2", "/3"].contains(&sample.path.as_str()), "{sample:?}");
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
