//! A request body on the direct path: streamed from the client's body to the upstream socket
//! as it comes, after its head (a frame ready at once leaves with it) — one frame in hand at a
//! time, so a connection holds one bounded buffer — framed
//! as the client framed it (its `Content-Length`, else `chunked`), while the upstream is
//! watched: an answer that comes before the body ends (a 413, a 401) ends the sending, and the
//! connection is then not reused.

use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::upstream::body::UpstreamBody;

/// A body frame smaller than this is copied beside the head or its chunk's framing (one
/// `send`); a larger one is written from where it is.
const COPY_MAX: usize = 8 * 1024;

/// How the sending ended.
pub enum BodyEnd {
    /// The whole body went out.
    Whole,
    /// The upstream began its answer first (its bytes are in the read buffer).
    Answered,
}

/// Why the sending failed.
pub enum SendError {
    /// The client's body broke off or stalled (the watch says which).
    Client,
    /// The upstream closed or reset while we were sending.
    Upstream(io::Error),
}

/// What is being written: the head, then a piece of framing and (maybe) a body frame's bytes.
/// It starts with the request head, so that a body frame ready at once leaves in the same
/// `writev` (one syscall, not two); the framing's buffer is kept for the whole body: a chunk's
/// size line allocates nothing. The caller keeps it: a send that wrote nothing may go again on
/// another connection, from where it stood.
pub struct Pending {
    framing: Vec<u8>,
    at: usize,
    data: Bytes,
    /// A chunk's data is in hand: its CRLF follows it.
    crlf: bool,
    /// The body's end has been framed (or reached).
    ended: bool,
    /// A byte has left: the request can no longer go elsewhere.
    wrote: bool,
}

impl Pending {
    /// Starts with `head` (its buffer is handed back by `into_head`).
    pub fn new(head: Vec<u8>) -> Self {
        Pending {
            framing: head,
            at: 0,
            data: Bytes::new(),
            crlf: false,
            ended: false,
            wrote: false,
        }
    }

    /// Nothing of the request has been written yet.
    pub fn untouched(&self) -> bool {
        !self.wrote
    }

    pub fn into_head(mut self) -> Vec<u8> {
        self.framing.clear();
        self.framing
    }

    fn is_empty(&self) -> bool {
        self.at == self.framing.len() && self.data.is_empty()
    }

    /// Room for the next piece of framing, after what is still unwritten of the last.
    fn frame(&mut self) -> &mut Vec<u8> {
        if self.at == self.framing.len() {
            self.framing.clear();
            self.at = 0;
        }
        &mut self.framing
    }
}

/// Streams `out` (the head first) and then `body` to `stream`; bytes the upstream sends
/// meanwhile go to `buf`.
pub async fn body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut body: Pin<&mut UpstreamBody>,
    chunked: bool,
    out: &mut Pending,
) -> Result<BodyEnd, SendError> {
    std::future::poll_fn(|cx| loop {
        if out.is_empty() && out.ended {
            // All sent: an answer already begun is read as the answer.
            return Poll::Ready(Ok(BodyEnd::Whole));
        }
        // An answer (or the upstream going away) ends the sending, whatever is left.
        if out.wrote {
            if let Some(done) = watch_upstream(stream, buf, cx) {
                return Poll::Ready(done);
            }
        }
        // A frame is taken while nothing but a little framing waits: it joins that write.
        if out.data.is_empty() && !out.crlf && !out.ended && out.framing.len() - out.at < COPY_MAX {
            match body.as_mut().poll_frame(cx) {
                Poll::Pending if out.is_empty() => return Poll::Pending,
                Poll::Pending => {}
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(SendError::Client)),
                Poll::Ready(None) => {
                    out.ended = true;
                    if chunked {
                        out.frame().extend_from_slice(b"0\r\n\r\n");
                    }
                    continue;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        let f = out.frame();
                        if chunked {
                            let _ = write!(f, "{:x}\r\n", data.len());
                        }
                        if data.len() < COPY_MAX {
                            // Copied beside its framing: one plain `send`, cheaper in the
                            // kernel than a `writev` of two pieces.
                            f.extend_from_slice(&data);
                            if chunked {
                                f.extend_from_slice(b"\r\n");
                            }
                        } else {
                            out.crlf = chunked;
                            out.data = data;
                        }
                    }
                    Err(frame) => {
                        // Trailers end a chunked body; a sized body has nowhere for them.
                        if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                            let f = out.frame();
                            f.extend_from_slice(b"0\r\n");
                            for (name, value) in &trailers {
                                f.extend_from_slice(name.as_str().as_bytes());
                                f.extend_from_slice(b": ");
                                f.extend_from_slice(value.as_bytes());
                                f.extend_from_slice(b"\r\n");
                            }
                            f.extend_from_slice(b"\r\n");
                            out.ended = true;
                        }
                        continue;
                    }
                },
            }
        }
        if out.is_empty() && out.ended {
            continue;
        }
        match write_some(stream, out, cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(SendError::Upstream(e))),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// `Some` when the upstream has begun a final answer or closed; what it sent goes to `buf`.
fn watch_upstream(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Option<Result<BodyEnd, SendError>> {
    if stream.poll_read_ready(cx).is_pending() {
        return None;
    }
    crate::http::bufpool::make_room(buf);
    match stream.try_read_buf(buf) {
        Ok(0) => Some(Err(SendError::Upstream(
            io::ErrorKind::UnexpectedEof.into(),
        ))),
        Ok(_) => final_head_begun(buf).then_some(Ok(BodyEnd::Answered)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(SendError::Upstream(e))),
    }
}

/// Whether `buf` holds the start of a final answer: interim heads (`100 Continue`, `103 Early
/// Hints`) do not end the sending, and are skipped when the answer is parsed.
fn final_head_begun(buf: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        // "HTTP/1.1 NNN": the status's first digit is the 10th byte.
        if rest.len() < 10 {
            return false;
        }
        if rest[9] != b'1' {
            return true;
        }
        match memchr::memmem::find(rest, b"\r\n\r\n") {
            Some(end) => at += end + 4,
            None => return false,
        }
    }
}

/// Writes what `out` holds (framing, data, and a chunk's closing CRLF) as far as it goes.
fn write_some(
    stream: &mut TcpStream,
    out: &mut Pending,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !out.is_empty() {
        let framing = &out.framing[out.at..];
        let n = if out.data.is_empty() {
            std::task::ready!(Pin::new(&mut *stream).poll_write(cx, framing))?
        } else {
            let slices = [IoSlice::new(framing), IoSlice::new(&out.data)];
            std::task::ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        out.wrote = true;
        let from_framing = n.min(framing.len());
        out.at += from_framing;
        out.data.advance(n - from_framing);
        if out.data.is_empty() && out.crlf {
            out.crlf = false;
            out.frame().extend_from_slice(b"\r\n");
        }
    }
    Poll::Ready(Ok(()))
}
