//! The request body a server hands to its handler, and the error type bodies end with.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Why a body broke off (the connection it crosses is then aborted).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as a server hands it to the handler.
#[derive(Debug)]
pub enum ClientBody {
    /// From hyper's server: HTTP/2, TLS, and HTTP/1 requests with a body or an upgrade.
    Hyper(Incoming),
    /// A body our own HTTP/1 server (`h1`) reads for the handler (`fed`).
    Fed(super::fed::FedBody),
    /// No body (our own HTTP/1 server's bodiless requests).
    Empty,
}

impl ClientBody {
    /// The body, when there is one with something in it.
    pub fn into_stream(self) -> Option<ClientBody> {
        match self {
            ClientBody::Empty => None,
            b if b.is_end_stream() => None,
            b => Some(b),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Fed(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Fed(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Fed(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}
