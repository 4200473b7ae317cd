//! A connection on the `--tls-listen` listener: the TLS handshake (under the header-read
//! timeout) with the certificates installed when it starts, then the session by ALPN —
//! `h2` to hyper's HTTP/2 server and the request path in [`crate::proxy`] (as h2c),
//! anything else to the HTTP/1.1 engine over the TLS stream. Both carry the
//! [`Session`] so their requests get the 421 rule, `x-forwarded-proto: https` and
//! `https` redirects.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::Engine;
use super::connection::Conn;
use crate::server::ConnectionSlot;
use crate::tls::Session;

pub(super) async fn run(
    engine: Arc<Engine>,
    stream: TcpStream,
    client: SocketAddr,
    slot: ConnectionSlot,
) {
    // No certificates installed: nothing to shake hands with.
    let Some(installed) = engine.state.tls.current() else {
        tracing::debug!(%client, "TLS connection closed: no certificates configured");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(installed.config()));
    let tls =
        match tokio::time::timeout(engine.options.header_read_timeout, acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "TLS handshake timed out");
                return;
            }
        };
    let (_, conn) = tls.get_ref();
    let session = Session::new(Arc::clone(installed.resolver()), conn.server_name());
    let h2 = conn.alpn_protocol() == Some(b"h2".as_slice());
    drop(installed);
    if h2 {
        Box::pin(super::h2::serve(
            &engine,
            tls,
            Vec::new(),
            client,
            Some(session),
        ))
        .await;
        drop(slot);
    } else {
        Conn::new(engine, tls, client, slot)
            .with_tls(session)
            .run()
            .await;
    }
}
