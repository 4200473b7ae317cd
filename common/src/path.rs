//! Request path normalisation, applied before matching; the normalised path is also
//! what goes upstream, so what was matched is what the backend sees.
//!
//! Rules: percent-encoded unreserved characters are decoded (`%66` → `f`), other
//! escapes are kept (hex upper-cased; `%2F` stays encoded and is not a separator),
//! repeated `/` are merged, `.` and `..` segments are removed, and `..` above the root
//! is an error. Already-normal paths (the common case) are returned borrowed.
//!
//! Refused, because a backend could read them as a different path than the one we
//! routed on: a raw `\` (Node and IIS read it as `/`), a `#` (no fragment belongs in a
//! request target), `%00`, `%5C` and overlong UTF-8 escapes (`%C0%AE` is `.` to a lenient
//! decoder), and a `.`/`..` segment that only appears once `%2F` is decoded
//! (`/a/..%2Fadmin`). `%2F` elsewhere is kept encoded and is not a separator.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
    #[error("path has a malformed percent-escape")]
    BadEscape,
    #[error("path has a character backends read differently ('\\' or '#')")]
    BadChar,
    #[error(
        "path has an escape or segment backends read differently (NUL, '\\', overlong UTF-8, or a dot segment behind %2F or ';')"
    )]
    Ambiguous,
}

pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    if raw.bytes().any(|b| b == b'\\' || b == b'#') {
        return Err(PathError::BadChar);
    }
    let decoded = decode_unreserved(raw)?;
    if hides_dot_segment(&decoded) {
        return Err(PathError::Ambiguous);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)?))
}

/// True when a segment that is not itself `.` or `..` becomes one to a backend that
/// splits on `%2F` too, or strips `;parameters` first (Tomcat reads `/public/..;/admin`
/// as `/admin`): that backend would climb where we did not.
fn hides_dot_segment(decoded: &str) -> bool {
    let is_dots = |s: &str| s == "." || s == "..";
    decoded.split('/').any(|seg| {
        !is_dots(seg)
            && seg
                .split("%2F")
                .any(|piece| is_dots(piece.split(';').next().unwrap_or(piece)))
    })
}

/// Escapes a lenient decoder could turn into something we never saw: NUL, `\`, and
/// the lead bytes of overlong UTF-8 forms (`C0`/`C1` always; `E0` before `80`–`9F` and
/// `F0` before `80`–`8F`, checked by the caller with the next escape).
fn forbidden_escape(byte: u8, next: Option<u8>) -> bool {
    match byte {
        0x00 | b'\\' | 0xC0 | 0xC1 => true,
        0xE0 => next.is_some_and(|n| (0x80..=0x9F).contains(&n)),
        0xF0 => next.is_some_and(|n| (0x80..=0x8F).contains(&n)),
        _ => false,
    }
}

/// True when nothing would change: no escapes, no empty, `.` or `..` segments.
fn is_normal(b: &[u8]) -> bool {
    let mut prev_slash = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' | b'\\' | b'#' => return false,
            b'/' => {
                if prev_slash {
                    return false;
                }
                prev_slash = true;
            }
            b'.' if prev_slash => {
                // "/." or "/.." followed by '/' or the end is a dot segment.
                let rest = &b[i + 1..];
                let dots = if rest.first() == Some(&b'.') { 2 } else { 1 };
                if matches!(b.get(i + dots), None | Some(b'/' | b';')) {
                    return false;
                }
                prev_slash = false;
            }
            _ => prev_slash = false,
        }
        i += 1;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let byte = hi << 4 | lo;
            let next = match (b.get(i + 3), b.get(i + 4), b.get(i + 5)) {
                (Some(b'%'), Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
                _ => None,
            };
            if forbidden_escape(byte, next) {
                return Err(PathError::Ambiguous);
            }
            if is_unreserved(byte) {
                out.push(char::from(byte));
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(hi)]));
                out.push(char::from(HEX[usize::from(lo)]));
            }
            i += 3;
        } else {
            // Copy the run up to the next escape in one go (keeps UTF-8 intact).
            let end = b[i..]
                .iter()
                .position(|&c| c == b'%')
                .map_or(b.len(), |p| i + p);
            out.push_str(&raw[i..end]);
            i = end;
        }
    }
    Ok(out)
}

fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = path.ends_with('/');
    for seg in path.split('/') {
        match seg {
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    // A trailing separator is significant ("/a/" ≠ "/a"); re-derive it from the end.
    trailing_slash = trailing_slash || path.ends_with('/');
    let mut out = String::with_capacity(path.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("", Ok("/")),
            ("/foo/bar", Ok("/foo/bar")),
            ("/foo/bar/", Ok("/foo/bar/")),
            ("/%66oo", Ok("/foo")),
            ("/a%2Db%7e", Ok("/a-b~")),
            ("/a%2fb", Ok("/a%2Fb")),
            ("/a%2Fb/../c", Ok("/c")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("//a///b", Ok("/a/b")),
            ("/a/./b", Ok("/a/b")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/../../b", Err(PathError::AboveRoot)),
            ("/..", Err(PathError::AboveRoot)),
            ("/%2e%2e/etc/passwd", Err(PathError::AboveRoot)),
            ("/a/..b/.c", Ok("/a/..b/.c")),
            ("/a%zz", Err(PathError::BadEscape)),
            ("/a%4", Err(PathError::BadEscape)),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            ("/café/./x", Ok("/café/x")),
            ("foo", Err(PathError::NotAbsolute)),
            ("*", Err(PathError::NotAbsolute)),
            ("/public/..\\admin", Err(PathError::BadChar)),
            ("/a\\b", Err(PathError::BadChar)),
            ("/a#/../admin", Err(PathError::BadChar)),
            ("/a#b", Err(PathError::BadChar)),
            ("/a%00b", Err(PathError::Ambiguous)),
            ("/a/..%5Cadmin", Err(PathError::Ambiguous)),
            ("/a/..%5cadmin", Err(PathError::Ambiguous)),
            ("/a/%C0%AE%C0%AE/x", Err(PathError::Ambiguous)),
            ("/a/%c1%9c", Err(PathError::Ambiguous)),
            ("/a/%E0%80%AE", Err(PathError::Ambiguous)),
            ("/a/%F0%80%80%AE", Err(PathError::Ambiguous)),
            ("/a/..%2Fadmin", Err(PathError::Ambiguous)),
            ("/a/%2F..%2Fb", Err(PathError::Ambiguous)),
            ("/a/.%2Fb", Err(PathError::Ambiguous)),
            ("/a/%2e%2e%2fadmin", Err(PathError::Ambiguous)),
            ("/a/%252e%252e/x", Ok("/a/%252e%252e/x")),
            ("/pkg/@scope%2fname", Ok("/pkg/@scope%2Fname")),
            (
                "/caf%C3%A9/%E0%A4%85/%F0%9F%98%80",
                Ok("/caf%C3%A9/%E0%A4%85/%F0%9F%98%80"),
            ),
            ("/a;b/..;/c", Err(PathError::Ambiguous)),
            ("/public/..;jsessionid=1/admin", Err(PathError::Ambiguous)),
            ("/a/.;/b", Err(PathError::Ambiguous)),
            ("/a;b/c;d", Ok("/a;b/c;d")),
            ("/a/..b;/c", Ok("/a/..b;/c")),
        ];
        for (input, want) in cases {
            let got = normalize_path(input);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "input {input:?}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "/a.b/.c/..d"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }
}
