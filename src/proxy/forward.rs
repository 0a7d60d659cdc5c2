//! Forwarding one request to an endpoint of its pool: which client carries it (the direct
//! path, or hyper's HTTP/1.1 or HTTP/2 client), the one retry of a refused connect on another
//! endpoint (`retry_on`, for every carrier), the request timeout, and how a failed attempt is
//! counted.

use std::time::Instant;

use http::header::TE;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Body;

use super::{tunnel, Proxy, Trace};
use crate::control::routing::RoutingTable;
use crate::http::body::ClientBody;
use crate::http::fields::RequestHead;
use crate::http::headers::{self, Hop};
use crate::http::hop;
use crate::proxy::body::ProxyBody;
use crate::upstream::body::BodyWatch;
use crate::upstream::direct::DirectClient;
use crate::upstream::error::ExchangeError;
use crate::upstream::Pool;

/// Which client carries an exchange upstream.
#[derive(Clone, Copy)]
pub(super) enum Carrier<'a> {
    /// hyper's HTTP/1.1 client: requests with a body, upgrades, `https://` endpoints.
    H1,
    /// hyper's HTTP/2 client: gRPC.
    H2,
    /// Our own HTTP/1.1 path, where the request and endpoint allow it (`direct`).
    /// `raw_head`: the client's server writes the upstream's head as it came (`h1`).
    /// `as_came`: the client's head as it came, its hop-by-hop and forwarded fields not yet
    /// dealt with in the map: the direct path writes the upstream head from it.
    Direct {
        raw_head: bool,
        as_came: Option<AsCame<'a>>,
    },
}

/// A request head as our HTTP/1 server read it, and what its forwarded fields need.
#[derive(Clone, Copy)]
pub(super) struct AsCame<'a> {
    pub head: RequestHead<'a>,
    pub hop: &'a Hop<'a>,
}

impl AsCame<'_> {
    /// Puts the head's fields into the map (our HTTP/1 server built none), less hop-by-hop
    /// ones, with the forwarded ones: for a client that needs a map.
    pub(super) fn into_map(self, parts: &mut http::request::Parts) {
        parts.headers = crate::http::fields::to_map(self.head.bytes, self.head.spans);
        hop::strip(&mut parts.headers);
        headers::to_upstream(&mut parts.headers, self.hop);
    }
}

/// A response whose head came raw has an empty map, which the proxy's own headers then fill:
/// the request's map, done with and cleared, serves without an allocation of its own.
fn lend_map(result: &mut Outcome, parts: &mut http::request::Parts) {
    if let Ok((resp, _)) = result {
        if resp.body().raw_head().is_some() && resp.headers().is_empty() {
            let mut map = std::mem::take(&mut parts.headers);
            map.clear();
            *resp.headers_mut() = map;
        }
    }
}

/// The request's parts, taken out for a client that needs them owned (an empty set left).
fn take_parts(parts: &mut http::request::Parts) -> http::request::Parts {
    std::mem::replace(parts, Request::new(()).into_parts().0)
}

/// The one retry, for every carrier: a refused connect, while nothing of the request has left,
/// goes once to another endpoint of the same pool. The endpoint it goes to, or `None` when the
/// first attempt's result stands.
pub(super) fn retry_on(
    pool: &Pool,
    first: usize,
    result: &Outcome,
    sent_nothing: bool,
    trace: &mut Trace,
) -> Option<usize> {
    if !refused(result) || !sent_nothing || pool.endpoints.len() < 2 {
        return None;
    }
    let second = pool.pick(Some(first));
    trace.endpoint = Some(second);
    Some(second)
}

/// A copy of a request's method, target and fields, for a second attempt elsewhere.
pub(super) fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut copy = Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.headers = parts.headers.clone();
    copy
}

/// Whether no byte of the request body has been sent upstream (a request without one: none).
pub(super) fn untouched(watch: Option<&std::sync::Arc<BodyWatch>>) -> bool {
    watch.is_none_or(|w| w.untouched())
}

/// Whether an attempt's connect was refused (nothing of the request left).
pub(super) fn refused(result: &Outcome) -> bool {
    matches!(result, Err((ExchangeError::Connect, _)))
}

/// An attempt's response and latency, or why it failed and after how long.
pub(super) type Outcome =
    Result<(Response<ProxyBody>, std::time::Duration), (ExchangeError, std::time::Duration)>;

impl Proxy {
    /// Sends the request to an endpoint of `pool`; a refused connect is retried once on another
    /// endpoint of the same pool, but only while no byte of the body has been sent.
    ///
    /// `parts` by reference: the direct path only reads them, and this future is kept small
    /// (it is moved into place on every request); the hyper path takes them out.
    ///
    /// `fallback`: the pool that serves a request every endpoint of `pool` refused before
    /// anything was sent (the canary's failover to stable); `trace.failed_over` then says so.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &self,
        table: &RoutingTable,
        pool: &Pool,
        parts: &mut http::request::Parts,
        body: ClientBody,
        carrier: Carrier<'_>,
        trace: &mut Trace,
        fallback: Option<&Pool>,
    ) -> Outcome {
        let first = pool.pick(None);
        trace.endpoint = Some(first);
        // A request with a body goes through `attempt` (its stall and abort watch, its retry
        // rules), which takes the direct path too where it can.
        let (raw, as_came) = match carrier {
            Carrier::Direct { raw_head, as_came } => (raw_head, as_came),
            _ => (false, None),
        };
        let direct = matches!(carrier, Carrier::Direct { .. }) && body.is_end_stream();
        // A body on the direct path: inline, as a body-less request (boxed, hyper's path would
        // be an allocation of kilobytes per request); the rare retry is boxed instead.
        if matches!(carrier, Carrier::Direct { .. })
            && !body.is_end_stream()
            && super::attempt::body_goes_direct(&pool.endpoints[first].config, parts)
        {
            let watch = BodyWatch::new(body);
            let mut result = self
                .attempt_body_direct(table, pool, first, parts, &watch, raw, as_came)
                .await;
            if refused(&result) {
                // Nothing of the body left: another endpoint (or stable) may take it.
                let spare = copy_head(parts);
                let w = Some(&watch);
                let again = self.recover(
                    table, pool, first, result, &spare, w, carrier, trace, fallback,
                );
                result = Box::pin(again).await;
            }
            lend_map(&mut result, parts);
            trace.bytes_in = watch.bytes_in();
            return result;
        }
        if !(direct && self.goes_direct(pool, first, parts)) {
            // Boxed: the common path's future (kept by hyper for the connection's whole life)
            // stays small.
            let carrier = match carrier {
                // A body keeps its carrier: `attempt` takes the direct path where the endpoint
                // allows, with the head as it came (its map is built only for hyper's client).
                Carrier::Direct { .. } if !body.is_end_stream() => carrier,
                Carrier::Direct { .. } => Carrier::H1,
                c => c,
            };
            if let (Some(a), false) = (as_came, matches!(carrier, Carrier::Direct { .. })) {
                a.into_map(parts);
            }
            let parts = take_parts(parts);
            let hyper =
                self.forward_hyper(table, pool, first, parts, body, carrier, trace, fallback);
            return Box::pin(hyper).await;
        }
        let mut result = self
            .attempt_direct(table, pool, first, parts, raw, as_came)
            .await;
        // A body-less request has sent nothing when its connect was refused.
        let Some(second) = retry_on(pool, first, &result, true, trace) else {
            if let (Some(stable), true) = (fallback, refused(&result)) {
                return self
                    .fail_over(table, stable, parts, body, carrier, trace)
                    .await;
            }
            lend_map(&mut result, parts);
            return result;
        };
        // The other endpoint gets the same parts, no copy needed.
        if self.goes_direct(pool, second, parts) {
            let mut result = self
                .attempt_direct(table, pool, second, parts, raw, as_came)
                .await;
            if let (Some(stable), true) = (fallback, refused(&result)) {
                return self
                    .fail_over(table, stable, parts, body, carrier, trace)
                    .await;
            }
            lend_map(&mut result, parts);
            return result;
        }
        if let Some(a) = as_came {
            a.into_map(parts);
        }
        let spare = fallback.map(|_| copy_head(parts));
        let attempt = self.attempt(table, pool, second, take_parts(parts), None, Carrier::H1);
        let result = Box::pin(attempt).await;
        match (fallback, spare) {
            (Some(stable), Some(mut parts)) if refused(&result) => {
                self.fail_over(table, stable, &mut parts, body, carrier, trace)
                    .await
            }
            _ => result,
        }
    }

    /// The failover of a body-less request: the same parts to the fallback pool, as a request
    /// of its own (it may retry there, never fail over again).
    async fn fail_over(
        &self,
        table: &RoutingTable,
        stable: &Pool,
        parts: &mut http::request::Parts,
        body: ClientBody,
        carrier: Carrier<'_>,
        trace: &mut Trace,
    ) -> Outcome {
        trace.failed_over = true;
        let again = self.forward(table, stable, parts, body, carrier, trace, None);
        Box::pin(again).await
    }

    fn goes_direct(&self, pool: &Pool, i: usize, parts: &http::request::Parts) -> bool {
        DirectClient::serves(&parts.method, &pool.endpoints[i].config.scheme)
    }

    async fn attempt_direct(
        &self,
        table: &RoutingTable,
        pool: &Pool,
        i: usize,
        parts: &http::request::Parts,
        raw: bool,
        as_came: Option<AsCame<'_>>,
    ) -> Outcome {
        let endpoint = &pool.endpoints[i].config;
        let started = Instant::now();
        // The direct path keeps the deadline itself (a timer per upstream connection).
        let deadline = started + table.config.timeouts.request;
        match self
            .direct
            .request(
                &endpoint.authority,
                parts,
                started,
                deadline,
                raw,
                as_came.map(|a| (&a.head.bytes[..], a.head.spans, a.hop)),
            )
            .await
        {
            Ok(resp) => {
                pool.mark_ok(i);
                Ok((resp.map(ProxyBody::Direct), started.elapsed()))
            }
            Err(f) => Err(self.failed(pool, i, f.kind, &f.detail, started.elapsed())),
        }
    }

    /// `forward` through hyper's clients: requests with a body, upgrades, gRPC, `https://`.
    #[allow(clippy::too_many_arguments)]
    async fn forward_hyper(
        &self,
        table: &RoutingTable,
        pool: &Pool,
        first: usize,
        parts: http::request::Parts,
        body: ClientBody,
        carrier: Carrier<'_>,
        trace: &mut Trace,
        fallback: Option<&Pool>,
    ) -> Outcome {
        let watch = body.into_stream().map(BodyWatch::new);
        let w = watch.as_ref();
        let can_retry = pool.endpoints.len() > 1 || fallback.is_some();
        // Kept only where a retry is possible: a clone per request is not free.
        let spare = can_retry.then(|| copy_head(&parts));
        let mut result = self.attempt(table, pool, first, parts, w, carrier).await;
        if let Some(spare) = &spare {
            result = self
                .recover(
                    table, pool, first, result, spare, w, carrier, trace, fallback,
                )
                .await;
        }
        trace.bytes_in = watch.map_or(0, |w| w.bytes_in());
        result
    }
}

/// The request's fields as the upstream gets them: hop-by-hop ones gone, forwarded ones set
/// (for a head as it came, the direct path does both as it writes), an upgrade asked for, and
/// gRPC's `TE: trailers` kept.
pub(super) fn upstream_request(
    parts: &mut http::request::Parts,
    carrier: &Carrier<'_>,
    hop: &Hop<'_>,
    upgrade: Option<&HeaderValue>,
) {
    let te_trailers = parts
        .headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !matches!(
        carrier,
        Carrier::Direct {
            as_came: Some(_),
            ..
        }
    ) {
        hop::strip(&mut parts.headers);
        headers::to_upstream(&mut parts.headers, hop);
    }
    if let Some(u) = upgrade {
        tunnel::ask(&mut parts.headers, u);
    }
    if matches!(carrier, Carrier::H2) && te_trailers {
        // gRPC needs it end to end, and it is the one TE HTTP/2 allows.
        parts
            .headers
            .insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// A gRPC call: HTTP/2 with a gRPC content type.
pub(super) fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
