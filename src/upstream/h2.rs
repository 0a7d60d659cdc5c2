//! The HTTP/2 upstream client (gRPC): one multiplexed connection per endpoint, made by the same
//! connector as the pooled HTTP/1.1 client (connect timeout, `TCP_NODELAY`, TLS with ALPN `h2`
//! for `https://` endpoints, h2c with prior knowledge for `http://`).
//!
//! Its own and not hyper's pooled client: that one takes `:authority` from the URI it connects
//! to, so the upstream would see the endpoint's address as `:authority` and the client's `Host`
//! beside it. RFC 9113 §8.3.1 forbids the mismatch and strict servers refuse every such call.
//! Here the connection is chosen by the endpoint and `:authority` is the client's `Host`, with
//! no `host` field sent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::body::UpstreamBody;
use crate::config::{EndpointConfig, Timeouts};

/// Why an HTTP/2 exchange failed: before a connection existed, or on it.
#[derive(Debug)]
pub enum H2Error {
    /// The TCP connect, TLS or the HTTP/2 handshake failed: nothing was sent.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed on an established connection.
    Exchange(hyper::Error),
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H2Error::Connect(e) => write!(f, "connect: {e}"),
            H2Error::Exchange(e) => write!(f, "{e}"),
        }
    }
}

struct Conn {
    send: SendRequest<UpstreamBody>,
    used: Instant,
}

type Key = (Scheme, Authority);

/// The open connections, and when those unused were last let go.
struct Conns {
    by_endpoint: HashMap<Key, Conn>,
    swept: Instant,
}

pub struct H2Client {
    connector: HttpsConnector<HttpConnector>,
    builder: http2::Builder<TokioExecutor>,
    conns: Mutex<Conns>,
    /// A connection unused this long is let go (its last handle dropped, it closes once its
    /// streams end), like the pooled client's idle timeout.
    idle: Duration,
}

impl H2Client {
    pub fn new(timeouts: &Timeouts, tls: rustls::ClientConfig) -> Self {
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(super::tcp_connector(timeouts));
        let mut builder = http2::Builder::new(TokioExecutor::new());
        // Pings find a connection that died silently (a NAT, a killed pod) before a call does.
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        H2Client {
            connector,
            builder,
            conns: Mutex::new(Conns {
                by_endpoint: HashMap::new(),
                swept: Instant::now(),
            }),
            idle: timeouts.idle,
        }
    }

    /// Sends `req` to `endpoint`. The request's URI carries the client's authority (its
    /// `:authority`); the endpoint only decides the connection. A request the connection
    /// closed before taking is sent once more on a new connection (which replaces it).
    pub async fn request(
        &self,
        endpoint: &EndpointConfig,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, H2Error> {
        let key = (endpoint.scheme.clone(), endpoint.authority.clone());
        let mut send = match self.cached(&key) {
            Some(send) => send,
            None => self.connect(&key).await?,
        };
        match send.try_send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(mut e) => match e.take_message() {
                Some(back) => {
                    let mut send = self.connect(&key).await?;
                    send.send_request(back).await.map_err(H2Error::Exchange)
                }
                None => Err(H2Error::Exchange(e.into_error())),
            },
        }
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, key: &Key) -> Option<SendRequest<UpstreamBody>> {
        let mut conns = self.conns();
        let conn = conns.by_endpoint.get_mut(key)?;
        if conn.send.is_closed() {
            conns.by_endpoint.remove(key);
            return None;
        }
        conn.used = Instant::now();
        Some(conn.send.clone())
    }

    async fn connect(&self, key: &Key) -> Result<SendRequest<UpstreamBody>, H2Error> {
        let target = Uri::builder()
            .scheme(key.0.clone())
            .authority(key.1.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| H2Error::Connect(e.into()))?;
        let io = self
            .connector
            .clone()
            .call(target)
            .await
            .map_err(H2Error::Connect)?;
        let (send, conn) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| H2Error::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        let now = Instant::now();
        let mut conns = self.conns();
        // Let go of connections unused for the idle timeout (endpoints a reload removed among
        // them), at most once per idle timeout.
        if now.duration_since(conns.swept) >= self.idle {
            conns.swept = now;
            let idle = self.idle;
            conns
                .by_endpoint
                .retain(|_, c| !c.send.is_closed() && now.duration_since(c.used) < idle);
        }
        // Two calls that found no connection may both have made one: the later one is kept,
        // the earlier one closes once its streams end.
        let conn = Conn {
            send: send.clone(),
            used: now,
        };
        conns.by_endpoint.insert(key.clone(), conn);
        Ok(send)
    }
}
