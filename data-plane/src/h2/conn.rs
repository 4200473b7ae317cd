//! One HTTP/2 connection (RFC 9113), served in one task: frames are read and answered
//! here, and each stream's work (the request's future, then its response body) runs as
//! a slot of this connection, polled with a waker of its own — no task is spawned per
//! stream, no lock guards the stream table, and a stream the client resets is dropped
//! (its upstream exchange with it) the moment the RST_STREAM is read.
//!
//! Per poll: streams whose wakers fired run; complete frames in the read buffer are
//! handled and more are read; then everything written is flushed in one write. A peer
//! that stops reading stops being read (the write buffer's high-water mark), so no
//! frame it sends (PING, SETTINGS, resets) can grow our buffers without bound.
//!
//! Flow control: a response's DATA waits for both the stream's and the connection's
//! send window. A request body's window reopens as the request path reads it
//! ([`super::body`]); the connection's receive window is credited as DATA arrives (the
//! stream windows, [`MAX_CONCURRENT_STREAMS`] × 64 KiB, bound what is buffered).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{Inbound, RequestStream};
use super::frame::{self, Head, Reason};
use super::hpack;
use super::request::{Fields, Refusal, is_connection_specific};
use crate::body::BoxError;
use crate::upstream::RequestBody;

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
pub(crate) const MAX_CONCURRENT_STREAMS: usize = 128;
/// Stop reading (and stop polling response bodies) while this much is unwritten.
const HIGH_WATER: usize = 64 * 1024;
/// The connection's receive window, raised from 64 KiB at the start.
const CONNECTION_WINDOW: u32 = 1 << 20;
/// Streams the client may reset (or make us reset) before their response started, net
/// of the streams that completed, each of which gives one back (CVE-2023-44487, "rapid
/// reset", and CVE-2025-8671): past it, GOAWAY ENHANCE_YOUR_CALM. Room for a client
/// that cancels a burst of calls at once (a deadline over 20 concurrent gRPC calls, a
/// page navigation) while an attacker's opened-and-cancelled streams stay few.
pub(crate) const RESET_BUDGET: i32 = 30;
/// How long a connection that sent GOAWAY and has no stream left waits for the GOAWAY
/// to be written before it closes anyway.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// The idle timer's period when the idle close is off.
const OFF: std::time::Duration = std::time::Duration::from_secs(3600);
/// Response body frames one stream may produce per turn before the others run.
const FRAMES_PER_TURN: usize = 16;

/// What the connection hands each request to.
pub(crate) trait Service: Send + 'static {
    type Body: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static;
    fn call(
        &mut self,
        req: Request<RequestBody>,
    ) -> Pin<Box<dyn Future<Output = Response<Self::Body>> + Send>>;
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// SETTINGS_MAX_HEADER_LIST_SIZE; a larger request head is answered 431.
    pub max_header_bytes: usize,
    /// A connection with no stream open this long gets GOAWAY and is closed
    /// (`--keepalive-timeout`).
    pub idle_timeout: std::time::Duration,
}

/// Serves one connection until it ends: the client closes it, a connection error, or
/// after `drain` resolves or once no stream has been open for the idle timeout (GOAWAY,
/// then the streams in progress finish).
pub(crate) async fn serve<Io, Svc>(
    io: Io,
    prefix: Vec<u8>,
    service: Svc,
    config: Config,
    drain: impl Future<Output = ()>,
) -> io::Result<()>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    Svc: Service,
{
    let mut conn = Connection::new(io, prefix, service, config);
    let mut drain = std::pin::pin!(drain);
    let mut drained = false;
    // One timer for the connection's life, re-armed only when it fires: a busy
    // connection's streams never touch it. `--keepalive-timeout 0` turns the idle close
    // off for HTTP/2 (a connection starts idle: zero would race its first request).
    let timeout = config.idle_timeout;
    let off = timeout.is_zero();
    let mut idle = Box::pin(tokio::time::sleep(if off { OFF } else { timeout }));
    std::future::poll_fn(|cx| {
        if !drained && drain.as_mut().poll(cx).is_ready() {
            drained = true;
            conn.go_away(Reason::NO_ERROR);
        }
        while idle.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            if conn.going_away {
                // After our GOAWAY, a connection with no stream left closes even if the
                // GOAWAY could not be written (a client that does not read).
                if conn.ids.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                idle.as_mut().reset(now + GOAWAY_GRACE);
                continue;
            }
            match conn.idle_since {
                _ if off => idle.as_mut().reset(now + OFF),
                Some(since) if now >= since + timeout => {
                    tracing::debug!("h2 connection idle for the keep-alive timeout; GOAWAY");
                    conn.go_away(Reason::NO_ERROR);
                    idle.as_mut().reset(now + GOAWAY_GRACE);
                }
                Some(since) => idle.as_mut().reset(since + timeout),
                None => idle.as_mut().reset(now + timeout),
            }
        }
        conn.poll(cx)
    })
    .await
}

/// WINDOW_UPDATE and RST_STREAM carry exactly 4 bytes (§6.9, §6.4).
fn four_bytes(head: Head, why: &'static str) -> Result<(), ConnError> {
    if head.len == 4 {
        Ok(())
    } else {
        Err(conn_error(Reason::FRAME_SIZE_ERROR, why))
    }
}

/// A connection error (RFC 9113 §5.4.1): GOAWAY with `reason`, then close.
#[derive(Debug, Clone, Copy)]
struct ConnError {
    reason: Reason,
    why: &'static str,
}

fn conn_error(reason: Reason, why: &'static str) -> ConnError {
    ConnError { reason, why }
}

type Respond<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

enum Task<B> {
    /// The request path has the request.
    Respond(Respond<B>),
    /// The response head is sent; its body is being relayed.
    Body(B),
    /// The response is complete (or was reset).
    Done,
}

struct Stream<B> {
    id: u32,
    task: Task<B>,
    /// Set while the client may still send DATA on the stream.
    inbound: Option<Arc<Inbound>>,
    recv_window: i64,
    /// The request's `content-length`, and the DATA bytes received so far.
    declared: Option<u64>,
    received: u64,
    send_window: i64,
    /// Response data waiting for window (the body is not polled meanwhile).
    pending: Option<Bytes>,
    /// `pending` is the body's last data.
    pending_end: bool,
    responded: bool,
}

/// However a stream goes (removed, or the connection ends on an error or is dropped),
/// a request body still being read upstream sees an error rather than waiting forever.
impl<B> Drop for Stream<B> {
    fn drop(&mut self) {
        if let Some(inbound) = self.inbound.take() {
            inbound.reset();
        }
    }
}

/// A header block in progress: HEADERS without END_HEADERS, then CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

/// Which stream slots were woken, and the connection task's waker.
#[derive(Default)]
struct Ready {
    inner: Mutex<ReadyInner>,
}

#[derive(Default)]
struct ReadyInner {
    slots: Vec<usize>,
    task: Option<Waker>,
}

/// A stream slot's waker: it queues its slot and wakes the connection's task. One per
/// slot for the connection's lifetime (slots are reused), so a stream costs no waker
/// allocation; a stale wake reaching the slot's next stream only polls it spuriously.
struct SlotWake {
    slot: usize,
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut inner = self
            .ready
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        inner.slots.push(self.slot);
        if let Some(task) = &inner.task {
            task.wake_by_ref();
        }
    }
}

struct Connection<Io, Svc: Service> {
    io: Io,
    service: Svc,
    config: Config,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Scratch for encoding a response's header block.
    block: BytesMut,
    decoder: hpack::Decoder,
    preface: bool,
    settings_seen: bool,
    partial: Option<Partial>,
    streams: Vec<Option<Stream<Svc::Body>>>,
    wakers: Vec<(Arc<SlotWake>, Waker)>,
    free: Vec<usize>,
    ids: HashMap<u32, usize, foldhash::fast::RandomState>,
    ready: Arc<Ready>,
    woken: Vec<usize>,
    /// Slots waiting for the connection's send window, and for the write buffer.
    conn_blocked: Vec<usize>,
    write_blocked: Vec<usize>,
    last_stream: u32,
    peer_max_frame: usize,
    peer_initial_window: i64,
    send_window: i64,
    /// DATA received and not yet credited back to the connection's window.
    recv_uncredited: u32,
    reset_budget: i32,
    /// The client's SETTINGS_HEADER_TABLE_SIZE, and a lowered one still to acknowledge
    /// with a size update at the start of our next header block.
    peer_table_size: usize,
    table_size_update: Option<usize>,
    /// Since when no stream is open (`None` while one is): the idle timeout's clock.
    idle_since: Option<tokio::time::Instant>,
    going_away: bool,
    /// The last stream identifier of our first GOAWAY: a later one (a connection error
    /// after a drain) repeats it, as RFC 9113 §6.8 forbids raising it (streams opened
    /// after the first are ignored, yet still raise `last_stream`).
    goaway_last: Option<u32>,
    peer_going_away: bool,
    failed: bool,
    eof: bool,
    needs_flush: bool,
}

impl<Io, Svc> Connection<Io, Svc>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    Svc: Service,
{
    fn new(io: Io, prefix: Vec<u8>, service: Svc, config: Config) -> Self {
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        rbuf.extend_from_slice(&prefix);
        let mut wbuf = BytesMut::with_capacity(16 * 1024);
        frame::put_settings(
            &mut wbuf,
            &[
                (
                    frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                    MAX_CONCURRENT_STREAMS as u32,
                ),
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX),
                ),
            ],
        );
        frame::put_window_update(
            &mut wbuf,
            0,
            CONNECTION_WINDOW - frame::DEFAULT_WINDOW as u32,
        );
        Self {
            io,
            service,
            config,
            rbuf,
            wbuf,
            block: BytesMut::with_capacity(512),
            decoder: hpack::Decoder::new(4096),
            preface: false,
            settings_seen: false,
            partial: None,
            streams: Vec::new(),
            wakers: Vec::new(),
            free: Vec::new(),
            ids: HashMap::default(),
            ready: Arc::default(),
            woken: Vec::new(),
            conn_blocked: Vec::new(),
            write_blocked: Vec::new(),
            last_stream: 0,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            peer_initial_window: frame::DEFAULT_WINDOW,
            send_window: frame::DEFAULT_WINDOW,
            recv_uncredited: 0,
            reset_budget: RESET_BUDGET,
            peer_table_size: 4096,
            table_size_update: None,
            idle_since: Some(tokio::time::Instant::now()),
            going_away: false,
            goaway_last: None,
            peer_going_away: false,
            failed: false,
            eof: false,
            needs_flush: true,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut ready = self
                .ready
                .inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !ready.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                ready.task = Some(cx.waker().clone());
            }
        }
        loop {
            let mut progress = false;
            // 1. Streams whose wakers fired.
            {
                let mut ready = self
                    .ready
                    .inner
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                std::mem::swap(&mut ready.slots, &mut self.woken);
            }
            if !self.woken.is_empty() {
                progress = true;
                let mut woken = std::mem::take(&mut self.woken);
                for &slot in &woken {
                    self.run(slot);
                }
                woken.clear();
                self.woken = woken;
            }
            // 2. Frames the client sent.
            if !self.failed && !self.eof && self.wbuf.len() < HIGH_WATER {
                if let Err(e) = self.read_frames() {
                    self.fail(e);
                } else if self.wbuf.len() < HIGH_WATER {
                    if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                        self.rbuf.reserve(16 * 1024);
                    }
                    match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
                    {
                        Poll::Ready(Ok(0)) => self.eof = true,
                        Poll::Ready(Ok(_)) => progress = true,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
            }
            if self.recv_uncredited >= CONNECTION_WINDOW / 4 {
                frame::put_window_update(&mut self.wbuf, 0, self.recv_uncredited);
                self.recv_uncredited = 0;
            }
            // 3. Everything written, in as few writes as the socket takes.
            // Reading was paused (frames may wait in `rbuf`, and no read is registered)
            // while the write buffer was at its high-water mark: a write that takes it
            // below must resume reading, or a socket that takes the whole buffer at once
            // leaves the connection waiting on nothing (h2/tests.rs, unread PINGs).
            let paused = self.wbuf.len() >= HIGH_WATER;
            while !self.wbuf.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.wbuf.advance(n);
                        self.needs_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if paused && self.wbuf.len() < HIGH_WATER {
                progress = true;
            }
            if self.wbuf.is_empty() && self.needs_flush {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if self.wbuf.len() < HIGH_WATER / 2 && !self.write_blocked.is_empty() {
                progress = true;
                let blocked = std::mem::take(&mut self.write_blocked);
                for slot in blocked {
                    self.wakers[slot].1.wake_by_ref();
                }
            }
            // 4. The end.
            let flushed = self.wbuf.is_empty() && !self.needs_flush;
            if self.failed || self.eof {
                // The client is gone, or we told it why we close: nothing more to do
                // (a GOAWAY that cannot be written at once is not waited for). End of
                // input is taken as the client gone, as HTTP/2 has no half-close of a
                // connection: its streams are dropped, and their upstream exchanges
                // with them, rather than finished for a reader that is likely gone.
                self.close_all();
                return Poll::Ready(Ok(()));
            }
            if (self.going_away || self.peer_going_away) && self.ids.is_empty() && flushed {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// GOAWAY: no new streams; the connection ends when the open ones have.
    fn go_away(&mut self, reason: Reason) {
        if !self.going_away {
            self.going_away = true;
            let last = *self.goaway_last.get_or_insert(self.last_stream);
            frame::put_goaway(&mut self.wbuf, last, reason);
        }
    }

    fn fail(&mut self, e: ConnError) {
        tracing::debug!(reason = e.reason.0, why = e.why, "h2 connection error");
        self.going_away = false;
        self.go_away(e.reason);
        self.failed = true;
    }

    fn close_all(&mut self) {
        for slot in 0..self.streams.len() {
            if self.streams[slot].is_some() {
                self.remove(slot);
            }
        }
    }

    // ---- frames in ----

    fn read_frames(&mut self) -> Result<(), ConnError> {
        if !self.preface {
            let n = self.rbuf.len().min(frame::PREFACE.len());
            if self.rbuf[..n] != frame::PREFACE[..n] {
                return Err(conn_error(Reason::PROTOCOL_ERROR, "not the HTTP/2 preface"));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            self.rbuf.advance(n);
            self.preface = true;
        }
        while self.rbuf.len() >= frame::HEADER_LEN && self.wbuf.len() < HIGH_WATER {
            let head = Head::parse(&self.rbuf);
            if head.len > frame::DEFAULT_MAX_FRAME {
                return Err(conn_error(Reason::FRAME_SIZE_ERROR, "a frame over 16 KiB"));
            }
            if self.rbuf.len() < frame::HEADER_LEN + head.len {
                break;
            }
            let mut payload = self.rbuf.split_to(frame::HEADER_LEN + head.len);
            payload.advance(frame::HEADER_LEN);
            self.frame(head, payload)?;
            if self.reset_budget < 0 {
                return Err(conn_error(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many streams reset before their response",
                ));
            }
        }
        Ok(())
    }

    fn frame(&mut self, head: Head, payload: BytesMut) -> Result<(), ConnError> {
        if !self.settings_seen && head.kind != frame::SETTINGS {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "the first frame is not SETTINGS",
            ));
        }
        if let Some(p) = &self.partial
            && (head.kind != frame::CONTINUATION || head.stream != p.stream)
        {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "a header block was interrupted",
            ));
        }
        match head.kind {
            frame::DATA => self.data(head, payload),
            frame::HEADERS => self.headers(head, payload),
            frame::CONTINUATION => self.continuation(head, &payload),
            frame::PRIORITY => {
                if head.stream == 0 {
                    return Err(conn_error(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                if head.len != 5 {
                    self.stream_error(head.stream, Reason::FRAME_SIZE_ERROR);
                }
                Ok(())
            }
            frame::RST_STREAM => self.rst_stream(head, &payload),
            frame::SETTINGS => self.settings(head, &payload),
            frame::PUSH_PROMISE => Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            frame::PING => {
                if head.stream != 0 || head.len != 8 {
                    return Err(conn_error(Reason::FRAME_SIZE_ERROR, "a malformed PING"));
                }
                if head.flags & frame::ACK == 0 {
                    frame::put_ping_ack(&mut self.wbuf, &payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 || head.len < 8 {
                    return Err(conn_error(Reason::PROTOCOL_ERROR, "a malformed GOAWAY"));
                }
                self.peer_going_away = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.window_update(head, &payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.flags & frame::ACK != 0 {
            if head.len != 0 {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "a SETTINGS ack with a payload",
                ));
            }
            return Ok(());
        }
        if !head.len.is_multiple_of(6) {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "a SETTINGS frame not of 6-byte entries",
            ));
        }
        self.settings_seen = true;
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                frame::SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(conn_error(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH above 1",
                    ));
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(conn_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "an initial window over 2^31-1",
                        ));
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for (slot, s) in self.streams.iter_mut().enumerate() {
                        let Some(s) = s else { continue };
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return Err(conn_error(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream window over 2^31-1",
                            ));
                        }
                        if delta > 0 && s.pending.is_some() {
                            self.wakers[slot].1.wake_by_ref();
                        }
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(conn_error(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                // Our encoder uses no dynamic table, but a decoder told of a smaller one
                // expects the size update that says the encoder took note.
                frame::SETTINGS_HEADER_TABLE_SIZE => {
                    let size = value as usize;
                    if size < self.peer_table_size {
                        self.table_size_update = Some(size);
                    }
                    self.peer_table_size = size;
                }
                // The rest do not concern a server.
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.wbuf);
        Ok(())
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        four_bytes(head, "a WINDOW_UPDATE not of 4 bytes")?;
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if head.stream == 0 {
            if increment == 0 {
                return Err(conn_error(
                    Reason::PROTOCOL_ERROR,
                    "a zero connection window increment",
                ));
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(conn_error(
                    Reason::FLOW_CONTROL_ERROR,
                    "a connection window over 2^31-1",
                ));
            }
            for slot in std::mem::take(&mut self.conn_blocked) {
                self.wakers[slot].1.wake_by_ref();
            }
            return Ok(());
        }
        self.idle_check(head.stream)?;
        let Some(&slot) = self.ids.get(&head.stream) else {
            return Ok(());
        };
        if increment == 0 {
            self.stream_error(head.stream, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let Some(s) = self.streams[slot].as_mut() else {
            return Ok(());
        };
        s.send_window += increment;
        if s.send_window > frame::MAX_WINDOW {
            self.stream_error(head.stream, Reason::FLOW_CONTROL_ERROR);
        } else if s.pending.is_some() {
            self.wakers[slot].1.wake_by_ref();
        }
        Ok(())
    }

    /// A frame other than HEADERS or PRIORITY on a stream the client never opened is a
    /// connection error (RFC 9113 §5.1, "idle").
    fn idle_check(&self, stream: u32) -> Result<(), ConnError> {
        if stream == 0 {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "a stream frame on stream 0",
            ));
        }
        if stream > self.last_stream {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "a frame on an idle stream",
            ));
        }
        Ok(())
    }

    fn rst_stream(&mut self, head: Head, _payload: &[u8]) -> Result<(), ConnError> {
        four_bytes(head, "an RST_STREAM not of 4 bytes")?;
        self.idle_check(head.stream)?;
        let Some(&slot) = self.ids.get(&head.stream) else {
            return Ok(());
        };
        self.charge_reset(slot);
        self.remove(slot);
        Ok(())
    }

    fn data(&mut self, head: Head, mut payload: BytesMut) -> Result<(), ConnError> {
        self.idle_check(head.stream)?;
        // Flow control counts the whole payload, padding included (§6.9.1); the
        // connection's window is credited at once (see the module docs).
        let flow = head.len as u32;
        self.recv_uncredited += flow;
        let padding = strip_padding(head, &mut payload)?;
        let Some(&slot) = self.ids.get(&head.stream) else {
            // A stream we reset or finished: the frame may have been in flight.
            return Ok(());
        };
        let Some(s) = self.streams[slot].as_mut() else {
            return Ok(());
        };
        let Some(inbound) = s.inbound.as_ref() else {
            self.stream_error(head.stream, Reason::STREAM_CLOSED);
            return Ok(());
        };
        s.recv_window -= i64::from(flow);
        if s.recv_window < 0 {
            self.stream_error(head.stream, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        s.received += payload.len() as u64;
        let end = head.flags & frame::END_STREAM != 0;
        // RFC 9113 §8.1.1: DATA that disagrees with content-length is malformed.
        let over = s.declared.is_some_and(|n| s.received > n);
        let short = end && s.declared.is_some_and(|n| s.received != n);
        if over || short {
            self.stream_error(head.stream, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        if !payload.is_empty() {
            inbound.push(payload.freeze());
        }
        if padding > 0 {
            // Padding is never read: its window reopens now.
            s.recv_window += i64::from(padding);
            frame::put_window_update(&mut self.wbuf, head.stream, padding);
        }
        if end {
            inbound.end(None);
            s.inbound = None;
            self.maybe_finish(slot);
        }
        Ok(())
    }

    fn headers(&mut self, head: Head, mut payload: BytesMut) -> Result<(), ConnError> {
        if head.stream == 0 || head.stream.is_multiple_of(2) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "HEADERS on stream 0 or an even stream",
            ));
        }
        strip_padding(head, &mut payload)?;
        if head.flags & frame::PRIORITY_FLAG != 0 {
            if payload.len() < 5 {
                return Err(conn_error(
                    Reason::PROTOCOL_ERROR,
                    "HEADERS too short for its priority",
                ));
            }
            payload.advance(5);
        }
        let end_stream = head.flags & frame::END_STREAM != 0;
        if head.flags & frame::END_HEADERS == 0 {
            self.partial = Some(Partial {
                stream: head.stream,
                end_stream,
                block: payload,
            });
            return Ok(());
        }
        self.header_block(head.stream, end_stream, &payload)
    }

    fn continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Some(p) = self.partial.as_mut() else {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        // A block may be somewhat larger than the decoded list it carries (literals
        // cost a few bytes each), never much: past twice the limit it is a flood.
        let limit = (2 * self.config.max_header_bytes).max(64 * 1024);
        if p.block.len() + payload.len() > limit {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "a header block over twice the header limit",
            ));
        }
        p.block.extend_from_slice(payload);
        if head.flags & frame::END_HEADERS == 0 {
            return Ok(());
        }
        let Some(p) = self.partial.take() else {
            return Ok(());
        };
        self.header_block(p.stream, p.end_stream, &p.block)
    }

    /// A complete header block: a new request, or the trailers of an open one.
    fn header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), ConnError> {
        let existing = self.ids.get(&id).copied();
        let trailers = existing.is_some() || id <= self.last_stream;
        let mut fields = Fields::new(trailers, self.config.max_header_bytes);
        self.decoder
            .decode(block, |name, value| fields.field(name, value))
            .map_err(|_| conn_error(Reason::COMPRESSION_ERROR, "an undecodable header block"))?;
        if trailers {
            let Some(slot) = existing else {
                // A stream that is closed (§5.1): possibly reset by us while in flight.
                return Ok(());
            };
            let open = self.streams[slot].as_ref().and_then(|s| s.inbound.clone());
            let Some(inbound) = open else {
                self.stream_error(id, Reason::STREAM_CLOSED);
                return Ok(());
            };
            if !end_stream {
                self.stream_error(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            let Ok(map) = fields.into_trailers() else {
                self.stream_error(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            };
            let Some(s) = self.streams[slot].as_mut() else {
                return Ok(());
            };
            if s.declared.is_some_and(|n| s.received != n) {
                self.stream_error(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            inbound.end(Some(map));
            s.inbound = None;
            self.maybe_finish(slot);
            return Ok(());
        }
        self.last_stream = id;
        if self.going_away {
            // Opened after our GOAWAY: not processed (the client may retry it).
            return Ok(());
        }
        if self.ids.len() >= MAX_CONCURRENT_STREAMS {
            frame::put_rst_stream(&mut self.wbuf, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let head = match fields.into_request() {
            Ok(head) => head,
            Err(Refusal::Malformed(why)) => {
                tracing::debug!(stream = id, why, "malformed HTTP/2 request");
                frame::put_rst_stream(&mut self.wbuf, id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            Err(Refusal::TooLarge) => {
                start_block(&mut self.block, &mut self.table_size_update);
                hpack::encode_status(431, &mut self.block);
                hpack::encode_field(b"content-length", b"0", false, &mut self.block);
                frame::put_headers(&mut self.wbuf, id, &self.block, true, self.peer_max_frame);
                if !end_stream {
                    frame::put_rst_stream(&mut self.wbuf, id, Reason::NO_ERROR);
                }
                return Ok(());
            }
        };
        if end_stream && head.content_length.is_some_and(|n| n > 0) {
            frame::put_rst_stream(&mut self.wbuf, id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let slot = self.slot();
        let waker = self.wakers[slot].1.clone();
        let (body, inbound) = if end_stream {
            (RequestBody::full(Bytes::new()), None)
        } else {
            let inbound = Arc::new(Inbound::default());
            let stream = RequestStream::new(Arc::clone(&inbound), waker, head.content_length);
            (RequestBody::h2(stream), Some(inbound))
        };
        let respond = self.service.call(Request::from_parts(head.parts, body));
        self.ids.insert(id, slot);
        self.idle_since = None;
        self.streams[slot] = Some(Stream {
            id,
            task: Task::Respond(respond),
            inbound,
            recv_window: frame::DEFAULT_WINDOW,
            declared: head.content_length,
            received: 0,
            send_window: self.peer_initial_window,
            pending: None,
            pending_end: false,
            responded: false,
        });
        self.run(slot);
        Ok(())
    }

    /// A free slot (a new one, with its waker, when none is).
    fn slot(&mut self) -> usize {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        let slot = self.streams.len();
        let wake = Arc::new(SlotWake {
            slot,
            queued: AtomicBool::new(false),
            ready: Arc::clone(&self.ready),
        });
        let waker = Waker::from(Arc::clone(&wake));
        self.streams.push(None);
        self.wakers.push((wake, waker));
        slot
    }

    /// A stream error (§5.4.2): RST_STREAM, and the stream is dropped.
    fn stream_error(&mut self, id: u32, reason: Reason) {
        frame::put_rst_stream(&mut self.wbuf, id, reason);
        if let Some(&slot) = self.ids.get(&id) {
            // A reset the client provoked (a bad WINDOW_UPDATE, DATA over the window or
            // the content-length) costs the same as one it sent ("MadeYouReset",
            // CVE-2025-8671): either way a request was started and thrown away.
            self.charge_reset(slot);
            self.remove(slot);
        }
    }

    /// A stream reset before its response started takes one from the reset budget
    /// (checked after each frame: [`Self::read_frames`]).
    fn charge_reset(&mut self, slot: usize) {
        if self.streams[slot].as_ref().is_some_and(|s| !s.responded) {
            self.reset_budget -= 1;
        }
    }

    fn remove(&mut self, slot: usize) {
        let Some(s) = self.streams[slot].take() else {
            return;
        };
        self.ids.remove(&s.id);
        self.free.push(slot);
        if self.ids.is_empty() {
            self.idle_since = Some(tokio::time::Instant::now());
        }
        // The request's future or its response body (with its logging hook) ends here,
        // and a body still coming is reset (`Drop for Stream`).
        drop(s);
    }

    /// Removes a stream whose response is complete once the client's side is too;
    /// a response that completed first stops the client's body (RST_STREAM NO_ERROR,
    /// RFC 9113 §8.1).
    fn maybe_finish(&mut self, slot: usize) {
        let Some(s) = self.streams[slot].as_ref() else {
            return;
        };
        if !matches!(s.task, Task::Done) {
            return;
        }
        if s.inbound.is_some() {
            frame::put_rst_stream(&mut self.wbuf, s.id, Reason::NO_ERROR);
        }
        self.reset_budget = (self.reset_budget + 1).min(RESET_BUDGET);
        self.remove(slot);
    }

    // ---- a stream's turn ----

    /// Runs a stream's work: the request's future, then its response body as the
    /// windows and the write buffer allow.
    fn run(&mut self, slot: usize) {
        // Borrowed, not cloned: only fields other than `wakers` change below.
        let (wake, waker) = &self.wakers[slot];
        wake.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(waker);
        let Some(s) = self.streams[slot].as_mut() else {
            return;
        };
        if let Some(inbound) = &s.inbound {
            let read = inbound.take_consumed();
            if read > 0 {
                let read = u32::try_from(read).unwrap_or(u32::MAX);
                s.recv_window += i64::from(read);
                frame::put_window_update(&mut self.wbuf, s.id, read);
            }
        }
        let mut turns = FRAMES_PER_TURN;
        let mut failed = false;
        loop {
            match &mut s.task {
                Task::Done => break,
                Task::Respond(respond) => {
                    let Poll::Ready(resp) = respond.as_mut().poll(&mut cx) else {
                        break;
                    };
                    let (parts, body) = resp.into_parts();
                    let end = body.is_end_stream();
                    start_block(&mut self.block, &mut self.table_size_update);
                    write_head(
                        &mut self.block,
                        &mut self.wbuf,
                        s.id,
                        &parts,
                        &body,
                        end,
                        self.peer_max_frame,
                    );
                    s.responded = true;
                    s.task = if end { Task::Done } else { Task::Body(body) };
                    // Encoded: the map goes back for another head.
                    crate::h1::buffers::give_map(parts.headers);
                }
                Task::Body(body) => {
                    if s.pending.is_some() {
                        match send_pending(
                            s,
                            &mut self.send_window,
                            self.peer_max_frame,
                            &mut self.wbuf,
                        ) {
                            Sent::All => {}
                            Sent::StreamBlocked => break,
                            Sent::ConnBlocked => {
                                if !self.conn_blocked.contains(&slot) {
                                    self.conn_blocked.push(slot);
                                }
                                break;
                            }
                        }
                        if s.pending_end {
                            s.task = Task::Done;
                            continue;
                        }
                        continue;
                    }
                    if self.wbuf.len() >= HIGH_WATER {
                        if !self.write_blocked.contains(&slot) {
                            self.write_blocked.push(slot);
                        }
                        break;
                    }
                    if turns == 0 {
                        waker.wake_by_ref();
                        break;
                    }
                    turns -= 1;
                    match Pin::new(&mut *body).poll_frame(&mut cx) {
                        Poll::Pending => break,
                        Poll::Ready(None) => {
                            frame::put_data(&mut self.wbuf, s.id, &[], true);
                            s.task = Task::Done;
                        }
                        Poll::Ready(Some(Ok(f))) => match f.into_data() {
                            Ok(data) => {
                                let end = body.is_end_stream();
                                if data.is_empty() && !end {
                                    continue;
                                }
                                s.pending = Some(data);
                                s.pending_end = end;
                            }
                            Err(f) => {
                                if let Ok(trailers) = f.into_trailers() {
                                    start_block(&mut self.block, &mut self.table_size_update);
                                    write_trailers(
                                        &mut self.block,
                                        &mut self.wbuf,
                                        s.id,
                                        &trailers,
                                        self.peer_max_frame,
                                    );
                                } else {
                                    frame::put_data(&mut self.wbuf, s.id, &[], true);
                                }
                                s.task = Task::Done;
                            }
                        },
                        Poll::Ready(Some(Err(e))) => {
                            tracing::debug!(stream = s.id, error = %e, "response body failed; resetting the stream");
                            failed = true;
                            break;
                        }
                    }
                }
            }
        }
        if failed {
            let id = s.id;
            self.stream_error(id, Reason::INTERNAL_ERROR);
            return;
        }
        self.maybe_finish(slot);
    }
}

enum Sent {
    All,
    StreamBlocked,
    ConnBlocked,
}

/// Writes as much of a stream's pending data as both windows allow, in frames no
/// larger than the client takes; END_STREAM on the last one when it ends the body.
fn send_pending<B>(
    s: &mut Stream<B>,
    conn_window: &mut i64,
    max_frame: usize,
    wbuf: &mut BytesMut,
) -> Sent {
    while let Some(data) = s.pending.as_mut() {
        if data.is_empty() {
            if s.pending_end {
                frame::put_data(wbuf, s.id, &[], true);
            }
            s.pending = None;
            break;
        }
        let window = s.send_window.min(*conn_window);
        if window <= 0 {
            return if *conn_window <= 0 {
                Sent::ConnBlocked
            } else {
                Sent::StreamBlocked
            };
        }
        let n = data
            .len()
            .min(max_frame)
            .min(usize::try_from(window).unwrap_or(usize::MAX));
        let chunk = data.split_to(n);
        let end = data.is_empty() && s.pending_end;
        frame::put_data(wbuf, s.id, &chunk, end);
        s.send_window -= n as i64;
        *conn_window -= n as i64;
        if data.is_empty() {
            s.pending = None;
        }
    }
    Sent::All
}

/// Starts a header block in `block`: a table size update the client is owed goes
/// first (RFC 7541 §4.2), once.
fn start_block(block: &mut BytesMut, table_size_update: &mut Option<usize>) {
    block.clear();
    if let Some(size) = table_size_update.take() {
        hpack::encode_table_size_update(size, block);
    }
}

fn write_head<B: Body>(
    block: &mut BytesMut,
    wbuf: &mut BytesMut,
    id: u32,
    parts: &http::response::Parts,
    body: &B,
    end: bool,
    max_frame: usize,
) {
    // The caller started the block (`start_block`).
    let status = parts.status.as_u16();
    hpack::encode_status(status, block);
    encode_fields(&parts.headers, block);
    // A body whose length is known says so (as hyper's server did), but not on a
    // response that ends with its head: END_STREAM says it all, and a HEAD response's
    // length is the GET's, which only the upstream knows.
    let bodiless = end || status == 204 || status == 304 || (100..200).contains(&status);
    if !bodiless
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && let Some(n) = body.size_hint().exact()
    {
        let digits = itoa_buf(n);
        hpack::encode_field(b"content-length", digits.as_bytes(), false, block);
    }
    frame::put_headers(wbuf, id, block, end, max_frame);
}

/// A field section's fields (a response head's or trailers'), connection-specific
/// ones left out: the proxy removed them from what it relays, this is the last guard.
fn encode_fields(fields: &HeaderMap, block: &mut BytesMut) {
    for (name, value) in fields {
        if !is_connection_specific(name) {
            hpack::encode_field(
                name.as_str().as_bytes(),
                value.as_bytes(),
                value.is_sensitive(),
                block,
            );
        }
    }
}

fn write_trailers(
    block: &mut BytesMut,
    wbuf: &mut BytesMut,
    id: u32,
    trailers: &HeaderMap,
    max_frame: usize,
) {
    // The caller started the block (`start_block`).
    encode_fields(trailers, block);
    frame::put_headers(wbuf, id, block, true, max_frame);
}

/// A decimal number's digits without allocating.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(mut n: u64) -> Digits {
    let mut d = Digits {
        buf: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    d
}

/// Removes a PADDED frame's padding (§6.1): the pad length byte and the padding.
/// Returns how much flow-controlled payload that was.
fn strip_padding(head: Head, payload: &mut BytesMut) -> Result<u32, ConnError> {
    if head.flags & frame::PADDED == 0 {
        return Ok(0);
    }
    let Some(&pad) = payload.first() else {
        return Err(conn_error(
            Reason::PROTOCOL_ERROR,
            "a padded frame without its pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(conn_error(
            Reason::PROTOCOL_ERROR,
            "padding as long as the frame",
        ));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(pad as u32 + 1)
}
