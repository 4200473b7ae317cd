//! Our own HTTP/2 server session (RFC 9113), for h2c (prior knowledge, on the plain
//! port) and h2 (TLS, ALPN). [`conn`] serves a connection in one task: frames
//! ([`frame`]), header blocks ([`hpack`], [`huffman`]) checked into request heads
//! ([`request`]), request bodies as they arrive ([`body`]); each request goes to a
//! [`conn::Service`] — the proxy's phases ([`crate::h1::h2`] is that glue).

pub(crate) mod body;
pub(crate) mod conn;
mod frame;
pub(crate) mod hpack;
mod huffman;
mod huffman_table;
mod request;
#[cfg(test)]
mod tests;

pub(crate) use body::RequestStream;
pub(crate) use conn::{Config, Service, serve};
pub(crate) use frame::PREFACE;
