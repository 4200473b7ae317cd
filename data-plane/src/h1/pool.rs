//! One worker's idle upstream connections, by endpoint. A connection is checked out for
//! exactly one exchange and checked back in only when that exchange left it clean
//! (response fully read, upstream keeps it alive). The lock is per worker, so it is
//! never contended; most-recently-used first keeps the warm connections busy and lets
//! the others age out.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::ProxyError;
use crate::observe::metrics::{OpenConn, ServiceMetrics};

/// Idle connections kept per endpoint, per worker: as many as the requests that can be
/// in flight to it at once in the usual case (an HTTP/2 client's 100 streams on a few
/// connections fan out to one upstream connection each), so a burst does not close
/// connections it will open again a moment later.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    /// Keeps it counted as open (`routemaster_upstream_connections_open`).
    open: OpenConn,
    /// The sweep epoch it was checked in at: ages are counted in sweeps, not read from
    /// the clock on every checkout and checkin.
    since: u64,
}

#[derive(Debug)]
pub struct UpstreamPool {
    idle: Mutex<HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Advanced by [`UpstreamPool::sweep`], which runs every half idle timeout: a
    /// connection two epochs old has been idle for at least half and at most the whole
    /// idle timeout.
    epoch: AtomicU64,
}

/// A connection for one exchange; `reused` ones may have been closed by the upstream
/// in the meantime, so an exchange that fails on one before any response byte may be
/// retried on a fresh connection.
#[derive(Debug)]
pub struct Checkout {
    pub stream: TcpStream,
    pub reused: bool,
    /// Counts the connection as open for as long as it lives (pooled or not).
    pub open: OpenConn,
}

impl UpstreamPool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::default()),
            connect_timeout,
            idle_timeout,
            epoch: AtomicU64::new(0),
        }
    }

    /// An idle connection to `authority`, or a new one.
    #[cfg(test)]
    pub async fn checkout(&self, authority: &str) -> Result<Checkout, ProxyError> {
        self.checkout_for(authority, None).await
    }

    /// [`UpstreamPool::checkout`]; a new connection is counted open under `service`.
    pub async fn checkout_for(
        &self,
        authority: &str,
        service: Option<&Arc<ServiceMetrics>>,
    ) -> Result<Checkout, ProxyError> {
        if let Some((stream, open)) = self.take_idle(authority) {
            return Ok(Checkout {
                stream,
                reused: true,
                open,
            });
        }
        let stream = self.connect(authority).await?;
        Ok(Checkout {
            stream,
            reused: false,
            open: OpenConn::new(service),
        })
    }

    pub async fn connect(&self, authority: &str) -> Result<TcpStream, ProxyError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            .and_then(|r| r)
            .map_err(|e| ProxyError::UpstreamConnect(e.into()))?;
        // Requests and responses are written whole; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Returns a connection that finished an exchange cleanly.
    pub fn checkin(&self, authority: &str, stream: TcpStream, open: OpenConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Idle {
            stream,
            open,
            since: self.epoch.load(Ordering::Relaxed),
        };
        match idle.get_mut(authority) {
            Some(list) => {
                if list.len() >= MAX_IDLE_PER_ENDPOINT {
                    list.remove(0);
                }
                list.push(entry);
            }
            None => {
                idle.insert(authority.into(), vec![entry]);
            }
        }
    }

    fn take_idle(&self, authority: &str) -> Option<(TcpStream, OpenConn)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(authority)?;
        let epoch = self.epoch.load(Ordering::Relaxed);
        while let Some(c) = list.pop() {
            if epoch - c.since < 2 && still_open(&c.stream) {
                return Some((c.stream, c.open));
            }
        }
        None
    }

    /// Starts a new epoch, closes connections idle for two epochs, and forgets
    /// endpoints with none left. The worker runs it every half idle timeout.
    pub fn sweep(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|c| epoch - c.since < 2);
            !list.is_empty()
        });
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }
}

/// An idle connection must have nothing to read: readable means the upstream closed it
/// (or sent something unasked). The readiness check is free (no syscall); only when it
/// says "readable" does a one-byte peek tell a stale flag from a real close.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn idle_connections_are_reused_and_closed_ones_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pool = UpstreamPool::new(Duration::from_secs(1), Duration::from_secs(60));
        let a = pool.checkout(&addr).await.unwrap();
        assert!(!a.reused);
        let (mut server_a, _) = listener.accept().await.unwrap();
        pool.checkin(&addr, a.stream, a.open);
        let b = pool.checkout(&addr).await.unwrap();
        assert!(b.reused, "the idle connection is handed out again");
        pool.checkin(&addr, b.stream, b.open);
        // The upstream closes it while idle: the pool must not hand it out.
        server_a.shutdown().await.unwrap();
        drop(server_a);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            tokio::task::yield_now().await;
            let open = {
                let idle = pool.idle.lock().unwrap();
                idle.get(addr.as_str()).map(|l| still_open(&l[0].stream))
            };
            if open == Some(false) || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = pool.checkout(&addr).await.unwrap();
        assert!(
            !c.reused,
            "a connection closed by the upstream is not reused"
        );
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn connections_expire_after_two_sweeps() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pool = UpstreamPool::new(Duration::from_secs(1), Duration::from_secs(60));
        let a = pool.checkout(&addr).await.unwrap();
        pool.checkin(&addr, a.stream, a.open);
        pool.sweep();
        assert_eq!(
            pool.idle_count(),
            1,
            "one sweep: idle for less than half the timeout"
        );
        let b = pool.checkout(&addr).await.unwrap();
        assert!(b.reused);
        pool.checkin(&addr, b.stream, b.open);
        pool.sweep();
        pool.sweep();
        assert_eq!(pool.idle_count(), 0, "two sweeps: expired and closed");
        assert!(!pool.checkout(&addr).await.unwrap().reused);
    }

    #[tokio::test]
    async fn open_connections_are_counted_until_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let metrics = crate::observe::metrics::Metrics::new(1);
        let service = metrics.service("s");
        let pool = UpstreamPool::new(Duration::from_secs(1), Duration::from_secs(60));
        let a = pool.checkout_for(&addr, Some(&service)).await.unwrap();
        let b = pool.checkout_for(&addr, Some(&service)).await.unwrap();
        assert_eq!(service.open_connections(), 2);
        // Idle in the pool still counts; a reused one keeps its count.
        pool.checkin(&addr, a.stream, a.open);
        assert_eq!(service.open_connections(), 2);
        let c = pool.checkout_for(&addr, Some(&service)).await.unwrap();
        assert!(c.reused);
        assert_eq!(service.open_connections(), 2);
        drop(b);
        assert_eq!(service.open_connections(), 1);
        pool.checkin(&addr, c.stream, c.open);
        pool.sweep();
        pool.sweep();
        assert_eq!(
            service.open_connections(),
            0,
            "swept idle connections are closed"
        );
    }
}
