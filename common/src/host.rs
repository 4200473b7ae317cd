//! The host a request is for, as routes see it: lowercase, without `:port` and without
//! a trailing dot. Taken from the URI authority (HTTP/2 `:authority`, absolute-form)
//! or else the `Host` header.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Why an authority (`Host`, `:authority`, an absolute-form target's) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("empty host")]
    Empty,
    #[error("userinfo ('@') in the authority")]
    UserInfo,
    #[error("invalid character in the host")]
    BadChar,
    #[error("invalid IPv6 literal")]
    BadIpLiteral,
    #[error("invalid port")]
    BadPort,
}

/// Checks that `authority` is exactly `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986
/// §3.2.2), stricter than the URI grammar where backends disagree: a reg-name is letters,
/// digits, `-`, `.`, `_` and `~` only (no percent-escapes, no sub-delims such as `,`,
/// which would let `a, b` be one host to us and a list to a backend), an IP literal is an
/// IPv6 address in brackets, and a port is 1–5 digits up to 65535. Userinfo is refused
/// (`internal.example:80@evil.example` names `internal.example` to one parser and
/// `evil.example` to another).
pub fn check_authority(authority: &str) -> Result<(), AuthorityError> {
    let b = authority.as_bytes();
    if b.contains(&b'@') {
        return Err(AuthorityError::UserInfo);
    }
    let port = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(AuthorityError::BadIpLiteral)?;
        literal
            .parse::<Ipv6Addr>()
            .map_err(|_| AuthorityError::BadIpLiteral)?;
        match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(AuthorityError::BadChar)?),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(AuthorityError::Empty);
        }
        if !host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
        {
            return Err(AuthorityError::BadChar);
        }
        port
    };
    match port {
        None => Ok(()),
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()) => p
            .parse::<u16>()
            .map(drop)
            .map_err(|_| AuthorityError::BadPort),
        Some(_) => Err(AuthorityError::BadPort),
    }
}

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
    fn authorities() {
        use AuthorityError::*;
        let cases: &[(&str, Result<(), AuthorityError>)] = &[
            ("www.example.com", Ok(())),
            ("WWW.Example.COM:8080", Ok(())),
            ("example.com.", Ok(())),
            ("127.0.0.1:9000", Ok(())),
            ("my_host-1.internal:65535", Ok(())),
            ("[::1]", Ok(())),
            ("[::1]:8080", Ok(())),
            ("[2001:db8::1]:443", Ok(())),
            ("", Err(Empty)),
            (":80", Err(Empty)),
            ("localhost@internal.example", Err(UserInfo)),
            ("internal.example:80@evil.example", Err(UserInfo)),
            ("user:pw@h", Err(UserInfo)),
            ("a, b", Err(BadChar)),
            ("a,b", Err(BadChar)),
            ("a b", Err(BadChar)),
            ("a%2eb", Err(BadChar)),
            ("a/b", Err(BadChar)),
            ("a\\b", Err(BadChar)),
            ("a;b", Err(BadChar)),
            ("h\u{e9}", Err(BadChar)),
            ("h:", Err(BadPort)),
            ("h:0x50", Err(BadPort)),
            ("h:65536", Err(BadPort)),
            ("h:123456", Err(BadPort)),
            ("h:80:80", Err(BadPort)),
            ("h:+80", Err(BadPort)),
            ("[::1", Err(BadIpLiteral)),
            ("[zz]", Err(BadIpLiteral)),
            ("[::1]x", Err(BadChar)),
            ("[::1]:", Err(BadPort)),
        ];
        for (input, want) in cases {
            assert_eq!(check_authority(input), *want, "input {input:?}");
        }
    }

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
