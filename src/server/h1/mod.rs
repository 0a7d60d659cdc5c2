//! Our own HTTP/1.1 server for plain connections, for the requests that dominate a proxy's
//! load: a head without a body. hyper's server spent more on the exchange than the proxy's own
//! work (its dispatcher, its read buffer grown anew per request, its encoder); here a request is
//! parsed in place, handed to the pipeline, and its answer written with one `send` when it is
//! small, all inside the connection's task.
//!
//! Anything else (a body, an upgrade, `Expect`, HTTP/1.0, a malformed or oversized head) is
//! handed over to hyper's server with the bytes already read, and hyper serves the rest of the
//! connection: every refusal and every streaming rule keeps one source.

pub mod request;
pub mod response;
mod rewind;

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONNECTION;
use http::Method;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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
    let mut out = Vec::new();
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
                // Between requests the connection holds no buffer (`bufpool`), and the drain
                // ends it; a head begun is still served.
                bufpool::put(std::mem::take(&mut buf));
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
        let Some(resp) = answer(
            &mut io, &mut buf, &handler, head.req, as_came, &conn, &settings,
        )
        .await
        else {
            // The client hung up before its answer: nobody to write to.
            return Ok(Ended::Closed);
        };
        let close = head.close
            || draining.load(Ordering::Relaxed)
            || resp
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let (parts, body) = resp.into_parts();
        let framing = Framing::of(head_request, parts.status, body.size_hint().exact());
        out.clear();
        let raw = body.raw_head();
        response::write_head(&mut out, parts.status, &parts.headers, raw, framing, close);
        request::recycle(parts.headers);
        let finished = send_body(&mut io, &mut out, body, framing, head.trailers).await?;
        drop(guard);
        if !finished {
            // The body broke off: the client must not take what it got for the whole answer.
            return Ok(Ended::Closed);
        }
        if close {
            let _ = io.shutdown().await;
            return Ok(Ended::Closed);
        }
        if out.capacity() > WRITE_AT * 2 {
            // A large answer's buffer is not kept for the connection's life.
            out = Vec::new();
        }
    }
}

/// A request's first read, onto the stack: a connection waiting for its next request holds no
/// buffer. What came is copied into one from the worker's pool (a head is a few hundred bytes).
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
        *buf = bufpool::take();
        buf.extend_from_slice(got);
    }
    Poll::Ready(Ok(got.len()))
}

/// Runs the pipeline for one request while watching the client: if it hangs up (end of stream
/// or an error), the exchange is dropped (`None`), as hyper's server does. Bytes that arrive
/// meanwhile (a pipelined request) wait in `buf`.
async fn answer<I, H>(
    io: &mut I,
    buf: &mut BytesMut,
    handler: &Arc<H>,
    req: http::Request<crate::http::body::ClientBody>,
    as_came: crate::http::fields::RequestHead<'_>,
    conn: &ClientConn,
    settings: &Settings,
) -> Option<http::Response<H::Body>>
where
    I: AsyncRead + Unpin,
    H: Handler,
{
    let mut call = std::pin::pin!(handler.call(req, conn, Some(as_came)));
    poll_fn(|cx| {
        if let Poll::Ready(resp) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
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
        Poll::Pending
    })
    .await
}

/// Sends the body with `framing` after the head waiting in `out`. Small pieces that are ready
/// at once join the head, so a small answer leaves in one `send`. `Ok(false)`: the body broke
/// off, and the connection must close without ending the answer.
async fn send_body<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    mut body: impl Answer,
    framing: Framing,
    trailers_wanted: bool,
) -> io::Result<bool> {
    let mut left = match framing {
        Framing::None => {
            io.write_all(out).await?;
            return Ok(true);
        }
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    let mut body = Pin::new(&mut body);
    loop {
        // What is ready now joins what is gathered; only a wait sends it first.
        let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the answer's body broke off");
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if framing == Framing::Chunked {
                        if data.is_empty() {
                            continue;
                        }
                        response::chunk_start(out, data.len());
                    } else if data.len() as u64 > left {
                        tracing::warn!("an answer's body ran past its length; cut off");
                        return Ok(false);
                    } else {
                        left -= data.len() as u64;
                    }
                    put(io, out, data).await?;
                    if framing == Framing::Chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Err(frame) => {
                    if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), framing) {
                        response::chunked_end(out, trailers_wanted.then_some(&trailers));
                        io.write_all(out).await?;
                        return Ok(true);
                    }
                }
            },
        }
        if out.len() >= WRITE_AT {
            io.write_all(out).await?;
            out.clear();
        }
    }
    match framing {
        Framing::Chunked => response::chunked_end(out, None),
        _ if left > 0 => {
            tracing::warn!("an answer's body ended short of its length; cut off");
            io.write_all(out).await?;
            return Ok(false);
        }
        _ => {}
    }
    io.write_all(out).await?;
    Ok(true)
}

/// Adds `data` to what is gathered: copied when small, else written out with it, uncopied.
async fn put<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    mut data: Bytes,
) -> io::Result<()> {
    if data.len() < COPY_MAX {
        out.extend_from_slice(&data);
        return Ok(());
    }
    let mut gathered = 0;
    while gathered < out.len() || data.has_remaining() {
        let slices = [IoSlice::new(&out[gathered..]), IoSlice::new(&data)];
        let n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_out = n.min(out.len() - gathered);
        gathered += from_out;
        data.advance(n - from_out);
    }
    out.clear();
    Ok(())
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
