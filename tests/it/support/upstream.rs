//! Upstreams written with hyper for the tests: they record what arrived and answer by path,
//! with optional misbehaviour (failures, one failing identity, delay).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub at: std::time::Instant,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request arrived")
    }
}

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A deterministic byte pattern, so a download can be checked without holding it.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) * 31 % 251) as u8)
        .collect()
}

/// How an upstream misbehaves on `/`: every Nth request fails with 500, one identity always
/// fails, every answer is delayed.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    pub fail_every: u64,
    pub fail_identity: Option<String>,
    pub delay_ms: u64,
    /// While set, every request fails: a release that turns bad mid-test.
    pub fail_switch: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// While set, every answer on `/` takes `delay_ms` longer (a stall; several upstreams may
    /// share one switch).
    pub slow_switch: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// An upstream that answers by path:
/// `/status/N` with status N, `/sleep/MS` after MS ms, `/upload` with the body's SHA-256 and
/// length, `/download/N` with N pattern bytes streamed, `/hop` with hop-by-hop headers,
/// anything else 200 "NAME". Every response carries `x-upstream: NAME`.
/// The two upstreams most tests stand the proxy in front of: "stable" and "canary".
pub async fn upstreams() -> (Upstream, Upstream) {
    (
        spawn_upstream("stable").await,
        spawn_upstream("canary").await,
    )
}

pub async fn spawn_upstream(name: &str) -> Upstream {
    spawn_upstream_with(name, Behavior::default()).await
}

pub async fn spawn_upstream_with(name: &str, behavior: Behavior) -> Upstream {
    let behavior = Arc::new((behavior, std::sync::atomic::AtomicU64::new(0)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (name_c, seen_c) = (name.to_string(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (name, seen, behavior) = (name_c.clone(), seen_c.clone(), behavior.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (name, seen, behavior) = (name.clone(), seen.clone(), behavior.clone());
                    async move {
                        if req.uri().path() == "/" {
                            if let Some(r) = misbehave(&name, &seen, &behavior, &req).await {
                                return Ok::<_, Infallible>(r);
                            }
                        }
                        Ok::<_, Infallible>(answer(&name, &seen, req).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        name: name.to_string(),
        seen,
    }
}

async fn misbehave(
    name: &str,
    seen: &Mutex<Vec<Seen>>,
    behavior: &(Behavior, std::sync::atomic::AtomicU64),
    req: &Request<Incoming>,
) -> Option<Response<Body>> {
    let (b, count) = behavior;
    let stalled = b
        .slow_switch
        .as_ref()
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    if b.delay_ms > 0 && (b.slow_switch.is_none() || stalled) {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
    let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let id = req.headers().get("x-user-id").and_then(|v| v.to_str().ok());
    let fail = (b.fail_every > 0 && n % b.fail_every == 0)
        || (id.is_some() && id == b.fail_identity.as_deref())
        || b.fail_switch
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    if !fail {
        return None;
    }
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: "/".into(),
        headers: req.headers().clone(),
        at: std::time::Instant::now(),
    });
    let mut r = Response::new(full(format!("{name} failed")));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    Some(r)
}

async fn answer(name: &str, seen: &Mutex<Vec<Seen>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req.headers().clone(),
        at: std::time::Instant::now(),
    });
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (head, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut resp = match head {
        "status" => {
            let mut r = Response::new(full(format!("{name} status {arg}")));
            *r.status_mut() = StatusCode::from_u16(arg.parse().unwrap_or(500)).unwrap();
            r
        }
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            Response::new(full(name.to_string()))
        }
        "upload" => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            h.update(d);
                            len += d.len() as u64;
                        }
                    }
                    Err(_) => return Response::new(full("body failed")),
                }
            }
            Response::new(full(format!("{len} {}", hex(&h.finalize()))))
        }
        "download" => {
            let total: u64 = arg.parse().unwrap_or(0);
            let chunks = (0..total.div_ceil(65536)).map(move |i| {
                let len = (total - i * 65536).min(65536) as usize;
                Ok::<_, Infallible>(Frame::data(Bytes::from(pattern(i * 65536, len))))
            });
            let stream = futures_stream(chunks);
            Response::new(StreamBody::new(stream).boxed())
        }
        "hop" => {
            let mut r = Response::new(full(name.to_string()));
            let h = r.headers_mut();
            h.insert("connection", "x-up-secret".parse().unwrap());
            h.insert("x-up-secret", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-up-kept", "1".parse().unwrap());
            r
        }
        _ => Response::new(full(name.to_string())),
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    resp
}

/// A stream over an iterator, yielding between items so a large body is produced lazily.
fn futures_stream<I, T>(iter: I) -> impl futures_core_like::Stream<Item = T>
where
    I: Iterator<Item = T> + Send + Unpin + 'static,
{
    futures_core_like::IterStream(iter)
}

pub mod futures_core_like {
    //! The one `Stream` we need, without another dependency: http-body-util's `StreamBody`
    //! takes any `futures_core::Stream`, which tokio-stream re-exports.
    use std::pin::Pin;
    use std::task::{Context, Poll};
    pub use tokio_stream::Stream;

    pub struct IterStream<I>(pub I);

    impl<I: Iterator + Unpin> Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An address that refuses connections, and the socket that keeps it so: bound but never
/// listening, the port stays ours (a port merely closed could be handed to another test's
/// upstream while this test still sends to it).
pub async fn closed_port() -> (String, tokio::net::TcpSocket) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sock.local_addr().unwrap();
    (format!("http://{addr}"), sock)
}
