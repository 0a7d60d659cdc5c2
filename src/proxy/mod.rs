//! The request pipeline, one small step per phase: snapshot -> check -> identify -> assign ->
//! pick endpoint -> forward -> record. The routing table is loaded once per request and kept
//! to the end, so an in-flight request finishes on the table it started with.

pub mod access_log;
pub mod body;
pub mod identity;
pub mod reject;
pub mod tunnel;

use std::sync::Arc;

use http::header::{TE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};

use crate::control::routing::Router;
use crate::http::body::ClientBody;
use crate::http::canned::Canned;
use crate::http::fields::{Fields, RequestHead};
use crate::http::headers::{self, Hop};
use crate::judge::recorder::{Exchange, Recorder};
use crate::metrics::Metrics;
use crate::proxy::access_log::{AccessLog, Entry};
use crate::proxy::body::ProxyBody;
use crate::proxy::identity::{client_ip, identify, IpText};
use crate::server::ClientConn;
use crate::upstream::direct::DirectClient;
use crate::upstream::error::{Blame, ExchangeError};

mod forward;
use crate::upstream::{Pool, UpstreamClient};
use forward::{AsCame, Carrier};

/// What the forwarding step learned, for the access log.
#[derive(Default)]
struct Trace {
    endpoint: Option<usize>,
    bytes_in: u64,
}

pub struct Proxy {
    /// Set when `proxy.access_log` is on.
    pub access_log: Option<Arc<AccessLog>>,
    pub router: Arc<Router>,
    pub recorder: Arc<Recorder>,
    pub metrics: Arc<Metrics>,
    client: UpstreamClient,
    h2_client: UpstreamClient,
    /// This worker's own HTTP/1.1 path for requests without a body (`direct`).
    direct: DirectClient,
}

impl Proxy {
    pub fn new(
        router: Arc<Router>,
        recorder: Arc<Recorder>,
        metrics: Arc<Metrics>,
        config: &crate::config::Config,
    ) -> Result<Self, String> {
        let ca = config.proxy.upstream_ca_file.as_deref();
        let t = &config.timeouts;
        Ok(Proxy {
            access_log: None,
            router,
            recorder,
            metrics,
            client: crate::upstream::client(t, crate::server::tls::client_config(ca)?, false),
            h2_client: crate::upstream::client(t, crate::server::tls::client_config(ca)?, true),
            direct: DirectClient::new(t.connect, t.idle),
        })
    }

    /// `as_came`: the request head as our HTTP/1 server read it (`h1::request::Head::raw`).
    pub async fn handle(
        &self,
        req: Request<ClientBody>,
        conn: &ClientConn,
        as_came: Option<RequestHead<'_>>,
    ) -> Response<ProxyBody> {
        let Some(log) = &self.access_log else {
            // Not boxed here: hyper's server boxes the whole call (it keeps it for the
            // connection's life); ours holds it only while it runs.
            return self.serve(req, conn, as_came, None).await;
        };
        let mut entry = Entry {
            time: crate::control::now_rfc3339(),
            client: conn.peer.ip().to_canonical().to_string(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            status: 0,
            cohort: None,
            version: None,
            upstream: None,
            latency_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            identity_source: None,
        };
        let resp = self.serve(req, conn, as_came, Some(&mut entry)).await;
        entry.status = resp.status().as_u16();
        resp.map(|body| log.wrap(body, entry))
    }

    async fn serve(
        &self,
        mut req: Request<ClientBody>,
        conn: &ClientConn,
        as_came: Option<RequestHead<'_>>,
        mut log: Option<&mut Entry>,
    ) -> Response<ProxyBody> {
        let table = self.router.load();
        // A head as it came has no map: its fields are read where they are.
        let fields = match as_came {
            Some(head) => Fields::as_came(head),
            None => Fields::Map(req.headers()),
        };
        if let Err((reason, status, msg)) =
            crate::proxy::reject::check(&req, fields, &table.config.limits)
        {
            self.metrics.reject(reason);
            return Canned::closing(status, msg).response();
        }

        let peer = conn.peer.ip().to_canonical();
        let trusted = &table.config.proxy.trusted_proxies;
        let client = client_ip(peer, fields, trusted);
        let ip = IpText::new(client);
        let id = identify(&table.config.canary.identity, fields, &ip);
        let (cohort, placement) = table.route(id.map(|(_, v)| v));
        let pool = table.pool(cohort).clone();
        if let Some(e) = log.as_deref_mut() {
            e.client = ip.as_str().to_string();
            e.cohort = Some(cohort.as_str());
            e.version = Some(pool.version.clone());
            e.identity_source = id.map(|(kind, _)| kind.as_str());
        }

        let upgrade = tunnel::requested(&req);
        let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let grpc = is_grpc(&req);
        let (mut parts, body) = req.into_parts();
        // Shared bytes, not a copy: only HTTP/2 and absolute-form requests carry one.
        let authority = parts.uri.authority().cloned();
        let te_trailers = parts
            .headers
            .get(TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        let hop = Hop {
            peer: &conn.forwarded_for,
            peer_trusted: !trusted.is_empty() && trusted.iter().any(|n| n.contains(&peer)),
            tls: conn.tls,
            authority: authority.as_ref(),
            cohort: &table.cohort_headers[cohort.index()],
        };
        // Upgrades and gRPC need hyper's client; so do bodies (see `forward`). A head as it
        // came goes to the direct path as it is; its fields reach the map only if it is not
        // taken after all.
        let as_came = as_came
            .filter(|_| !grpc && upgrade.is_none())
            .map(|head| AsCame { head, hop: &hop });
        if as_came.is_none() {
            headers::strip_hop_by_hop(&mut parts.headers);
            headers::to_upstream(&mut parts.headers, &hop);
        }
        if let Some(u) = &upgrade {
            tunnel::ask(&mut parts.headers, u);
        }
        if grpc && te_trailers {
            // gRPC needs it end to end, and it is the one TE HTTP/2 allows.
            parts
                .headers
                .insert(TE, HeaderValue::from_static("trailers"));
        }

        let mut trace = Trace::default();
        let carrier = match (grpc, &upgrade) {
            (true, _) => Carrier::H2,
            (false, Some(_)) => Carrier::H1,
            (false, None) => Carrier::Direct {
                raw_head: conn.raw_heads,
                as_came,
            },
        };
        let outcome = self
            .forward(&table, &pool, &mut parts, body, carrier, &mut trace)
            .await;
        if let Some(e) = log {
            e.upstream = trace.endpoint.map(|i| pool.endpoints[i].url().to_string());
            e.bytes_in = trace.bytes_in;
            e.latency_ms = Some(match &outcome {
                Ok((_, l)) | Err((_, l)) => l.as_secs_f64() * 1000.0,
            });
        }
        let identity = placement.map(|p| p.digest);
        let record = |status: u16, latency, error| {
            let ex = Exchange {
                cohort,
                status,
                latency,
                error,
                identity,
            };
            self.observe(&pool, ex)
        };
        let mut resp = match outcome {
            Ok((mut resp, latency)) => {
                let status = resp.status().as_u16();
                record(
                    status,
                    latency,
                    table.config.rollback.error_statuses.contains(status),
                );
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                let agreed = resp.headers().get(UPGRADE).cloned();
                headers::strip_hop_by_hop(resp.headers_mut());
                match (switching, client_side, agreed) {
                    (true, Some(client_side), Some(agreed)) => {
                        tokio::spawn(tunnel::splice(client_side, hyper::upgrade::on(&mut resp)));
                        tunnel::ask(resp.headers_mut(), &agreed);
                        resp.map(|_| ProxyBody::empty())
                    }
                    (true, _, _) => ExchangeError::Protocol.canned().response(),
                    _ => resp,
                }
            }
            Err((err, latency)) => {
                match err.blame() {
                    Blame::Upstream => record(err.status().as_u16(), latency, true),
                    Blame::Client => self.metrics.reject(err.kind()),
                }
                err.canned().response()
            }
        };
        if table.config.canary.expose_headers {
            if let Some(raw) = resp.body_mut().raw_head_mut() {
                // Written with the upstream's head as it came: already rendered, no map.
                raw.ours = Some(pool.exposed_lines.clone());
            } else {
                headers::expose(
                    resp.headers_mut(),
                    &table.cohort_headers[cohort.index()],
                    &pool.version_header,
                );
            }
        }
        resp
    }

    fn observe(&self, pool: &Pool, ex: Exchange) {
        self.recorder.record(&ex);
        pool.metrics.requests.inc();
        if ex.error {
            pool.metrics.errors.inc();
        }
        pool.metrics.latency.observe(ex.latency.as_secs_f64());
    }
}

/// A gRPC call: HTTP/2 with a gRPC content type.
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
