//! The accept loop shared by the proxy and admin ports: the connection cap, HTTP/1.1 and h2c
//! on one listener (told apart by a peek; hyper-util's auto builder behind TLS), and a bounded graceful drain. Knows nothing of
//! canaries: it hands each request and its connection to a handler.

pub mod deadlines;
pub mod drain;
pub mod h1;
mod handler;
pub mod memory;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http::body::{BoxError, ClientBody};
use crate::http::canned::Canned;
use crate::metrics::Metrics;
use crate::server::deadlines::{ConnState, GuardedIo};
use crate::server::drain::{Drainer, Watch};
use handler::Tracked;
pub use handler::{Answer, ClientConn, Handler};

/// What a listener serves. `conn` by reference: it lives as long as its connection, and a
/// clone per request (an `Arc` count up and down) is not free.
pub struct ServeOptions {
    /// The connection cap, shared by every listener of one port (one per worker).
    pub slots: Arc<Semaphore>,
    pub header_read: Duration,
    pub idle: Duration,
    pub drain: Duration,
    /// The request head may hold this much (URI and headers); checked exactly by the handler,
    /// bounded here by hyper's read buffer.
    pub max_head_bytes: usize,
    /// How long a write may wait on a client that does not read.
    pub write_stall: Duration,
}

// One set of settings for hyper's builders and for hyper-util's auto builder (TLS).
// HTTP/1: head deadlines are `GuardedIo`'s (hyper's own closes without a 408). The read buffer
// bounds what a head can cost; the exact 414/431 limits are the handler's.
macro_rules! http1_settings {
    ($b:expr, $opts:expr) => {
        $b.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size($opts.max_head_bytes.max(8192))
            .max_headers(256)
            .keep_alive(true)
    };
}
// HTTP/2: bounded streams, bounded header lists (CONTINUATION floods are cut by the list size),
// and a cap on streams a client may open and reset (rapid reset, CVE-2023-44487).
macro_rules! http2_settings {
    ($b:expr, $opts:expr) => {
        $b.timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size($opts.max_head_bytes.min(u32::MAX as usize) as u32)
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some($opts.idle / 2))
            .keep_alive_timeout(Duration::from_secs(20))
    };
}

fn builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    http1_settings!(b.http1(), opts);
    http2_settings!(b.http2(), opts);
    b
}

/// The protocol a plain connection speaks, told by peeking at its first bytes.
enum Proto {
    Http1,
    /// Prior knowledge (h2c): the connection began with HTTP/2's preface.
    Http2,
}

/// Peeks (without consuming) until the first bytes rule HTTP/2's preface in or out.
///
/// hyper-util's auto builder reads those bytes off the socket instead and hands them back
/// through a side buffer, after which hyper's read buffer must grow for the rest of the head,
/// on every connection. Peeking leaves the bytes where they are, so hyper reads the whole head
/// into its first buffer.
async fn sniff(stream: &tokio::net::TcpStream) -> Proto {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    loop {
        match stream.peek(&mut buf).await {
            Ok(n) if n > 0 && buf[..n] == PREFACE[..n] => {
                if n == PREFACE.len() {
                    return Proto::Http2;
                }
                // Part of the preface so far: peek again once more has arrived (rare).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Anything else (or EOF, or an error) is HTTP/1's to answer or close.
            _ => return Proto::Http1,
        }
    }
}

/// Where a listener gets its TLS config, per connection (so a reload can change it).
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// Everything one connection's task needs.
struct Shared<H> {
    handler: Arc<H>,
    /// For TLS connections (the protocol sniffed from the decrypted stream).
    builder: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    metrics: Arc<Metrics>,
    header_read: Duration,
    idle: Duration,
    write_stall: Duration,
    /// The longest request head our own HTTP/1 server reads before leaving it to hyper.
    max_head: usize,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for at most `opts.drain`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    opts: ServeOptions,
    metrics: Arc<Metrics>,
    tls: Option<TlsSource>,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared {
        handler,
        builder: builder(&opts),
        http1: {
            let mut b = hyper::server::conn::http1::Builder::new();
            http1_settings!(b, opts);
            b
        },
        http2: {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            http2_settings!(b, opts);
            b
        },
        metrics: metrics.clone(),
        header_read: opts.header_read,
        idle: opts.idle,
        write_stall: opts.write_stall,
        max_head: opts.max_head_bytes.max(8192),
    });
    let drainer = Drainer::default();
    let slots = opts.slots.clone();
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.reject("over_capacity");
            tokio::spawn(refuse(stream, peer));
            continue;
        };
        let (shared, watch) = (shared.clone(), drainer.watch());
        // Two tasks, not one with a branch each: a task is as large as its largest state, and
        // a TLS connection's is about twice a plain one's (docs/PERFORMANCE.md, memory).
        match tls.as_ref().and_then(|source| source()) {
            None => tokio::spawn(async move {
                // A client that says nothing for the head's allowance is closed, as
                // `GuardedIo` closes one that says nothing after a request.
                match tokio::time::timeout(shared.header_read, sniff(&stream)).await {
                    Ok(proto) => {
                        let conn = ClientConn::new(peer, false);
                        connection(stream, conn, Some(proto), &shared, watch).await
                    }
                    Err(_) => tracing::debug!(%peer, "closed: nothing sent"),
                }
                drop(permit);
            }),
            Some(config) => tokio::spawn(async move {
                // The handshake gets the head's allowance: a silent TLS client is cut off too.
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                match tokio::time::timeout(shared.header_read, accept).await {
                    Ok(Ok(tls_stream)) => {
                        let conn = ClientConn::new(peer, true);
                        connection(tls_stream, conn, None, &shared, watch).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
                drop(permit);
            }),
        };
    }
    drop(listener);
    if tokio::time::timeout(opts.drain, drainer.drain())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?opts.drain, "drain timed out; closing the remaining connections");
    }
}

/// Serves one connection (plain or TLS) until it ends or the drain closes it.
async fn connection<I, H>(
    io: I,
    conn: ClientConn,
    proto: Option<Proto>,
    shared: &Shared<H>,
    watch: Watch,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let state = ConnState::new(shared.metrics.clone());
    let io = GuardedIo::new(
        io,
        state.clone(),
        shared.header_read,
        shared.idle,
        shared.write_stall,
    );
    let handler = shared.handler.clone();
    let (svc_state, svc_conn) = (state.clone(), conn.clone());
    let svc = service_fn(move |req| {
        let (handler, guard, state) = (handler.clone(), svc_state.begin(), svc_state.clone());
        let conn = svc_conn.clone();
        async move {
            // Boxed, and freed when the exchange is done: hyper keeps the service's future for
            // the connection's whole life, so what it held inline an idle connection would hold
            // too. Our own HTTP/1 server holds it only while it runs, so it does not box.
            let resp = Box::pin(handler.call(req.map(ClientBody::Hyper), &conn, None)).await;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                state.mark_upgraded();
            }
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        }
    });
    let served: Result<(), BoxError> = match proto {
        Some(Proto::Http1) => {
            // Our own server first; hyper's takes over at the first request that is not ours.
            let flag = AtomicBool::new(false);
            let settings = h1::Settings {
                max_head: shared.max_head,
                as_came: H::AS_CAME,
            };
            let handler = shared.handler.clone();
            let ours = ClientConn {
                raw_heads: true,
                ..conn.clone()
            };
            // Scoped, so that hyper's connection below reuses its room in this task's future
            // (side by side they made every connection larger, idle or not).
            let ended = {
                let serve = h1::serve(io, ours, state, handler, settings, &flag);
                let serve = std::pin::pin!(serve);
                watch.run(h1::Draining { serve, flag: &flag }).await
            };
            match ended {
                Ok(h1::Ended::Closed) => Ok(()),
                Ok(h1::Ended::HandOver(io, first)) => {
                    let io = TokioIo::new(h1::Rewind::new(io, first));
                    let c = shared.http1.serve_connection(io, svc).with_upgrades();
                    watch.run(c).await.map_err(Into::into)
                }
                Err(e) => Err(e.into()),
            }
        }
        Some(Proto::Http2) => watch
            .run(shared.http2.serve_connection(TokioIo::new(io), svc))
            .await
            .map_err(Into::into),
        None => {
            let c = shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(io), svc);
            watch.run(c).await
        }
    };
    if let Err(e) = served {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// The answer to a connection over the cap.
pub const OVER_CAPACITY: Canned = Canned::closing(
    StatusCode::SERVICE_UNAVAILABLE,
    "service unavailable: too many connections\n",
);

/// Over the connection cap: a canned 503 at once, then close. The socket is held for at most
/// a second (to read what the client already sent, so closing does not reset the answer away),
/// so a flood cannot pin descriptors for long.
async fn refuse(mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    static ANSWER: LazyLock<Vec<u8>> = LazyLock::new(|| OVER_CAPACITY.wire());
    let bounded = async {
        stream.write_all(&ANSWER).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(1), bounded)
        .await
        .is_err()
    {
        tracing::debug!(%peer, "refused connection held past its second; closed");
    }
}
