//! The direct path: plain HTTP/1.1 to an `http://` endpoint, driven inside the client
//! connection's own task (a request with a body: `with_body`).
//!
//! hyper's pooled client runs every upstream connection in a task of its own and talks to it
//! through channels: a request crosses two tasks and four queues, and its response body a
//! fifth. Here the request head is written and the response read by the task that serves the
//! client; the response body is read from the upstream socket as the client's connection asks
//! for it, and the connection goes back to this worker's idle set when the body ends. Upgrades,
//! gRPC and `https://` endpoints keep hyper's clients (see `upstream`).

mod body;
pub mod codec;
pub mod forwarded;
mod idle;
mod read;
mod send;
mod with_body;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::uri::Authority;
use http::{HeaderMap, Method, Response, Version};
use tokio::net::TcpStream;
use tokio::time::Sleep;

pub use body::DirectBody;
use idle::{Home, IdleSet};
use read::{answer, read_head, still_open};

use crate::upstream::error::ExchangeError;

/// Why a direct exchange failed, already in the proxy's terms.
#[derive(Debug)]
pub struct Failure {
    pub kind: ExchangeError,
    pub detail: String,
}

impl Failure {
    fn new(kind: ExchangeError, detail: impl std::fmt::Display) -> Self {
        Failure {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// An upstream connection and its read buffer (which may hold the start of a body).
pub struct UpstreamConn {
    stream: TcpStream,
    buf: BytesMut,
    /// The request timeout, kept with the connection and moved on per exchange: a later deadline
    /// only updates the registered timer, where a fresh timer per request went through the
    /// runtime's timer wheel twice (docs/PERFORMANCE.md). An idle connection's timer may
    /// still wake the last task that used it once, when its old deadline passes; that task
    /// then finds nothing to do.
    timer: Pin<Box<Sleep>>,
}

/// This worker's direct HTTP/1.1 client.
pub struct DirectClient {
    idle: Arc<IdleSet>,
    connect_timeout: Duration,
}

impl DirectClient {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        DirectClient {
            idle: Arc::new(IdleSet::new(idle_timeout)),
            connect_timeout,
        }
    }

    /// Whether a request may take the direct path: no body, no upgrade, not gRPC (the caller
    /// knows those), and an `http://` endpoint.
    pub fn serves(method: &Method, scheme: &http::uri::Scheme) -> bool {
        *scheme == http::uri::Scheme::HTTP && *method != Method::CONNECT
    }

    /// Sends a request without a body and reads the response head by `deadline` (else a
    /// `Timeout` failure); the body follows as the returned response's is read.
    ///
    /// A pooled connection the upstream closed while it idled fails at once (EOF or reset before
    /// a byte of the answer): an idempotent request is then sent again, once, on a fresh
    /// connection, as NGINX does. Others check the pooled connection before using it.
    pub async fn request(
        &self,
        authority: &Authority,
        parts: &http::request::Parts,
        started: Instant,
        deadline: Instant,
        raw: bool,
        as_came: Option<(
            &[u8],
            &[crate::http::fields::Span],
            &crate::http::headers::Hop<'_>,
        )>,
    ) -> Result<Response<DirectBody>, Failure> {
        let method = &parts.method;
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let ask = Ask {
            method,
            target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &parts.headers,
            authority: authority.as_str(),
            head_request: *method == Method::HEAD,
            raw,
            deadline,
            as_came,
        };
        let (mut pooled, slot) = self.idle.checkout(authority, started);
        if !idempotent {
            pooled = match pooled {
                Some(c) => still_open(c).await,
                None => None,
            };
        }
        let (conn, parsed) = match pooled {
            Some(conn) => match exchange(conn, &ask).await {
                Ok(done) => done,
                Err(Sent::Nothing(e)) if idempotent => {
                    tracing::trace!(error = %e, "pooled upstream connection was closed; retrying on a new one");
                    Box::pin(self.fresh(authority, &ask)).await?
                }
                Err(e) => return Err(e.into_failure()),
            },
            // Boxed: connecting (name lookup included) is rare, and its future is large.
            None => Box::pin(self.fresh(authority, &ask)).await?,
        };
        let home = parsed
            .keep_alive
            .then(|| Home::new(self.idle.clone(), slot, started));
        let mut resp = Response::new(DirectBody::new(conn, parsed.framing, home, parsed.raw));
        *resp.status_mut() = parsed.status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = parsed.headers;
        Ok(resp)
    }

    /// A new connection and the exchange on it, all by the request's deadline.
    async fn fresh(
        &self,
        authority: &Authority,
        ask: &Ask<'_>,
    ) -> Result<(UpstreamConn, codec::Head), Failure> {
        let conn = match tokio::time::timeout_at(
            ask.deadline.into(),
            self.connect(authority, ask.deadline),
        )
        .await
        {
            Ok(conn) => conn?,
            Err(_) => return Err(timed_out()),
        };
        exchange(conn, ask).await.map_err(Sent::into_failure)
    }

    pub(super) async fn connect(
        &self,
        authority: &Authority,
        deadline: Instant,
    ) -> Result<UpstreamConn, Failure> {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let connecting = async {
            let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host, port)).await?.collect(),
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Failure::new(ExchangeError::Connect, e)),
            Err(_) => return Err(Failure::new(ExchangeError::Connect, "connect timed out")),
        };
        // Small heads must not wait for Nagle; keep-alive probes find dead peers behind NAT.
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(UpstreamConn {
            stream,
            buf: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }
}

/// How far an exchange got before it failed.
pub(super) enum Sent {
    /// Nothing of an answer arrived: on a pooled connection, it had been closed.
    Nothing(io::Error),
    Broken(Failure),
}

impl Sent {
    fn into_failure(self) -> Failure {
        match self {
            Sent::Nothing(e) => Failure::new(ExchangeError::Reset, e),
            Sent::Broken(f) => f,
        }
    }
}

/// One request as asked of an upstream, and what its answer is read for.
pub(super) struct Ask<'a> {
    method: &'a Method,
    target: &'a str,
    headers: &'a HeaderMap,
    authority: &'a str,
    /// The request is `HEAD`: no body follows the answer.
    head_request: bool,
    /// The answer's head is kept as it came, not put in a header map (`codec::Head::raw`).
    raw: bool,
    /// When the response head must have arrived (`timeouts.request`).
    deadline: Instant,
    /// The client's head as it came and the forwarded fields' facts: the upstream head is
    /// written from these rather than from `headers` (`forwarded`).
    as_came: Option<(
        &'a [u8],
        &'a [crate::http::fields::Span],
        &'a crate::http::headers::Hop<'a>,
    )>,
}

pub(super) fn timed_out() -> Failure {
    Failure::new(
        ExchangeError::Timeout,
        "no response head within timeouts.request",
    )
}

/// Writes the request head and reads the response head, by the ask's deadline.
async fn exchange(
    mut conn: UpstreamConn,
    ask: &Ask<'_>,
) -> Result<(UpstreamConn, codec::Head), Sent> {
    // The worker's most recently used write buffer, not one of the connection's own: that was
    // cold in the cache at every request with a thousand connections (`bufpool::take_write`).
    let mut head = crate::http::bufpool::take_write();
    match ask.as_came {
        Some((raw, spans, hop)) => forwarded::write_head(
            &mut head,
            ask.method,
            ask.target,
            (raw, spans),
            hop,
            ask.authority,
        ),
        None => codec::write_head(
            &mut head,
            ask.method,
            ask.target,
            ask.headers,
            ask.authority,
            false,
        ),
    }
    conn.timer.as_mut().reset(ask.deadline.into());
    let parsed = {
        let UpstreamConn { stream, buf, timer } = &mut conn;
        let mut answer = pin!(answer(stream, buf, head, ask));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = answer.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Sent::Broken(timed_out()))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?
    };
    Ok((conn, parsed))
}
