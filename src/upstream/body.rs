//! The request body we send upstream: the client's stream, watched so that we know when it was
//! handed over in full (latency starts there), whether the client failed it, and whether any
//! of it left (a refused connect may then be retried elsewhere).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use crate::http::body::{BoxError, ClientBody};

/// Shared between the request-body stream and the exchange that waits on it.
#[derive(Default)]
pub struct BodyWatch {
    /// The client's body until the upstream connection first reads it: while it is still here,
    /// nothing was sent, so a failed connect may be retried on another endpoint.
    pending: Mutex<Option<ClientBody>>,
    sent_at: OnceLock<Instant>,
    bytes_in: std::sync::atomic::AtomicU64,
    /// 0: fine; `ABORTED`: the client's body broke; `STALLED`: it stopped past `body_read`.
    client_failed: AtomicU8,
    done: Notify,
}

const ABORTED: u8 = 1;
const STALLED: u8 = 2;

/// How the client failed its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    Aborted,
    Stalled,
}

impl BodyWatch {
    pub fn new(body: ClientBody) -> Arc<Self> {
        Arc::new(BodyWatch {
            pending: Mutex::new(Some(body)),
            ..Default::default()
        })
    }

    /// Whether the body is still unsent (so the request may be retried).
    pub fn untouched(&self) -> bool {
        self.pending.lock().map(|p| p.is_some()).unwrap_or(false)
    }

    /// Request body bytes handed upstream so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// When the last byte was handed to the upstream connection, if it was.
    pub fn sent_at(&self) -> Option<Instant> {
        self.sent_at.get().copied()
    }

    pub fn client_failed(&self) -> Option<ClientFailure> {
        match self.client_failed.load(Ordering::Relaxed) {
            ABORTED => Some(ClientFailure::Aborted),
            STALLED => Some(ClientFailure::Stalled),
            _ => None,
        }
    }

    /// Resolves once the body has ended or failed.
    pub async fn finished(&self) {
        if self.sent_at.get().is_some() || self.client_failed().is_some() {
            return;
        }
        self.done.notified().await
    }

    fn finish(&self, failed: Option<u8>) {
        if let Some(how) = failed {
            self.client_failed.store(how, Ordering::Relaxed);
        } else {
            let _ = self.sent_at.set(Instant::now());
        }
        self.done.notify_one();
    }
}

/// The request body sent upstream.
pub enum UpstreamBody {
    Empty,
    Watched {
        watch: Arc<BodyWatch>,
        body: Option<ClientBody>,
        /// Armed when the body first has to be waited for (a small body that came with its
        /// head never arms it: no timer per request), reset on every frame after: a client that
        /// sends nothing for `body_read` has stalled.
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
        body_read: Duration,
    },
}

impl UpstreamBody {
    pub fn watched(watch: &Arc<BodyWatch>, body_read: Duration) -> Self {
        UpstreamBody::Watched {
            watch: watch.clone(),
            body: None,
            stall: None,
            body_read,
        }
    }
}

/// The error a stalled body ends with: hyper's client then abandons the upstream request.
#[derive(Debug)]
pub struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client's request body stalled")
    }
}

impl std::error::Error for BodyStalled {}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let UpstreamBody::Watched {
            watch,
            body,
            stall,
            body_read,
        } = self.get_mut()
        else {
            return Poll::Ready(None);
        };
        if body.is_none() {
            *body = watch.pending.lock().ok().and_then(|mut p| p.take());
        }
        let Some(inner) = body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => watch.finish(None),
            Poll::Ready(Some(Err(_))) => watch.finish(Some(ABORTED)),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    watch.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if body.as_ref().is_some_and(|b| b.is_end_stream()) {
                    watch.finish(None)
                } else if let Some(stall) = stall {
                    stall
                        .as_mut()
                        .reset(tokio::time::Instant::now() + *body_read);
                }
            }
            Poll::Pending => {
                let stall = stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(*body_read)));
                if stall.as_mut().poll(cx).is_ready() {
                    watch.finish(Some(STALLED));
                    return Poll::Ready(Some(Err(Box::new(BodyStalled))));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, UpstreamBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Watched { watch, body, .. } => match body {
                Some(b) => b.size_hint(),
                None => watch
                    .pending
                    .lock()
                    .ok()
                    .and_then(|p| p.as_ref().map(|b| b.size_hint()))
                    .unwrap_or_default(),
            },
        }
    }
}
