//! Moving messages through: the upstream response (head rewritten by
//! [`super::response`], body relayed in its own framing) and a request body that is
//! still arriving from the client. Bodies are copied buffer by buffer, never collected.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::buffers;
use super::chunked::Chunked;
use super::head::{Framing, RequestId};
use super::io::{within, write_all_2};
use super::response::{self, ClientSide, Parsed};
use crate::error::ProxyError;
use crate::mirror::{MirrorSlot, Tee};
use crate::shadow::ShadowSlot;
use routemaster_common::model::{HeaderFilter, Retry};

/// How an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing came back from a connection that may have been closed while idle; the
    /// request may be sent again on a fresh one.
    Retryable(ProxyError),
    /// Answer the client with this error (nothing was sent to it yet).
    Respond(ProxyError),
    /// The client cannot get a clean answer any more (response already started, or
    /// the client went away): close the connection.
    Abort,
    /// The upstream answered with a status the route retries on (`retry.on`); nothing
    /// of it was relayed and the upstream connection is dropped unread.
    Status(u16),
    /// A try ran out of `retry.per_try_timeout` (set by the retry loop, which turns it
    /// into a 504 when it does not retry).
    PerTryTimeout,
}

/// A response relayed in full.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub upstream_reusable: bool,
    pub client_keep_alive: bool,
    /// The upstream switched to WebSocket: both connections now carry a tunnel.
    pub switched: bool,
}

/// Which side failed while a request body was being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client went away or sent a malformed body: nothing more can be done.
    Client,
    /// The client stopped sending the body for the I/O timeout.
    ClientTimeout,
    /// The upstream stopped taking the body; its response may still come.
    Upstream,
}

/// What remains of a request body after what was already sent.
#[derive(Debug)]
pub enum BodyLeft {
    Length(u64),
    Chunked(Chunked),
}

/// What relaying one response needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCtx<'a> {
    pub side: ClientSide,
    pub request_id: &'a RequestId,
    /// The route's response filter, applied last to the head the client gets.
    pub filter: Option<&'a HeaderFilter>,
    pub max_head: usize,
    /// Longest wait for progress on any one read or write.
    pub io_timeout: Duration,
    /// For a request body still streaming up: whether it is complete. While it is not,
    /// the client is told the connection closes after this response.
    pub body_sent: Option<&'a AtomicBool>,
    /// For a request body still streaming up: true while the body side is still at work.
    /// The upstream owes no answer before it has the body, so while this holds the wait
    /// for the response head is not timed out (the body side has its own timeouts).
    pub body_streaming: Option<&'a AtomicBool>,
    /// Told the response's status when its head arrives.
    pub seen: &'a Seen,
    /// A shadow route's expectation, judged on the final response head.
    pub shadow: Option<&'a ShadowSlot>,
    /// A sampled request's mirror, launched on the final response head that is
    /// relayed; the body the client gets (chunked framing removed) is watched for it.
    pub mirror: Option<&'a MirrorSlot>,
    /// Final statuses to give back as [`Failure::Status`] instead of relaying (a try that
    /// may be retried); `None` on the last try.
    pub retry_on: Option<&'a Retry>,
}

/// What the response side saw of the upstream's answer, for the request's outcome
/// ([`crate::observe`]).
#[derive(Debug)]
pub struct Seen {
    start: std::time::Instant,
    status: AtomicU16,
    head_nanos: AtomicU64,
}

impl Seen {
    pub fn new(start: std::time::Instant) -> Self {
        Self {
            start,
            status: AtomicU16::new(0),
            head_nanos: AtomicU64::new(0),
        }
    }

    fn head(&self, status: u16) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.head_nanos.store(nanos, Ordering::Relaxed);
        self.status.store(status, Ordering::Relaxed);
    }

    /// The upstream's final status, once its head arrived.
    pub fn status(&self) -> Option<u16> {
        Some(self.status.load(Ordering::Relaxed)).filter(|&s| s != 0)
    }

    /// From the request's start to the upstream response head.
    pub fn upstream_time(&self) -> Option<Duration> {
        self.status()
            .map(|_| Duration::from_nanos(self.head_nanos.load(Ordering::Relaxed)))
    }
}

/// Reads the upstream response and relays it to the client. `started` turns true
/// just before the first byte goes to the client. `head_timer`, the connection's own
/// timer when it is free, bounds the wait for the response head without registering a
/// new timer per request (pushing its deadline later is a lock-free update).
pub async fn response<R, W>(
    up: &mut R,
    client: &mut W,
    ctx: ResponseCtx<'_>,
    started: &mut bool,
    head_timer: Option<Pin<&mut Sleep>>,
) -> Result<Done, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = buffers::take();
    let mut out = buffers::take_small();
    let result = relay_response(up, client, ctx, started, head_timer, &mut buf, &mut out).await;
    buffers::give(buf);
    buffers::give(out);
    result
}

async fn relay_response<R, W>(
    up: &mut R,
    client: &mut W,
    ctx: ResponseCtx<'_>,
    started: &mut bool,
    mut head_timer: Option<Pin<&mut Sleep>>,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Done, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limit = ctx.io_timeout;
    let mut received = false;
    let head = 'head: loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(4096));
        }
        let read = match head_timer.as_mut() {
            Some(timer) => {
                timer.as_mut().reset(Instant::now() + limit);
                tokio::select! {
                    biased;
                    r = up.read_buf(buf) => r,
                    () = timer.as_mut() => Err(io::ErrorKind::TimedOut.into()),
                }
            }
            None => within(limit, up.read_buf(buf)).await,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if ctx
                    .body_streaming
                    .is_some_and(|s| s.load(Ordering::Relaxed))
                {
                    continue;
                }
                return Err(Failure::Respond(ProxyError::UpstreamTimeout));
            }
            Err(e) if !received => {
                return Err(Failure::Retryable(ProxyError::UpstreamReset(e.into())));
            }
            Err(e) => return Err(Failure::Respond(ProxyError::UpstreamReset(e.into()))),
        };
        if n == 0 {
            return Err(if received {
                Failure::Respond(ProxyError::UpstreamProtocol("response head cut short"))
            } else {
                Failure::Retryable(ProxyError::UpstreamReset(
                    "closed without responding".into(),
                ))
            });
        }
        received = true;
        let side = ClientSide {
            keep_alive: ctx.side.keep_alive
                && ctx.body_sent.is_none_or(|s| s.load(Ordering::Relaxed)),
            ..ctx.side
        };
        loop {
            match response::prepare(buf, side, ctx.request_id, ctx.filter, ctx.max_head, out)
                .map_err(Failure::Respond)?
            {
                Parsed::Partial => break,
                Parsed::Interim(len) => {
                    buf.drain(..len);
                    if buf.is_empty() {
                        break;
                    }
                }
                Parsed::Final(head) => break 'head head,
            }
        }
    };
    if !head.switched
        && let Some(retry) = ctx.retry_on
        && retry.on_status(head.status)
    {
        return Err(Failure::Status(head.status));
    }
    if let Some(slot) = ctx.shadow {
        slot.judge_head(&buf[..head.len]);
    }

    *started = true;
    ctx.seen.head(head.status);
    let start = head.len;
    let mut tee = match ctx.mirror {
        Some(m) if !head.switched => m.launch_head(&buf[..start], head.body == Framing::Empty),
        _ => None,
    };
    if head.switched {
        // The 101 head, then whatever frames the upstream sent right behind it.
        within(limit, write_all_2(client, out, &buf[start..]))
            .await
            .map_err(|_| Failure::Abort)?;
        client.flush().await.map_err(|_| Failure::Abort)?;
        return Ok(Done {
            upstream_reusable: false,
            client_keep_alive: false,
            switched: true,
        });
    }
    let avail = buf.len() - start;
    let mut upstream_reusable = head.upstream_reusable;
    let abort = |_| Failure::Abort;
    match head.body {
        Framing::Empty => {
            upstream_reusable &= avail == 0;
            within(limit, client.write_all(out)).await.map_err(abort)?;
        }
        Framing::Length(n) => {
            let first = usize::try_from(n).unwrap_or(usize::MAX).min(avail);
            upstream_reusable &= avail <= first;
            within(limit, write_all_2(client, out, &buf[start..start + first]))
                .await
                .map_err(abort)?;
            watch(&mut tee, &buf[start..start + first]);
            copy_exact(up, client, buf, n - first as u64, limit, &mut tee).await?;
        }
        Framing::Chunked => {
            within(limit, client.write_all(out)).await.map_err(abort)?;
            buf.drain(..start);
            let leftover = copy_chunked(up, client, buf, head.dechunk, limit, &mut tee).await?;
            upstream_reusable &= !leftover;
        }
        Framing::UntilClose => {
            within(limit, write_all_2(client, out, &buf[start..]))
                .await
                .map_err(abort)?;
            watch(&mut tee, &buf[start..]);
            loop {
                buf.clear();
                match within(limit, up.read_buf(buf)).await.map_err(abort)? {
                    0 => break,
                    _ => within(limit, client.write_all(buf)).await.map_err(abort)?,
                }
                watch(&mut tee, buf);
            }
        }
    }
    client.flush().await.map_err(abort)?;
    // The body reached the client whole: the mirror compares against it (a tee
    // dropped on any failure above counts the copy dropped).
    if let Some(tee) = tee {
        tee.end();
    }
    Ok(Done {
        upstream_reusable,
        client_keep_alive: head.client_keep_alive,
        switched: false,
    })
}

/// Shows relayed body bytes to a mirror's tee, when there is one.
fn watch(tee: &mut Option<Tee>, bytes: &[u8]) {
    if let Some(t) = tee {
        t.data(bytes);
    }
}

/// Copies exactly `left` more bytes from `from` to `to` through `buf`.
async fn copy_exact<R, W>(
    from: &mut R,
    to: &mut W,
    buf: &mut Vec<u8>,
    mut left: u64,
    limit: Duration,
    tee: &mut Option<Tee>,
) -> Result<(), Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while left > 0 {
        buf.clear();
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buf.capacity());
        let n = within(limit, (&mut *from).take(want as u64).read_buf(buf))
            .await
            .map_err(|_| Failure::Abort)?;
        if n == 0 {
            return Err(Failure::Abort);
        }
        within(limit, to.write_all(buf))
            .await
            .map_err(|_| Failure::Abort)?;
        watch(tee, buf);
        left -= n as u64;
    }
    Ok(())
}

/// Relays a chunked body whose first bytes are in `buf`, passing the framing through
/// (or stripping it for `dechunk`); a mirror's `tee` sees the chunk data. Returns
/// whether bytes followed the body's end.
async fn copy_chunked<R, W>(
    from: &mut R,
    to: &mut W,
    buf: &mut Vec<u8>,
    dechunk: bool,
    limit: Duration,
    tee: &mut Option<Tee>,
) -> Result<bool, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut state = Chunked::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let data = dechunk || tee.is_some();
    loop {
        ranges.clear();
        let p = state
            .scan(buf, |r| {
                if data {
                    ranges.push(r);
                }
            })
            .map_err(|_| Failure::Abort)?;
        if dechunk {
            for r in ranges.drain(..) {
                within(limit, to.write_all(&buf[r.clone()]))
                    .await
                    .map_err(|_| Failure::Abort)?;
                watch(tee, &buf[r]);
            }
            buf.drain(..p.consumed);
        } else {
            // Chunk data lies before any trailer lines `compact` cuts out.
            for r in ranges.drain(..) {
                watch(tee, &buf[r]);
            }
            let n = p.compact(buf, 0);
            if n > 0 {
                within(limit, to.write_all(&buf[..n]))
                    .await
                    .map_err(|_| Failure::Abort)?;
            }
            buf.drain(..n);
        }
        if p.done {
            return Ok(!buf.is_empty());
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        match within(limit, from.read_buf(buf)).await {
            Ok(0) | Err(_) => return Err(Failure::Abort),
            Ok(_) => {}
        }
    }
}

/// Sends the rest of a request body from the client to the upstream. `inbuf` starts
/// with the client's bytes not sent yet; bytes after the body's end stay in it (the
/// next pipelined request).
pub async fn request_body<R, W>(
    client: &mut R,
    up: &mut W,
    inbuf: &mut Vec<u8>,
    left: BodyLeft,
    limit: Duration,
) -> Result<(), SendError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let upstream = |_| SendError::Upstream;
    match left {
        BodyLeft::Length(mut left) => loop {
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(inbuf.len());
            if k > 0 {
                within(limit, up.write_all(&inbuf[..k]))
                    .await
                    .map_err(upstream)?;
                inbuf.drain(..k);
                left -= k as u64;
            }
            if left == 0 {
                return up.flush().await.map_err(upstream);
            }
            read_more(client, inbuf, limit).await?;
        },
        BodyLeft::Chunked(mut state) => loop {
            let p = state.scan(inbuf, |_| {}).map_err(|_| SendError::Client)?;
            let n = p.compact(inbuf, 0);
            if n > 0 {
                within(limit, up.write_all(&inbuf[..n]))
                    .await
                    .map_err(upstream)?;
                inbuf.drain(..n);
            }
            if p.done {
                return up.flush().await.map_err(upstream);
            }
            read_more(client, inbuf, limit).await?;
        },
    }
}

/// Appends the client's next bytes to `inbuf`; the client closing or stalling
/// mid-body aborts.
async fn read_more<R: AsyncRead + Unpin>(
    client: &mut R,
    inbuf: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), SendError> {
    if inbuf.len() == inbuf.capacity() {
        inbuf.reserve(16 * 1024);
    }
    match within(limit, client.read_buf(inbuf)).await {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(SendError::ClientTimeout),
        Ok(0) | Err(_) => Err(SendError::Client),
        Ok(_) => Ok(()),
    }
}
