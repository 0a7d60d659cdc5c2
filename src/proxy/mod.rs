//! What happens to one request, one function per phase over one context (`Ctx`): reject ->
//! place (identify, assign) -> upstream request -> forward -> record -> respond. The routing
//! table is loaded once per request and kept to the end, so an in-flight request finishes on
//! the table it started with.

pub mod access_log;
pub mod body;
pub mod forced;
pub mod grpc;
pub mod identity;
pub mod reject;
pub mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use http::header::UPGRADE;
use http::{Request, Response, StatusCode};

use crate::cohort::Cohort;
use crate::control::routing::{Router, RoutingTable};
use crate::http::body::ClientBody;
use crate::http::canned::Canned;
use crate::http::fields::{Fields, RequestHead};
use crate::http::headers::{self, Hop};
use crate::http::hop;
use crate::judge::recorder::{Exchange, Recorder};
use crate::metrics::Metrics;
use crate::proxy::access_log::{AccessLog, Entry};
use crate::proxy::body::ProxyBody;
use crate::proxy::identity::{client_ip, identify, IpText, SourceKind};
use crate::server::{ClientConn, Handler};
use crate::upstream::error::{Blame, ExchangeError};

mod attempt;
mod forward;
use crate::upstream::{direct::DirectClient, h2::H2Client, Pool, UpstreamClient};
use forward::{is_grpc, upstream_request, AsCame, Carrier, Outcome};
use hyper::upgrade::OnUpgrade;

/// What the forwarding step learned, for the access log.
#[derive(Default)]
struct Trace {
    /// The endpoint that answered, in the pool that served (`Ctx::served`).
    endpoint: Option<usize>,
    bytes_in: u64,
    /// Every canary endpoint refused the connect and stable served the request.
    failed_over: bool,
}

pub struct Proxy {
    /// Set when `proxy.access_log` is on.
    pub access_log: Option<Arc<AccessLog>>,
    pub router: Arc<Router>,
    pub recorder: Arc<Recorder>,
    pub metrics: Arc<Metrics>,
    client: UpstreamClient,
    /// gRPC's HTTP/2 connections, one per endpoint.
    h2: H2Client,
    /// This worker's own HTTP/1.1 path for requests without a body (`direct`).
    direct: DirectClient,
}

impl Handler for Proxy {
    const AS_CAME: bool = true;
    type Body = ProxyBody;

    // The pipeline's own future, not one wrapped around it: each layer is a copy per request.
    fn call<'a>(
        self: &'a Arc<Self>,
        req: Request<ClientBody>,
        conn: &'a ClientConn,
        as_came: Option<RequestHead<'a>>,
    ) -> impl std::future::Future<Output = Response<ProxyBody>> + Send + 'a {
        self.handle(req, conn, as_came)
    }
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
            client: crate::upstream::client(t, crate::server::tls::client_config(ca)?),
            h2: H2Client::new(t, crate::server::tls::client_config(ca)?),
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
            return self.serve(req, conn, as_came, |_| {}).await;
        };
        let mut entry = Entry::begin(&req, conn.peer.ip().to_canonical());
        let resp = self
            .serve(req, conn, as_came, |ctx| ctx.log_into(&mut entry))
            .await;
        entry.status = resp.status().as_u16();
        resp.map(|body| log.wrap(body, entry))
    }

    /// The phases in order; `done` sees the finished context (a request refused before
    /// routing has none). A closure, not a returned context: without an access log it is empty
    /// and the context is never moved out.
    async fn serve(
        &self,
        mut req: Request<ClientBody>,
        conn: &ClientConn,
        as_came: Option<RequestHead<'_>>,
        done: impl FnOnce(&Ctx),
    ) -> Response<ProxyBody> {
        let table = self.router.load();
        // A head as it came has no map: its fields are read where they are.
        let fields = match as_came {
            Some(head) => Fields::as_came(head),
            None => Fields::Map(req.headers()),
        };
        if let Some(refused) = self.reject(&req, fields, &table) {
            return refused;
        }
        let mut ctx = place(table, conn, fields);
        let ignore = &ctx.table.config.rollback.ignore_paths;
        ctx.judged = ignore.is_empty() || !ignore.matches(req.uri().path());
        match ctx.forced {
            forced::Forced::No => {}
            forced::Forced::Refused => self.metrics.override_refused.inc(),
            forced::Forced::To(_) => ctx.judged = false,
        }

        let upgrade = tunnel::requested(&req);
        let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let grpc = is_grpc(&req);
        let (mut parts, body) = req.into_parts();
        // Shared bytes, not a copy: only HTTP/2 and absolute-form requests carry one.
        let authority = parts.uri.authority().cloned();
        let hop = Hop {
            peer: &conn.forwarded_for,
            peer_trusted: ctx.peer_trusted,
            tls: conn.tls,
            authority: authority.as_ref(),
            cohort: &ctx.table.cohort_headers[ctx.cohort.index()],
        };
        let carrier = match (grpc, &upgrade) {
            (true, _) => Carrier::H2,
            (false, Some(_)) => Carrier::H1,
            (false, None) => Carrier::Direct {
                raw_head: conn.raw_heads,
                // A head as it came goes to the direct path as it is; its fields reach the
                // map only if it is not taken after all.
                as_came: as_came.map(|head| AsCame { head, hop: &hop }),
            },
        };
        upstream_request(&mut parts, &carrier, &hop, upgrade.as_ref());
        // A dead canary is served by stable (an upgrade is not re-sent: it is never refused
        // silently).
        let failover = ctx.cohort == Cohort::Canary
            && ctx.table.config.canary.failover_to_stable
            && upgrade.is_none();
        let fallback = failover.then(|| &**ctx.table.pool(Cohort::Stable));
        let outcome = self
            .forward(
                &ctx.table,
                &ctx.pool,
                &mut parts,
                body,
                carrier,
                &mut ctx.trace,
                fallback,
            )
            .await;
        ctx.latency = Some(match &outcome {
            Ok((_, l)) | Err((_, l)) => *l,
        });
        let pending = self.record(&ctx, &outcome);
        let mut resp = respond(&ctx, outcome, client_side);
        if let Some(p) = pending {
            grpc::watch(&mut resp, p);
        }
        done(&ctx);
        resp
    }

    /// The refusal of what must not be routed (414, 431, `Host`, framing), if it must not:
    /// never a cohort's request.
    fn reject(
        &self,
        req: &Request<ClientBody>,
        fields: Fields<'_>,
        table: &RoutingTable,
    ) -> Option<Response<ProxyBody>> {
        let (reason, status, msg) = reject::check(req, fields, &table.config.limits).err()?;
        self.metrics.reject(reason);
        Some(Canned::closing(status, msg).response())
    }

    /// Counts the exchange for its cohort (the judge's slice and Prometheus), or, when the
    /// client broke its own request, as a rejection that is no cohort's.
    ///
    /// A gRPC answer without its status in the headers is judged later, from its trailers:
    /// the exchange to record then is returned.
    fn record(&self, ctx: &Ctx, outcome: &Outcome) -> Option<grpc::Pending> {
        let rollback = &ctx.table.config.rollback;
        let (status, latency, error) = match outcome {
            // Served by stable after every canary endpoint refused: the canary's error (a 502
            // it would have been), and nothing of stable's.
            _ if ctx.trace.failed_over => (502, Duration::ZERO, true),
            Ok((resp, latency)) => {
                let status = resp.status().as_u16();
                let mut error = rollback.error_statuses.contains(status);
                let grpc_ok = status == 200 && resp.version() == http::Version::HTTP_2;
                if grpc_ok && grpc::is_grpc_answer(resp.headers()) {
                    match grpc::status_in(resp.headers()) {
                        // Trailers-only: the status is in the headers.
                        Some(s) => error = grpc::is_error(Some(s), rollback.grpc_error_codes),
                        None if !matches!(ctx.forced, forced::Forced::To(_)) => {
                            let e = Exchange {
                                cohort: ctx.cohort,
                                status,
                                latency: *latency,
                                error: false,
                                identity: ctx.identity,
                            };
                            let (codes, m) = (rollback.grpc_error_codes, &ctx.pool.metrics);
                            return Some(grpc::Pending::new(
                                &self.recorder,
                                m,
                                e,
                                codes,
                                ctx.judged,
                            ));
                        }
                        None => {}
                    }
                }
                (status, *latency, error)
            }
            Err((err, latency)) => match err.blame() {
                Blame::Upstream => (err.status().as_u16(), *latency, true),
                Blame::Client => {
                    self.metrics.reject(err.kind());
                    return None;
                }
            },
        };
        if ctx.judged {
            self.recorder.record(&Exchange {
                cohort: ctx.cohort,
                status,
                latency,
                error,
                identity: ctx.identity,
            });
        }
        let m = &ctx.pool.metrics;
        if let forced::Forced::To(_) = ctx.forced {
            // Apart from the cohort's own series: testers are not users.
            m.forced.inc();
            return None;
        }
        m.requests.inc();
        if error {
            m.errors.inc();
        }
        m.latency.observe(latency.as_secs_f64());
        None
    }
}

/// One request as its phases see it: the table it started on (kept to the end, so an
/// in-flight request finishes on it), where it was placed, and what forwarding learned. The
/// access log is written from it after the fact, so no phase writes to the log.
struct Ctx {
    table: Arc<RoutingTable>,
    cohort: Cohort,
    pool: Arc<Pool>,
    /// The identity's digest (its key in the judge's error sets); none for an anonymous client.
    identity: Option<u64>,
    client: IpText,
    source: Option<SourceKind>,
    /// The peer is one of `trusted_proxies`: its forwarded fields stand.
    peer_trusted: bool,
    trace: Trace,
    latency: Option<Duration>,
    /// Outside `rollback.ignore_paths`: the judge sees it (Prometheus counts every request).
    judged: bool,
    /// A tester's forced cohort: counted apart, never judged.
    forced: forced::Forced,
}

impl Ctx {
    /// The cohort whose upstream answered: the request's, or stable after a failover.
    fn served(&self) -> Cohort {
        if self.trace.failed_over {
            Cohort::Stable
        } else {
            self.cohort
        }
    }

    fn log_into(&self, e: &mut Entry) {
        let served = self.table.pool(self.served());
        e.client = self.client.as_str().to_string();
        e.cohort = Some(self.served().as_str());
        e.version = Some(served.version.clone());
        e.identity_source = self.source.map(SourceKind::as_str);
        e.upstream = self
            .trace
            .endpoint
            .and_then(|i| served.endpoints.get(i))
            .map(|ep| ep.url().to_string());
        e.bytes_in = self.trace.bytes_in;
        e.forced = matches!(self.forced, forced::Forced::To(_));
        e.latency_ms = self.latency.map(|l| l.as_secs_f64() * 1000.0);
    }
}

/// Who the client is (its IP, its identity) and which cohort and pool it belongs to.
fn place(table: Arc<RoutingTable>, conn: &ClientConn, fields: Fields<'_>) -> Ctx {
    let peer = conn.peer.ip().to_canonical();
    let trusted = &table.config.proxy.trusted_proxies;
    let client = IpText::new(client_ip(peer, fields, trusted));
    let id = identify(&table.config.canary.identity, fields, &client);
    let (mut cohort, placement) = table.route(id.map(|(_, v)| v));
    let source = id.map(|(kind, _)| kind);
    let forced = match &table.config.canary.forced {
        Some(rule) => forced::forced(rule, fields, &table),
        None => forced::Forced::No,
    };
    if let forced::Forced::To(c) = forced {
        cohort = c;
    }
    Ctx {
        pool: table.pool(cohort).clone(),
        cohort,
        forced,
        identity: placement.map(|p| p.digest),
        client,
        source,
        peer_trusted: !trusted.is_empty() && trusted.iter().any(|n| n.contains(&peer)),
        trace: Trace::default(),
        latency: None,
        judged: true,
        table,
    }
}

/// The client's answer: the upstream's (hop-by-hop fields gone, an agreed upgrade spliced), or
/// ours for a failure, with the cohort and version exposed when configured.
fn respond(ctx: &Ctx, outcome: Outcome, client_side: Option<OnUpgrade>) -> Response<ProxyBody> {
    let mut resp = match outcome {
        Ok((mut resp, _)) => {
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let agreed = resp.headers().get(UPGRADE).cloned();
            hop::strip(resp.headers_mut());
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
        Err((err, _)) => err.canned().response(),
    };
    if ctx.table.config.canary.expose_headers {
        let served = ctx.served();
        let pool = ctx.table.pool(served);
        if let Some(raw) = resp.body_mut().raw_head_mut() {
            // Written with the upstream's head as it came: already rendered, no map.
            raw.ours = Some(pool.exposed_lines.clone());
        } else {
            headers::expose(
                resp.headers_mut(),
                &ctx.table.cohort_headers[served.index()],
                &pool.version_header,
            );
        }
    }
    resp
}
