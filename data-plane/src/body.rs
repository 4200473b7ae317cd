//! The response body type: either a streamed upstream body (with the route's deadline
//! and the endpoint's in-flight slot attached) or a small complete body we made.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::compile::EndpointGuard;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("upstream response exceeded the route timeout")]
pub struct BodyTimeout;

pin_project_lite::pin_project! {
    #[project = ProxyBodyProj]
    #[derive(Debug)]
    pub enum ProxyBody {
        Upstream {
            #[pin]
            inner: Incoming,
            #[pin]
            deadline: Option<Sleep>,
            guard: Option<EndpointGuard>,
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

    pub fn upstream(inner: Incoming, deadline: Option<Sleep>, guard: EndpointGuard) -> Self {
        ProxyBody::Upstream {
            inner,
            deadline,
            guard: Some(guard),
        }
    }
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
                inner,
                deadline,
                guard,
            } => {
                if let Some(d) = deadline.as_pin_mut()
                    && d.poll(cx).is_ready()
                {
                    guard.take();
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                match inner.poll_frame(cx) {
                    Poll::Ready(None) => {
                        // Release the in-flight slot as soon as the body is complete.
                        guard.take();
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(e))) => {
                        guard.take();
                        Poll::Ready(Some(Err(e.into())))
                    }
                    other => other.map(|f| f.map(|r| r.map_err(Into::into))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full { data } => data.is_none(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
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
