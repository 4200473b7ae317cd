//! A request body as its DATA frames arrive: the connection pushes into an [`Inbound`]
//! it shares with the [`RequestStream`] the request path reads, and the reader's
//! progress is what reopens the client's stream window (the connection sends
//! WINDOW_UPDATE for what was read, so a slow upstream slows the client down and a
//! stream never buffers more than its window).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::body::BoxError;

/// A read that reopens at least this much window tells the connection at once; a
/// reader that has caught up always does.
const REPORT_AT: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Inbound {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    ended: bool,
    reset: bool,
    /// Bytes read since the connection last took the count.
    consumed: usize,
    reader: Option<Waker>,
}

impl Inbound {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, data: Bytes) {
        let mut s = self.lock();
        s.chunks.push_back(data);
        let reader = s.reader.take();
        drop(s);
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// END_STREAM, with the trailers that carried it if any.
    pub(crate) fn end(&self, trailers: Option<HeaderMap>) {
        let mut s = self.lock();
        s.ended = true;
        s.trailers = trailers;
        let reader = s.reader.take();
        drop(s);
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// The stream was reset (by either side) before the body ended: the reader sees
    /// an error, never a short body taken for a whole one.
    pub(crate) fn reset(&self) {
        let mut s = self.lock();
        if s.ended {
            return;
        }
        s.reset = true;
        let reader = s.reader.take();
        drop(s);
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// Bytes read since the last call (what the client's stream window may reopen by).
    pub(crate) fn take_consumed(&self) -> usize {
        std::mem::take(&mut self.lock().consumed)
    }
}

/// The request path's end of an [`Inbound`].
#[derive(Debug)]
pub struct RequestStream {
    inbound: Arc<Inbound>,
    /// The stream's waker on the connection: woken when the window should reopen.
    connection: Waker,
    /// `content-length` as the client declared it (the connection enforces it).
    declared: Option<u64>,
    /// Bytes read so far (the size hint is what is left).
    taken: u64,
    done: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the client reset the stream before the request body ended")]
struct Reset;

impl RequestStream {
    pub(crate) fn new(inbound: Arc<Inbound>, connection: Waker, declared: Option<u64>) -> Self {
        Self {
            inbound,
            connection,
            declared,
            taken: 0,
            done: false,
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut s = self.inbound.lock();
        if let Some(data) = s.chunks.pop_front() {
            s.consumed += data.len();
            self.taken += data.len() as u64;
            let report = s.consumed >= REPORT_AT || (s.chunks.is_empty() && !s.ended);
            drop(s);
            if report {
                self.connection.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = s.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if s.ended {
            drop(s);
            self.done = true;
            return Poll::Ready(None);
        }
        if s.reset {
            drop(s);
            self.done = true;
            return Poll::Ready(Some(Err(Reset.into())));
        }
        if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.done
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.taken)),
            None => SizeHint::default(),
        }
    }
}
