//! Read access to a request's header fields, independent of how the HTTP engine stores
//! them (hyper's `HeaderMap` for HTTP/2, the raw parsed head for HTTP/1.1), so route
//! matching works on both without copying headers into a map.

use http::{HeaderMap, HeaderName};

/// The header fields of one request, as routing needs them.
pub trait RequestHeaders {
    /// True when `pred` holds for any value of the field `name` (names compare
    /// case-insensitively). Values are passed in the order received.
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

impl RequestHeaders for HeaderMap {
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.get_all(name).iter().any(|v| pred(v.as_bytes()))
    }
}

/// The field value as text when it is what `HeaderValue::to_str` accepts (visible
/// ASCII, space and tab), so regex conditions see the same thing on every engine.
pub fn value_str(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}
