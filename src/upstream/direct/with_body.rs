//! The direct path for a request with a body (from either server: `Content-Length` or
//! `chunked`, HTTP/1.1 or HTTP/2) to an `http://` endpoint: the head and the body written by the
//! client's own task (`send`), the answer read as for a bodiless request. The request timeout
//! runs from the body handed over in full; a request whose body has begun to leave is never
//! sent again, so a pooled connection is checked before it is used, and only a request of which
//! nothing was written (its head, and the body frame in hand if any) goes again on a fresh
//! connection.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use http::header::CONTENT_LENGTH;
use http::uri::Authority;
use http::{Method, Response, Version};
use http_body::Body;

use super::idle::Home;
use super::send::{self, SendError};
use super::{
    codec, forwarded, read_head, still_open, timed_out, Ask, DirectBody, DirectClient, Failure,
};
use crate::upstream::body::UpstreamBody;
use crate::upstream::error::ExchangeError;

/// The client's head as our HTTP/1 server read it: its bytes, its fields' spans, what the
/// forwarded fields need.
type AsCame<'a> = (
    &'a [u8],
    &'a [crate::http::fields::Span],
    &'a crate::http::headers::Hop<'a>,
);

impl DirectClient {
    /// Sends `parts` and `body`, and reads the response head within `timeout` of the body's
    /// end; the response body follows as the returned response's is read.
    pub async fn request_with_body(
        &self,
        authority: &Authority,
        parts: &http::request::Parts,
        started: Instant,
        mut body: Pin<&mut UpstreamBody>,
        timeout: Duration,
        (raw, as_came): (bool, Option<AsCame<'_>>),
    ) -> Result<Response<DirectBody>, Failure> {
        // Framed as the client framed it: a length stays a length, anything else is chunked.
        // A head as it came is our HTTP/1 server's, whose body knows its length exactly when
        // the client gave one (no second look through the fields).
        let chunked = match as_came {
            Some(_) => body.size_hint().exact().is_none(),
            None => !parts.headers.contains_key(CONTENT_LENGTH),
        };
        let ask = Ask {
            method: &parts.method,
            target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &parts.headers,
            authority: authority.as_str(),
            head_request: parts.method == Method::HEAD,
            raw,
            deadline: started + timeout,
            as_came,
        };
        let (pooled, slot) = self.idle.checkout(authority, started);
        let pooled = match pooled {
            Some(c) => still_open(c).await,
            None => None,
        };
        let mut fresh = pooled.is_none();
        let mut conn = match pooled {
            Some(c) => c,
            None => Box::pin(self.connect(authority, ask.deadline)).await?,
        };
        let write = |out: &mut Vec<u8>| {
            match ask.as_came {
                Some((raw, spans, hop)) => {
                    let (method, target) = (ask.method, ask.target);
                    forwarded::write_head(out, method, target, (raw, spans), hop, ask.authority);
                    if chunked {
                        // Before the blank line that ends the head.
                        out.truncate(out.len() - 2);
                        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                    }
                }
                None => codec::write_head(
                    out,
                    ask.method,
                    ask.target,
                    ask.headers,
                    ask.authority,
                    chunked,
                ),
            }
        };
        let mut head = crate::http::bufpool::take_write();
        write(&mut head);
        let mut out = send::Pending::new(head);
        let sent = loop {
            let (stream, buf) = (&mut conn.stream, &mut conn.buf);
            let sent = send::body(stream, buf, body.as_mut(), chunked, &mut out).await;
            if let (Err(SendError::Upstream(_)), false, true) = (&sent, fresh, out.untouched()) {
                // Closed while pooled, and nothing written: the same head (and the frame in hand,
                // if any) go on a fresh connection, once.
                conn = Box::pin(self.connect(authority, ask.deadline)).await?;
                fresh = true;
                continue;
            }
            break sent;
        };
        crate::http::bufpool::put_write(out.into_head());
        let whole = match sent {
            Ok(send::BodyEnd::Whole) => true,
            Ok(send::BodyEnd::Answered) => false,
            Err(SendError::Client) => {
                return Err(Failure::new(
                    ExchangeError::ClientBody,
                    "the client's body broke off",
                ))
            }
            Err(SendError::Upstream(e)) => return Err(Failure::new(ExchangeError::Reset, e)),
        };
        conn.timer.as_mut().reset((Instant::now() + timeout).into());
        let mut parsed = {
            let super::UpstreamConn {
                stream, buf, timer, ..
            } = &mut conn;
            let mut answer = pin!(read_head(stream, buf, &ask));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = answer.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(super::Sent::into_failure));
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await?
        };
        // An answer before the body's end leaves the upstream mid-request: not reused.
        parsed.keep_alive &= whole;
        let home = parsed
            .keep_alive
            .then(|| Home::new(self.idle.clone(), slot, started));
        let mut resp = Response::new(DirectBody::new(conn, parsed.framing, home, parsed.raw));
        *resp.status_mut() = parsed.status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = parsed.headers;
        Ok(resp)
    }
}
