//! The mirror thread: one per proxy process under `SCHED_IDLE`, with its own
//! current-thread runtime and upstream clients. Workers queue mirrored exchanges
//! ([`Job`]); every tick (its length follows the rate, [`next_tick`]) the thread starts
//! them, the GET and HEAD copies to one `http1` endpoint pipelined on one connection
//! ([`Pipe`]), the others as one exchange each ([`super::exchange::send`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::exchange::{copy_host, run, send};
use super::{BodyCapture, Captured, CopyOf, MirrorTally, Primary, lock};
use crate::compile::{Cluster, MirrorTarget};
use crate::error::ProxyError;
use crate::h1::UpstreamPool;
use crate::h1::client::{Answers, Pipeline};
use crate::upstream::Clients;
use routemaster_common::model::Protocol;

/// Where the copies are sent and compared: one thread per proxy process, at the lowest
/// CPU priority (`SCHED_IDLE`), running its own current-thread runtime with its own upstream
/// clients. On a worker's runtime, a mirror task ready to run (a candidate's response,
/// a comparison) sits in the same run queue as the clients' connections and delays
/// them; on its own low-priority thread the kernel runs the workers first, so the
/// mirror takes only CPU the client requests leave. Started on the first mirrored
/// request; it lives as long as the process.
pub(super) struct MirrorRuntime {
    /// Mirrored exchanges handed over by the workers, taken by the mirror thread on its
    /// next tick (see [`MirrorRuntime::submit`]).
    queue: Arc<Mutex<Vec<Job<CopyOf>>>>,
}

/// One mirrored exchange: the copy (as a worker queued it, then read: `C`), where it
/// goes, and (when comparing) the primary's response to come.
#[derive(Debug)]
pub(super) struct Job<C = http::request::Parts> {
    pub(super) target: Arc<MirrorTarget>,
    pub(super) tally: Option<Arc<MirrorTally>>,
    pub(super) copy: C,
    pub(super) primary: Option<oneshot::Receiver<Primary>>,
    /// The worker's queue slot, freed when the exchange ends.
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Job<CopyOf> {
    /// The job with its copy read ([`CopyOf::parts`]); `None` (counted dropped) when
    /// the copy's head does not parse.
    pub(super) fn read(self) -> Option<Job> {
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
    pub(super) fn baseline(&self) -> Option<&Arc<Cluster>> {
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
/// [`super::MAX_IN_FLIGHT`] for about two ticks, so at 5 ms a 100% mirror above ~25,000
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
    pub(super) fn submit(&self, job: Job<CopyOf>) {
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
pub(super) enum CopyAnswer {
    Direct(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Captured, String>> + Send>>),
    Piped(oneshot::Receiver<Result<Captured, String>>),
}

impl CopyAnswer {
    pub(super) async fn get(self) -> Result<Captured, String> {
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
pub(super) fn direct(senders: &Senders, cluster: &Arc<Cluster>, job: &Job) -> CopyAnswer {
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
pub(super) struct Senders {
    pub(super) clients: Arc<Clients>,
    pub(super) pool: Option<Arc<UpstreamPool>>,
}

/// The largest response head a copy's answer may have.
pub(super) const MAX_HEAD: usize = 64 * 1024;

impl MirrorRuntime {
    /// The process's mirror runtime, started with clients configured like `like`;
    /// `None` when its thread could not be started.
    pub(super) fn get(like: &Clients) -> Option<&'static Self> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::{MirrorQueue, Mirroring, PrimaryHead, Tee};

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
}
