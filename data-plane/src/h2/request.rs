//! A decoded header block as a request head or as trailers (RFC 9113 §8.1–§8.3): the
//! checks that make a message malformed, applied field by field as HPACK yields them,
//! so a block is read once and nothing is kept that is then refused.
//!
//! What is refused: pseudo-fields out of place, repeated, unknown (`:protocol`
//! included: extended CONNECT is not offered) or missing; field names that are not
//! lowercase tokens; values with NUL, CR or LF or with surrounding whitespace;
//! connection-specific fields and `te` other than `trailers`; unparsable or disagreeing
//! `content-length`; `:authority` with userinfo; `:path` that is neither origin-form
//! nor `*` for OPTIONS. Several `cookie` fields are joined with `; ` (§8.2.3), as an
//! HTTP/1.1 upstream expects one.

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};

use super::hpack::Value;

/// Why a header block is not a request (or not trailers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A stream error (RST_STREAM PROTOCOL_ERROR).
    Malformed(&'static str),
    /// The decoded list is over SETTINGS_MAX_HEADER_LIST_SIZE: answered with 431.
    TooLarge,
}

/// Collects one header block's fields ([`Fields::field`] per decoded field).
#[derive(Debug)]
pub(crate) struct Fields {
    trailers: bool,
    max_size: usize,
    size: usize,
    error: Option<Refusal>,
    regular: bool,
    method: Option<Method>,
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    path: Option<Bytes>,
    headers: HeaderMap,
    content_length: Option<u64>,
    cookies: usize,
}

/// A request head built from a header block.
#[derive(Debug)]
pub(crate) struct Head {
    pub parts: http::request::Parts,
    pub content_length: Option<u64>,
}

impl Fields {
    /// For a request's header block (`trailers` false) or a trailer block.
    pub(crate) fn new(trailers: bool, max_size: usize) -> Self {
        Self {
            trailers,
            max_size,
            size: 0,
            error: None,
            regular: false,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            // Room for a typical request and the fields the proxy adds (x-forwarded-*,
            // host, x-request-id, traceparent) without growing: growth reallocates
            // and rehashes the map, which showed in the profile.
            headers: if trailers {
                HeaderMap::new()
            } else {
                crate::h1::buffers::take_map(24)
            },
            content_length: None,
            cookies: 0,
        }
    }

    fn refuse(&mut self, why: &'static str) {
        if self.error.is_none() {
            self.error = Some(Refusal::Malformed(why));
        }
    }

    /// One decoded field, in order. Every check runs on the borrowed value; a value kept
    /// is taken as `Bytes` only then (shared, not copied, when it is an HPACK table's).
    pub(crate) fn field(&mut self, name: &[u8], field_value: Value<'_>) {
        if self.error.is_some() {
            return;
        }
        let value = field_value.as_bytes();
        // RFC 9113 §6.5.2: the size of a field is its name and value plus 32.
        self.size += name.len() + value.len() + 32;
        if self.size > self.max_size {
            self.error = Some(Refusal::TooLarge);
            return;
        }
        if !value_ok(value) {
            return self.refuse("a field value with NUL, CR, LF or surrounding whitespace");
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            return self.pseudo(pseudo, field_value);
        }
        self.regular = true;
        // The same field-count limit as an HTTP/1.1 head (pseudo-fields not counted).
        if self.headers.len() >= crate::h1::request::MAX_HEADERS {
            self.error = Some(Refusal::TooLarge);
            return;
        }
        if !name_ok(name) {
            return self.refuse("a field name that is not a lowercase token");
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return self.refuse("a field name that is not a token");
        };
        if is_connection_specific(&name) {
            return self.refuse("a connection-specific field");
        }
        if name == header::TE && value != b"trailers" {
            return self.refuse("te other than trailers");
        }
        if name == header::CONTENT_LENGTH {
            let n =
                (!value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                    .flatten();
            match (n, self.content_length) {
                (None, _) => return self.refuse("content-length is not a number"),
                (Some(n), Some(m)) if n != m => {
                    return self.refuse("content-length values disagree");
                }
                (Some(n), _) => self.content_length = Some(n),
            }
        }
        if name == header::COOKIE {
            self.cookies += 1;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(field_value.to_bytes()) else {
            return self.refuse("a field value with control characters");
        };
        self.headers.append(name, value);
    }

    fn pseudo(&mut self, name: &[u8], field_value: Value<'_>) {
        let value = field_value.as_bytes();
        if self.trailers {
            return self.refuse("a pseudo-field in trailers");
        }
        if self.regular {
            return self.refuse("a pseudo-field after a regular field");
        }
        match name {
            b"method" if self.method.is_none() => match Method::from_bytes(value) {
                Ok(m) => self.method = Some(m),
                Err(_) => self.refuse(":method is not a token"),
            },
            b"scheme" if self.scheme.is_none() => {
                let scheme = match value {
                    b"http" => Ok(Scheme::HTTP),
                    b"https" => Ok(Scheme::HTTPS),
                    other => Scheme::try_from(other),
                };
                match scheme {
                    Ok(s) => self.scheme = Some(s),
                    Err(_) => self.refuse(":scheme is not a scheme"),
                }
            }
            b"authority" if self.authority.is_none() => {
                if value.contains(&b'@') {
                    return self.refuse(":authority with userinfo");
                }
                match Authority::from_maybe_shared(field_value.to_bytes()) {
                    Ok(a) => self.authority = Some(a),
                    Err(_) => self.refuse(":authority is not an authority"),
                }
            }
            b"path" if self.path.is_none() => self.path = Some(field_value.to_bytes()),
            b"method" | b"scheme" | b"authority" | b"path" => {
                self.refuse("a repeated pseudo-field")
            }
            _ => self.refuse("an unknown pseudo-field"),
        }
    }

    /// The request head, or why the block is not one.
    pub(crate) fn into_request(mut self) -> Result<Head, Refusal> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let method = self.method.take().ok_or(Refusal::Malformed("no :method"))?;
        let mut uri = http::uri::Parts::default();
        if method == Method::CONNECT {
            // RFC 9113 §8.5: :authority only.
            if self.scheme.is_some() || self.path.is_some() {
                return Err(Refusal::Malformed("CONNECT with :scheme or :path"));
            }
            uri.authority = Some(
                self.authority
                    .take()
                    .ok_or(Refusal::Malformed("CONNECT without :authority"))?,
            );
        } else {
            let scheme = self.scheme.take().ok_or(Refusal::Malformed("no :scheme"))?;
            let path = self.path.take().ok_or(Refusal::Malformed("no :path"))?;
            let origin_form = path.first() == Some(&b'/');
            let asterisk = &path[..] == b"*" && method == Method::OPTIONS;
            if !origin_form && !asterisk {
                return Err(Refusal::Malformed(":path is not origin-form"));
            }
            let path = PathAndQuery::from_maybe_shared(path)
                .map_err(|_| Refusal::Malformed(":path is not a valid path"))?;
            if let Some(authority) = self.authority.take() {
                uri.scheme = Some(scheme);
                uri.authority = Some(authority);
            }
            uri.path_and_query = Some(path);
        }
        let uri = Uri::from_parts(uri).map_err(|_| Refusal::Malformed("not a valid URI"))?;
        if self.cookies > 1 {
            join_cookies(&mut self.headers);
        }
        let mut request = http::Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers;
        let (parts, ()) = request.into_parts();
        Ok(Head {
            parts,
            content_length: self.content_length,
        })
    }

    /// The fields of a trailer block.
    pub(crate) fn into_trailers(self) -> Result<HeaderMap, Refusal> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.headers),
        }
    }
}

/// RFC 9113 §8.2.1: no NUL, CR or LF, and no leading or trailing SP or HTAB.
fn value_ok(value: &[u8]) -> bool {
    let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    !edge(value.first())
        && !edge(value.last())
        && !value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'))
}

/// A lowercase token (RFC 9110 §5.6.2; RFC 9113 §8.2.1: uppercase is malformed).
fn name_ok(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| {
            matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
        })
}

/// Fields no HTTP/2 message carries (RFC 9113 §8.2.2): malformed in a request, never
/// written in a response.
pub(super) fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
}

fn join_cookies(headers: &mut HeaderMap) {
    let mut joined = Vec::new();
    for (i, v) in headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(fields: &[(&str, &str)]) -> Result<Head, Refusal> {
        let mut f = Fields::new(false, 16 * 1024);
        for (n, v) in fields {
            f.field(n.as_bytes(), Value::literal(v.as_bytes()));
        }
        f.into_request()
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "www.example.com"),
        (":path", "/a?b=c"),
    ];

    #[test]
    fn a_well_formed_request_becomes_a_head() {
        let mut fields = GET.to_vec();
        fields.extend([
            ("x-a", "1"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("content-length", "0"),
        ]);
        let head = build(&fields).unwrap();
        assert_eq!(head.parts.method, Method::GET);
        assert_eq!(head.parts.uri, "https://www.example.com/a?b=c");
        assert_eq!(head.parts.version, Version::HTTP_2);
        assert_eq!(head.parts.headers["x-a"], "1");
        assert_eq!(head.parts.headers["cookie"], "a=1; b=2");
        assert_eq!(head.content_length, Some(0));
        let no_authority =
            build(&[(":method", "GET"), (":scheme", "http"), (":path", "/")]).unwrap();
        assert_eq!(no_authority.parts.uri, "/");
        let options =
            build(&[(":method", "OPTIONS"), (":scheme", "http"), (":path", "*")]).unwrap();
        assert_eq!(options.parts.uri.path(), "*");
        let connect = build(&[(":method", "CONNECT"), (":authority", "a.example:443")]).unwrap();
        assert_eq!(connect.parts.uri.authority().unwrap(), "a.example:443");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut f = GET.to_vec();
            f.extend_from_slice(extra);
            f
        };
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("no method", GET[1..].to_vec()),
            ("no path", GET[..3].to_vec()),
            ("no scheme", vec![GET[0], GET[2], GET[3]]),
            (
                "repeated path",
                with(&[]).into_iter().chain([(":path", "/x")]).collect(),
            ),
            (
                "pseudo after regular",
                vec![GET[0], GET[1], ("x", "1"), GET[3]],
            ),
            (
                "unknown pseudo",
                with(&[])
                    .into_iter()
                    .take(3)
                    .chain([(":protocol", "websocket"), GET[3]])
                    .collect(),
            ),
            ("uppercase name", with(&[("X-A", "1")])),
            ("CR in value", with(&[("x", "a\rb")])),
            ("LF in value", with(&[("x", "a\nb")])),
            ("NUL in value", with(&[("x", "a\0b")])),
            ("leading space", with(&[("x", " a")])),
            ("trailing tab", with(&[("x", "a\t")])),
            ("connection", with(&[("connection", "close")])),
            (
                "transfer-encoding",
                with(&[("transfer-encoding", "chunked")]),
            ),
            ("upgrade", with(&[("upgrade", "h2c")])),
            ("keep-alive", with(&[("keep-alive", "1")])),
            ("proxy-connection", with(&[("proxy-connection", "x")])),
            ("te gzip", with(&[("te", "gzip")])),
            ("bad content-length", with(&[("content-length", "1x")])),
            ("negative content-length", with(&[("content-length", "-1")])),
            (
                "disagreeing content-length",
                with(&[("content-length", "1"), ("content-length", "2")]),
            ),
            (
                "userinfo",
                vec![GET[0], GET[1], (":authority", "u@www.example.com"), GET[3]],
            ),
            (
                "absolute path",
                vec![GET[0], GET[1], GET[2], (":path", "http://x/")],
            ),
            ("empty path", vec![GET[0], GET[1], GET[2], (":path", "")]),
            (
                "asterisk for GET",
                vec![GET[0], GET[1], GET[2], (":path", "*")],
            ),
            (
                "CRLF in path",
                vec![GET[0], GET[1], GET[2], (":path", "/x HTTP/1.1\r\nHost: y")],
            ),
            (
                "space in path",
                vec![GET[0], GET[1], GET[2], (":path", "/x y")],
            ),
            (
                "CONNECT with path",
                vec![
                    (":method", "CONNECT"),
                    (":authority", "a:1"),
                    (":path", "/"),
                ],
            ),
            (
                "response pseudo",
                with(&[])
                    .into_iter()
                    .take(1)
                    .chain([(":status", "200")])
                    .collect(),
            ),
        ];
        for (name, fields) in cases {
            assert!(
                matches!(build(&fields), Err(Refusal::Malformed(_))),
                "{name}: {:?}",
                build(&fields)
            );
        }
        assert!(build(&with(&[("te", "trailers")])).is_ok());
    }

    #[test]
    fn values_from_the_hpack_table_are_shared_across_requests() {
        let mut d = super::super::hpack::Decoder::new(4096);
        let mut decode = |block: &[u8]| {
            let mut f = Fields::new(false, 16 * 1024);
            d.decode(block, |n, v| f.field(n, v)).unwrap();
            f.into_request().unwrap()
        };
        // GET http / with :authority www.example.com and x-a: 1, both indexed...
        let mut block = b"\x82\x86\x84\x41\x0fwww.example.com".to_vec();
        block.extend_from_slice(b"\x40\x03x-a\x011");
        let first = decode(&block);
        // ...then referenced: :authority at 63, x-a at 62.
        let second = decode(b"\x82\x86\x84\xbf\xbe");
        for head in [&first, &second] {
            assert_eq!(head.parts.uri, "http://www.example.com/");
            assert_eq!(head.parts.headers["x-a"], "1");
        }
        let authority = |h: &Head| h.parts.uri.authority().unwrap().as_str().as_ptr();
        assert_eq!(authority(&first), authority(&second));
        let x_a = |h: &Head| h.parts.headers["x-a"].as_bytes().as_ptr();
        assert_eq!(x_a(&first), x_a(&second));
    }

    #[test]
    fn a_list_over_the_limit_is_too_large_and_trailers_take_no_pseudo_fields() {
        let mut f = Fields::new(false, 200);
        for (n, v) in GET {
            f.field(n.as_bytes(), Value::literal(v.as_bytes()));
        }
        f.field(b"x-big", Value::literal(&[b'a'; 100]));
        assert_eq!(f.into_request().unwrap_err(), Refusal::TooLarge);
        // The field count: 128 regular fields pass, 129 are too many (as on HTTP/1.1).
        for (count, ok) in [(128, true), (129, false)] {
            let mut f = Fields::new(false, 64 * 1024);
            for (n, v) in GET {
                f.field(n.as_bytes(), Value::literal(v.as_bytes()));
            }
            for i in 0..count {
                f.field(format!("x-{i}").as_bytes(), Value::literal(b"1"));
            }
            let got = f.into_request();
            assert_eq!(got.is_ok(), ok, "{count} fields: {got:?}");
            if !ok {
                assert_eq!(got.unwrap_err(), Refusal::TooLarge);
            }
        }
        let mut t = Fields::new(true, 1024);
        t.field(b"grpc-status", Value::literal(b"0"));
        assert_eq!(t.into_trailers().unwrap()["grpc-status"], "0");
        let mut t = Fields::new(true, 1024);
        t.field(b":status", Value::literal(b"200"));
        assert!(t.into_trailers().is_err());
    }
}
