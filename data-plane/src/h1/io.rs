//! Socket helpers for the HTTP/1.1 engine: a two-part write (head + body in one
//! `writev`), the lingering close that lets an error response reach a client still
//! sending, and the prefixed stream that hands already-read bytes to hyper (HTTP/2).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// One socket operation with a progress deadline: `TimedOut` if it has not completed
/// within `limit`. The timer is only registered if the operation has to wait.
pub async fn within<T>(limit: Duration, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Writes `a` then `b`, in one `writev` when the socket takes it all.
pub async fn write_all_2<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
) -> io::Result<()> {
    if b.is_empty() {
        return w.write_all(a).await;
    }
    while !a.is_empty() {
        let n = w
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    w.write_all(b).await
}

/// Closes after an error response without destroying it: a close with unread input
/// makes the kernel send RST, which can discard the response before the client reads
/// it. So: half-close, then read and drop what the client still sends, bounded in
/// time and bytes.
pub async fn lingering_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_DISCARD: usize = 1 << 20;
    if stream.shutdown().await.is_err() {
        return;
    }
    // On the heap: this future is part of every connection's state machine, and an
    // array here would make each idle connection carry it.
    let mut scratch = vec![0u8; 4096];
    let mut discarded = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while discarded < MAX_DISCARD {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_part_writes_survive_short_writes() {
        // A duplex pipe with a tiny buffer forces partial vectored writes.
        let (mut w, mut r) = tokio::io::duplex(3);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        write_all_2(&mut w, b"head:", b"body-bytes").await.unwrap();
        write_all_2(&mut w, b"|only", b"").await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), b"head:body-bytes|only");
    }
}

/// A stream (or one half of it) that counts the bytes read from and written to it,
/// for the request's outcome ([`crate::observe`]): plain adds, no atomics.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    pub read: u64,
    pub written: u64,
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
