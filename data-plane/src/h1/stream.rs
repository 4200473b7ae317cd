//! The client side's byte stream, generic so that one engine serves plain TCP and TLS:
//! [`ClientStream`] is what the HTTP/1.1 connection loop needs beyond
//! `AsyncRead + AsyncWrite` — waiting for input without holding a buffer, and splitting
//! into halves for relaying a request body and its response at once. Connections are
//! monomorphised per stream type, so plain TCP pays nothing (no boxing, no dynamic
//! dispatch) for TLS existing.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_rustls::server::TlsStream;

pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    type Write<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;

    /// Resolves when a read may make progress, so an idle connection waits without a
    /// buffer. May be spurious (the read that follows is bounded by a deadline).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// The read and write halves, usable at the same time.
    fn split(&mut self) -> (Self::Read<'_>, Self::Write<'_>);

    /// The TLS version and SNI of the session, for the access log; `None` on plain TCP.
    fn tls_info(&self) -> Option<(&'static str, Option<&str>)> {
        None
    }
}

impl ClientStream for TcpStream {
    type Read<'a> = ReadHalf<'a>;
    type Write<'a> = WriteHalf<'a>;

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }

    fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        TcpStream::split(self)
    }
}

/// TLS: the session may already hold decrypted bytes the socket no longer signals, so
/// an idle TLS connection does not wait on the socket: it reads at once (under the
/// keep-alive deadline), holding a buffer while idle.
impl ClientStream for TlsStream<TcpStream> {
    type Read<'a> = tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>;
    type Write<'a> = tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>;

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    fn split(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        tokio::io::split(self)
    }

    fn tls_info(&self) -> Option<(&'static str, Option<&str>)> {
        let (_, session) = self.get_ref();
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        Some((version, session.server_name()))
    }
}
