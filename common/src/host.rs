//! The host a request is for, as routes see it: lowercase, without `:port` and without
//! a trailing dot. Taken from the URI authority (HTTP/2 `:authority`, absolute-form)
//! or else the `Host` header.

use std::borrow::Cow;

/// `authority` is `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn normalize_host(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows the closing one.
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rfind(':') {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The port of an authority, if it names one.
pub fn authority_port(authority: &str) -> Option<u16> {
    let after = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority,
    };
    after.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let cases = [
            ("www.example.com", "www.example.com", None),
            ("WWW.Example.COM:8080", "www.example.com", Some(8080)),
            ("example.com.", "example.com", None),
            ("example.com.:80", "example.com", Some(80)),
            ("127.0.0.1:9000", "127.0.0.1", Some(9000)),
            ("[::1]:8080", "[::1]", Some(8080)),
            ("[::1]", "[::1]", None),
            ("", "", None),
        ];
        for (input, host, port) in cases {
            assert_eq!(normalize_host(input), host, "input {input:?}");
            assert_eq!(authority_port(input), port, "input {input:?}");
        }
    }
}
