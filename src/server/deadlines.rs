//! The deadlines hyper does not keep for us, on each accepted connection: a request head must
//! arrive whole within `timeouts.header_read` (else 408 and close), a connection with nothing in
//! flight is closed after `timeouts.idle`, and one that never finishes its first request head
//! (or HTTP/2 preface) is closed after `header_read`.
//!
//! `GuardedIo` wraps the socket and learns from `ConnState` whether a request is in flight: the
//! server counts a request from the service call until its response body is dropped. Deadlines
//! are enforced within a quarter of the shorter allowance (a coarse tick, not a timer per request),
//! and measured in ticks: a request's phase changes read no clock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use http::StatusCode;

use crate::http::canned::Canned;
use crate::metrics::Metrics;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// The answer to a request head that did not arrive whole in time.
pub const HEAD_TIMEOUT: Canned = Canned::closing(
    StatusCode::REQUEST_TIMEOUT,
    "request timeout: the request head did not arrive whole\n",
);
static RESPONSE_408: LazyLock<Vec<u8>> = LazyLock::new(|| HEAD_TIMEOUT.wire());

/// What the server and the socket wrapper share about one connection.
pub struct ConnState {
    inflight: AtomicUsize,
    /// After a `101`, the connection is a tunnel: no HTTP deadlines apply any more.
    upgraded: AtomicBool,
    metrics: Arc<Metrics>,
}

impl ConnState {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ConnState {
            inflight: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            metrics,
        })
    }

    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    /// A request is in flight until the guard is dropped (with its response body).
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }
}

pub struct InflightGuard(Arc<ConnState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing of a new request yet: closed silently at the deadline.
    Idle,
    /// Part of a request head has arrived: 408 at the deadline.
    Head,
    /// A request is in flight: no deadline here (body and upstream timeouts apply).
    Busy,
}

pub struct GuardedIo<I> {
    inner: I,
    state: Arc<ConnState>,
    phase: Phase,
    /// The deadline ticks seen so far, and the count when the phase began: a phase change
    /// reads this count, not the clock (two clock reads per request saved).
    ticks: u64,
    since: u64,
    /// Whether any request has been served on this connection.
    served: bool,
    /// The deadline check's period: a quarter of the shorter allowance.
    tick: Duration,
    timer: Pin<Box<Sleep>>,
    /// The tick is registered with this connection's task: until it elapses, a read that waits
    /// need not poll it again (a poll per waiting read showed in the profile). The
    /// connection is only ever polled by its own task, so the waker stays good.
    armed: bool,
    header_read: Duration,
    idle: Duration,
    /// Decided by the first bytes: HTTP/2 never gets an HTTP/1 408 written into it.
    h2: Option<bool>,
    /// Armed while a write waits on a client that does not read: past `write_limit`, the
    /// connection fails instead of holding its upstream forever.
    write_stall: Option<Pin<Box<Sleep>>>,
    write_limit: Duration,
}

impl<I> GuardedIo<I> {
    pub fn new(
        inner: I,
        state: Arc<ConnState>,
        header_read: Duration,
        idle: Duration,
        write_limit: Duration,
    ) -> Self {
        let tick = (header_read.min(idle) / 4).max(Duration::from_millis(10));
        GuardedIo {
            inner,
            state,
            phase: Phase::Idle,
            ticks: 0,
            since: 0,
            served: false,
            tick,
            timer: Box::pin(tokio::time::sleep(tick)),
            armed: false,
            header_read,
            idle,
            h2: None,
            write_stall: None,
            write_limit,
        }
    }

    /// Follows the server's count of requests in flight: busy while one is, idle from the moment
    /// the last one's response is done (as far as this connection has noticed).
    fn follow_requests(&mut self) {
        let busy = self.state.inflight.load(Ordering::Acquire) > 0;
        if busy && self.phase != Phase::Busy {
            self.phase = Phase::Busy;
            self.served = true;
        } else if !busy && self.phase == Phase::Busy {
            self.phase = Phase::Idle;
            self.since = self.ticks;
        }
    }

    /// Passes a write's outcome through, failing it once it has waited past `write_limit`.
    /// `progress`: a ready result of this call means bytes moved (a write), not just that
    /// nothing was pending (a flush of a plain socket is always ready).
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        progress: bool,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            if progress {
                self.write_stall = None;
            }
            return polled;
        }
        let limit = self.write_limit;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stall.as_mut().poll(cx).is_ready() {
            self.state.metrics.reject("write_timeout");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.upgraded.load(Ordering::Acquire) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        this.follow_requests();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if this.h2.is_none() && !got.is_empty() {
                    this.h2 = Some(got.starts_with(&H2_PREFACE[..got.len().min(H2_PREFACE.len())]));
                }
                // HTTP/2 frames between streams (pings, settings) are not a request head.
                if !got.is_empty() && this.phase == Phase::Idle && this.h2 != Some(true) {
                    this.phase = Phase::Head;
                    this.since = this.ticks;
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // Deadlines are checked on a coarse tick rather than re-armed per request: a timer
        // reset costs a trip through the runtime's timer wheel, a tick a few per connection.
        loop {
            if this.armed && !this.timer.is_elapsed() {
                return Poll::Pending;
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                this.armed = true;
                return Poll::Pending;
            }
            this.armed = false;
            this.ticks += 1;
            this.follow_requests();
            let now = Instant::now();
            let allowance = match this.phase {
                Phase::Busy => None,
                Phase::Head => Some(this.header_read),
                // Before the first request, even a connection with nothing to say gets only
                // the head's allowance.
                Phase::Idle if !this.served => Some(this.header_read),
                Phase::Idle => Some(this.idle),
            };
            // Whole ticks since the phase began, less the one it began in: the deadline comes
            // between the allowance and a tick after it, never before.
            let waited = this.tick * (this.ticks - this.since).saturating_sub(1) as u32;
            if allowance.is_some_and(|a| waited >= a) {
                if this.phase == Phase::Head && this.h2 != Some(true) {
                    this.state.metrics.reject("header_timeout");
                    // Best effort: the socket's buffer is empty while we wait for a head.
                    let _ = Pin::new(&mut this.inner).poll_write(cx, &RESPONSE_408);
                }
                // End of stream: hyper closes the connection.
                return Poll::Ready(Ok(()));
            }
            this.timer.as_mut().reset(now + this.tick);
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for GuardedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, polled, true)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, polled, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
