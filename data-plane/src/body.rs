//! The response body type: either a streamed upstream body (with the exchange's
//! deadline, the I/O timeout between frames and the endpoint's in-flight slot attached)
//! or a small complete body we made.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::compile::EndpointGuard;
use crate::error::{GrpcCode, grpc_status_fields};
use crate::h1::client::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("upstream response exceeded the route timeout")]
pub struct BodyTimeout;

#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for the I/O timeout")]
pub struct BodyIdle;

/// The limits a streamed upstream body runs under, the same for every upstream kind:
/// the exchange's deadline (the route's `timeout`, or a shorter `grpc-timeout`) and the
/// longest wait for the next frame (`--io-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub deadline: Option<Instant>,
    /// The deadline is the gRPC client's (`grpc-timeout`), not the route's.
    pub grpc_deadline: bool,
    pub idle: Duration,
    /// The request is gRPC: a limit that cuts the body ends it with a `grpc-status`
    /// trailer (DEADLINE_EXCEEDED for the client's deadline, UNAVAILABLE otherwise)
    /// instead of resetting the stream.
    pub grpc: bool,
}

pin_project_lite::pin_project! {
    #[project = ProxyBodyProj]
    #[derive(Debug)]
    pub enum ProxyBody {
        Upstream {
            #[pin]
            inner: FromUpstream,
            // One timer for both limits, at the earlier of the deadline and the last
            // frame + idle; a frame only records the time (no timer reset per frame).
            // Armed only once the upstream has made the body wait (a body that is all
            // in hand, as a small response read with its head is, never registers
            // one); until then the deadline is checked against the clock per poll.
            timer: Option<Pin<Box<Sleep>>>,
            limits: BodyLimits,
            last: Instant,
            ended: bool,
            guard: Option<EndpointGuard>,
            // A mirrored request's view of this body for the comparison (rarely set).
            tee: Option<Box<crate::mirror::Tee>>,
        },
        Full {
            data: Option<Bytes>,
        },
    }
}

impl ProxyBody {
    pub fn full(data: Bytes) -> Self {
        ProxyBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub fn empty() -> Self {
        ProxyBody::Full { data: None }
    }

    /// The whole body when we made it ourselves (`None` for a streamed upstream body).
    pub fn as_full(&self) -> Option<&[u8]> {
        match self {
            ProxyBody::Full { data } => Some(data.as_deref().unwrap_or_default()),
            ProxyBody::Upstream { .. } => None,
        }
    }

    pub fn upstream(inner: FromUpstream, limits: BodyLimits, guard: EndpointGuard) -> Self {
        ProxyBody::Upstream {
            inner,
            timer: None,
            limits,
            last: Instant::now(),
            ended: false,
            guard: Some(guard),
            tee: None,
        }
    }

    /// Lets `tee` watch the body stream past (a mirrored request's comparison).
    pub fn with_tee(mut self, new: Option<crate::mirror::Tee>) -> Self {
        if let (ProxyBody::Upstream { tee, inner, .. }, Some(t)) = (&mut self, new) {
            // An empty body may never be polled (HTTP/2 ends the stream on the head).
            if inner.is_end_stream() {
                t.end();
            } else {
                *tee = Some(Box::new(t));
            }
        }
        self
    }
}

pin_project_lite::pin_project! {
    /// A response body as an upstream client delivers it: hyper's, or the HTTP/1.1
    /// engine's ([`crate::h1::client`]).
    #[project = FromUpstreamProj]
    #[derive(Debug)]
    pub enum FromUpstream {
        Hyper { #[pin] body: Incoming },
        H1 { body: UpstreamBody },
    }
}

impl Body for FromUpstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            FromUpstreamProj::Hyper { body } => body.poll_frame(cx).map_err(Into::into),
            FromUpstreamProj::H1 { body } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FromUpstream::Hyper { body } => body.is_end_stream(),
            FromUpstream::H1 { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FromUpstream::Hyper { body } => body.size_hint(),
            FromUpstream::H1 { body } => body.size_hint(),
        }
    }
}

fn next_wake(limits: &BodyLimits, last: Instant) -> Instant {
    let idle = last + limits.idle;
    limits.deadline.map_or(idle, |d| d.min(idle))
}

/// The trailers that end a gRPC response the proxy cut short.
fn grpc_cut(code: GrpcCode, message: &str) -> Frame<Bytes> {
    let mut trailers = http::HeaderMap::with_capacity(2);
    for (name, value) in grpc_status_fields(code, message) {
        trailers.insert(name, value);
    }
    Frame::trailers(trailers)
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBodyProj::Upstream {
                mut inner,
                timer,
                limits,
                last,
                ended,
                guard,
                tee,
            } => {
                if *ended {
                    return Poll::Ready(None);
                }
                loop {
                    // Which limit cut the body, if one did (`true`: the deadline).
                    let expired = match timer.as_mut() {
                        Some(t) => {
                            if t.as_mut().poll(cx).is_pending() {
                                None
                            } else {
                                let now = Instant::now();
                                let past_deadline = limits.deadline.is_some_and(|d| d <= now);
                                if !past_deadline && now < *last + limits.idle {
                                    // A frame came since the timer was set: wait from
                                    // that frame.
                                    t.as_mut().reset(next_wake(limits, *last));
                                    continue;
                                }
                                Some(past_deadline)
                            }
                        }
                        // Not waited yet: only the deadline can have passed.
                        None => limits
                            .deadline
                            .is_some_and(|d| d <= Instant::now())
                            .then_some(true),
                    };
                    if let Some(past_deadline) = expired {
                        guard.take();
                        *ended = true;
                        return Poll::Ready(Some(match (limits.grpc, past_deadline) {
                            (true, true) if limits.grpc_deadline => Ok(grpc_cut(
                                GrpcCode::DeadlineExceeded,
                                "routemaster: the call's grpc-timeout deadline passed",
                            )),
                            (true, true) => Ok(grpc_cut(
                                GrpcCode::Unavailable,
                                "routemaster: upstream response exceeded the route timeout",
                            )),
                            (true, false) => Ok(grpc_cut(
                                GrpcCode::Unavailable,
                                "routemaster: upstream sent nothing for the I/O timeout",
                            )),
                            (false, true) => Err(BodyTimeout.into()),
                            (false, false) => Err(BodyIdle.into()),
                        }));
                    }
                    return match inner.as_mut().poll_frame(cx) {
                        Poll::Ready(None) => {
                            // Release the in-flight slot as soon as the body is complete.
                            guard.take();
                            *ended = true;
                            if let Some(t) = tee.take() {
                                t.end();
                            }
                            Poll::Ready(None)
                        }
                        Poll::Ready(Some(Err(e))) => {
                            guard.take();
                            *ended = true;
                            Poll::Ready(Some(Err(e)))
                        }
                        Poll::Ready(Some(Ok(frame))) => {
                            *last = Instant::now();
                            if let (Some(t), Some(d)) = (tee.as_deref_mut(), frame.data_ref()) {
                                t.data(d);
                                // A reader that stops at the known length never polls
                                // the end: the last byte is the end.
                                if inner.is_end_stream()
                                    && let Some(t) = tee.take()
                                {
                                    t.end();
                                }
                            }
                            Poll::Ready(Some(Ok(frame)))
                        }
                        Poll::Pending if timer.is_none() => {
                            // The first wait: arm the timer and poll it once (it
                            // registers, or has already expired).
                            let t = timer.insert(Box::pin(tokio::time::sleep_until(next_wake(
                                limits, *last,
                            ))));
                            if t.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                            continue;
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full { data } => data.is_none(),
            ProxyBody::Upstream { inner, ended, .. } => *ended || inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}
