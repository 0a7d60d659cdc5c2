//! A webhook receiver written with hyper: it records every delivery (headers and body) and
//! answers with the statuses it is told to, in order (200 once they run out), or holds every
//! request unanswered (a receiver that hangs).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A `[[notify]]` table for the test config's `extra`.
pub fn notify_target(name: &str, url: &str, more: &str) -> String {
    format!("\n[[notify]]\nname = {name:?}\nurl = {url:?}\n{more}\n")
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` deliveries arrived; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.deliveries();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < until,
                "{} of {n} deliveries arrived: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A receiver answering `statuses` in order, then 200; `hang`: never answers.
pub async fn spawn_receiver(statuses: &[u16], hang: bool) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(
        statuses.iter().copied().collect::<VecDeque<_>>(),
    ));
    let got_c = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (got, script) = (got_c.clone(), script.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (got, script) = (got.clone(), script.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        got.lock().unwrap().push(Delivery {
                            headers: parts.headers,
                            body,
                        });
                        if hang {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        let status = script.lock().unwrap().pop_front().unwrap_or(200);
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Receiver { addr, got }
}
