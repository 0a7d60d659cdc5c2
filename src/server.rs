//! The accept loop shared by the proxy and admin ports: the connection cap, HTTP/1.1 and h2c
//! on one listener (hyper-util's auto builder), and a bounded graceful drain. Knows nothing of
//! canaries: it hands each request and its connection to a handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::body::ProxyBody;
use crate::error::plain;
use crate::metrics::Metrics;
use crate::proxy::Conn;

/// What a listener serves.
pub trait Handler: Send + Sync + 'static {
    fn call(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: Conn,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

pub struct ServeOptions {
    pub max_connections: usize,
    pub header_read: Duration,
    pub idle: Duration,
    pub drain: Duration,
}

fn builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(opts.idle / 2))
        .max_concurrent_streams(256);
    b
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for at most `opts.drain`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    opts: ServeOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder(&opts);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let conn = Conn { peer, tls: false };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let handler = handler.clone();
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler.call(req, conn).await) }
                });
                let served =
                    graceful.watch(builder.serve_connection_with_upgrades(io, svc).into_owned());
                tokio::spawn(async move {
                    if let Err(e) = served.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                metrics.reject("over_capacity");
                tokio::spawn(refuse(io, peer, opts.header_read));
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(opts.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?opts.drain, "drain timed out; closing the remaining connections");
    }
}

/// Over the connection cap: one 503 and close, bounded in time so refusals cannot pile up.
async fn refuse(io: TokioIo<tokio::net::TcpStream>, peer: SocketAddr, limit: Duration) {
    let svc = service_fn(|_req: Request<Incoming>| async {
        let mut resp = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable: too many connections\n",
        );
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        Ok::<_, std::convert::Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(io, svc);
    if tokio::time::timeout(limit, conn).await.is_err() {
        tracing::debug!(%peer, "refused connection timed out");
    }
}
