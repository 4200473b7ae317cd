//! HTTP/1.1 clients to services this engine's own pool does not speak (`h2c`, `h2`,
//! `https`): the routed request is handed to the shared upstream clients through
//! [`crate::proxy::Proxy::forward`] (phases 5–7, the same code HTTP/2 clients take), its
//! body streamed over a channel as it arrives, and the response written back as
//! HTTP/1.1 (its length kept when known, otherwise chunked; trailers dropped, as this
//! engine never relays trailers). Not the hot path: it builds a `HeaderMap` per request.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, Version, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::buffers;
use super::chunked::Chunked;
use super::head::{Field, Framing, RequestId, put_field, put_u64};
use super::io::within;
use super::request::Rejected;
use super::response::{ClientSide, write_own};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::proxy::{Origin, Proxy};
use crate::routing::Upstream;
use crate::upstream::{Chunk, RequestBody};

/// A routed request for the shared clients.
#[derive(Debug)]
pub struct Bridged {
    pub parts: http::request::Parts,
    pub upstream: Upstream,
    /// The client's host, as routed on.
    pub host: HeaderValue,
    /// The client's `tracestate` goes up with our `traceparent` (it continues the
    /// client's trace).
    pub keep_tracestate: bool,
}

/// The request as `http` types: method, target, and every field but `Host`, `Expect`
/// and the framing ones (the body's length is restated; hop-by-hop fields are removed
/// by phase 5 like for any request).
pub fn parts(
    method: &Method,
    target: &str,
    headers: &[httparse::Header<'_>],
    kinds: &[Field],
    body: Framing,
    host: &str,
) -> Result<(http::request::Parts, HeaderValue), Rejected> {
    let mut req = http::Request::builder()
        .method(method.clone())
        .uri(target)
        .version(Version::HTTP_11);
    for (h, kind) in headers.iter().zip(kinds) {
        // `Expect` is answered here (100 Continue), as on the engine's own path.
        if matches!(
            kind,
            Field::Host | Field::TransferEncoding | Field::ContentLength | Field::Expect
        ) {
            continue;
        }
        req = req.header(h.name, h.value);
    }
    if let Framing::Length(n) = body {
        req = req.header(header::CONTENT_LENGTH, n);
    }
    let (parts, ()) = req
        .body(())
        .map_err(|_| Rejected::Malformed("request head"))?
        .into_parts();
    let host = HeaderValue::from_str(host).map_err(|_| Rejected::Malformed("invalid Host"))?;
    Ok((parts, host))
}

/// How a bridged exchange ended.
#[derive(Debug)]
pub struct Outcome {
    /// The connection can carry another request.
    pub keep_alive: bool,
    /// The status the client got (0: none, the connection was cut).
    pub status: u16,
    /// Bytes at the start of the read buffer that belonged to this request.
    pub consumed: usize,
}

/// What the exchange needs from the connection.
pub struct Exchange<'a> {
    pub proxy: &'a Proxy,
    pub client_ip: IpAddr,
    pub client: ClientSide,
    pub request_id: &'a RequestId,
    /// The request's trace: its `traceparent` goes up, as on the engine's own path.
    pub trace: &'a crate::observe::TraceContext,
    pub head_len: usize,
    pub body: Framing,
    pub expect_continue: bool,
    pub io_timeout: std::time::Duration,
}

impl std::fmt::Debug for Exchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// Phases 5–7 for one bridged request. `inbuf` starts with the request head.
pub async fn run<S>(
    stream: &mut S,
    inbuf: &mut Vec<u8>,
    bridged: Bridged,
    x: Exchange<'_>,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request_id = HeaderValue::from_bytes(x.request_id.as_bytes())
        .unwrap_or(HeaderValue::from_static("invalid"));
    let Bridged {
        parts,
        upstream,
        host,
        keep_tracestate,
    } = bridged;
    let origin = Origin {
        client: x.client_ip,
        client_text: None,
        host,
        request_id: &request_id,
        service: None,
        trace: Some(x.trace),
        keep_tracestate,
        now: tokio::time::Instant::now(),
    };
    // A body already here whole goes up as one piece; one still coming is streamed.
    let avail = inbuf.len() - x.head_len;
    let whole = match x.body {
        Framing::Empty | Framing::UntilClose => Some(0),
        Framing::Length(n) if n <= avail as u64 => Some(n as usize),
        _ => None,
    };
    if let Some(n) = whole {
        let body = Bytes::copy_from_slice(&inbuf[x.head_len..x.head_len + n]);
        let result = x
            .proxy
            .forward(parts, RequestBody::full(body), upstream, origin)
            .await;
        let mut status = 0;
        let keep = respond(stream, result, &x, true, &mut status).await;
        return Outcome {
            keep_alive: keep,
            status,
            consumed: x.head_len + n,
        };
    }

    if x.expect_continue
        && within(
            x.io_timeout,
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"),
        )
        .await
        .is_err()
    {
        return Outcome {
            keep_alive: false,
            status: 0,
            consumed: 0,
        };
    }
    inbuf.drain(..x.head_len);
    let (body, tx) = RequestBody::channel();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let pump = pump(&mut rd, inbuf, x.body, tx, x.io_timeout);
    let forward = x.proxy.forward(parts, body, upstream, origin);
    tokio::pin!(pump, forward);
    let mut pumped: Option<Result<(), Pumped>> = None;
    let result = loop {
        tokio::select! {
            biased;
            p = &mut pump, if pumped.is_none() => match p {
                Err(Pumped::ClientTimeout) => break Err(ProxyError::ClientTimeout),
                Err(Pumped::Malformed) => break Err(ProxyError::MalformedBody),
                Err(Pumped::Client) => {
                    return Outcome { keep_alive: false, status: 0, consumed: 0 };
                }
                // The upstream stopped taking the body: its answer may still come.
                other => pumped = Some(other),
            },
            r = &mut forward => break r,
        }
    };
    // The client must not send more of the body into a connection we keep: unless it
    // was all read when the head goes out, the connection closes after this response.
    // The rest of the body keeps flowing up while the response flows down (an upstream
    // may answer before it has read the whole body, or echo it as it comes).
    let body_done = matches!(pumped, Some(Ok(())));
    let mut status = 0;
    let keep = {
        let respond = respond(&mut wr, result, &x, body_done, &mut status);
        tokio::pin!(respond);
        loop {
            tokio::select! {
                biased;
                p = &mut pump, if pumped.is_none() => pumped = Some(p),
                keep = &mut respond => break keep,
            }
        }
    };
    Outcome {
        keep_alive: keep && body_done,
        status,
        consumed: 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    Client,
    ClientTimeout,
    Malformed,
    /// The upstream side stopped taking the body (the request ended there).
    Upstream,
}

/// Reads the rest of the body from the client and sends its payload up. Bytes after
/// the body's end stay in `inbuf` (a pipelined next request).
async fn pump<R: AsyncRead + Unpin>(
    client: &mut R,
    inbuf: &mut Vec<u8>,
    framing: Framing,
    tx: mpsc::Sender<Chunk>,
    io_timeout: std::time::Duration,
) -> Result<(), Pumped> {
    let send = |c| {
        let tx = tx.clone();
        async move { tx.send(c).await.map_err(|_| Pumped::Upstream) }
    };
    match framing {
        Framing::Length(mut left) => loop {
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(inbuf.len());
            if k > 0 {
                send(Chunk::Data(Bytes::copy_from_slice(&inbuf[..k]))).await?;
                inbuf.drain(..k);
                left -= k as u64;
            }
            if left == 0 {
                return send(Chunk::End).await;
            }
            read_more(client, inbuf, io_timeout).await?;
        },
        Framing::Chunked => {
            let mut chunked = Chunked::new();
            loop {
                let mut data = Vec::new();
                let p = chunked
                    .scan(inbuf, |r| data.push(r))
                    .map_err(|_| Pumped::Malformed)?;
                let payload: Vec<u8> = data.into_iter().flat_map(|r| &inbuf[r]).copied().collect();
                inbuf.drain(..p.consumed);
                if !payload.is_empty() {
                    send(Chunk::Data(Bytes::from(payload))).await?;
                }
                if p.done {
                    return send(Chunk::End).await;
                }
                read_more(client, inbuf, io_timeout).await?;
            }
        }
        Framing::Empty | Framing::UntilClose => send(Chunk::End).await,
    }
}

async fn read_more<R: AsyncRead + Unpin>(
    client: &mut R,
    inbuf: &mut Vec<u8>,
    limit: std::time::Duration,
) -> Result<(), Pumped> {
    if inbuf.len() == inbuf.capacity() {
        inbuf.reserve(16 * 1024);
    }
    match within(limit, client.read_buf(inbuf)).await {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(Pumped::ClientTimeout),
        Ok(0) | Err(_) => Err(Pumped::Client),
        Ok(_) => Ok(()),
    }
}

/// Writes the upstream's response (or our own error answer) as HTTP/1.1. Returns
/// whether the connection can stay open.
async fn respond<W: AsyncWrite + Unpin>(
    w: &mut W,
    result: Result<Response<ProxyBody>, ProxyError>,
    x: &Exchange<'_>,
    body_done: bool,
    status_out: &mut u16,
) -> bool {
    let client = ClientSide {
        keep_alive: x.client.keep_alive && body_done,
        ..x.client
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, side = ?e.side(), request_id = ?x.request_id, "request failed");
            let resp = e.into_response(x.request_id.as_bytes(), &x.proxy.state().stats);
            *status_out = resp.status().as_u16();
            let mut out = buffers::take_small();
            write_own(&mut out, &resp, x.request_id, client);
            let ok = within(x.io_timeout, w.write_all(&out)).await.is_ok();
            buffers::give(out);
            return ok && client.keep_alive;
        }
    };
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    *status_out = status.as_u16();
    let no_body = client.head_method
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| http_body::Body::size_hint(&body).exact());
    // Without a length, HTTP/1.1 clients get chunked; HTTP/1.0 ones read until close.
    let chunked = !no_body && length.is_none() && !client.http10;
    let keep_alive = client.keep_alive && (no_body || length.is_some() || chunked);

    let mut out = buffers::take_small();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    match (no_body, length) {
        (true, _) if status == http::StatusCode::NO_CONTENT => {}
        (_, Some(n)) => {
            out.extend_from_slice(b"content-length: ");
            put_u64(&mut out, n);
            out.extend_from_slice(b"\r\n");
        }
        _ if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    match (client.http10, keep_alive) {
        (_, false) => out.extend_from_slice(b"connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (false, true) => {}
    }
    out.extend_from_slice(b"\r\n");
    let head = within(x.io_timeout, w.write_all(&out)).await;
    buffers::give(out);
    if head.is_err() {
        return false;
    }
    if no_body {
        return keep_alive;
    }
    let mut sent: u64 = 0;
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match body.as_mut().frame().await {
            None => break,
            Some(Ok(f)) => f,
            // The upstream failed or a limit cut the body: the client can only see
            // the connection close (its length or chunked end never arrives).
            Some(Err(e)) => {
                tracing::debug!(error = %e, request_id = ?x.request_id, "upstream body failed");
                return false;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: never relayed to HTTP/1.1 clients
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        let written = if chunked {
            let mut size = Vec::with_capacity(18);
            size.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            within(x.io_timeout, async {
                w.write_all(&size).await?;
                w.write_all(&data).await?;
                w.write_all(b"\r\n").await
            })
            .await
        } else {
            within(x.io_timeout, w.write_all(&data)).await
        };
        if written.is_err() {
            return false;
        }
    }
    if chunked
        && within(x.io_timeout, w.write_all(b"0\r\n\r\n"))
            .await
            .is_err()
    {
        return false;
    }
    if length.is_some_and(|n| n != sent) {
        return false;
    }
    keep_alive && within(x.io_timeout, w.flush()).await.is_ok()
}
