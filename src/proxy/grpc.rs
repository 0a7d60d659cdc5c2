//! gRPC calls judged by their `grpc-status`, not by the HTTP status (a failing call is HTTP 200
//! with a non-zero status in the trailers). A trailers-only answer carries it in its headers
//! and is judged at once; otherwise the answer's body is watched and the call judged when its
//! trailers pass (or when it ends without a status: an error). Latency stays the time to the
//! response headers. A client that goes away first judges nothing: it is not the cohort's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http::body::BoxError;
use crate::judge::recorder::{Exchange, Recorder};
use crate::metrics::CohortMetrics;
use crate::proxy::body::ProxyBody;

/// A gRPC answer: HTTP/2 with a gRPC content type.
pub fn is_grpc_answer(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` in these fields, if any (a malformed one reads as UNKNOWN, 2).
pub fn status_in(fields: &HeaderMap) -> Option<u32> {
    let v = fields.get("grpc-status")?;
    Some(
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(2),
    )
}

/// Whether a call that ended with `status` (`None`: no status at all) is an error.
pub fn is_error(status: Option<u32>, codes: u32) -> bool {
    match status {
        Some(s) if s <= 16 => codes & (1 << s) != 0,
        _ => true,
    }
}

/// What the call will be recorded as once its status is known.
pub struct Pending {
    pub recorder: Arc<Recorder>,
    pub metrics: CohortMetrics,
    pub exchange: Exchange,
    pub codes: u32,
    /// The judge sees it (not an ignored path).
    pub judged: bool,
}

impl Pending {
    pub fn new(
        recorder: &Arc<Recorder>,
        metrics: &CohortMetrics,
        exchange: Exchange,
        codes: u32,
        judged: bool,
    ) -> Self {
        Pending {
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            exchange,
            codes,
            judged,
        }
    }

    /// Records the call with its verdict, in the judge's slice and in Prometheus.
    pub fn settle(self, status: Option<u32>) {
        let mut e = self.exchange;
        e.error = is_error(status, self.codes);
        if self.judged {
            self.recorder.record(&e);
        }
        self.metrics.requests.inc();
        if e.error {
            self.metrics.errors.inc();
        }
        self.metrics.latency.observe(e.latency.as_secs_f64());
    }
}

/// Puts the answer's body under watch: the call is judged when its trailers pass.
pub fn watch(resp: &mut http::Response<ProxyBody>, pending: Pending) {
    let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
    *resp.body_mut() = match body {
        ProxyBody::Upstream(inner) => ProxyBody::Grpc(Box::new(Watched::new(inner, pending))),
        other => {
            pending.settle(None);
            other
        }
    };
}

/// The upstream's gRPC body, passed through frame by frame; its trailers settle the call.
pub struct Watched {
    inner: Incoming,
    pending: Option<Pending>,
}

impl Watched {
    pub fn new(inner: Incoming, pending: Pending) -> Self {
        Watched {
            inner,
            pending: Some(pending),
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(p) = self.pending.take() {
                        p.settle(status_in(trailers));
                    }
                }
            }
            // The upstream broke the stream, or ended it without a status: the cohort's error.
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                if let Some(p) = self.pending.take() {
                    p.settle(None);
                }
            }
            Poll::Pending => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    pub fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
