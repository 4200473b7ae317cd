//! Header-field rules for raw HTTP/1.1 heads, shared by the request and the response
//! side: which fields we interpret, drop or replace, how a body is framed, and small
//! writers for the heads we emit. The same rules as [`crate::forwarding`] applies to
//! hyper's `HeaderMap` (that module's tests and this one's check the same cases).

pub use crate::forwarding::RequestId;
use crate::forwarding::is_hop_by_hop;

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// What a header field is to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    XRequestId,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    /// Hop-by-hop, but read: `Upgrade: websocket` switches the connection to a tunnel.
    Upgrade,
    /// W3C trace context: replaced by the proxy's own (see [`crate::observe::trace`]).
    TraceParent,
    /// Passed on only beside a valid `traceparent`.
    TraceState,
    /// Connection-specific (RFC 9110 §7.6.1) or legacy hop-by-hop: never forwarded.
    HopByHop,
    /// A framing field's name with `_` for `-` (`Transfer_Encoding`, `Content_Length`):
    /// CGI-style servers map both to the same variable, so a request carrying one is
    /// refused.
    Confusable,
    Other,
}

/// Classifies a field name (case-insensitive): one length switch and at most a few
/// comparisons; the hop-by-hop set is [`crate::forwarding`]'s, shared with hyper's path.
pub fn classify(name: &str) -> Field {
    let is = |lower: &str| name.eq_ignore_ascii_case(lower);
    match name.len() {
        4 if is("host") => Field::Host,
        6 if is("expect") => Field::Expect,
        7 if is("upgrade") => Field::Upgrade,
        10 if is("connection") => Field::Connection,
        10 if is("tracestate") => Field::TraceState,
        11 if is("traceparent") => Field::TraceParent,
        12 if is("x-request-id") => Field::XRequestId,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::XForwardedFor,
        16 if is("x-forwarded-host") => Field::XForwardedHost,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::XForwardedProto,
        _ if is_hop_by_hop(name) => Field::HopByHop,
        14 | 17 if name.contains('_') && is_confusable(name) => Field::Confusable,
        _ => Field::Other,
    }
}

fn is_confusable(name: &str) -> bool {
    ["content-length", "transfer-encoding"].iter().any(|field| {
        field.len() == name.len()
            && field
                .bytes()
                .zip(name.bytes())
                .all(|(f, n)| f == n.to_ascii_lowercase() || (f == b'-' && n == b'_'))
    })
}

/// The lines of one list-valued field (`Connection`, `Transfer-Encoding`) in a head,
/// kept without allocating; a head with more lines than this is refused.
#[derive(Debug, Clone, Copy)]
pub struct FieldLines<'b> {
    lines: [&'b [u8]; 8],
    len: usize,
}

impl<'b> FieldLines<'b> {
    pub fn new() -> Self {
        Self {
            lines: [&[]; 8],
            len: 0,
        }
    }

    /// Adds a line; `Err` when there are already as many as we keep.
    pub fn push(&mut self, value: &'b [u8]) -> Result<(), ()> {
        *self.lines.get_mut(self.len).ok_or(())? = value;
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[&'b [u8]] {
        &self.lines[..self.len]
    }
}

/// The comma-separated members of a list-valued field, trimmed, empty ones skipped.
pub fn list_members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|m| !m.is_empty())
}

/// True when one of the `Connection` values names `name` (so it is hop-by-hop too).
pub fn named_in(connection: &[&[u8]], name: &str) -> bool {
    connection
        .iter()
        .flat_map(|v| list_members(v))
        .any(|m| m.eq_ignore_ascii_case(name.as_bytes()))
}

/// Which connection options a set of `Connection` values carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
}

pub fn connection_options(connection: &[&[u8]]) -> ConnectionOptions {
    let mut o = ConnectionOptions::default();
    for m in connection.iter().flat_map(|v| list_members(v)) {
        o.close |= m.eq_ignore_ascii_case(b"close");
        o.keep_alive |= m.eq_ignore_ascii_case(b"keep-alive");
    }
    o
}

/// Parses `Content-Length` values: every member of every line must be the same
/// decimal number (RFC 9110 §8.6); anything else is `None` (a framing error).
pub fn content_length<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<u64> {
    let mut found: Option<u64> = None;
    for value in values {
        let mut members = 0;
        for m in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            members += 1;
            if m.is_empty() || m.len() > 19 || !m.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = m
                .iter()
                .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
        if members == 0 {
            return None;
        }
    }
    found
}

/// True when the `Transfer-Encoding` values are exactly `chunked`, the only coding we
/// relay (any other would have to be declared again after we re-frame the body).
pub fn only_chunked(values: &[&[u8]]) -> bool {
    only_member(values, b"chunked")
}

/// True when the list-valued field's lines hold exactly one member, `token`
/// (case-insensitive).
pub fn only_member(values: &[&[u8]], token: &[u8]) -> bool {
    let mut members = values.iter().flat_map(|v| list_members(v));
    members
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case(token))
        && members.next().is_none()
}

/// Appends `name: value\r\n`.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal form of `n` (shared with the access log).
pub use crate::ascii::put_u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_classified_case_insensitively() {
        let cases = [
            ("Host", Field::Host),
            ("CONTENT-LENGTH", Field::ContentLength),
            ("Transfer-Encoding", Field::TransferEncoding),
            ("connection", Field::Connection),
            ("Keep-Alive", Field::HopByHop),
            ("Proxy-Connection", Field::HopByHop),
            ("Proxy-Authorization", Field::HopByHop),
            ("Proxy-Authenticate", Field::HopByHop),
            ("TE", Field::HopByHop),
            ("Trailer", Field::HopByHop),
            ("Upgrade", Field::Upgrade),
            ("X-Request-Id", Field::XRequestId),
            ("X-Forwarded-For", Field::XForwardedFor),
            ("x-forwarded-proto", Field::XForwardedProto),
            ("x-forwarded-host", Field::XForwardedHost),
            ("Expect", Field::Expect),
            ("Hostx", Field::Other),
            ("Transfer_Encoding", Field::Confusable),
            ("content_length", Field::Confusable),
            ("Content_Length_", Field::Other),
            ("x_custom", Field::Other),
            ("x-keep", Field::Other),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), want, "{name}");
        }
    }

    #[test]
    fn content_length_must_agree() {
        let cases: &[(&[&[u8]], Option<u64>)] = &[
            (&[b"42"], Some(42)),
            (&[b"0"], Some(0)),
            (&[b"42", b"42"], Some(42)),
            (&[b"42, 42"], Some(42)),
            (&[b"42", b"43"], None),
            (&[b"42, 43"], None),
            (&[b"-1"], None),
            (&[b"+1"], None),
            (&[b"1 2"], None),
            (&[b""], None),
            (&[b"0x10"], None),
            (&[b"99999999999999999999"], None),
        ];
        for (values, want) in cases {
            assert_eq!(content_length(values.iter().copied()), *want, "{values:?}");
        }
    }

    #[test]
    fn transfer_coding_lists() {
        assert!(only_chunked(&[b"chunked"]));
        assert!(only_chunked(&[b" Chunked "]));
        assert!(!only_chunked(&[b"gzip, chunked"]));
        assert!(!only_chunked(&[b"chunked", b"chunked"]));
        assert!(!only_chunked(&[b"identity"]));
    }

    #[test]
    fn connection_values() {
        let o = connection_options(&[b"Keep-Alive, x-a", b"CLOSE"]);
        assert!(o.close && o.keep_alive);
        assert!(named_in(&[b"keep-alive, X-Secret"], "x-secret"));
        assert!(!named_in(&[b"keep-alive, X-Secret"], "x-secre"));
    }
}
