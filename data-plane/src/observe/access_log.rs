//! The access log (`--access-log stdout|PATH|off`): one JSON line per proxied request
//! (per WebSocket tunnel, per gRPC stream), written off the request path. A request
//! formats its line into its worker's buffer (thread-local: no lock); full buffers,
//! and every worker's buffer every 200 ms, go to one writer thread through a bounded
//! queue. When the queue is full the buffer is dropped and its lines counted
//! (`routemaster_access_log_dropped_total`): requests never wait for the disk.
//! SIGHUP makes the writer reopen the file (logrotate's `create` or `rename`).

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Outcome;

/// A worker hands its buffer over once it holds this much.
const FLUSH_AT: usize = 32 * 1024;
/// Buffers queued for the writer before lines are dropped (about 4 MiB).
const QUEUE: usize = 128;
/// How often workers hand over what they have, full or not.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

enum Msg {
    Lines(Vec<u8>, u64),
    /// Everything before it is written: answer.
    Sync(SyncSender<()>),
}

/// The sending end, shared by the workers.
#[derive(Debug)]
pub struct AccessLog {
    /// Tells each thread's buffer which log it belongs to.
    id: usize,
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

#[derive(Debug, Default)]
struct Local {
    owner: usize,
    buf: Vec<u8>,
    lines: u64,
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
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            target,
            out,
            reopen: Arc::clone(&reopen),
            written: Arc::clone(&written),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tx,
            reopen,
            written,
            dropped: AtomicU64::new(0),
        })
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// SIGHUP: the writer reopens the file before its next write.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
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
                local.buf.reserve(FLUSH_AT + 4096);
            }
            format_line(&mut local.buf, o, elapsed, SystemTime::now());
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

    fn hand_over(&self, local: &mut Local) {
        let buf = std::mem::replace(&mut local.buf, Vec::with_capacity(FLUSH_AT + 4096));
        let lines = std::mem::take(&mut local.lines);
        match self.tx.try_send(Msg::Lines(buf, lines)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(lines, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `timeout`) until everything handed over is written.
    pub fn sync(&self, timeout: Duration) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }
}

struct Writer {
    target: Target,
    out: Box<dyn Write + Send>,
    reopen: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let msg = rx.recv_timeout(FLUSH_EVERY);
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen();
            }
            match msg {
                Ok(Msg::Lines(buf, lines)) => match self.out.write_all(&buf) {
                    Ok(()) => {
                        self.written.fetch_add(lines, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, lines, "access log: cannot write");
                    }
                },
                Ok(Msg::Sync(ack)) => {
                    let _ = self.out.flush();
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.out.flush();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.out.flush();
                    return;
                }
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

/// A JSON string: `"`, `\` and control bytes escaped; bytes above ASCII are written as
/// `\u00XX` (what reaches here is ASCII-checked, so this only keeps the line valid JSON
/// whatever happens).
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
    }
    out.push(b'"');
}

fn put_opt_str(out: &mut Vec<u8>, s: &[u8]) {
    if s.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        put_str(out, s);
    }
}

/// Decimal digits without `core::fmt` (the line is on every request's path).
fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `n` in exactly `width` digits, zero-padded (`n` < 10^width).
fn put_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut n = n;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..width]);
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

/// RFC 3339, UTC, milliseconds — the same format as the rest of Routemaster.
fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = u64::try_from(year).unwrap_or(0).min(9999);
    let field = |n: i64| u64::try_from(n).unwrap_or(0);
    put_padded(out, year, 4);
    out.push(b'-');
    put_padded(out, field(month), 2);
    out.push(b'-');
    put_padded(out, field(day), 2);
    out.push(b'T');
    put_padded(out, field(rem / 3600), 2);
    out.push(b':');
    put_padded(out, field(rem / 60 % 60), 2);
    out.push(b':');
    put_padded(out, field(rem % 60), 2);
    out.push(b'.');
    put_padded(out, u64::try_from(ms % 1000).unwrap_or(0), 3);
    out.push(b'Z');
}

/// One line, with its newline.
fn format_line(out: &mut Vec<u8>, o: &Outcome<'_>, elapsed: Duration, now: SystemTime) {
    out.extend_from_slice(b"{\"time\":\"");
    put_time(out, now.checked_sub(elapsed).unwrap_or(now));
    out.extend_from_slice(b"\",\"request_id\":");
    put_str(out, o.request_id);
    out.extend_from_slice(b",\"trace_id\":");
    match o.trace {
        Some(t) => put_str(out, &t.trace_id_hex()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"client\":\"");
    put_addr(out, o.client);
    out.extend_from_slice(b"\",\"method\":");
    put_opt_str(out, o.request.method.as_bytes());
    out.extend_from_slice(b",\"authority\":");
    put_opt_str(out, o.request.authority.as_bytes());
    out.extend_from_slice(b",\"path\":");
    put_opt_str(out, o.request.path.as_bytes());
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(o.protocol.as_str().as_bytes());
    out.extend_from_slice(b"\",\"route\":");
    put_opt_str(out, o.tag.map_or("", |t| t.route_id()).as_bytes());
    out.extend_from_slice(b",\"service\":");
    put_opt_str(out, o.tag.map_or("", |t| t.service_name()).as_bytes());
    out.extend_from_slice(b",\"endpoint\":");
    put_opt_str(out, o.endpoint.unwrap_or_default().as_bytes());
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
    out.extend_from_slice(b",\"upstream_ms\":");
    match o.upstream_time {
        Some(d) => put_ms(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"tls_version\":");
    put_opt_str(out, o.request.tls_version.unwrap_or_default().as_bytes());
    out.extend_from_slice(b",\"tls_sni\":");
    put_opt_str(out, o.request.tls_sni.unwrap_or_default().as_bytes());
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
        for n in [0u64, 7, 10, 999, 1000, 123_456_789, u64::MAX] {
            let mut out = Vec::new();
            put_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
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
        for ms in [
            0u64,
            1_796_076_099_718,
            951_782_400_000,
            951_868_799_999,
            4_107_542_400_000,
            1_709_164_800_001,
            1_735_689_599_000,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            put_time(&mut out, t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                routemaster_common::time::rfc3339(t),
                "{ms}"
            );
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let metrics = super::super::Metrics::new(1);
        let pair = metrics.pair("r", "s");
        let trace = TraceContext::for_request(None, 0).0;
        let cases = [
            (Some(&*pair), "GET", "/a\"b\\c\u{1}", Some("127.0.0.1:1")),
            (None, "", "", None),
        ];
        for (tag, method, path, endpoint) in cases {
            let o = Outcome {
                started: std::time::Instant::now(),
                request_id: b"rid",
                trace: Some(&trace),
                client: "10.0.0.1:5000".parse().unwrap(),
                request: RequestInfo {
                    method,
                    authority: "example.com",
                    path,
                    tls_version: tag.map(|_| "TLSv1.3"),
                    tls_sni: None,
                },
                protocol: Protocol::Http1,
                tag,
                endpoint,
                status: 200,
                reason: Reason::Upstream,
                bytes_in: 10,
                bytes_out: 20,
                upstream_time: Some(Duration::from_micros(1500)),
            };
            let mut out = Vec::new();
            format_line(&mut out, &o, Duration::from_micros(2001), SystemTime::now());
            assert_eq!(out.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            for field in [
                "time",
                "request_id",
                "trace_id",
                "client",
                "method",
                "authority",
                "path",
                "protocol",
                "route",
                "service",
                "endpoint",
                "status",
                "flags",
                "bytes_in",
                "bytes_out",
                "duration_ms",
                "upstream_ms",
                "tls_version",
                "tls_sni",
            ] {
                assert!(v.get(field).is_some(), "{field} missing in {v}");
            }
            assert_eq!(v["duration_ms"], 2.001);
            assert_eq!(v["upstream_ms"], 1.5);
            assert_eq!(v["client"], "10.0.0.1:5000");
            assert!(v["tls_sni"].is_null());
            if tag.is_some() {
                assert_eq!(v["path"], path);
                assert_eq!(v["route"], "r");
                assert_eq!(v["service"], "s");
                assert_eq!(v["tls_version"], "TLSv1.3");
            } else {
                assert!(v["route"].is_null() && v["method"].is_null());
            }
        }
    }
}
