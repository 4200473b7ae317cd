//! Header rules at the proxy boundary: hop-by-hop removal (both directions), the
//! `x-forwarded-*` family and the request id.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones still seen: never
/// forwarded, by either engine (names compare case-insensitively).
pub fn is_hop_by_hop(name: &str) -> bool {
    let is = |lower: &str| name.eq_ignore_ascii_case(lower);
    match name.len() {
        2 => is("te"),
        7 => is("upgrade") || is("trailer"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fast path for the common case (no hop-by-hop header at all): one pass over the
    // names, no hash probe per name.
    if !headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        return;
    }
    // Collect first: the names borrow from the map we are about to change. Rare
    // enough (only when a hop-by-hop header is present) to allocate.
    let mut gone: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name.as_str()))
        .cloned()
        .collect();
    if let Some(conn) = headers.get(&header::CONNECTION) {
        gone.extend(
            conn.to_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    for name in gone {
        headers.remove(&name);
    }
}

/// True when the request's `te` is exactly one `trailers` (any case): the one `te`
/// HTTP/2 allows (RFC 9113 §8.2.2) and gRPC servers require. [`strip_hop_by_hop`]
/// removes `te` like every hop-by-hop field; the HTTP/2 path puts this one back for
/// h2c upstreams.
pub fn te_is_trailers(headers: &HeaderMap) -> bool {
    let mut te = headers.get_all(header::TE).iter();
    matches!((te.next(), te.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

/// A request id: the client's `x-request-id` when sane (≤ 128 visible ASCII bytes),
/// else a new UUID v4. Stored inline so the request path does not allocate for it.
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

impl AsRef<[u8]> for RequestId {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// The request id to use for a hyper-served request, as a header value. Marked
/// sensitive: HPACK then sends it as a never-indexed literal, as it should a value
/// unique to one request — indexing it costs a dynamic-table search and insert per
/// request on both ends and evicts the entries that do repeat. (Its `Debug` shows
/// "Sensitive": log it from its bytes.)
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let id = RequestId::from_client_or_new(headers.get(&X_REQUEST_ID).map(HeaderValue::as_bytes));
    // The id owns its bytes in one allocation that every clone of the value shares (a
    // copied value would take a second one, for the shared count, at its first clone).
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or(HeaderValue::from_static("invalid"));
    value.set_sensitive(true);
    value
}

/// The client's address as a header value, made once per connection (an HTTP/2
/// connection's requests then share it: see [`add_forwarded`]).
pub fn client_text(client: IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(15);
    put_ip(&mut text, client);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// Adds the `x-forwarded-*` headers for a request received over plain HTTP from
/// `client` (`client_text`: the same as text, when the caller made it already) for
/// `original_host`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    client_text: Option<&HeaderValue>,
    original_host: Option<&HeaderValue>,
) {
    match client_text {
        // The common case: no list from further down, and the address made once.
        Some(text) if !headers.contains_key(&X_FORWARDED_FOR) => {
            headers.insert(X_FORWARDED_FOR.clone(), text.clone());
        }
        _ => add_forwarded_for(headers, client),
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match original_host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

fn add_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    // Several `x-forwarded-for` lines form one list (RFC 9110 §5.3): keep them all.
    // Written in a pooled scratch buffer: the value's own copy is the one allocation.
    let mut xff = crate::h1::buffers::take_small();
    for line in headers.get_all(&X_FORWARDED_FOR) {
        if !line.is_empty() {
            xff.extend_from_slice(line.as_bytes());
            xff.extend_from_slice(b", ");
        }
    }
    put_ip(&mut xff, client);
    if let Ok(value) = HeaderValue::from_bytes(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    crate::h1::buffers::give(xff);
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
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// A route's header filter on a `HeaderMap` (the HTTP/2 path; the HTTP/1.1 engine
/// applies the same rules while writing the head): `remove` drops every line, `set`
/// replaces them with one, `add` appends one.
pub fn apply_filter(headers: &mut HeaderMap, filter: &routemaster_common::model::HeaderFilter) {
    for name in filter.remove() {
        headers.remove(name);
    }
    for (name, value) in filter.set() {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in filter.add() {
        headers.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-keep"]);
    }

    #[test]
    fn only_a_lone_te_trailers_is_trailers() {
        for (lines, want) in [
            (&[("te", "trailers")][..], true),
            (&[("te", "Trailers")][..], true),
            (&[][..], false),
            (&[("te", "gzip")][..], false),
            (&[("te", "trailers, gzip")][..], false),
            (&[("te", "trailers"), ("te", "gzip")][..], false),
        ] {
            assert_eq!(te_is_trailers(&map(lines)), want, "{lines:?}");
        }
    }

    #[test]
    fn forwarded_headers() {
        let client: IpAddr = "10.0.0.9".parse().unwrap();
        let host = HeaderValue::from_static("www.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(&mut h, client, Some(&client_text(client)), Some(&host));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "www.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        add_forwarded(&mut h, client, None, None);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        let v6: IpAddr = "::1".parse().unwrap();
        for text in [None, Some(client_text(v6))] {
            let mut h = HeaderMap::new();
            add_forwarded(&mut h, v6, text.as_ref(), None);
            assert_eq!(h["x-forwarded-for"], "::1", "{text:?}");
            assert_eq!(h["x-forwarded-proto"], "http");
            assert!(!h.contains_key("x-forwarded-host"));
        }
    }

    #[test]
    fn hop_by_hop_names() {
        for name in [
            "Connection",
            "keep-alive",
            "Proxy-Connection",
            "proxy-authenticate",
            "Proxy-Authorization",
            "TE",
            "Trailer",
            "transfer-encoding",
            "Upgrade",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in ["x-keep", "host", "tee", "content-length", "upgrades"] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
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
    fn request_ids_are_kept_or_generated() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-1")])), "abc-1");
        let fresh = request_id(&HeaderMap::new());
        assert_eq!(fresh.len(), 36);
        assert_ne!(fresh, request_id(&HeaderMap::new()));
        // control characters or absurd lengths are replaced
        assert_eq!(
            request_id(&map(&[("x-request-id", &"a".repeat(300))])).len(),
            36
        );
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
