//! Header-field rules for raw HTTP/1.1 heads, shared by the request and the response
//! side: which fields we interpret, drop or replace, how a body is framed, and small
//! writers for the heads we emit. The same rules as [`crate::forwarding`] applies to
//! hyper's `HeaderMap` (that module's tests and this one's check the same cases).

use std::net::IpAddr;

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
    /// Connection-specific (RFC 9110 §7.6.1) or legacy hop-by-hop: never forwarded.
    HopByHop,
    Other,
}

/// Classifies a field name (case-insensitive), one length switch and at most a few
/// comparisons.
pub fn classify(name: &str) -> Field {
    let is = |lower: &str| name.eq_ignore_ascii_case(lower);
    match name.len() {
        2 if is("te") => Field::HopByHop,
        4 if is("host") => Field::Host,
        6 if is("expect") => Field::Expect,
        7 if is("upgrade") => Field::HopByHop,
        7 if is("trailer") => Field::HopByHop,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        12 if is("x-request-id") => Field::XRequestId,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::XForwardedFor,
        16 if is("x-forwarded-host") => Field::XForwardedHost,
        16 if is("proxy-connection") => Field::HopByHop,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::XForwardedProto,
        18 if is("proxy-authenticate") => Field::HopByHop,
        19 if is("proxy-authorization") => Field::HopByHop,
        _ => Field::Other,
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
    let mut members = values.iter().flat_map(|v| list_members(v));
    members
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case(b"chunked"))
        && members.next().is_none()
}

/// A request id: the client's when sane (≤ 128 visible ASCII bytes), else a UUID v4.
/// Stored inline so the request path does not allocate for it.
#[derive(Clone)]
pub struct RequestId {
    buf: [u8; 128],
    len: u8,
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl RequestId {
    pub fn from_client_or_new(client: Option<&[u8]>) -> Self {
        let mut id = Self {
            buf: [0; 128],
            len: 0,
        };
        match client {
            Some(v) if !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic) => {
                id.buf[..v.len()].copy_from_slice(v);
                id.len = v.len() as u8;
            }
            _ => {
                let mut enc = uuid::Uuid::encode_buffer();
                let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut enc);
                id.buf[..s.len()].copy_from_slice(s.as_bytes());
                id.len = s.len() as u8;
            }
        }
        id
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// Appends `name: value\r\n`.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal form of `n`.
pub fn put_u64(out: &mut Vec<u8>, mut n: u64) {
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

/// Appends the textual IP address.
pub fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        // The common case, without the formatting machinery (it shows in profiles).
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                put_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

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
            ("Upgrade", Field::HopByHop),
            ("X-Request-Id", Field::XRequestId),
            ("X-Forwarded-For", Field::XForwardedFor),
            ("x-forwarded-proto", Field::XForwardedProto),
            ("x-forwarded-host", Field::XForwardedHost),
            ("Expect", Field::Expect),
            ("Hostx", Field::Other),
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

    #[test]
    fn ip_addresses() {
        for ip in [
            "127.0.0.1",
            "10.200.3.0",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let mut out = Vec::new();
            put_ip(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip.as_bytes());
        }
    }

    #[test]
    fn numbers_and_ids() {
        for n in [0, 7, 10, 4096, u64::MAX] {
            let mut out = Vec::new();
            put_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        assert_eq!(
            RequestId::from_client_or_new(Some(b"abc-1")).as_bytes(),
            b"abc-1"
        );
        assert_eq!(RequestId::from_client_or_new(None).as_bytes().len(), 36);
        assert_eq!(
            RequestId::from_client_or_new(Some(&[b'a'; 129]))
                .as_bytes()
                .len(),
            36
        );
        assert_eq!(
            RequestId::from_client_or_new(Some(b"a b")).as_bytes().len(),
            36
        );
    }
}
