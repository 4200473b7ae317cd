//! HTTP/2 connections (h2c with prior knowledge on the plain port, h2 by ALPN on the
//! TLS one) on this worker: served by our own HTTP/2 session ([`crate::h2`]), each
//! request through [`crate::proxy`]'s phases, the same ones the HTTP/1.1 engine takes,
//! with the logging hook wrapped around its response body.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use super::Engine;
use super::connection::Busy;
use crate::observe::h2::{Finish, ObservedBody, RequestCopy, TlsCopy};
use crate::proxy::Proxy;
use crate::upstream::RequestBody;

pub(super) async fn serve<S: super::stream::ClientStream>(
    engine: &Arc<Engine>,
    stream: S,
    prefix: Vec<u8>,
    client: SocketAddr,
    tls: Option<crate::tls::Session>,
) {
    let _busy = Busy::enter(engine);
    let service = Requests {
        proxy: Arc::clone(&engine.h2_proxy),
        tls_copy: TlsCopy::of(stream.tls_info()),
        tls,
        client,
        client_text: crate::forwarding::client_text(client.ip()),
    };
    let config = crate::h2::Config {
        max_header_bytes: engine.options.max_header_bytes,
        idle_timeout: engine.options.keepalive_timeout,
    };
    let drain = async {
        let notified = engine.drain.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !engine.drain.is_draining() {
            notified.await;
        }
    };
    if let Err(e) = crate::h2::serve(stream, prefix, service, config, drain).await {
        tracing::debug!(error = %e, %client, "h2 connection ended with an error");
    }
}

/// One connection's requests, each through the proxy's phases.
struct Requests {
    proxy: Arc<Proxy>,
    tls: Option<crate::tls::Session>,
    tls_copy: Option<TlsCopy>,
    client: SocketAddr,
    /// `x-forwarded-for`'s value for this client, made once for the connection.
    client_text: http::HeaderValue,
}

impl crate::h2::Service for Requests {
    type Body = ObservedBody;

    fn call(
        &mut self,
        mut req: http::Request<RequestBody>,
    ) -> Pin<Box<dyn Future<Output = http::Response<ObservedBody>> + Send>> {
        if let Some(tls) = &self.tls {
            req.extensions_mut().insert(tls.clone());
        }
        let proxy = Arc::clone(&self.proxy);
        let client = self.client;
        let client_text = self.client_text.clone();
        let head = req.method() == http::Method::HEAD;
        // The logging hook: the outcome is reported when the connection is done with
        // the body (its last frame sent, or the stream reset).
        let started = std::time::Instant::now();
        let copy = proxy
            .state()
            .observe
            .logging()
            .then(|| Box::new(RequestCopy::of(&req, self.tls_copy.as_ref())));
        let grpc = crate::error::is_grpc(req.headers());
        let bytes_in = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        Box::pin(async move {
            let (handled, facts) = proxy.respond(req, client, Some(&client_text)).await;
            let resp = crate::server::head_has_no_body(head, handled);
            let state = Arc::clone(proxy.state());
            let finish = Finish::new(state, started, client, copy, grpc, bytes_in, &resp, facts);
            resp.map(|body| ObservedBody::new(body, finish))
        })
    }
}
