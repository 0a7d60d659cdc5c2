//! Our own HTTP/1.1 server for plain connections, for the requests that make a proxy's load:
//! heads without a body and bodies framed plainly (one `Content-Length`, or `chunked`). hyper's
//! server spent more on the exchange than the proxy's own work (its dispatcher, its read
//! buffer grown anew per request, its encoder, a channel hop per body frame); here a request is
//! parsed in place, its body read as the handler asks (`body`), and its answer written with one
//! `send` when it is small, all inside the connection's task.
//!
//! Anything else (an upgrade, odd framing, an `Expect` but `100-continue`, HTTP/1.0, a
//! malformed or oversized head) is handed over to hyper's server with the bytes already read,
//! and hyper serves the rest of the connection: every refusal keeps one source.

pub mod body;
pub mod request;
pub mod response;
mod rewind;
mod scan;
mod send;

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::header::CONNECTION;
use http::Method;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use body::Reading;
use send::{send_body, Feeding};
use tokio_util::io::poll_read_buf;

use crate::http::bufpool;
use crate::server::deadlines::ConnState;
use crate::server::ClientConn;
use crate::server::{Answer, Handler};
use request::Parsed;
use response::Framing;
pub use rewind::Rewind;

/// The read buffer's size, as hyper's: most heads fit in one read.
const READ_BUF: usize = bufpool::SIZE;
/// Body pieces smaller than this are copied next to the head (one `send` for a small answer);
/// larger ones are written from where they are.
const COPY_MAX: usize = 8 * 1024;
/// Written out once this much has gathered.
const WRITE_AT: usize = 64 * 1024;

/// How a connection left our server.
pub enum Ended<I> {
    /// Closed, by either side or by the drain.
    Closed,
    /// A request hyper must answer: the connection, and the bytes already read from it.
    HandOver(I, Bytes),
}

/// The connection's settings.
pub struct Settings {
    /// The longest head taken (`limits.max_header_bytes`, at least 8 KiB: hyper's own bound).
    pub max_head: usize,
    /// The handler reads fields from the head as it came (`Handler::AS_CAME`): no map is built.
    pub as_came: bool,
}

/// Serves `io` until it closes, the drain ends it, or a request is hyper's.
pub async fn serve<I, H>(
    mut io: I,
    conn: ClientConn,
    state: Arc<ConnState>,
    handler: Arc<H>,
    settings: Settings,
    draining: &AtomicBool,
) -> io::Result<Ended<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut buf = BytesMut::new();
    // Where the current request's fields sit in its head: kept for the connection's life.
    let mut spans = Vec::new();
    loop {
        let head = loop {
            if !buf.is_empty() {
                match request::parse(&mut buf, settings.max_head, &mut spans, !settings.as_came) {
                    Parsed::Ours(head) => break head,
                    Parsed::Partial => {}
                    Parsed::Hyper => return Ok(Ended::HandOver(io, buf.freeze())),
                    Parsed::HyperFrom(head) => {
                        let mut all = BytesMut::from(&head[..]);
                        all.extend_from_slice(&buf);
                        return Ok(Ended::HandOver(io, all.freeze()));
                    }
                }
            }
            let read = if buf.is_empty() {
                // Between requests the connection holds no buffer (`read_first`), and the
                // drain ends it; a head begun is still served.
                bufpool::put_first(std::mem::take(&mut buf));
                poll_fn(|cx| {
                    if draining.load(Ordering::Relaxed) {
                        return Poll::Ready(Ok(0));
                    }
                    read_first(Pin::new(&mut io), cx, &mut buf)
                })
                .await?
            } else {
                bufpool::make_room(&mut buf);
                poll_fn(|cx| poll_read_buf(Pin::new(&mut io), cx, &mut buf)).await?
            };
            if read == 0 {
                return Ok(Ended::Closed);
            }
        };

        let head_request = head.req.method() == Method::HEAD;
        let guard = state.begin();
        let as_came = crate::http::fields::RequestHead {
            bytes: &head.raw,
            spans: &spans,
        };
        let mut reading = head.body;
        if let Some(r) = reading.as_deref_mut() {
            poll_fn(|cx| {
                r.prime(&mut io, &mut buf, cx);
                Poll::Ready(())
            })
            .await;
        }
        let io_buf = (&mut io, &mut buf);
        let Some(resp) = answer(
            io_buf,
            &handler,
            head.req,
            as_came,
            &conn,
            &settings,
            reading.as_deref_mut(),
        )
        .await
        else {
            // The client hung up before its answer: nobody to write to.
            return Ok(Ended::Closed);
        };
        if let Some(r) = reading.as_mut() {
            r.answered();
        }
        // A body not read to its end leaves the connection mid-request: it cannot go on.
        let unread = reading.as_ref().is_some_and(|r| !r.whole());
        let close = head.close
            || unread
            || draining.load(Ordering::Relaxed)
            || resp
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let (parts, body) = resp.into_parts();
        let framing = Framing::of(head_request, parts.status, body.size_hint().exact());
        let mut out = bufpool::take_write();
        let raw = body.raw_head();
        response::write_head(&mut out, parts.status, &parts.headers, raw, framing, close);
        request::recycle(parts.headers);
        let mut feeding = Feeding {
            reading: reading.as_deref_mut().filter(|r| r.open()),
            buf: &mut buf,
        };
        let finished = send_body(
            &mut io,
            &mut out,
            body,
            framing,
            head.trailers,
            &mut feeding,
        );
        let finished = finished.await?;
        bufpool::put_write(out);
        drop(guard);
        if !finished {
            // The body broke off: the client must not take what it got for the whole answer.
            return Ok(Ended::Closed);
        }
        if close {
            match reading {
                Some(r) if !r.whole() => {
                    drop(r);
                    body::linger(&mut io, &mut buf).await;
                }
                _ => {
                    let _ = io.shutdown().await;
                }
            }
            return Ok(Ended::Closed);
        }
    }
}

/// A request's first read, onto the stack: a connection waiting for its next request holds no
/// buffer. What came is copied into a small one (`bufpool::first`: the head shares it until the
/// exchange is over); a head that did not all come grows it on its next read.
fn read_first<I: AsyncRead>(
    io: Pin<&mut I>,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut scratch = [MaybeUninit::<u8>::uninit(); READ_BUF];
    let mut read = ReadBuf::uninit(&mut scratch);
    std::task::ready!(io.poll_read(cx, &mut read))?;
    let got = read.filled();
    if !got.is_empty() {
        *buf = bufpool::first(got);
    }
    Poll::Ready(Ok(got.len()))
}

/// Runs the pipeline for one request while feeding it its body and watching the client: if it
/// hangs up (end of stream or an error), the exchange is dropped (`None`), as hyper's server
/// does. Bytes that arrive after the body (a pipelined request) wait in `buf`.
async fn answer<I, H>(
    (io, buf): (&mut I, &mut BytesMut),
    handler: &Arc<H>,
    req: http::Request<crate::http::body::ClientBody>,
    as_came: crate::http::fields::RequestHead<'_>,
    conn: &ClientConn,
    settings: &Settings,
    mut reading: Option<&mut Reading>,
) -> Option<http::Response<H::Body>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut call = std::pin::pin!(handler.call(req, conn, Some(as_came)));
    poll_fn(|cx| loop {
        if let Poll::Ready(resp) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        if let Some(r) = reading.as_deref_mut() {
            if r.open() && r.poll_feed(&mut *io, &mut *buf, cx).is_ready() {
                // A frame for the handler (or the body's end): it runs again.
                continue;
            }
            if !r.whole() {
                // What the client sends now is the body's, read when it is asked for.
                return Poll::Pending;
            }
        }
        // Room is never made here: growing the buffer while the request's header values
        // still share it would copy it.
        while buf.len() < settings.max_head && buf.capacity() > buf.len() {
            match poll_read_buf(Pin::new(&mut *io), cx, &mut *buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => break,
            }
        }
        return Poll::Pending;
    })
    .await
}

/// Our server's connection as the drain sees it: asked to drain, it finishes the request in
/// hand (its answer says `connection: close`) and ends between requests.
pub struct Draining<'a, F> {
    pub serve: Pin<&'a mut F>,
    pub flag: &'a AtomicBool,
}

impl<F: Future> Future for Draining<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        self.serve.as_mut().poll(cx)
    }
}

impl<F: Future> crate::server::drain::Drain for Draining<'_, F> {
    fn drain(self: Pin<&mut Self>) {
        self.flag.store(true, Ordering::Relaxed);
    }
}
