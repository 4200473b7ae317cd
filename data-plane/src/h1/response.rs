//! Phase 7 for HTTP/1.1: the upstream response head, parsed and rewritten into the head
//! the client gets (hop-by-hop fields out, our `x-request-id` in, framing re-stated for
//! the client's HTTP version and keep-alive), and the responses we write ourselves.

use std::mem::MaybeUninit;

use http::Response;

use super::head::{
    Field, FieldLines, Framing, RequestId, classify, connection_options, content_length,
    list_members, named_in, only_chunked, put_field, put_u64,
};
use routemaster_common::model::HeaderFilter;

use crate::body::ProxyBody;
use crate::error::ProxyError;

pub const MAX_HEADERS: usize = 128;

/// What the client asked for, as far as the response head is concerned.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide {
    pub http10: bool,
    pub head_method: bool,
    /// We will keep the client connection open if the response allows it.
    pub keep_alive: bool,
    /// The request asked to switch to WebSocket (a 101 that agrees is relayed).
    pub websocket: bool,
}

/// A final upstream response head, rewritten for the client.
#[derive(Debug)]
pub struct Head {
    /// Bytes of the upstream head in the read buffer.
    pub len: usize,
    /// The upstream's status code.
    pub status: u16,
    /// How the upstream frames the body.
    pub body: Framing,
    /// The client gets the chunked framing stripped (HTTP/1.0 client).
    pub dechunk: bool,
    /// The upstream connection can carry another request after this body.
    pub upstream_reusable: bool,
    /// The client connection can carry another request after this response.
    pub client_keep_alive: bool,
    /// A `101 Switching Protocols` to WebSocket: the connection becomes a tunnel.
    pub switched: bool,
}

#[derive(Debug)]
pub enum Parsed {
    Partial,
    /// A 1xx interim response of this many bytes: skipped (we never ask for upgrades,
    /// and `Expect` is answered by us).
    Interim(usize),
    Final(Head),
}

/// Parses the upstream head at the start of `buf` and, when it is final, writes the
/// client's head into `out`.
pub fn prepare(
    buf: &[u8],
    client: ClientSide,
    request_id: &RequestId,
    filter: Option<&HeaderFilter>,
    max_head: usize,
    out: &mut Vec<u8>,
) -> Result<Parsed, ProxyError> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let Some(len) = parse_head(&mut resp, buf, &mut storage, max_head)? else {
        return Ok(Parsed::Partial);
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else {
        return Err(ProxyError::UpstreamProtocol("malformed status line"));
    };
    if code < 100 {
        return Err(ProxyError::UpstreamProtocol("bad status code"));
    }
    if code == 101 {
        if !client.websocket || !upgrades_to_websocket(resp.headers) {
            return Err(ProxyError::UpstreamProtocol("unrequested protocol switch"));
        }
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        for h in resp.headers.iter() {
            if classify(h.name) == Field::Other {
                put_field(out, h.name.as_bytes(), h.value);
            }
        }
        put_field(out, b"x-request-id", request_id.as_bytes());
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
        return Ok(Parsed::Final(Head {
            len,
            status: 101,
            body: Framing::Empty,
            dechunk: false,
            upstream_reusable: false,
            client_keep_alive: false,
            switched: true,
        }));
    }
    if (100..200).contains(&code) {
        return Ok(Parsed::Interim(len));
    }
    let headers: &[httparse::Header<'_>] = resp.headers;
    let reading = Reading::of(version, code, client.head_method, headers)?;
    let Reading {
        body,
        upstream_reusable,
        has_length,
        ..
    } = reading;
    let dechunk = body == Framing::Chunked && client.http10;
    let client_keep_alive = client.keep_alive && body != Framing::UntilClose && !dechunk;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(code));
    out.push(b' ');
    match resp.reason {
        Some(r) if !r.is_empty() => out.extend_from_slice(r.as_bytes()),
        _ => out.extend_from_slice(
            http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Unknown")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
    // The route's response filter runs last: what it sets or removes does not pass from
    // the upstream, nor from us.
    let ours = |name: &str| filter.is_none_or(|f| !f.overrides(name));
    for (i, h) in headers.iter().enumerate() {
        if reading.passes(i, h.name) && ours(h.name) {
            put_field(out, h.name.as_bytes(), h.value);
        }
    }
    if ours("x-request-id") {
        put_field(out, b"x-request-id", request_id.as_bytes());
    }
    for (name, value) in filter.into_iter().flat_map(HeaderFilter::lines) {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // A body-less response to HEAD (or a 304) states the length it would have had:
    // passed on, once and checked.
    if body == Framing::Empty && has_length && code != 204 {
        let n = reading.length(headers)?;
        out.extend_from_slice(b"content-length: ");
        put_u64(out, n);
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked if !dechunk => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    put_connection(out, client.http10, client_keep_alive);
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Final(Head {
        len,
        status: code,
        body,
        dechunk,
        upstream_reusable,
        client_keep_alive,
        switched: false,
    }))
}

/// Parses the response head at the start of `buf` into `resp`: its length once it is
/// complete, `None` while it is not (an error once `buf` holds more than `max_head`).
pub fn parse_head<'h, 'b>(
    resp: &mut httparse::Response<'h, 'b>,
    buf: &'b [u8],
    storage: &'h mut [MaybeUninit<httparse::Header<'b>>],
    max_head: usize,
) -> Result<Option<usize>, ProxyError> {
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(resp, buf, storage) {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            Err(ProxyError::UpstreamProtocol("response head too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ProxyError::UpstreamProtocol("malformed response head")),
    }
}

/// How the proxy reads a final upstream response head, whoever the client is: which
/// fields pass on, how the body is framed (RFC 9112 §6.3) and whether the connection
/// can carry another request after it.
#[derive(Debug)]
pub struct Reading<'h> {
    kinds: [Field; MAX_HEADERS],
    connection: FieldLines<'h>,
    pub has_length: bool,
    pub body: Framing,
    pub upstream_reusable: bool,
}

impl<'h> Reading<'h> {
    /// `version` is httparse's minor version; `head_method`: the request was `HEAD`.
    pub fn of(
        version: u8,
        code: u16,
        head_method: bool,
        headers: &[httparse::Header<'h>],
    ) -> Result<Self, ProxyError> {
        let mut kinds = [Field::Other; MAX_HEADERS];
        let mut connection = FieldLines::new();
        let mut coding = FieldLines::new();
        let mut has_length = false;
        for (i, h) in headers.iter().enumerate() {
            let kind = classify(h.name);
            kinds[i] = kind;
            let lines = match kind {
                Field::Connection => &mut connection,
                Field::TransferEncoding => &mut coding,
                Field::ContentLength => {
                    has_length = true;
                    continue;
                }
                _ => continue,
            };
            lines
                .push(h.value)
                .map_err(|()| ProxyError::UpstreamProtocol("too many list fields"))?;
        }
        let coding = coding.as_slice();
        let options = connection_options(connection.as_slice());
        let persistent = if version == 0 {
            options.keep_alive && !options.close
        } else {
            !options.close
        };
        // RFC 9112 §6.3, in order.
        let no_body = head_method || code == 204 || code == 304;
        let mut reading = Self {
            kinds,
            connection,
            has_length,
            body: Framing::Empty,
            upstream_reusable: false,
        };
        reading.body = if no_body {
            Framing::Empty
        } else if !coding.is_empty() {
            // Another coding under `chunked` would reach the client undeclared once we
            // re-state the framing: refuse rather than corrupt the body.
            if !only_chunked(coding) {
                return Err(ProxyError::UpstreamProtocol(
                    "unsupported transfer-encoding",
                ));
            }
            Framing::Chunked
        } else if has_length {
            Framing::Length(reading.length(headers)?)
        } else {
            Framing::UntilClose
        };
        // A response with both framings is suspicious: honour Transfer-Encoding, but do
        // not trust this connection with another request.
        reading.upstream_reusable =
            persistent && reading.body != Framing::UntilClose && (coding.is_empty() || !has_length);
        Ok(reading)
    }

    /// The one `Content-Length` every line agrees on.
    pub fn length(&self, headers: &[httparse::Header<'_>]) -> Result<u64, ProxyError> {
        content_length(
            headers
                .iter()
                .zip(&self.kinds)
                .filter(|(_, k)| **k == Field::ContentLength)
                .map(|(h, _)| h.value),
        )
        .ok_or(ProxyError::UpstreamProtocol("bad Content-Length"))
    }

    /// Header `i` (named `name`) passes on to the client as it came: end-to-end
    /// fields not named by `Connection`. Framing is re-stated by the writer; ours
    /// (`x-request-id`) replaced.
    pub fn passes(&self, i: usize, name: &str) -> bool {
        let connection = self.connection.as_slice();
        match self.kinds[i] {
            Field::Other
            | Field::Confusable
            | Field::Host
            | Field::Expect
            | Field::TraceParent
            | Field::TraceState => connection.is_empty() || !named_in(connection, name),
            Field::XForwardedFor | Field::XForwardedProto | Field::XForwardedHost => true,
            _ => false,
        }
    }
}

/// The 101 agrees to what we asked for: `Upgrade: websocket` and `Connection: upgrade`.
fn upgrades_to_websocket(headers: &[httparse::Header<'_>]) -> bool {
    let mut upgrade = false;
    let mut connection = false;
    for h in headers {
        match classify(h.name) {
            Field::Connection => {
                connection |= list_members(h.value).any(|m| m.eq_ignore_ascii_case(b"upgrade"))
            }
            Field::Upgrade => {
                upgrade |= list_members(h.value).any(|m| m.eq_ignore_ascii_case(b"websocket"));
            }
            _ => {}
        }
    }
    upgrade && connection
}

fn put_connection(out: &mut Vec<u8>, http10: bool, keep_alive: bool) {
    match (http10, keep_alive) {
        (_, false) => out.extend_from_slice(b"connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (false, true) => {}
    }
}

/// Writes a response we made ourselves (errors, redirects), head and body, into `out`.
pub fn write_own(
    out: &mut Vec<u8>,
    resp: &Response<ProxyBody>,
    request_id: &RequestId,
    client: ClientSide,
) {
    let body = resp.body().as_full().unwrap_or_default();
    let status = resp.status();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    put_field(out, b"x-request-id", request_id.as_bytes());
    out.extend_from_slice(b"content-length: ");
    put_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    put_connection(out, client.http10, client.keep_alive);
    out.extend_from_slice(b"\r\n");
    if !client.head_method {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: &str, client: ClientSide) -> (Head, String) {
        let id = RequestId::from_client_or_new(Some(b"rid"));
        let mut out = Vec::new();
        match prepare(raw.as_bytes(), client, &id, None, 65536, &mut out).unwrap() {
            Parsed::Final(h) => (h, String::from_utf8(out).unwrap()),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    const KEEP11: ClientSide = ClientSide {
        http10: false,
        head_method: false,
        keep_alive: true,
        websocket: false,
    };

    #[test]
    fn framing_and_reuse_per_response() {
        let head10 = ClientSide {
            http10: true,
            ..KEEP11
        };
        let head_req = ClientSide {
            head_method: true,
            ..KEEP11
        };
        // (upstream head, client, body, upstream reusable, client keep-alive, dechunk)
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                KEEP11,
                Framing::Length(5),
                true,
                true,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                KEEP11,
                Framing::Chunked,
                true,
                true,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                head10,
                Framing::Chunked,
                true,
                false,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                KEEP11,
                Framing::UntilClose,
                false,
                false,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                KEEP11,
                Framing::Length(1),
                false,
                true,
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                KEEP11,
                Framing::Length(1),
                false,
                true,
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                KEEP11,
                Framing::Length(1),
                true,
                true,
                false,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                KEEP11,
                Framing::Empty,
                true,
                true,
                false,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                KEEP11,
                Framing::Empty,
                true,
                true,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
                head_req,
                Framing::Empty,
                true,
                true,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                KEEP11,
                Framing::Chunked,
                false,
                true,
                false,
            ),
        ];
        for (raw, client, body, reusable, keep, dechunk) in cases {
            let (h, _) = run(raw, client);
            assert_eq!(h.body, body, "{raw:?}");
            assert_eq!(h.upstream_reusable, reusable, "{raw:?} reusable");
            assert_eq!(h.client_keep_alive, keep, "{raw:?} keep-alive");
            assert_eq!(h.dechunk, dechunk, "{raw:?} dechunk");
            assert_eq!(h.len, raw.len());
        }
    }

    #[test]
    fn client_head_is_rewritten() {
        let (_, out) = run(
            "HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Upgrade: h2c\r\nTrailer: x\r\nX-Request-Id: theirs\r\nX-App: yes\r\nContent-Length: 2\r\n\r\n",
            KEEP11,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 Fine\r\nX-App: yes\r\nx-request-id: rid\r\ncontent-length: 2\r\n\r\n"
        );
        let (_, out) = run(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            ClientSide {
                http10: true,
                ..KEEP11
            },
        );
        assert!(out.contains("connection: keep-alive\r\n"), "{out}");
        let (_, out) = run("HTTP/1.1 200 OK\r\n\r\n", KEEP11);
        assert!(out.contains("connection: close\r\n"), "{out}");
        let (_, out) = run(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            KEEP11,
        );
        assert!(out.contains("content-length: 9\r\n"), "{out}");
    }

    #[test]
    fn bad_upstream_heads_are_errors() {
        let id = RequestId::from_client_or_new(None);
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 042 Odd\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            let mut out = Vec::new();
            assert!(
                prepare(raw.as_bytes(), KEEP11, &id, None, 65536, &mut out).is_err(),
                "{raw:?}"
            );
        }
        let mut out = Vec::new();
        assert!(matches!(
            prepare(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200",
                KEEP11,
                &id,
                None,
                65536,
                &mut out
            ),
            Ok(Parsed::Interim(25))
        ));
        assert!(matches!(
            prepare(
                b"HTTP/1.1 200 OK\r\nx: y",
                KEEP11,
                &id,
                None,
                65536,
                &mut out
            ),
            Ok(Parsed::Partial)
        ));
    }
}
