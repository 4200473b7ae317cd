//! Small complete responses for what Routemaster answers itself: the proxy's error
//! pages, the admin API and the control plane's status API. One place decides their
//! content types and framing.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde::Serialize;

use crate::body::ProxyBody;

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

/// A pretty-printed JSON response (200), or a 500 if `value` cannot be serialised.
pub fn json(value: &impl Serialize) -> Response<ProxyBody> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            with_type(StatusCode::OK, "application/json", Bytes::from(body))
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed\n"),
    }
}

/// `Some(405)` for anything but GET/HEAD: the admin and status APIs are read-only.
pub fn read_only(method: &Method) -> Option<Response<ProxyBody>> {
    (method != Method::GET && method != Method::HEAD)
        .then(|| text(StatusCode::METHOD_NOT_ALLOWED, "read-only: use GET\n"))
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
