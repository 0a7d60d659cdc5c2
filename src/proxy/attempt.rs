//! One attempt of a request with a body, an upgrade, gRPC or to an `https://` endpoint — a body
//! to a plain endpoint on the direct path, the rest through hyper's clients:
//! the endpoint's target, the request timeout from the body handed over in full, and how a
//! failed attempt is counted — for every carrier, `failed` backs a refusing endpoint off — and,
//! after a refused first attempt of one with a body, its retry and failover (`recover`).

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Uri, Version};

use super::forward::{copy_head, refused, retry_on, untouched, AsCame, Carrier, Outcome};
use super::{Proxy, Trace};
use crate::control::routing::RoutingTable;
use crate::proxy::body::ProxyBody;
use crate::upstream::body::{BodyWatch, UpstreamBody};
use crate::upstream::error::{Blame, ExchangeError};
use crate::upstream::Pool;

impl Proxy {
    pub(super) async fn attempt(
        &self,
        table: &RoutingTable,
        pool: &Pool,
        i: usize,
        mut parts: http::request::Parts,
        watch: Option<&Arc<BodyWatch>>,
        carrier: Carrier<'_>,
    ) -> Outcome {
        let endpoint = &pool.endpoints[i].config;
        let timeout = table.config.timeouts.request;
        // gRPC goes over HTTP/2 (h2c or h2 by ALPN): it needs trailers and streams; the rest
        // over HTTP/1.1.
        let grpc = matches!(carrier, Carrier::H2);
        let (raw, as_came) = match carrier {
            Carrier::Direct { raw_head, as_came } => (raw_head, as_came),
            _ => (false, None),
        };
        // A body to a plain endpoint takes the direct path, which writes the target as it came.
        if let (Some(w), false) = (watch, grpc) {
            if body_goes_direct(endpoint, &parts) {
                return self
                    .attempt_body_direct(table, pool, i, &parts, w, raw, as_came)
                    .await;
            }
        }
        let authority = if grpc {
            // RFC 9113 §8.3.1: `:authority` is the client's Host, and no `host` beside it.
            let host = parts.headers.remove(http::header::HOST);
            host.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| endpoint.authority.clone())
        } else {
            endpoint.authority.clone()
        };
        // The target is reused as it came (its bytes are shared, not copied); only the scheme and
        // authority change.
        let mut target = std::mem::take(&mut parts.uri).into_parts();
        target.scheme = Some(endpoint.scheme.clone());
        target.authority = Some(authority);
        if target.path_and_query.is_none() {
            target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = match Uri::from_parts(target) {
            Ok(u) => u,
            Err(_) => return Err((ExchangeError::Protocol, std::time::Duration::ZERO)),
        };
        parts.version = if grpc {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let body = match watch {
            Some(w) => UpstreamBody::watched(w, table.config.timeouts.body_read),
            None => UpstreamBody::Empty,
        };
        let started = Instant::now();
        if let Some(a) = as_came {
            a.into_map(&mut parts);
        }
        let req = Request::from_parts(parts, body);
        // Boxed: hyper's client futures are large (kilobytes), and inline they would make every
        // attempt as large, the direct path's too, and every move of one a copy of that size.
        let mut pending = Box::pin(async {
            if grpc {
                let r = self.h2.request(endpoint, req).await;
                r.map(|resp| resp.map(ProxyBody::Upstream)).map_err(|e| {
                    (
                        ExchangeError::classify_h2(&e, client_failed(watch)),
                        e.to_string(),
                    )
                })
            } else {
                let r = self.client.request(req).await;
                r.map(|resp| resp.map(ProxyBody::Upstream)).map_err(|e| {
                    (
                        ExchangeError::classify(&e, client_failed(watch)),
                        e.to_string(),
                    )
                })
            }
        });
        self.answered(pool, i, watch, pending.as_mut(), started, timeout)
            .await
    }

    /// One attempt of a request with a body on the direct path (`body_goes_direct`). `parts` by
    /// reference: the target and method are read where they are, and the head as it came (if
    /// it did) is what is written.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt_body_direct(
        &self,
        table: &RoutingTable,
        pool: &Pool,
        i: usize,
        parts: &http::request::Parts,
        watch: &Arc<BodyWatch>,
        raw: bool,
        as_came: Option<AsCame<'_>>,
    ) -> Outcome {
        let endpoint = &pool.endpoints[i].config;
        let timeout = table.config.timeouts.request;
        let body = UpstreamBody::watched(watch, table.config.timeouts.body_read);
        let mut body = std::pin::pin!(body);
        let as_came = as_came.map(|a| (&a.head.bytes[..], a.head.spans, a.hop));
        let started = Instant::now();
        // Pinned where it is made: the exchange's state is large, and moving it costs a copy.
        let sending = std::pin::pin!(async {
            let r = self.direct.request_with_body(
                &endpoint.authority,
                parts,
                started,
                body.as_mut(),
                timeout,
                (raw, as_came),
            );
            r.await
                .map(|resp| resp.map(ProxyBody::Direct))
                .map_err(|f| {
                    let kind = client_failed(Some(watch)).map_or(f.kind, ExchangeError::client);
                    (kind, f.detail)
                })
        });
        // The direct path keeps the request timeout itself (its connection's timer, from the
        // body's end): no second timer, no wait on the body's end here.
        let r = sending.await;
        let sent = watch.sent_at().unwrap_or(started);
        self.settle(pool, i, r, sent)
    }

    /// After a first attempt at `pool`: the one retry in a pool when it was refused and nothing
    /// of the body had left (`retry_on`), and, when every endpoint refused, the fallback pool
    /// (with its own one retry).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn recover(
        &self,
        table: &RoutingTable,
        mut pool: &Pool,
        mut at: usize,
        mut result: Outcome,
        spare: &http::request::Parts,
        w: Option<&std::sync::Arc<BodyWatch>>,
        carrier: Carrier<'_>,
        trace: &mut Trace,
        mut fallback: Option<&Pool>,
    ) -> Outcome {
        let mut may_retry = true;
        loop {
            let retry = may_retry
                .then(|| retry_on(pool, at, &result, untouched(w), trace))
                .flatten();
            at = match retry {
                Some(second) => {
                    may_retry = false;
                    second
                }
                None => match fallback.take() {
                    Some(stable) if untouched(w) && refused(&result) => {
                        trace.failed_over = true;
                        (pool, may_retry) = (stable, true);
                        let i = stable.pick(None);
                        trace.endpoint = Some(i);
                        i
                    }
                    _ => return result,
                },
            };
            result = self
                .attempt(table, pool, at, copy_head(spare), w, carrier)
                .await;
        }
    }

    /// Waits for `pending`'s answer: the request timeout and the latency start once the body
    /// is handed over in full.
    async fn answered(
        &self,
        pool: &Pool,
        i: usize,
        watch: Option<&Arc<BodyWatch>>,
        pending: std::pin::Pin<
            &mut impl std::future::Future<Output = Result<Response<ProxyBody>, (ExchangeError, String)>>,
        >,
        started: Instant,
        timeout: std::time::Duration,
    ) -> Outcome {
        let mut pending = pending;
        if let Some(w) = watch {
            tokio::select! {
                biased;
                r = &mut pending => return self.settle(pool, i, r, w.sent_at().unwrap_or(started)),
                _ = w.finished() => {}
            }
        }
        let sent = watch.and_then(|w| w.sent_at()).unwrap_or(started);
        match tokio::time::timeout_at((sent + timeout).into(), pending).await {
            Ok(r) => self.settle(pool, i, r, sent),
            Err(_) => Err(self.timed_out(pool, sent)),
        }
    }

    fn timed_out(&self, pool: &Pool, sent: Instant) -> (ExchangeError, std::time::Duration) {
        self.metrics
            .upstream_failure(pool.cohort.as_str(), ExchangeError::Timeout.kind());
        (ExchangeError::Timeout, sent.elapsed())
    }

    /// Counts a failed attempt where it belongs: a refused connect backs the endpoint off, an
    /// upstream's failure is the cohort's.
    pub(super) fn failed(
        &self,
        pool: &Pool,
        i: usize,
        err: ExchangeError,
        detail: &dyn std::fmt::Display,
        latency: std::time::Duration,
    ) -> (ExchangeError, std::time::Duration) {
        if err == ExchangeError::Connect {
            pool.mark_failed(i);
        }
        if err.blame() == Blame::Upstream {
            self.metrics
                .upstream_failure(pool.cohort.as_str(), err.kind());
        }
        tracing::debug!(cohort = %pool.cohort, endpoint = pool.endpoints[i].url(), error = %detail, "upstream attempt failed");
        (err, latency)
    }

    fn settle(
        &self,
        pool: &Pool,
        i: usize,
        r: Result<Response<ProxyBody>, (ExchangeError, String)>,
        sent: Instant,
    ) -> Outcome {
        let latency = sent.elapsed();
        match r {
            Ok(resp) => {
                pool.mark_ok(i);
                Ok((resp, latency))
            }
            Err((err, detail)) => Err(self.failed(pool, i, err, &detail, latency)),
        }
    }
}

/// Whether a request with a body to `endpoint` takes the direct path: a plain endpoint, and no
/// upgrade (that is a tunnel).
pub(super) fn body_goes_direct(
    endpoint: &crate::config::EndpointConfig,
    parts: &http::request::Parts,
) -> bool {
    endpoint.scheme == http::uri::Scheme::HTTP && !parts.headers.contains_key(http::header::UPGRADE)
}

/// Whether our request-body stream saw the client fail (then a failed exchange is the
/// client's). Read when the exchange has failed, not before.
fn client_failed(watch: Option<&Arc<BodyWatch>>) -> Option<crate::upstream::body::ClientFailure> {
    watch.and_then(|w| w.client_failed())
}
