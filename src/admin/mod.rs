//! The admin port: a plain `match (path, method)` over JSON endpoints. Reads are open; every
//! `POST` needs `Authorization: Bearer TOKEN` when a token is set (compared in constant time),
//! and is written to the log as an audit line.

pub mod client;
pub mod command;
pub mod report;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};

use crate::control::{Control, ControlError, Transition};
use crate::http::body::ClientBody;
use crate::proxy::body::ProxyBody;
use crate::server::ClientConn;
use crate::server::Handler;

/// The live dashboard, served on `GET /`: no asset from anywhere else.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The largest admin request body read.
const MAX_BODY: usize = 64 * 1024;

/// Every endpoint and the methods it takes: the router below and the docs keep to this list.
pub const ENDPOINTS: [(&str, &str); 15] = [
    ("/canary/metrics", "GET"),
    ("/canary/status", "GET"),
    ("/canary/events", "GET"),
    ("/canary/history", "GET"),
    ("/canary/rollback", "POST"),
    ("/canary/resume", "POST"),
    ("/canary/promote", "POST"),
    ("/canary/pause", "POST"),
    ("/canary/continue", "POST"),
    ("/canary/metrics/reset", "POST"),
    ("/canary/reload", "POST"),
    ("/metrics", "GET"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/", "GET"),
];

/// Reads that stay open under `admin.protect_reads`: the probes, and the dashboard's page
/// (it holds no data; its calls carry the token).
const OPEN_READS: [&str; 3] = ["/healthz", "/readyz", "/"];

fn unauthorized() -> Response<ProxyBody> {
    let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

pub struct Admin {
    pub control: Arc<Control>,
    /// Set once the config is loaded and both listeners are bound.
    pub ready: AtomicBool,
}

impl Handler for Admin {
    type Body = ProxyBody;

    async fn call(
        self: &Arc<Self>,
        req: Request<ClientBody>,
        conn: &ClientConn,
        _as_came: Option<crate::http::fields::RequestHead<'_>>,
    ) -> Response<ProxyBody> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let Some(&(_, allowed)) = ENDPOINTS.iter().find(|(p, _)| *p == path) else {
            return error(StatusCode::NOT_FOUND, &format!("no endpoint {path}"));
        };
        let reading = allowed == "GET" && matches!(*req.method(), Method::GET | Method::HEAD);
        if reading && !OPEN_READS.contains(&path.as_str()) && !self.may_read(&req) {
            tracing::warn!(action = %path, caller = %conn.peer, "admin read refused: admin.protect_reads needs the token");
            return unauthorized();
        }
        if req.method() == Method::HEAD && allowed == "GET" {
            let mut resp = self.read(&path, &query);
            *resp.body_mut() = ProxyBody::empty();
            return resp;
        }
        if req.method().as_str() != allowed {
            return not_allowed(allowed);
        }
        if allowed == "GET" {
            return self.read(&path, &query);
        }
        if !self.authorised(&req) {
            tracing::warn!(action = %path, caller = %conn.peer, "admin call refused: missing or wrong token");
            return unauthorized();
        }
        let body = match read_object(req).await {
            Ok(b) => b,
            Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
        };
        self.mutate(&path, body, conn).await
    }
}

impl Admin {
    fn read(&self, path: &str, query: &str) -> Response<ProxyBody> {
        match path {
            "/canary/events" => match report::number(query, "limit", 100, 1..=1000) {
                Ok(limit) => json_response(StatusCode::OK, &report::events(&self.control, limit)),
                Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
            },
            "/canary/history" => match report::number(query, "seconds", 3600, 1..=6 * 3600) {
                Ok(s) => json_response(StatusCode::OK, &report::history(&self.control, s)),
                Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
            },
            "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                json_response(StatusCode::OK, &json!({"status": "ready"}))
            }
            "/readyz" => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not ready"}),
            ),
            "/canary/status" => json_response(StatusCode::OK, &report::status(&self.control)),
            "/canary/metrics" => json_response(StatusCode::OK, &report::metrics(&self.control)),
            "/metrics" => {
                let mut resp = Response::new(ProxyBody::full(Bytes::from(
                    self.control.metrics().encode(),
                )));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            _ => {
                // The dashboard: one self-contained page, embedded in the binary.
                let mut resp =
                    Response::new(ProxyBody::full(Bytes::from_static(DASHBOARD.as_bytes())));
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert(
                    HeaderName::from_static("content-security-policy"),
                    HeaderValue::from_static(
                        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                    ),
                );
                resp
            }
        }
    }

    async fn mutate(
        &self,
        path: &str,
        body: serde_json::Map<String, Value>,
        conn: &ClientConn,
    ) -> Response<ProxyBody> {
        let caller = Some(conn.peer);
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
        let outcome: Result<Transition, ControlError> = match path {
            "/canary/rollback" => {
                let reason = reason.clone().unwrap_or_else(|| "manual rollback".into());
                self.control
                    .rollback("manual", reason, caller)
                    .await
                    .map(|(_, t)| t)
            }
            "/canary/resume" => self.control.resume(caller, reason.as_deref()).await,
            "/canary/promote" => self.control.promote(force, caller, reason.as_deref()).await,
            "/canary/pause" => {
                let why = reason.as_deref().unwrap_or("paused by an operator");
                self.control.pause(why, caller).await
            }
            "/canary/continue" => self.control.resume_rollout(caller, reason.as_deref()).await,
            "/canary/metrics/reset" => Ok(self.control.reset(caller, reason.as_deref()).await),
            _ => self.control.reload(caller).await,
        };
        let action = path.trim_start_matches("/canary/");
        match outcome {
            Ok(t) => {
                let forced = t.forced;
                tracing::info!(audit = true, action, reason = reason.as_deref().unwrap_or(""), caller = %conn.peer, before = t.before, after = t.after, forced, "admin call");
                let mut v = report::status(&self.control);
                v["before"] = json!(t.before);
                json_response(StatusCode::OK, &v)
            }
            Err(e) => {
                tracing::info!(audit = true, action, reason = reason.as_deref().unwrap_or(""), caller = %conn.peer, refused = %e, "admin call");
                let status = match e {
                    ControlError::Conflict(_) => StatusCode::CONFLICT,
                    ControlError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                };
                error(status, &e.to_string())
            }
        }
    }

    /// Reads are open unless `admin.protect_reads` asks for the token.
    fn may_read(&self, req: &Request<ClientBody>) -> bool {
        !self.control.table().config.admin.protect_reads || self.authorised(req)
    }

    fn authorised(&self, req: &Request<ClientBody>) -> bool {
        let table = self.control.table();
        let Some(token) = table.config.admin.token.as_deref() else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        crate::http::secret_eq(given.trim().as_bytes(), token.as_bytes())
    }
}

/// An empty body or a JSON object.
async fn read_object(req: Request<ClientBody>) -> Result<serde_json::Map<String, Value>, String> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the body: {e}"))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

pub fn json_response(status: StatusCode, v: &Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn error(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "error": msg }))
}

pub fn not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed; use {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
