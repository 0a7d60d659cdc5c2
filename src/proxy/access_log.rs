//! The access log: one JSON object per line for every request, written by a background task
//! fed through a bounded channel, so a slow disk never slows a request. Lines that do not fit
//! in the channel are dropped and counted (`canary_access_log_dropped_total`). A file is
//! reopened on `SIGUSR1` (log rotation).
//!
//! An entry is completed when its response body ends (or is dropped), so `bytes_out` and the
//! status are what the client got.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::config::AccessLog as Destination;
use crate::proxy::body::ProxyBody;

/// Lines that may wait for the writer before new ones are dropped.
const CAPACITY: usize = 16_384;

/// One request, as logged. Never the identity itself: only which kind of source matched.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub time: String,
    pub client: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub cohort: Option<&'static str>,
    pub version: Option<String>,
    pub upstream: Option<String>,
    pub latency_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub identity_source: Option<&'static str>,
    /// A tester's forced cohort (`override_header`): written only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

impl Entry {
    /// What is known of a request before its phases run; they fill in the rest.
    pub fn begin<B>(req: &http::Request<B>, client: std::net::IpAddr) -> Entry {
        Entry {
            time: crate::control::now_rfc3339(),
            client: client.to_string(),
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
            forced: false,
        }
    }
}

pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
    dropped: prometheus::IntCounter,
    reopen: Arc<Notify>,
}

impl AccessLog {
    /// Starts the writer task; `None` when the log is off.
    pub fn start(
        dest: &Destination,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Option<Arc<Self>>> {
        let sink = match dest {
            Destination::Off => return Ok(None),
            Destination::Stdout => Sink::Stdout,
            Destination::File(p) => Sink::File(p.clone(), open(p)?),
        };
        let (tx, rx) = mpsc::channel(CAPACITY);
        let reopen = Arc::new(Notify::new());
        tokio::spawn(writer(rx, sink, reopen.clone()));
        Ok(Some(Arc::new(AccessLog {
            tx,
            dropped,
            reopen,
        })))
    }

    /// Asks the writer to reopen its file (after a rotation moved it away).
    pub fn reopen(&self) {
        self.reopen.notify_one();
    }

    fn send(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }

    /// Wraps a response body so the entry is sent when the body ends.
    pub fn wrap(self: &Arc<Self>, body: ProxyBody, entry: Entry) -> ProxyBody {
        ProxyBody::Logged(Box::new(Logged {
            inner: body,
            entry: Some(entry),
            log: self.clone(),
        }))
    }
}

enum Sink {
    Stdout,
    File(PathBuf, std::fs::File),
}

fn open(p: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

async fn writer(mut rx: mpsc::Receiver<Entry>, mut sink: Sink, reopen: Arc<Notify>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            entry = rx.recv() => {
                let Some(entry) = entry else { break };
                line(&mut buf, &entry);
                // Take whatever else is waiting, then write once.
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(e) => line(&mut buf, &e),
                        Err(_) => break,
                    }
                }
                let written = match &mut sink {
                    Sink::Stdout => std::io::stdout().lock().write_all(&buf),
                    Sink::File(_, f) => f.write_all(&buf),
                };
                if let Err(e) = written {
                    tracing::warn!(error = %e, "access log write failed; lines lost");
                }
                buf.clear();
            }
            _ = reopen.notified() => {
                if let Sink::File(path, f) = &mut sink {
                    match open(path) {
                        Ok(new) => {
                            *f = new;
                            tracing::info!(file = %path.display(), "access log reopened");
                        }
                        Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot reopen the access log; still writing to the old file"),
                    }
                }
            }
        }
    }
}

fn line(buf: &mut Vec<u8>, entry: &Entry) {
    if serde_json::to_writer(&mut *buf, entry).is_ok() {
        buf.push(b'\n');
    }
}

/// A response body that counts what it sends and logs its entry when it ends or is dropped.
pub struct Logged {
    inner: ProxyBody,
    entry: Option<Entry>,
    log: Arc<AccessLog>,
}

impl Logged {
    pub fn inner(&self) -> &ProxyBody {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut ProxyBody {
        &mut self.inner
    }

    fn finish(&mut self) {
        if let Some(e) = self.entry.take() {
            self.log.send(e);
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::http::body::BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(e)) = (f.data_ref(), self.entry.as_mut()) {
                    e.bytes_out += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    pub fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.finish();
    }
}
