//! A response body read straight from the upstream socket as the client's connection asks for
//! it: no task, no channel in between. When it ends cleanly the connection goes back to the
//! worker's idle set; when it is dropped early (the client left) the connection is closed.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::codec::{Framing, Invalid};
use super::idle::Home;
use super::UpstreamConn;
use crate::http::chunked::{Chunked, Step};
use crate::http::lines::RawHead;

/// Bigger reads for bigger bodies, within what a pooled connection may keep.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 64 * 1024;

pub struct DirectBody {
    /// The upstream connection while the body is being read; `None` once it ended.
    conn: Option<UpstreamConn>,
    state: State,
    home: Option<Home>,
    /// The response head as it came, when our own HTTP/1 server writes it on (`codec::Head::raw`).
    raw_head: Option<RawHead>,
}

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
}

/// A body that broke off: the client's connection is aborted, never completed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the upstream closed the connection in the middle of the body")]
    Truncated,
    #[error("reading the upstream body: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl DirectBody {
    pub(super) fn new(
        conn: UpstreamConn,
        framing: Framing,
        home: Option<Home>,
        raw_head: Option<Bytes>,
    ) -> Self {
        let state = match framing {
            Framing::Empty => State::Length(0),
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::Size),
            Framing::Close => State::Close,
        };
        let mut body = DirectBody {
            conn: Some(conn),
            state,
            home,
            raw_head: raw_head.map(|upstream| RawHead {
                upstream,
                ours: None,
            }),
        };
        if matches!(body.state, State::Length(0)) {
            body.finish();
        }
        body
    }

    /// The response head's lines as the upstream sent them, when kept (`codec::Head::raw`).
    pub fn raw_head(&self) -> Option<&RawHead> {
        self.raw_head.as_ref()
    }

    pub fn raw_head_mut(&mut self) -> Option<&mut RawHead> {
        self.raw_head.as_mut()
    }

    /// The body ended: the connection goes home if it may carry another request and nothing
    /// unasked-for follows the body.
    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if conn.buf.is_empty() {
                home.put(conn);
            }
        }
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

/// Reads more of the body into the connection's buffer; `Ok(0)` at end of stream.
fn poll_fill(conn: &mut UpstreamConn, cx: &mut Context<'_>, want: u64) -> Poll<io::Result<usize>> {
    if conn.buf.capacity() - conn.buf.len() < READ_MIN / 2 {
        conn.buf.reserve((want as usize).clamp(READ_MIN, READ_MAX));
    }
    loop {
        ready!(conn.stream.poll_read_ready(cx))?;
        match conn.stream.try_read_buf(&mut conn.buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let want = match &mut this.state {
                State::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = (conn.buf.len() as u64).min(*left) as usize;
                        let data = conn.buf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    *left
                }
                State::Chunked(decoder) => match decoder.step(&mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::Trailers(t)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Step::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => 0,
                    Err(e) => return this.fail(Invalid(e).into()),
                },
                State::Close => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                    }
                    0
                }
            };
            match ready!(poll_fill(conn, cx, want)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(BodyError::Truncated),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.state, State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
