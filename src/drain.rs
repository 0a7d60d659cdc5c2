//! The graceful drain for every kind of connection the server makes: on shutdown each one is
//! told to finish what it has in flight and close, and the server waits until the last has
//! ended (or its drain limit passes).
//!
//! hyper-util's `GracefulShutdown` does the same but cannot watch hyper's own HTTP/1
//! connection with upgrades, which the server uses for plain connections (see `server::sniff`).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;

use http_body::Body;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::service::HttpService;
use tokio::sync::watch;

type BoxError = Box<dyn StdError + Send + Sync>;

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

/// Held by the accept loop: starts the drain and waits for it.
pub struct Drainer {
    tx: watch::Sender<bool>,
}

/// Held by each connection's task until the connection ends.
pub struct Watch {
    rx: watch::Receiver<bool>,
}

impl Default for Drainer {
    fn default() -> Self {
        Drainer {
            tx: watch::channel(false).0,
        }
    }
}

impl Drainer {
    pub fn watch(&self) -> Watch {
        Watch {
            rx: self.tx.subscribe(),
        }
    }

    /// Tells every connection to drain; resolves once all have ended.
    pub async fn drain(&self) {
        self.tx.send_replace(true);
        self.tx.closed().await;
    }
}

impl Watch {
    /// Runs `conn` to its end, draining it once the drain begins.
    pub async fn run<C: Drain>(mut self, conn: C) -> C::Output {
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            biased;
            out = conn.as_mut() => return out,
            _ = self.rx.wait_for(|draining| *draining) => {}
        }
        conn.as_mut().drain();
        conn.await
    }
}
