//! Header rules at the proxy boundary: hop-by-hop removal (both directions), the
//! `x-forwarded-*` family and the request id.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones still seen.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fast path for the common case (no hop-by-hop header at all): one pass over the
    // names, comparing standard names by value, instead of a hash probe per name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if let Some(conn) = headers.get(&header::CONNECTION) {
        // Collect first: the names borrow from the map we are about to change. Rare
        // enough (only when a Connection header lists extra names) to allocate.
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(&name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// The request id to use: the client's if it sent a sane one, else a new UUID v4.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("invalid"))
}

/// Adds the `x-forwarded-*` headers for a request received over plain HTTP from
/// `client` for `original_host`.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, original_host: Option<&HeaderValue>) {
    let mut ip_buf = [0u8; 48];
    let ip = format_ip(client, &mut ip_buf);
    // Several `x-forwarded-for` lines form one list (RFC 9110 §5.3): keep them all.
    let mut prev = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter(|v| !v.is_empty())
        .peekable();
    let xff = if prev.peek().is_none() {
        HeaderValue::from_str(ip).ok()
    } else {
        let mut v = Vec::with_capacity(64);
        for line in prev {
            v.extend_from_slice(line.as_bytes());
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(ip.as_bytes());
        HeaderValue::from_bytes(&v).ok()
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
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

fn format_ip(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // An IP address is at most 45 bytes of text, so this write always fits.
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or("")
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
    fn forwarded_headers() {
        let client: IpAddr = "10.0.0.9".parse().unwrap();
        let host = HeaderValue::from_static("www.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(&mut h, client, Some(&host));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "www.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        add_forwarded(&mut h, client, None);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "::1".parse().unwrap(), None);
        assert_eq!(h["x-forwarded-for"], "::1");
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
    }
}
