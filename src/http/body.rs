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
    /// From our own HTTP/1 server (`h1`), which takes only requests without a body.
    Empty,
}

impl ClientBody {
    /// hyper's stream, when there is one with something in it.
    pub fn into_stream(self) -> Option<Incoming> {
        match self {
            ClientBody::Hyper(b) if !b.is_end_stream() => Some(b),
            _ => None,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}
