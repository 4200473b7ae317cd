//! Moving messages through: the upstream response (head rewritten by
//! [`super::response`], body relayed in its own framing) and a request body that is
//! still arriving from the client. Bodies are copied buffer by buffer, never collected.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::buffers;
use super::chunked::Chunked;
use super::head::{Framing, RequestId};
use super::io::write_all_2;
use super::response::{self, ClientSide, Parsed};
use crate::error::ProxyError;

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
}

/// A response relayed in full.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub upstream_reusable: bool,
    pub client_keep_alive: bool,
}

/// Which side failed while a request body was being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client went away or sent a malformed body: nothing more can be done.
    Client,
    /// The upstream stopped taking the body; its response may still come.
    Upstream,
}

/// What remains of a request body after what was already sent.
#[derive(Debug)]
pub enum BodyLeft {
    Length(u64),
    Chunked(Chunked),
}

/// Reads the upstream response and relays it to the client. `started` turns true
/// just before the first byte goes to the client. `body_sent`, for a request body
/// still streaming up, tells whether it is complete; while it is not, the client is
/// told the connection closes after this response.
pub async fn response<R, W>(
    up: &mut R,
    client: &mut W,
    side: ClientSide,
    request_id: &RequestId,
    max_head: usize,
    started: &mut bool,
    body_sent: Option<&AtomicBool>,
) -> Result<Done, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = buffers::take();
    let mut out = buffers::take_small();
    let result = relay_response(
        up, client, side, request_id, max_head, started, body_sent, &mut buf, &mut out,
    )
    .await;
    buffers::give(buf);
    buffers::give(out);
    result
}

#[allow(clippy::too_many_arguments)] // the private body of `response`
async fn relay_response<R, W>(
    up: &mut R,
    client: &mut W,
    side: ClientSide,
    request_id: &RequestId,
    max_head: usize,
    started: &mut bool,
    body_sent: Option<&AtomicBool>,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Done, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut received = false;
    let head = 'head: loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(4096));
        }
        let n = match up.read_buf(buf).await {
            Ok(n) => n,
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
            keep_alive: side.keep_alive && body_sent.is_none_or(|s| s.load(Ordering::Relaxed)),
            ..side
        };
        loop {
            match response::prepare(buf, side, request_id, max_head, out)
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

    *started = true;
    let start = head.len;
    let avail = buf.len() - start;
    let mut upstream_reusable = head.upstream_reusable;
    match head.body {
        Framing::Empty => {
            upstream_reusable &= avail == 0;
            client.write_all(out).await.map_err(|_| Failure::Abort)?;
        }
        Framing::Length(n) => {
            let first = usize::try_from(n).unwrap_or(usize::MAX).min(avail);
            upstream_reusable &= avail <= first;
            write_all_2(client, out, &buf[start..start + first])
                .await
                .map_err(|_| Failure::Abort)?;
            copy_exact(up, client, buf, n - first as u64).await?;
        }
        Framing::Chunked => {
            client.write_all(out).await.map_err(|_| Failure::Abort)?;
            buf.drain(..start);
            let leftover = copy_chunked(up, client, buf, Chunked::new(), head.dechunk).await?;
            upstream_reusable &= !leftover;
        }
        Framing::UntilClose => {
            write_all_2(client, out, &buf[start..])
                .await
                .map_err(|_| Failure::Abort)?;
            loop {
                buf.clear();
                match up.read_buf(buf).await {
                    Ok(0) => break,
                    Ok(_) => client.write_all(buf).await.map_err(|_| Failure::Abort)?,
                    Err(_) => return Err(Failure::Abort),
                }
            }
        }
    }
    client.flush().await.map_err(|_| Failure::Abort)?;
    Ok(Done {
        upstream_reusable,
        client_keep_alive: head.client_keep_alive,
    })
}

/// Copies exactly `left` more bytes from `from` to `to` through `buf`.
async fn copy_exact<R, W>(
    from: &mut R,
    to: &mut W,
    buf: &mut Vec<u8>,
    mut left: u64,
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
        let n = (&mut *from)
            .take(want as u64)
            .read_buf(buf)
            .await
            .map_err(|_| Failure::Abort)?;
        if n == 0 {
            return Err(Failure::Abort);
        }
        to.write_all(buf).await.map_err(|_| Failure::Abort)?;
        left -= n as u64;
    }
    Ok(())
}

/// Relays a chunked body whose first bytes are in `buf`, passing the framing through
/// (or stripping it for `dechunk`). Returns whether bytes followed the body's end.
async fn copy_chunked<R, W>(
    from: &mut R,
    to: &mut W,
    buf: &mut Vec<u8>,
    mut state: Chunked,
    dechunk: bool,
) -> Result<bool, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut ranges: Vec<Range<usize>> = Vec::new();
    loop {
        ranges.clear();
        let p = state
            .scan(buf, |r| {
                if dechunk {
                    ranges.push(r);
                }
            })
            .map_err(|_| Failure::Abort)?;
        if dechunk {
            for r in ranges.drain(..) {
                to.write_all(&buf[r]).await.map_err(|_| Failure::Abort)?;
            }
        } else if p.consumed > 0 {
            to.write_all(&buf[..p.consumed])
                .await
                .map_err(|_| Failure::Abort)?;
        }
        buf.drain(..p.consumed);
        if p.done {
            return Ok(!buf.is_empty());
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        match from.read_buf(buf).await {
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
) -> Result<(), SendError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match left {
        BodyLeft::Length(mut left) => loop {
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(inbuf.len());
            if k > 0 {
                up.write_all(&inbuf[..k])
                    .await
                    .map_err(|_| SendError::Upstream)?;
                inbuf.drain(..k);
                left -= k as u64;
            }
            if left == 0 {
                return up.flush().await.map_err(|_| SendError::Upstream);
            }
            read_more(client, inbuf).await?;
        },
        BodyLeft::Chunked(mut state) => loop {
            let p = state.scan(inbuf, |_| {}).map_err(|_| SendError::Upstream)?;
            if p.consumed > 0 {
                up.write_all(&inbuf[..p.consumed])
                    .await
                    .map_err(|_| SendError::Upstream)?;
                inbuf.drain(..p.consumed);
            }
            if p.done {
                return up.flush().await.map_err(|_| SendError::Upstream);
            }
            read_more(client, inbuf).await?;
        },
    }
}

/// Appends the client's next bytes to `inbuf`; the client closing mid-body aborts.
async fn read_more<R: AsyncRead + Unpin>(
    client: &mut R,
    inbuf: &mut Vec<u8>,
) -> Result<(), SendError> {
    if inbuf.len() == inbuf.capacity() {
        inbuf.reserve(16 * 1024);
    }
    match client.read_buf(inbuf).await {
        Ok(0) | Err(_) => Err(SendError::Client),
        Ok(_) => Ok(()),
    }
}
