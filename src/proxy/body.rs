//! What the proxy answers with, streamed frame by frame and never buffered whole: the
//! upstream's stream (hyper's or the direct path's), or a short text of our own, wrapped for
//! the access log when it is on.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http::body::BoxError;
use crate::http::lines::RawHead;

/// A response body: the upstream's, or one the proxy made.
pub enum ProxyBody {
    /// Through hyper's pooled client.
    Upstream(Incoming),
    /// Read straight from the upstream socket (`direct`).
    Direct(crate::upstream::direct::DirectBody),
    Full(Option<Bytes>),
    /// Either of the above, counted and logged when it ends (the access log is on).
    Logged(Box<crate::proxy::access_log::Logged>),
    /// A gRPC call's answer, judged by the `grpc-status` of its trailers.
    Grpc(Box<crate::proxy::grpc::Watched>),
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// The upstream's response head as it came, when the direct path kept it for our own HTTP/1
    /// server to write on: the response's header map then holds only what the proxy added.
    pub fn raw_head(&self) -> Option<&RawHead> {
        match self {
            ProxyBody::Direct(b) => b.raw_head(),
            ProxyBody::Logged(l) => l.inner().raw_head(),
            _ => None,
        }
    }

    pub fn raw_head_mut(&mut self) -> Option<&mut RawHead> {
        match self {
            ProxyBody::Direct(b) => b.raw_head_mut(),
            ProxyBody::Logged(l) => l.inner_mut().raw_head_mut(),
            _ => None,
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
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Direct(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Logged(l) => l.poll_frame(cx),
            ProxyBody::Grpc(g) => g.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Direct(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Logged(l) => l.is_end_stream(),
            ProxyBody::Grpc(g) => g.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Direct(b) => b.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Logged(l) => l.size_hint(),
            ProxyBody::Grpc(g) => g.size_hint(),
        }
    }
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody::full(bytes)
    }
}

impl crate::server::Answer for ProxyBody {
    fn raw_head(&self) -> Option<&RawHead> {
        ProxyBody::raw_head(self)
    }
}
