//! A connection switched to another protocol (WebSocket, after the upstream's 101):
//! bytes are copied both ways until both sides have closed, or nothing has moved in
//! either direction for the tunnel idle timeout. Half-closes are passed on, so a
//! WebSocket close handshake completes. The exchange counts as one request.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::io::within;

const BUF: usize = 16 * 1024;

/// Tunnels between `client` and `upstream`. `early` are client bytes that arrived
/// behind the upgrade request: they go upstream first. Each write must make progress
/// within `io_timeout`; the whole tunnel ends after `idle` without traffic.
pub async fn run<C, U>(
    client: &mut C,
    upstream: &mut U,
    early: &[u8],
    idle: Duration,
    io_timeout: Duration,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !early.is_empty() && within(io_timeout, upstream.write_all(early)).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mut up_buf = vec![0u8; BUF];
    let mut down_buf = vec![0u8; BUF];
    let (mut client_open, mut upstream_open) = (true, true);
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    while client_open || upstream_open {
        tokio::select! {
            r = cr.read(&mut up_buf), if client_open => match r {
                Ok(n) if n > 0 => {
                    if within(io_timeout, uw.write_all(&up_buf[..n])).await.is_err() {
                        return;
                    }
                    timer.as_mut().reset(Instant::now() + idle);
                }
                _ => {
                    client_open = false;
                    let _ = uw.shutdown().await;
                }
            },
            r = ur.read(&mut down_buf), if upstream_open => match r {
                Ok(n) if n > 0 => {
                    if within(io_timeout, cw.write_all(&down_buf[..n])).await.is_err() {
                        return;
                    }
                    timer.as_mut().reset(Instant::now() + idle);
                }
                _ => {
                    upstream_open = false;
                    let _ = cw.shutdown().await;
                }
            },
            () = &mut timer => {
                tracing::debug!(?idle, "tunnel idle: closing");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_closes_pass() {
        let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
        let (mut upstream, mut upstream_far) = tokio::io::duplex(1 << 16);
        let tunnel = tokio::spawn(async move {
            run(
                &mut client_far,
                &mut upstream_far,
                b"early",
                Duration::from_secs(5),
                Duration::from_secs(5),
            )
            .await;
        });
        client.write_all(b" up").await.unwrap();
        upstream.write_all(b"down").await.unwrap();
        let mut got = [0u8; 8];
        upstream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early up");
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"down");
        // The client half-closes: the upstream sees EOF and can still answer.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        upstream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        upstream.write_all(b"bye").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        tokio::time::timeout(Duration::from_secs(5), tunnel)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_idle_tunnel_closes() {
        let (_client, mut client_far) = tokio::io::duplex(1024);
        let (_upstream, mut upstream_far) = tokio::io::duplex(1024);
        let started = Instant::now();
        let idle = Duration::from_millis(200);
        let run = run(
            &mut client_far,
            &mut upstream_far,
            b"",
            idle,
            Duration::from_secs(5),
        );
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap();
        assert!(started.elapsed() >= idle);
    }
}
