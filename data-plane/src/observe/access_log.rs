//! The access log (`--access-log stdout|PATH|off`): one JSON line per proxied request
//! (per WebSocket tunnel, per gRPC stream), written off the request path. A request
//! formats its line into its worker's buffer (thread-local: no lock, no allocation);
//! full buffers, and every worker's buffer every 200 ms, are handed over whole to a
//! queue (one uncontended lock per 64 KiB of lines). One writer thread wakes every
//! 100 ms, or when 2 MiB wait, and writes everything queued with one `writev`: the
//! workers do not wake it per buffer (that wake-up, and the context switches it brought
//! on the workers' CPU, were most of what the log cost), and under load it writes a
//! period's worth at once (each wake-up and each `writev` has a fixed cost in the
//! writer: at 256 KiB batches it took 0.24 µs per line, at 2 MiB 0.16). Written
//! buffers go back to the workers for reuse. When the queue holds [`MAX_QUEUED`]
//! bytes, a buffer handed over is dropped and its lines counted
//! (`routemaster_access_log_dropped_total`): requests never wait for the disk.
//! SIGHUP makes the writer reopen the file (logrotate's `create` or `rename`).

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{self, IoSlice, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Outcome;
use crate::ascii::{put_padded, put_u64};

/// A worker hands its buffer over once it holds this much.
const FLUSH_AT: usize = 64 * 1024;
/// Room for the line that crosses [`FLUSH_AT`] (longer lines grow the buffer).
const LINE_ROOM: usize = 4096;
/// Bytes handed over and not yet written before buffers are dropped.
const MAX_QUEUED: usize = 8 << 20;
/// Queued bytes that wake the writer before its period is up (a quarter of
/// [`MAX_QUEUED`]): below ~20 MB/s of lines (about 50k lines/s) the writer runs on its
/// period only; above, it writes about this much at a time. Smaller batches cost the
/// writer more per line (measured in the obs bench: 64 KiB 0.36 µs, 256 KiB 0.24 µs,
/// 2 MiB 0.16 µs of the writer thread's CPU per line).
const WAKE_AT: usize = 2 << 20;
/// Written buffers kept for the workers to reuse: a batch's worth, so a full batch
/// comes back without freeing and allocating buffers.
const SPARE_BUFFERS: usize = WAKE_AT / FLUSH_AT + 4;
/// How often the writer writes what was handed over (unless woken earlier).
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// How often workers hand over what they have, full or not.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

/// Buffers handed over and not yet taken by the writer.
#[derive(Debug, Default)]
struct Queue {
    bufs: Vec<Vec<u8>>,
    lines: u64,
    /// Bytes queued plus those the writer is writing (what the bound counts).
    bytes: usize,
    /// Hand-overs so far: [`AccessLog::sync`] waits until the writer has written them.
    handed: u64,
    /// The writer was woken early and has not run since.
    woken: bool,
    /// The log is dropped: the writer writes what is left and stops.
    closed: bool,
}

/// What the workers and the writer share.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Written buffers, emptied, for the workers' next hand-over.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Hand-overs written (or failed to write) so far, and its waiters.
    done: Mutex<u64>,
    done_changed: Condvar,
    reopen: AtomicBool,
    written: AtomicU64,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending end, shared by the workers.
#[derive(Debug)]
pub struct AccessLog {
    /// Tells each thread's buffer which log it belongs to.
    id: usize,
    shared: Arc<Shared>,
    writer: Thread,
}

#[derive(Debug, Default)]
struct Local {
    owner: usize,
    buf: Vec<u8>,
    lines: u64,
    clock: Clock,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn open(target: &Target) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(io::stdout()),
        Target::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        ),
    })
}

impl AccessLog {
    /// Opens `target` (an error if the file cannot be opened) and starts the writer.
    pub fn start(target: Target) -> io::Result<Self> {
        let out = open(&target)?;
        Self::with_writer(target, out)
    }

    /// The writer thread writing to `out` (`target` is what SIGHUP reopens).
    fn with_writer(target: Target, out: Box<dyn Write + Send>) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            target,
            out,
            shared: Arc::clone(&shared),
        };
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shared,
            writer: thread.thread().clone(),
        })
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// SIGHUP: the writer reopens the file before its next write.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Formats one line into this thread's buffer.
    pub(super) fn write(&self, o: &Outcome<'_>, elapsed: Duration) {
        LOCAL.with_borrow_mut(|local| {
            if local.owner != self.id {
                local.owner = self.id;
                local.buf.clear();
                local.lines = 0;
            }
            if local.buf.capacity() == 0 {
                local.buf = self.fresh_buffer();
            }
            let Local { buf, clock, .. } = local;
            format_line(buf, clock, o, elapsed);
            local.lines += 1;
            if local.buf.len() >= FLUSH_AT {
                self.hand_over(local);
            }
        });
    }

    /// Hands this thread's lines to the writer (the workers call it periodically and
    /// when they stop).
    pub fn flush_local(&self) {
        LOCAL.with_borrow_mut(|local| {
            if local.owner == self.id && !local.buf.is_empty() {
                self.hand_over(local);
            }
        });
    }

    /// A spare buffer from the writer, or a new one.
    fn fresh_buffer(&self) -> Vec<u8> {
        lock(&self.shared.spare)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FLUSH_AT + LINE_ROOM))
    }

    fn hand_over(&self, local: &mut Local) {
        let lines = std::mem::take(&mut local.lines);
        let len = local.buf.len();
        let mut q = lock(&self.shared.queue);
        if q.bytes + len > MAX_QUEUED {
            drop(q);
            local.buf.clear();
            self.shared.dropped.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        q.bytes += len;
        q.lines += lines;
        q.handed += 1;
        let wake = q.bytes >= WAKE_AT && !q.woken;
        q.woken |= wake;
        q.bufs.push(std::mem::take(&mut local.buf));
        drop(q);
        if wake {
            self.writer.unpark();
        }
        local.buf = self.fresh_buffer();
    }

    /// Waits (at most `timeout`) until everything handed over is written.
    pub fn sync(&self, timeout: Duration) {
        let target = lock(&self.shared.queue).handed;
        self.writer.unpark();
        let done = lock(&self.shared.done);
        let _ = self
            .shared
            .done_changed
            .wait_timeout_while(done, timeout, |done| *done < target);
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.writer.unpark();
    }
}

struct Writer {
    target: Target,
    out: Box<dyn Write + Send>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self) {
        loop {
            std::thread::park_timeout(WRITE_EVERY);
            if self.shared.reopen.swap(false, Ordering::AcqRel) {
                self.reopen();
            }
            let (mut bufs, lines, handed, closed) = {
                let mut q = lock(&self.shared.queue);
                q.woken = false;
                (
                    std::mem::take(&mut q.bufs),
                    std::mem::take(&mut q.lines),
                    q.handed,
                    q.closed,
                )
            };
            let bytes: usize = bufs.iter().map(Vec::len).sum();
            if !bufs.is_empty() {
                match write_all(&mut self.out, &bufs) {
                    Ok(()) => {
                        self.shared.written.fetch_add(lines, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, lines, "access log: cannot write");
                    }
                }
            }
            let _ = self.out.flush();
            lock(&self.shared.queue).bytes -= bytes;
            {
                let mut spare = lock(&self.shared.spare);
                for mut buf in bufs.drain(..) {
                    if spare.len() < SPARE_BUFFERS {
                        buf.clear();
                        spare.push(buf);
                    }
                }
            }
            let mut done = lock(&self.shared.done);
            if *done != handed {
                *done = handed;
                self.shared.done_changed.notify_all();
            }
            drop(done);
            if closed {
                return;
            }
        }
    }

    fn reopen(&mut self) {
        if self.target == Target::Stdout {
            return;
        }
        let _ = self.out.flush();
        match open(&self.target) {
            Ok(out) => {
                self.out = out;
                tracing::info!("access log reopened");
            }
            Err(e) => {
                tracing::warn!(error = %e, "access log: cannot reopen; still writing to the old file")
            }
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("target", &self.target)
            .finish()
    }
}

/// Writes all of `bufs`, as few `writev` calls as the kernel allows.
fn write_all(out: &mut dyn Write, bufs: &[Vec<u8>]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The bytes that must be escaped in a JSON string as written here: control bytes,
/// `"`, `\` and bytes above ASCII (see [`put_str`]).
const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b > 0x7e || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    t
};

/// A JSON string: `"`, `\` and control bytes escaped; bytes above ASCII are written as
/// `\u00XX` (what reaches here is ASCII-checked, so this only keeps the line valid JSON
/// whatever happens). Runs of bytes that need nothing are copied whole.
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut rest = s;
    while let Some(i) = rest.iter().position(|&b| ESCAPE[usize::from(b)]) {
        out.extend_from_slice(&rest[..i]);
        match rest[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// `,"key":"value"`, or nothing when `value` is empty: a key that does not apply is
/// left out of the line (not written as `null`), so that plain-HTTP lines do not carry
/// empty TLS keys and the like.
fn put_opt_field(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    if !value.is_empty() {
        out.extend_from_slice(key);
        put_str(out, value);
    }
}

/// Milliseconds with microsecond precision (`1.234`).
fn put_ms(out: &mut Vec<u8>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    put_u64(out, micros / 1000);
    out.push(b'.');
    put_padded(out, micros % 1000, 3);
}

/// The client address: IPv4 by hand, IPv6 through `Display`.
fn put_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                put_u64(out, u64::from(*octet));
            }
            out.push(b':');
            put_u64(out, u64::from(a.port()));
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A worker's clock for the lines' `time` (when the request started). The wall time is
/// derived from the request's start [`Instant`] and an anchor pair of clock readings
/// taken at most once a second (no clock read per line); the second's
/// `YYYY-MM-DDTHH:MM:SS.` is formatted once (by [`routemaster_common::time::rfc3339`],
/// the format of the rest of Routemaster) and kept; a line adds its milliseconds.
#[derive(Debug, Default)]
struct Clock {
    /// `Instant` and wall clock read together.
    anchor: Option<(Instant, SystemTime)>,
    /// The Unix second `prefix` is for.
    second: Option<u64>,
    prefix: [u8; 20],
}

/// How long an anchor is used for: the wall clock's slew (NTP: at most 0.5 ms a
/// second) and steps are taken in within this.
const ANCHOR_FOR: Duration = Duration::from_secs(1);

impl Clock {
    /// The wall time at `t`.
    fn wall(&mut self, t: Instant) -> SystemTime {
        let (at, wall) = match self.anchor {
            Some((at, wall)) if t.saturating_duration_since(at) < ANCHOR_FOR => (at, wall),
            _ => *self.anchor.insert((Instant::now(), SystemTime::now())),
        };
        match t.checked_duration_since(at) {
            Some(after) => wall + after,
            None => wall.checked_sub(at - t).unwrap_or(wall),
        }
    }

    /// `t` in RFC 3339, UTC, milliseconds (`2026-11-30T22:01:39.718Z`).
    fn put(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let ms = u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
            .unwrap_or(u64::MAX);
        let second = ms / 1000;
        if self.second != Some(second) {
            let text = routemaster_common::time::rfc3339(UNIX_EPOCH + Duration::from_secs(second));
            match text.as_bytes().get(..self.prefix.len()) {
                Some(p) => self.prefix.copy_from_slice(p),
                None => return out.extend_from_slice(text.as_bytes()),
            }
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        put_padded(out, ms % 1000, 3);
        out.push(b'Z');
    }
}

/// `,"route":…,"service":…` of a line: what the access log shows of a (route, service)
/// pair, escaped once when the pair's counters are made (see
/// [`super::metrics::PairMetrics`]), not per line.
pub(super) fn route_fields(route: &str, service: &str) -> Box<[u8]> {
    let mut out = Vec::new();
    put_opt_field(&mut out, b",\"route\":", route.as_bytes());
    put_opt_field(&mut out, b",\"service\":", service.as_bytes());
    out.into_boxed_slice()
}

/// One line, with its newline; `elapsed` is how long the request took. Keys that do not
/// apply to the request (no trace, no route, no upstream, plain HTTP) are left out.
fn format_line(out: &mut Vec<u8>, clock: &mut Clock, o: &Outcome<'_>, elapsed: Duration) {
    out.extend_from_slice(b"{\"time\":\"");
    let started = clock.wall(o.started);
    clock.put(out, started);
    out.extend_from_slice(b"\",\"request_id\":");
    put_str(out, o.request_id);
    if let Some(t) = o.trace {
        out.extend_from_slice(b",\"trace_id\":\"");
        t.put_trace_id(out);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"client\":\"");
    put_addr(out, o.client);
    out.push(b'"');
    put_opt_field(out, b",\"method\":", o.request.method);
    put_opt_field(out, b",\"authority\":", o.request.authority);
    put_opt_field(out, b",\"path\":", o.request.path);
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(o.protocol.as_str().as_bytes());
    out.push(b'"');
    if let Some(t) = o.tag {
        out.extend_from_slice(t.log_fields());
    }
    put_opt_field(
        out,
        b",\"endpoint\":",
        o.endpoint.unwrap_or_default().as_bytes(),
    );
    out.extend_from_slice(b",\"status\":");
    put_u64(out, u64::from(o.status));
    out.extend_from_slice(b",\"flags\":\"");
    out.extend_from_slice(o.reason.as_str().as_bytes());
    out.extend_from_slice(b"\",\"bytes_in\":");
    put_u64(out, o.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    put_u64(out, o.bytes_out);
    out.extend_from_slice(b",\"duration_ms\":");
    put_ms(out, elapsed);
    if let Some(d) = o.upstream_time {
        out.extend_from_slice(b",\"upstream_ms\":");
        put_ms(out, d);
    }
    put_opt_field(
        out,
        b",\"tls_version\":",
        o.request.tls_version.unwrap_or_default().as_bytes(),
    );
    put_opt_field(out, b",\"tls_sni\":", o.request.tls_sni.unwrap_or_default());
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::super::{Protocol, Reason, RequestInfo, TraceContext};
    use super::*;

    /// A sink that takes nothing until released: the writer thread stalls on it.
    struct Stalled(Arc<AtomicBool>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while !self.0.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_falls_behind_costs_lines_never_waits() {
        let released = Arc::new(AtomicBool::new(false));
        let log = AccessLog::with_writer(Target::Stdout, Box::new(Stalled(Arc::clone(&released))))
            .unwrap();
        let o = Outcome {
            started: std::time::Instant::now(),
            request_id: b"rid",
            trace: None,
            client: "10.0.0.1:5000".parse().unwrap(),
            request: RequestInfo::default(),
            protocol: Protocol::Http1,
            tag: None,
            endpoint: None,
            status: 200,
            reason: Reason::Upstream,
            bytes_in: 1,
            bytes_out: 1,
            upstream_time: None,
        };
        // Far more than the queue holds, while the writer is stuck on its first buffer:
        // every call returns at once, and what does not fit is dropped and counted.
        let t0 = std::time::Instant::now();
        let lines = 50_000;
        for _ in 0..lines {
            log.write(&o, Duration::from_millis(1));
        }
        log.flush_local();
        assert!(t0.elapsed() < Duration::from_secs(20), "requests waited");
        let dropped = log.dropped();
        assert!(dropped > 0, "nothing dropped");
        assert!(dropped < lines, "everything dropped");
        assert_eq!(log.written(), 0);
        // Released: what was queued is written, and counted as such.
        released.store(true, Ordering::Release);
        log.sync(Duration::from_secs(10));
        assert_eq!(log.written() + log.dropped(), lines);
    }

    #[test]
    fn numbers_and_addresses_without_fmt() {
        for (micros, want) in [
            (0, "0.000"),
            (1, "0.001"),
            (2001, "2.001"),
            (1_500_000, "1500.000"),
        ] {
            let mut out = Vec::new();
            put_ms(&mut out, Duration::from_micros(micros));
            assert_eq!(out, want.as_bytes());
        }
        for addr in [
            "10.0.0.1:5000",
            "255.255.255.255:65535",
            "0.0.0.0:0",
            "[::1]:8080",
        ] {
            let mut out = Vec::new();
            put_addr(&mut out, addr.parse().unwrap());
            assert_eq!(out, addr.as_bytes());
        }
    }

    #[test]
    fn times_are_rfc3339_like_everywhere_else() {
        // One clock for all: its cached second must not leak into the next time.
        let mut clock = Clock::default();
        for ms in [
            0u64,
            1_796_076_099_718,
            951_782_400_000,
            951_868_799_999,
            4_107_542_400_000,
            1_709_164_800_001,
            1_735_689_599_000,
            1_735_689_599_999,
            1_735_689_600_000,
            1_735_689_600_000,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            clock.put(&mut out, t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                routemaster_common::time::rfc3339(t),
                "{ms}"
            );
        }
    }

    #[test]
    fn the_clock_reads_wall_time_off_the_request_start() {
        let mut clock = Clock::default();
        let now = Instant::now();
        let wall = SystemTime::now();
        let close = |a: SystemTime, b: SystemTime| {
            let d = a
                .duration_since(b)
                .or_else(|_| b.duration_since(a))
                .unwrap();
            assert!(d < Duration::from_millis(50), "{a:?} vs {b:?}");
        };
        close(clock.wall(now), wall);
        // A start before the anchor (a long request), and one after it.
        close(
            clock.wall(now - Duration::from_secs(30)),
            wall - Duration::from_secs(30),
        );
        close(
            clock.wall(now + Duration::from_millis(300)),
            wall + Duration::from_millis(300),
        );
    }

    #[test]
    fn route_fields_are_escaped_once_and_valid_json() {
        let mut line = b"{\"a\":1".to_vec();
        line.extend_from_slice(&route_fields("r\"1", ""));
        line.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["route"], "r\"1");
        assert!(v.get("service").is_none(), "{v}");
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field_that_applies() {
        let metrics = super::super::Metrics::new(1);
        let pair = metrics.pair("r", "s");
        let trace = TraceContext::for_request(None, 0).0;
        // Always there; the rest only when it applies to the request.
        let always = [
            "time",
            "request_id",
            "client",
            "protocol",
            "status",
            "flags",
            "bytes_in",
            "bytes_out",
            "duration_ms",
        ];
        let applicable = [
            "trace_id",
            "method",
            "authority",
            "path",
            "route",
            "service",
            "endpoint",
            "upstream_ms",
            "tls_version",
            "tls_sni",
        ];
        for everything in [true, false] {
            let path = "/a\"b\\c\u{1}";
            let applies = |s: &'static str| if everything { s.as_bytes() } else { b"" };
            let o = Outcome {
                started: std::time::Instant::now(),
                request_id: b"rid",
                trace: everything.then_some(&trace),
                client: "10.0.0.1:5000".parse().unwrap(),
                request: RequestInfo {
                    method: applies("GET"),
                    authority: applies("example.com"),
                    path: applies(path),
                    tls_version: everything.then_some("TLSv1.3"),
                    tls_sni: everything.then_some(b"example.com".as_slice()),
                },
                protocol: Protocol::Http1,
                tag: everything.then_some(&*pair),
                endpoint: everything.then_some("127.0.0.1:1"),
                status: 200,
                reason: Reason::Upstream,
                bytes_in: 10,
                bytes_out: 20,
                upstream_time: everything.then_some(Duration::from_micros(1500)),
            };
            let mut out = Vec::new();
            format_line(
                &mut out,
                &mut Clock::default(),
                &o,
                Duration::from_micros(2001),
            );
            assert_eq!(out.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            for field in always {
                assert!(v.get(field).is_some(), "{field} missing in {v}");
            }
            for field in applicable {
                // Present when it applies, left out (never null) when it does not.
                assert_eq!(v.get(field).is_some(), everything, "{field} in {v}");
            }
            assert_eq!(
                v.as_object().unwrap().len(),
                always.len() + if everything { applicable.len() } else { 0 },
                "{v}"
            );
            assert_eq!(v["duration_ms"], 2.001);
            // RFC 3339 of fixed width sorts as time does: within a second of now.
            let time = v["time"].as_str().unwrap();
            let around = |d: i8| {
                let now = SystemTime::now();
                let s = Duration::from_secs(1);
                routemaster_common::time::rfc3339(if d < 0 { now - s } else { now + s })
            };
            assert!(
                around(-1).as_str() < time && time < around(1).as_str(),
                "{time}"
            );
            assert_eq!(time.len(), around(1).len(), "{time}");
            assert_eq!(v["client"], "10.0.0.1:5000");
            if everything {
                assert_eq!(v["path"], path);
                assert_eq!(v["route"], "r");
                assert_eq!(v["service"], "s");
                assert_eq!(v["upstream_ms"], 1.5);
                assert_eq!(v["tls_version"], "TLSv1.3");
                assert_eq!(v["tls_sni"], "example.com");
            }
        }
    }
}
