//! A request body on the direct path: streamed from the client's body to the upstream socket
//! as it comes — one frame in hand at a time, so a connection holds one bounded buffer — framed
//! as the client framed it (its `Content-Length`, else `chunked`), while the upstream is
//! watched: an answer that comes before the body ends (a 413, a 401) ends the sending, and the
//! connection is then not reused.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::upstream::body::UpstreamBody;

/// How the sending ended.
pub enum Sent {
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

/// What is being written: a small piece of framing, then (maybe) a body frame's bytes.
#[derive(Default)]
struct Pending {
    framing: Vec<u8>,
    at: usize,
    data: Bytes,
    /// The terminator (and trailers) are written: nothing follows.
    last: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.at == self.framing.len() && self.data.is_empty()
    }
}

/// Streams `body` to `stream`; bytes the upstream sends meanwhile go to `buf`.
pub async fn body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    body: Pin<&mut UpstreamBody>,
    chunked: bool,
) -> Result<Sent, SendError> {
    let mut body = body;
    let mut out = Pending::default();
    let mut ended = false;
    std::future::poll_fn(|cx| loop {
        // An answer (or the upstream going away) ends the sending, whatever is left.
        if let Some(done) = watch_upstream(stream, buf, cx) {
            return Poll::Ready(done);
        }
        if out.is_empty() {
            if ended {
                return Poll::Ready(Ok(Sent::Whole));
            }
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(SendError::Client)),
                Poll::Ready(None) => {
                    ended = true;
                    out = Pending::default();
                    if chunked {
                        out.framing.extend_from_slice(b"0\r\n\r\n");
                        out.last = true;
                    }
                    continue;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    out = Pending::default();
                    match frame.into_data() {
                        Ok(data) if data.is_empty() => continue,
                        Ok(data) => {
                            if chunked {
                                out.framing = format!("{:x}\r\n", data.len()).into_bytes();
                            }
                            out.data = data;
                        }
                        Err(frame) => {
                            // Trailers end a chunked body; a sized body has nowhere for them.
                            if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                                out.framing.extend_from_slice(b"0\r\n");
                                for (name, value) in &trailers {
                                    out.framing.extend_from_slice(name.as_str().as_bytes());
                                    out.framing.extend_from_slice(b": ");
                                    out.framing.extend_from_slice(value.as_bytes());
                                    out.framing.extend_from_slice(b"\r\n");
                                }
                                out.framing.extend_from_slice(b"\r\n");
                                out.last = true;
                                ended = true;
                            }
                            continue;
                        }
                    }
                }
            }
        }
        match write_some(stream, &mut out, chunked, cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(SendError::Upstream(e))),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// `Some` when the upstream has begun an answer or closed: read what there is into `buf`.
fn watch_upstream(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Option<Result<Sent, SendError>> {
    if stream.poll_read_ready(cx).is_pending() {
        return None;
    }
    crate::http::bufpool::make_room(buf);
    let mut scratch = [0u8; 4096];
    match stream.try_read(&mut scratch) {
        Ok(0) => Some(Err(SendError::Upstream(
            io::ErrorKind::UnexpectedEof.into(),
        ))),
        Ok(n) => {
            buf.extend_from_slice(&scratch[..n]);
            final_head_begun(buf).then_some(Ok(Sent::Answered))
        }
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

/// Writes what `out` holds (framing, data, and the chunk's closing CRLF) as far as it goes.
fn write_some(
    stream: &mut TcpStream,
    out: &mut Pending,
    chunked: bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !out.is_empty() {
        let framing = &out.framing[out.at..];
        let slices = [IoSlice::new(framing), IoSlice::new(&out.data)];
        let n = std::task::ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        let from_framing = n.min(framing.len());
        out.at += from_framing;
        out.data.advance(n - from_framing);
        if out.is_empty() && chunked && !out.last && out.framing != b"\r\n" {
            // A chunk's data is followed by its CRLF.
            out.framing = b"\r\n".to_vec();
            out.at = 0;
        }
    }
    Poll::Ready(Ok(()))
}
