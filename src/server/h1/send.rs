//! An answer written out by our own HTTP/1 server: its body frame by frame after the head, small
//! pieces gathered so that a small answer leaves in one `send` — while a request body still
//! being read (an upstream that answers as it reads, through hyper's client) is fed at every
//! wait, so neither side waits on the other.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::Reading;
use super::response::{self, Framing};
use super::{COPY_MAX, WRITE_AT};
use crate::server::Answer;

/// A request body still being read while its answer is written (an upstream that answers as
/// it reads, through hyper's client): each wait of the writer feeds it too.
pub(super) struct Feeding<'a> {
    pub reading: Option<&'a mut Reading>,
    pub buf: &'a mut BytesMut,
}

impl Feeding<'_> {
    fn poll<I: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut I, cx: &mut Context<'_>) {
        if let Some(r) = self.reading.as_deref_mut() {
            while r.poll_feed(&mut *io, &mut *self.buf, cx).is_ready() {}
        }
    }
}

/// `write_all`, feeding the request body while it waits.
async fn write_all<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    mut bytes: &[u8],
    feeding: &mut Feeding<'_>,
) -> io::Result<()> {
    poll_fn(|cx| {
        while !bytes.is_empty() {
            feeding.poll(io, cx);
            let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, bytes))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            bytes = &bytes[n..];
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// Sends the body with `framing` after the head waiting in `out`. Small pieces that are ready
/// at once join the head, so a small answer leaves in one `send`. `Ok(false)`: the body broke
/// off, and the connection must close without ending the answer.
pub(super) async fn send_body<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    mut body: impl Answer,
    framing: Framing,
    trailers_wanted: bool,
    feeding: &mut Feeding<'_>,
) -> io::Result<bool> {
    let mut left = match framing {
        Framing::None => {
            write_all(io, out, feeding).await?;
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
                    write_all(io, out, feeding).await?;
                    out.clear();
                }
                poll_fn(|cx| {
                    feeding.poll(io, cx);
                    body.as_mut().poll_frame(cx)
                })
                .await
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
                    put(io, out, data, feeding).await?;
                    if framing == Framing::Chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Err(frame) => {
                    if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), framing) {
                        response::chunked_end(out, trailers_wanted.then_some(&trailers));
                        write_all(io, out, feeding).await?;
                        return Ok(true);
                    }
                }
            },
        }
        if out.len() >= WRITE_AT {
            write_all(io, out, feeding).await?;
            out.clear();
        }
    }
    match framing {
        Framing::Chunked => response::chunked_end(out, None),
        _ if left > 0 => {
            tracing::warn!("an answer's body ended short of its length; cut off");
            write_all(io, out, feeding).await?;
            return Ok(false);
        }
        _ => {}
    }
    write_all(io, out, feeding).await?;
    Ok(true)
}

/// Adds `data` to what is gathered: copied when small, else written out with it, uncopied.
async fn put<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    mut data: Bytes,
    feeding: &mut Feeding<'_>,
) -> io::Result<()> {
    if data.len() < COPY_MAX {
        out.extend_from_slice(&data);
        return Ok(());
    }
    let mut gathered = 0;
    while gathered < out.len() || data.has_remaining() {
        let slices = [IoSlice::new(&out[gathered..]), IoSlice::new(&data)];
        let n = poll_fn(|cx| {
            feeding.poll(io, cx);
            Pin::new(&mut *io).poll_write_vectored(cx, &slices)
        })
        .await?;
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
