//! The admin port: a plain `match (method, path)` over JSON endpoints. Reads are open;
//! every `POST` needs the bearer token when one is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::metrics::Metrics;
use crate::proxy::Conn;
use crate::routing::Router;
use crate::server::Handler;

pub struct Admin {
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// Set once the config is loaded and both listeners are bound.
    pub ready: AtomicBool,
}

impl Handler for Admin {
    async fn call(self: &Arc<Self>, req: Request<Incoming>, _conn: Conn) -> Response<ProxyBody> {
        let method = req.method().clone();
        match (req.uri().path(), method) {
            ("/healthz", Method::GET) => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            ("/readyz", Method::GET) => {
                if self.ready.load(Ordering::Acquire) {
                    json(StatusCode::OK, r#"{"status":"ready"}"#.into())
                } else {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"status":"starting"}"#.into(),
                    )
                }
            }
            ("/metrics", Method::GET) => {
                let mut resp = Response::new(ProxyBody::full(Bytes::from(self.metrics.encode())));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            ("/healthz" | "/readyz" | "/metrics", _) => not_allowed("GET"),
            _ => json(
                StatusCode::NOT_FOUND,
                r#"{"error":"no such endpoint"}"#.into(),
            ),
        }
    }
}

pub fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut resp = json(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(r#"{{"error":"method not allowed; use {allow}"}}"#),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
