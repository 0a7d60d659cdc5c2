//! The graceful drain for every kind of connection the server makes: on shutdown each one is
//! told to finish what it has in flight and close, and the server waits until the last has
//! ended (or its drain limit passes).
//!
//! hyper-util's `GracefulShutdown` does the same but cannot watch hyper's own HTTP/1
//! connection with upgrades, which the server uses for plain connections (see `server::sniff`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use http_body::Body;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::service::HttpService;
use tokio::sync::watch;

use crate::http::body::BoxError;

/// A connection that can be asked to finish its in-flight requests and close.
pub trait Drain: Future {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S, B> Drain for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Drain for hyper::server::conn::http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Drain for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    I: Read + Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>
        + hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What the accept loop and its connections share.
#[derive(Default)]
struct Shared {
    draining: AtomicBool,
    /// Each live connection's task, woken once when the drain begins. Registered once per
    /// connection rather than re-armed at every poll: a request's polls pay one atomic load.
    wakers: Mutex<HashMap<u64, Waker>>,
    next: AtomicU64,
}

/// Held by the accept loop: starts the drain and waits for it.
pub struct Drainer {
    shared: Arc<Shared>,
    /// Never sent on: its receivers are held by live connections, so `closed` tells when the
    /// last has ended.
    alive: watch::Sender<()>,
}

/// Held by each connection's task until the connection ends.
pub struct Watch {
    shared: Arc<Shared>,
    _alive: watch::Receiver<()>,
}

impl Default for Drainer {
    fn default() -> Self {
        Drainer {
            shared: Arc::default(),
            alive: watch::channel(()).0,
        }
    }
}

impl Drainer {
    pub fn watch(&self) -> Watch {
        Watch {
            shared: self.shared.clone(),
            _alive: self.alive.subscribe(),
        }
    }

    /// Tells every connection to drain; resolves once all have ended.
    pub async fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = match self.shared.wakers.lock() {
            Ok(mut w) => w.drain().map(|(_, w)| w).collect(),
            Err(_) => Vec::new(),
        };
        wakers.into_iter().for_each(Waker::wake);
        self.alive.closed().await;
    }
}

/// Takes a connection's waker out of the registry when the connection ends (or is dropped).
struct Registered<'a> {
    shared: &'a Shared,
    key: Option<u64>,
}

impl Registered<'_> {
    fn register(&mut self, waker: &Waker) {
        let key = self.shared.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.shared.wakers.lock() {
            w.insert(key, waker.clone());
            self.key = Some(key);
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut w)) = (self.key, self.shared.wakers.lock()) {
            w.remove(&key);
        }
    }
}

impl Watch {
    /// Runs `conn` to its end, draining it once the drain begins.
    pub async fn run<C: Drain>(&self, conn: C) -> C::Output {
        let mut conn = std::pin::pin!(conn);
        let mut registered = Registered {
            shared: &self.shared,
            key: None,
        };
        let mut drained = false;
        std::future::poll_fn(|cx| {
            if registered.key.is_none() {
                registered.register(cx.waker());
            }
            // After registering: a drain that began before it is seen here.
            if !drained && self.shared.draining.load(Ordering::SeqCst) {
                drained = true;
                conn.as_mut().drain();
            }
            conn.as_mut().poll(cx)
        })
        .await
    }
}
