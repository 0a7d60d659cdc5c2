//! An upstream socket's reads on the direct path: the answer's head (after the request head
//! is written), and the check that a pooled connection is still open before it is reused.
//!
//! An answer yet to come holds no read buffer: with a thousand requests in flight, their
//! waits would hold a thousand (8 KiB each, most of the proxy's memory there). The buffer is
//! taken from the worker's pool once the socket is readable.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{codec, Ask, Failure, Sent, UpstreamConn};
use crate::http::bufpool;
use crate::upstream::error::ExchangeError;

/// The exchange's I/O: the head out (its buffer back to the pool once written), the answer's
/// head in.
pub(super) async fn answer(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: Vec<u8>,
    ask: &Ask<'_>,
) -> Result<codec::Head, Sent> {
    let written = stream.write_all(&head).await;
    bufpool::put_write(head);
    written.map_err(Sent::Nothing)?;
    read_head(stream, buf, ask).await
}

/// Reads the answer's head (skipping interim ones) into `buf` and parses it.
pub(super) async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    ask: &Ask<'_>,
) -> Result<codec::Head, Sent> {
    let mut got_any = !buf.is_empty();
    loop {
        match codec::parse_head(buf, ask.head_request, ask.raw) {
            Ok(Some(parsed)) => return Ok(parsed),
            Ok(None) => {}
            Err(e) => return Err(Sent::Broken(Failure::new(ExchangeError::Protocol, e))),
        }
        let read = std::future::poll_fn(|cx| read_some(stream, buf, cx)).await;
        match read {
            Ok(0) | Err(_) if !got_any => {
                let e = read
                    .err()
                    .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                return Err(Sent::Nothing(e));
            }
            Ok(0) => {
                return Err(Sent::Broken(Failure::new(
                    ExchangeError::Reset,
                    "closed in the middle of the response head",
                )))
            }
            Err(e) => return Err(Sent::Broken(Failure::new(ExchangeError::Reset, e))),
            Ok(_) => got_any = true,
        }
    }
}

/// One read of the answer into `buf`, which takes a pooled buffer once the socket is readable.
/// The read is `AsyncRead`'s, not `try_read`'s: a read that comes up short then clears the
/// socket's readiness, so the next wait costs no read that finds nothing (with `try_read` that
/// read cost a fifth of the req/s with the upstream on the proxy's core: docs/PERFORMANCE.md).
fn read_some(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == 0 {
        std::task::ready!(stream.poll_read_ready(cx))?;
    }
    bufpool::make_room(buf);
    let read = tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buf);
    if read.is_pending() && buf.is_empty() {
        // The readiness was stale: the buffer goes back until the answer is there.
        bufpool::put(std::mem::take(buf));
    }
    read
}

/// A pooled connection that has something to read before we asked is closed (or broken).
pub(super) async fn still_open(conn: UpstreamConn) -> Option<UpstreamConn> {
    let ready = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(conn.stream.poll_read_ready(cx).is_ready())
    })
    .await;
    if !ready {
        return Some(conn);
    }
    // Whatever is there (an end, a stray byte), the connection is not reused: one byte tells.
    match conn.stream.try_read(&mut [0u8; 1]) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(conn),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn an_answer_yet_to_come_holds_no_buffer_and_takes_one_once_it_is_there() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut upstream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let once = std::future::poll_fn(|cx| Poll::Ready(read_some(&mut ours, &mut buf, cx)));
        assert!(once.await.is_pending());
        assert_eq!(buf.capacity(), 0, "a wait holds no buffer");

        upstream.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let n = std::future::poll_fn(|cx| read_some(&mut ours, &mut buf, cx))
            .await
            .unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n");
        assert!(buf.capacity() >= 1024);
    }
}
