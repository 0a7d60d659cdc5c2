//! A request body as our own HTTP/1 server reads it: decoded from the connection's read buffer
//! in the connection's own task and handed to the handler one frame at a time (`http::fed`).
//! Frames are slices of the read buffer, not copies; the next read waits until the frame in
//! hand is taken, so the connection holds one bounded buffer, and the client is slowed to the
//! upstream's pace. `Expect: 100-continue` is answered when the body is first asked for, so a
//! request refused without its body never makes the client send it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::http::bufpool;
use crate::http::chunked::{Chunked, Step};
use crate::http::fed::{Feeder, Want};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// A read for a body gets room for what is left of it, within these bounds.
const READ_MIN: usize = bufpool::SIZE;
const READ_MAX: usize = 64 * 1024;
/// Room beyond a sized body's end (a pipelined head's start, if one follows).
const READ_SLACK: usize = 512;

/// How the client framed its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    Chunked(Chunked),
}

/// One request's body being read.
#[derive(Debug)]
pub struct Reading {
    feed: Feeder,
    coding: Coding,
    /// `Expect: 100-continue`: how much of the interim answer is written (`None`: not asked).
    expect: Option<usize>,
    /// The body's end was read off the connection: the next request may follow it.
    whole: bool,
    /// Nothing more is read for it: whole, broken, or its reader gone.
    over: bool,
}

impl Reading {
    pub fn new(feed: Feeder, coding: Coding, expect: bool) -> Self {
        Reading {
            feed,
            coding,
            expect: expect.then_some(0),
            whole: false,
            over: false,
        }
    }

    /// The body was read to its end: the connection may serve the next request.
    pub fn whole(&self) -> bool {
        self.whole
    }

    /// Still reading (the reader may yet ask for more).
    pub fn open(&self) -> bool {
        !self.over
    }

    /// The final answer is about to be written: a `100 Continue` must not follow it.
    pub fn answered(&mut self) {
        if self.expect.is_some_and(|at| at == 0) {
            self.expect = None;
        }
    }

    /// Hands the reader what it wants, reading from `io` as needed. `Ready`: something changed
    /// that the reader (maybe in this task) should see; `Pending`: nothing to do until a wake.
    pub fn poll_feed<I>(&mut self, io: &mut I, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<()>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        if self.over {
            return Poll::Pending;
        }
        match self.feed.want(cx) {
            Want::Wait => return Poll::Pending,
            Want::Gone => {
                self.over = true;
                return Poll::Pending;
            }
            Want::Frame => {}
        }
        if let Some(at) = &mut self.expect {
            match poll_continue(io, at, cx) {
                Poll::Ready(Ok(())) => self.expect = None,
                Poll::Ready(Err(_)) => return self.fail("the connection failed", cx),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            if self.hand_over(buf, Some(cx)) {
                return Poll::Ready(());
            }
            self.make_room(buf);
            match poll_read_buf(Pin::new(&mut *io), cx, buf) {
                Poll::Ready(Ok(0)) => return self.fail("the client closed mid-body", cx),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(_)) => return self.fail("the connection failed", cx),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Before the handler runs: the part of the body that came with the head is handed over at
    /// once, so the first ask finds it (and the upstream gets it in the same write as the
    /// head). A client that sent its body without waiting needs no `100 Continue`.
    ///
    /// A sized body longer than what came with the head is first topped up by one read that
    /// does not wait (`cx` is the connection's own task: a `Pending` read leaves nothing
    /// behind): a large upload's start then leaves with the head in one write, and the
    /// upstream is woken once for it, not once per piece.
    pub fn prime<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) {
        if buf.is_empty() {
            return;
        }
        if let Coding::Length(left) = self.coding {
            if (buf.len() as u64) < left {
                self.make_room(buf);
                // A failed or closed read is met again by the next one, which counts it.
                let _ = poll_read_buf(Pin::new(&mut *io), cx, buf);
            }
        }
        if self.hand_over(buf, None) {
            self.expect = None;
        }
    }

    /// Decodes what the buffer holds into the next frame, the body's end, or its failure;
    /// `false`: more bytes are needed.
    fn hand_over(&mut self, buf: &mut BytesMut, cx: Option<&Context<'_>>) -> bool {
        match self.step(buf) {
            Ok(Some((frame, last))) => {
                self.feed.put(frame, last, cx);
                if last {
                    self.finish();
                }
                true
            }
            Ok(None) if self.whole => {
                self.feed.end(cx);
                self.over = true;
                true
            }
            Ok(None) => false,
            Err(why) => {
                self.broke(why, cx);
                true
            }
        }
    }

    /// The next frame the buffer holds (and whether it is the last); `None`: more is needed,
    /// or (`whole`) the body is over.
    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<(Frame<bytes::Bytes>, bool)>, &'static str> {
        match &mut self.coding {
            Coding::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(*left) as usize;
                *left -= n as u64;
                Ok(Some((Frame::data(buf.split_to(n).freeze()), *left == 0)))
            }
            Coding::Chunked(decoder) => match decoder.step(buf)? {
                Step::More => Ok(None),
                Step::Data(d) => Ok(Some((Frame::data(d), false))),
                Step::Trailers(t) => Ok(Some((Frame::trailers(t), true))),
                Step::End => {
                    self.whole = true;
                    Ok(None)
                }
            },
        }
    }

    fn finish(&mut self) {
        self.whole = true;
        self.over = true;
    }

    fn fail(&mut self, why: &'static str, cx: &mut Context<'_>) -> Poll<()> {
        self.broke(why, Some(cx));
        Poll::Ready(())
    }

    /// The body broke off (the client's doing): its reader sees an error, and nothing more is
    /// read for it.
    fn broke(&mut self, why: &'static str, cx: Option<&Context<'_>>) {
        tracing::debug!(why, "a request body broke off");
        self.feed.fail(why, cx);
        self.over = true;
    }

    /// Room for the next read: what is left of a sized body (beyond what `buf` holds of it),
    /// within bounds (a large upload moves in large pieces; a small one costs no more than a
    /// head), and a little more: a read that ends the body then comes up short, which tells
    /// the runtime the socket is drained (no read that finds nothing before the next request).
    fn make_room(&self, buf: &mut BytesMut) {
        let want = match self.coding {
            Coding::Length(left) => {
                let rest = (left as usize).saturating_sub(buf.len());
                (rest + READ_SLACK).clamp(READ_MIN, READ_MAX)
            }
            Coding::Chunked(_) => 2 * READ_MIN,
        };
        if buf.capacity() - buf.len() < want / 2 {
            buf.reserve(want);
        }
    }
}

/// Writes what is left of `100 Continue` from `at`.
fn poll_continue<I: AsyncWrite + Unpin>(
    io: &mut I,
    at: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while *at < CONTINUE.len() {
        let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &CONTINUE[*at..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *at += n;
    }
    Poll::Ready(Ok(()))
}

/// After an answer that left its request's body unread: the connection is closed, but what
/// the client is still sending is read and dropped for a while first, so that closing with
/// unread bytes does not reset the answer away before the client has read it.
pub async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I, buf: &mut BytesMut) {
    use tokio::io::AsyncWriteExt;
    if io.shutdown().await.is_err() {
        return;
    }
    let discard = async {
        loop {
            buf.clear();
            if buf.capacity() < READ_MIN {
                buf.reserve(READ_MIN);
            }
            match std::future::poll_fn(|cx| poll_read_buf(Pin::new(&mut *io), cx, buf)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => buf.advance(buf.len()),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), discard).await;
}
