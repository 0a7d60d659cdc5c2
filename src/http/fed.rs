//! A request body fed by the task of the connection it arrives on (our own HTTP/1 server): the
//! connection decodes it from its read buffer and hands it over one frame at a time; the body's
//! reader (the direct path in the same task, or hyper's client in its own) takes them. With one
//! frame in hand the connection reads nothing more, so a slow upstream slows the client down
//! and a connection holds one bounded buffer, however large the body.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::BoxError;

/// Why a fed body broke off: the client's doing (it closed, or framed the body badly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client's request body broke off: {0}")]
pub struct Broken(pub &'static str);

#[derive(Debug, Default)]
struct Feed {
    frame: Option<Frame<Bytes>>,
    /// Nothing follows the frame in hand (or, with none, the body is over).
    last: bool,
    broken: Option<Broken>,
    /// The reader has asked for a frame (an `Expect: 100-continue` is answered then).
    asked: bool,
    /// The reader dropped its end: nobody will take what is left.
    gone: bool,
    reader: Option<Waker>,
    conn: Option<Waker>,
}

/// Stores `cx`'s waker unless the one held wakes the same task (a clone per poll is not free).
fn keep(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Wakes `slot`'s task unless it is `cx`'s own, which is running already.
fn nudge(slot: &Option<Waker>, cx: Option<&Context<'_>>) {
    if let Some(w) = slot {
        if cx.is_none_or(|cx| !w.will_wake(cx.waker())) {
            w.wake_by_ref();
        }
    }
}

/// The reader's end: a request body like any other.
#[derive(Debug)]
pub struct FedBody {
    feed: Arc<Mutex<Feed>>,
    /// What is left of an announced length (`None`: chunked).
    left: Option<u64>,
}

/// What the connection is to do for the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Decode (and read) the next frame.
    Frame,
    /// Nothing now: a frame is in hand, or nobody has asked yet.
    Wait,
    /// The reader dropped the body: what is left will never be taken.
    Gone,
}

/// The connection's end.
#[derive(Debug)]
pub struct Feeder {
    feed: Arc<Mutex<Feed>>,
    over: bool,
}

/// A body and the end that feeds it; `length`: the announced `Content-Length`, if any.
pub fn channel(length: Option<u64>) -> (FedBody, Feeder) {
    let feed = Arc::new(Mutex::new(Feed::default()));
    (
        FedBody {
            feed: feed.clone(),
            left: length,
        },
        Feeder { feed, over: false },
    )
}

fn lock(feed: &Mutex<Feed>) -> MutexGuard<'_, Feed> {
    // Nothing panics while holding it; a poisoned lock still holds a consistent feed.
    feed.lock().unwrap_or_else(|p| p.into_inner())
}

impl Feeder {
    /// What the reader wants now; the connection's task is woken when that changes.
    pub fn want(&mut self, cx: &Context<'_>) -> Want {
        let mut f = lock(&self.feed);
        keep(&mut f.conn, cx);
        if f.gone {
            Want::Gone
        } else if f.asked && f.frame.is_none() && !self.over {
            Want::Frame
        } else {
            Want::Wait
        }
    }

    /// Hands `frame` over; `last`: the body ends with it. `cx`: the connection's task, when
    /// it runs in one (a frame put before the reader ever asked wakes nobody).
    pub fn put(&mut self, frame: Frame<Bytes>, last: bool, cx: Option<&Context<'_>>) {
        let mut f = lock(&self.feed);
        f.frame = Some(frame);
        f.last = last;
        self.over |= last;
        nudge(&f.reader, cx);
    }

    /// The body ended, with nothing more to hand over.
    pub fn end(&mut self, cx: Option<&Context<'_>>) {
        let mut f = lock(&self.feed);
        f.last = true;
        self.over = true;
        nudge(&f.reader, cx);
    }

    /// The body broke off (the client closed, or sent a malformed chunk).
    pub fn fail(&mut self, why: &'static str, cx: Option<&Context<'_>>) {
        let mut f = lock(&self.feed);
        f.broken = Some(Broken(why));
        self.over = true;
        nudge(&f.reader, cx);
    }
}

impl Drop for Feeder {
    /// The connection went away before the body's end: the reader must not take what it got
    /// for the whole body.
    fn drop(&mut self) {
        if !self.over {
            self.fail("the connection closed", None);
        }
    }
}

impl Drop for FedBody {
    fn drop(&mut self) {
        let mut f = lock(&self.feed);
        f.gone = true;
        f.frame = None;
        nudge(&f.conn, None);
    }
}

impl Body for FedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut f = lock(&this.feed);
        if let Some(frame) = f.frame.take() {
            if let (Some(left), Some(d)) = (this.left.as_mut(), frame.data_ref()) {
                *left = left.saturating_sub(d.len() as u64);
            }
            // Taken from another task (hyper's client): the connection may read on.
            nudge(&f.conn, Some(cx));
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(broken) = f.broken {
            return Poll::Ready(Some(Err(Box::new(broken))));
        }
        if f.last {
            return Poll::Ready(None);
        }
        f.asked = true;
        keep(&mut f.reader, cx);
        nudge(&f.conn, Some(cx));
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let f = lock(&self.feed);
        f.last && f.frame.is_none() && f.broken.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn one_frame_at_a_time_and_the_end_with_the_last() {
        let (mut body, mut feed) = channel(Some(5));
        let mut body = Pin::new(&mut body);
        assert_eq!(feed.want(&cx()), Want::Wait, "nobody asked yet");
        assert!(body.as_mut().poll_frame(&mut cx()).is_pending());
        assert_eq!(feed.want(&cx()), Want::Frame, "asked, with nothing in hand");
        feed.put(Frame::data(Bytes::from_static(b"he")), false, Some(&cx()));
        assert_eq!(feed.want(&cx()), Want::Wait, "a frame is in hand");
        let Poll::Ready(Some(Ok(f))) = body.as_mut().poll_frame(&mut cx()) else {
            panic!("no frame")
        };
        assert_eq!(f.into_data().unwrap(), "he");
        assert_eq!(body.size_hint().exact(), Some(3));
        feed.put(Frame::data(Bytes::from_static(b"llo")), true, Some(&cx()));
        assert!(!body.is_end_stream(), "the last frame is still in hand");
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx()),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(body.is_end_stream());
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx()),
            Poll::Ready(None)
        ));
        drop(feed);
        assert!(body.is_end_stream(), "a whole body stays whole");
    }

    #[test]
    fn a_connection_gone_mid_body_breaks_it_and_a_dropped_body_frees_the_connection() {
        let (mut body, feed) = channel(None);
        drop(feed);
        let polled = Pin::new(&mut body).poll_frame(&mut cx());
        assert!(matches!(polled, Poll::Ready(Some(Err(_)))));
        assert!(!body.is_end_stream());

        let (body, mut feed) = channel(Some(10));
        drop(body);
        assert_eq!(feed.want(&cx()), Want::Gone);
    }
}
