//! One target's delivery task: its queue's events in order, each sent with a 5 s timeout and
//! retried on a 5xx, 408, 429 or no answer, after 1 s doubling to 60 s, for 10 minutes; then
//! dropped. Every failed attempt is counted. Another 4xx is the receiver saying no: not retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::NotifyTarget;
use crate::metrics::Metrics;
use crate::notify::{format, Event};

pub const TIMEOUT: Duration = Duration::from_secs(5);
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// `sha256=HEX` of HMAC-SHA256(secret, body): the `X-Canary-Signature` value.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let sum = mac.finalize().into_bytes();
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

enum Outcome {
    Delivered,
    /// Worth another try: a 5xx, 408, 429, a timeout or no connection.
    Retry(String),
    /// The receiver refused it for good (another 4xx).
    Refused(StatusCode),
}

pub struct Worker {
    target: NotifyTarget,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    metrics: Arc<Metrics>,
}

impl Worker {
    pub fn new(target: NotifyTarget, tls: rustls::ClientConfig, metrics: Arc<Metrics>) -> Worker {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(TIMEOUT));
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Worker {
            target,
            client: Client::builder(TokioExecutor::new()).build(connector),
            metrics,
        }
    }

    pub async fn run(self, mut queue: mpsc::Receiver<Arc<Event>>) {
        while let Some(event) = queue.recv().await {
            self.deliver(&event).await;
        }
    }

    async fn deliver(&self, event: &Event) {
        let body = Bytes::from(format::body(self.target.format, event));
        let started = Instant::now();
        let mut wait = FIRST_RETRY;
        let name = &self.target.name;
        for attempt in 1.. {
            let why = match self.attempt(event, &body).await {
                Outcome::Delivered => {
                    tracing::debug!(target_name = %name, event = %event.event, delivery = %event.delivery, attempt, "notify: delivered");
                    return;
                }
                Outcome::Refused(status) => {
                    self.metrics.notify_failure(name, &event.event);
                    tracing::warn!(target_name = %name, event = %event.event, delivery = %event.delivery, status = status.as_u16(), "notify: the receiver refused the event (a 4xx other than 408 and 429 is not retried)");
                    return;
                }
                Outcome::Retry(why) => why,
            };
            self.metrics.notify_failure(name, &event.event);
            if started.elapsed() + wait > GIVE_UP_AFTER {
                tracing::error!(target_name = %name, event = %event.event, delivery = %event.delivery, attempt, error = %why, "notify: giving up after 10 minutes of failed attempts; the event is dropped for this target");
                return;
            }
            tracing::warn!(target_name = %name, event = %event.event, delivery = %event.delivery, attempt, error = %why, retry_in = ?wait, "notify: delivery failed; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY);
        }
    }

    async fn attempt(&self, event: &Event, body: &Bytes) -> Outcome {
        let mut req = Request::post(self.target.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("canary-proxy/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-canary-event", event.event.as_str())
            .header("x-canary-delivery", event.delivery.as_str());
        if let Some(secret) = &self.target.secret {
            req = req.header("x-canary-signature", signature(&secret.0, body));
        }
        let req = match req.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => return Outcome::Refused(bad_request(e)),
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                // The client's own words name the cause (refused, reset, TLS).
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                msg
            })?;
            let status = resp.status();
            // Read the answer, so the connection can be used again.
            let _ = resp.into_body().collect().await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Err(_) => Outcome::Retry(format!("no answer within {TIMEOUT:?}")),
            Ok(Err(e)) => Outcome::Retry(e),
            Ok(Ok(s)) if s.is_success() => Outcome::Delivered,
            Ok(Ok(s))
                if s.is_server_error()
                    || s == StatusCode::REQUEST_TIMEOUT
                    || s == StatusCode::TOO_MANY_REQUESTS =>
            {
                Outcome::Retry(format!("the receiver answered {s}"))
            }
            Ok(Ok(s)) => Outcome::Refused(s),
        }
    }
}

fn bad_request(e: http::Error) -> StatusCode {
    tracing::error!(error = %e, "notify: the request could not be built");
    StatusCode::BAD_REQUEST
}
