//! HTTP/2 with prior knowledge (h2c) on the same port: a connection that opens with the
//! HTTP/2 preface is served by hyper's HTTP/2 server and the hyper-based request path
//! in [`crate::proxy`], which shares the routing phases with the HTTP/1.1 engine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::Engine;
use super::connection::Busy;
use super::io::Prefixed;
use crate::observe::h2::{Finish, ObservedBody, RequestCopy, TlsCopy};

pub(super) async fn serve<S: super::stream::ClientStream>(
    engine: &Arc<Engine>,
    stream: S,
    prefix: Vec<u8>,
    client: SocketAddr,
    tls: Option<crate::tls::Session>,
) {
    let _busy = Busy::enter(engine);
    let proxy = Arc::clone(&engine.h2_proxy);
    let tls_copy = TlsCopy::of(stream.tls_info());
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let proxy = Arc::clone(&proxy);
        if let Some(tls) = &tls {
            req.extensions_mut().insert(tls.clone());
        }
        let head = req.method() == http::Method::HEAD;
        // The logging hook: the outcome is reported when hyper is done with the body.
        let started = std::time::Instant::now();
        let state = Arc::clone(proxy.state());
        let copy = state
            .observe
            .logging()
            .then(|| Box::new(RequestCopy::of(&req, tls_copy.as_ref())));
        let grpc = crate::error::is_grpc(req.headers());
        let bytes_in = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        async move {
            // Boxed: the request's future is large, and hyper keeps it inline in the
            // stream's task, which tokio copies whole on spawn and on completion.
            let (handled, facts) = Box::pin(proxy.respond(req, client)).await;
            let resp = crate::server::head_has_no_body(head, handled);
            let finish = Finish::new(state, started, client, copy, grpc, bytes_in, &resp, facts);
            Ok::<_, Infallible>(resp.map(|body| ObservedBody::new(body, finish)))
        }
    });
    let conn = engine
        .h2
        .serve_connection(TokioIo::new(Prefixed::new(prefix, stream)), service);
    tokio::pin!(conn);
    let drain = engine.drain.notify.notified();
    tokio::pin!(drain);
    drain.as_mut().enable();
    if engine.drain.is_draining() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, %client, "h2 connection ended with an error");
            }
            return;
        }
        () = drain => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
