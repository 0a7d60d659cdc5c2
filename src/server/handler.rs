//! What a listener serves: a `Handler` called per request with the connection it came on
//! (`ClientConn`), answering with a body of its own type (`Answer`). The server knows nothing
//! else of it, so `server/` stays free of the proxy's types.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};

use super::deadlines::InflightGuard;
use crate::http::body::{BoxError, ClientBody};
use crate::http::fields::RequestHead;
use crate::http::ip_text::IpText;
use crate::http::lines::RawHead;

/// A response body a handler answers with: streamed by hyper's servers, or by ours, which may
/// write an upstream's head as it came instead of the response's header map.
pub trait Answer:
    http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + Unpin + 'static
{
    /// The upstream's head as it came, when there is one to write on.
    fn raw_head(&self) -> Option<&RawHead>;
}

/// The connection a request came in on.
#[derive(Debug, Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as `X-Forwarded-For` names it: made once per connection, not per
    /// request (a header value of our own costs an allocation).
    pub forwarded_for: HeaderValue,
    /// Our own HTTP/1 server serves it: an upstream's response head may reach it as it came,
    /// without a header map (hyper's servers need the map).
    pub raw_heads: bool,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, tls: bool) -> ClientConn {
        let text = IpText::new(peer.ip().to_canonical());
        let forwarded_for = HeaderValue::from_str(text.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientConn {
            peer,
            tls,
            forwarded_for,
            raw_heads: false,
        }
    }
}

pub trait Handler: Send + Sync + 'static {
    /// Reads a request's fields from `as_came` when given one, not from the request's map:
    /// our HTTP/1 server then builds no map at all (`fields::Fields`).
    const AS_CAME: bool = false;
    type Body: Answer;

    /// `as_came`: the request head as our HTTP/1 server read it, for a handler that can use it.
    fn call<'a>(
        self: &'a Arc<Self>,
        req: Request<ClientBody>,
        conn: &'a ClientConn,
        as_came: Option<RequestHead<'a>>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'a;
}

/// A response body that keeps its request counted as in flight until it is dropped.
pub(super) struct Tracked<B> {
    pub body: B,
    pub _guard: InflightGuard,
}

impl<B: Answer> http_body::Body for Tracked<B> {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
