//! Proxy workers, nginx-style: each worker is a thread running its own current-thread
//! tokio runtime, accepting on its own `SO_REUSEPORT` listener (the kernel spreads new
//! connections across them) and owning its own HTTP engine ([`crate::h1`]) with its
//! upstream connection pool and buffer free list. Nothing on the
//! request path is shared between workers except the route table (arc-swap) and relaxed
//! counters, so there is no cross-thread wake-up, work stealing or pool lock per request.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::h1::{self, Engine};
use crate::proxy::UpstreamOptions;
use crate::server::ServerOptions;
use crate::state::ProxyState;

/// Binds `n` listening sockets on `addr` with `SO_REUSEPORT`. With port 0 the first
/// socket picks the port and the others join it. Returns the sockets and the address.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let first = listen(addr)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(listen(actual)?);
    }
    Ok((all, actual))
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Running workers; [`Workers::join`] waits for them to drain after `stop` flips.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// `tls_listeners`: one per worker for `--tls-listen`, or none.
    pub fn spawn(
        listeners: Vec<std::net::TcpListener>,
        tls_listeners: Vec<std::net::TcpListener>,
        state: &Arc<ProxyState>,
        upstream: &UpstreamOptions,
        server: &ServerOptions,
        stop: &watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let mut threads = Vec::with_capacity(listeners.len());
        let mut tls_listeners = tls_listeners.into_iter();
        for (i, listener) in listeners.into_iter().enumerate() {
            let tls = tls_listeners.next();
            let state = Arc::clone(state);
            let upstream = upstream.clone();
            let server = server.clone();
            let stopped = crate::lifecycle::stopped(stop);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let thread = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(worker = i, error = %e, "worker cannot use its listener");
                                return;
                            }
                        };
                        let tls = match tls.map(tokio::net::TcpListener::from_std).transpose() {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(worker = i, error = %e, "worker cannot use its TLS listener");
                                return;
                            }
                        };
                        crate::observe::metrics::set_worker(i);
                        let engine = Arc::new(Engine::new(Arc::clone(&state), &upstream, server));
                        h1::serve(listener, tls, engine, stopped).await;
                        if let Some(log) = state.observe.access_log() {
                            log.flush_local();
                        }
                    });
                })?;
            threads.push(thread);
        }
        Ok(Self { threads })
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Waits for every worker to finish draining.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
