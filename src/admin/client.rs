//! The admin client behind `canary-proxy status | rollback | resume | reset | reload`: one HTTP
//! call to the admin port, a human summary (or the JSON), and a refusal as an error with the
//! reason.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not an admin URL such as http://127.0.0.1:9090")]
    BadUrl(String),
    #[error("cannot reach the admin port at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("refused with {status}: {reason}")]
    Refused { status: u16, reason: String },
}

/// Calls `method path` on the admin port; the JSON answer, or why it was refused.
pub async fn call(
    admin: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(|_| ClientError::BadUrl(admin.into()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(ClientError::BadUrl(admin.into()));
    }
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = req
        .body(Full::new(body))
        .map_err(|_| ClientError::BadUrl(admin.into()))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let unreachable = |detail: String| ClientError::Unreachable {
        url: admin.into(),
        detail,
    };
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| unreachable("no answer within 10s".into()))?
        .map_err(|e| {
            unreachable(
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string()),
            )
        })?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    if !status.is_success() {
        let mut reason = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        if status == http::StatusCode::UNAUTHORIZED {
            reason.push_str(" (pass --token or set CANARY_ADMIN_TOKEN)");
        }
        return Err(ClientError::Refused {
            status: status.as_u16(),
            reason,
        });
    }
    Ok(v)
}

/// How `canary-proxy wait` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    Complete,
    RolledBack,
    Holding(String),
    TimedOut,
    /// The call was refused, the proxy has no rollout, or the canary is disabled.
    Failed(String),
}

impl WaitOutcome {
    /// 0 complete, 1 rolled back (or failed), 3 holding, 4 timed out: a CI step can branch on it.
    pub fn exit_code(&self) -> u8 {
        match self {
            WaitOutcome::Complete => 0,
            WaitOutcome::RolledBack | WaitOutcome::Failed(_) => 1,
            WaitOutcome::Holding(_) => 3,
            WaitOutcome::TimedOut => 4,
        }
    }
}

/// Follows the rollout: one line per step change on stdout (or the status JSON with `json`),
/// until it is complete, rolled back or holding, or `timeout` passes. A proxy that stops
/// answering mid-way (a restart) is waited for; one that never answered is a failure.
pub async fn wait(
    admin: &str,
    token: Option<&str>,
    timeout: std::time::Duration,
    json: bool,
) -> WaitOutcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: Option<(String, u64)> = None;
    let mut answered = false;
    loop {
        match call(admin, Method::GET, "/canary/status", token, None).await {
            Ok(v) => {
                answered = true;
                let state = v["state"].as_str().unwrap_or("?").to_string();
                let step = v["rollout"]["step"].as_u64().unwrap_or(0);
                if v["rollout"].is_null() && !matches!(state.as_str(), "rolled_back" | "disabled") {
                    return fail("this proxy has no [rollout]: nothing to wait for".into());
                }
                if seen.as_ref() != Some(&(state.clone(), step)) {
                    if json {
                        println!("{v}");
                    } else {
                        println!(
                            "{}  {state}: step {} of {} at {} %",
                            crate::control::now_rfc3339(),
                            step + 1,
                            v["rollout"]["steps"].as_array().map_or(0, Vec::len),
                            v["traffic_percent"]
                        );
                    }
                    seen = Some((state.clone(), step));
                }
                match state.as_str() {
                    "complete" => return WaitOutcome::Complete,
                    "rolled_back" => {
                        eprintln!(
                            "rolled back: {}",
                            v["last_rollback"]["reason"].as_str().unwrap_or("?")
                        );
                        return WaitOutcome::RolledBack;
                    }
                    "holding" => {
                        let why = v["rollout"]["hold_reason"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string();
                        eprintln!("holding: {why}");
                        return WaitOutcome::Holding(why);
                    }
                    "disabled" => return fail("the canary is disabled".into()),
                    _ => {}
                }
            }
            Err(e @ ClientError::Refused { .. }) => return fail(e.to_string()),
            Err(e) if !answered => return fail(e.to_string()),
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("timed out after {}", humantime::format_duration(timeout));
            return WaitOutcome::TimedOut;
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL)).await;
    }
}

const POLL: std::time::Duration = std::time::Duration::from_millis(500);

fn fail(why: String) -> WaitOutcome {
    eprintln!("error: {why}");
    WaitOutcome::Failed(why)
}

/// A percent for people: two decimals, no float noise.
fn pct(v: &Value) -> String {
    format!("{:.2} %", v.as_f64().unwrap_or(0.0))
}

/// Seconds for people, in milliseconds below 10 s.
fn secs(v: &Value) -> String {
    let s = v.as_f64().unwrap_or(0.0);
    if s < 10.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

/// A status answer as a few lines for people; `window` (`GET /canary/metrics`) adds both
/// cohorts' figures and how close each trigger is.
pub fn human_status(v: &Value, window: Option<&Value>) -> String {
    let mut out = format!(
        "state:    {}\ncanary:   {} at {} % ({})\nstable:   {}\n",
        v["state"].as_str().unwrap_or("?"),
        v["canary_version"].as_str().unwrap_or("?"),
        v["traffic_percent"],
        if v["canary_active"].as_bool().unwrap_or(false) {
            "receiving traffic"
        } else {
            "no traffic"
        },
        v["stable_version"].as_str().unwrap_or("?"),
    );
    if let Some(m) = window {
        for cohort in ["canary", "stable"] {
            out.push_str(&format!(
                "{:<9} {} requests in the window, {} errors, p99 {}\n",
                format!("{cohort}:"),
                m[format!("{cohort}_requests")],
                pct(&m[format!("{cohort}_error_rate")]),
                secs(&m[format!("{cohort}_p99_latency")]),
            ));
        }
        if let Some(ev) = m["evidence"].as_object() {
            let closest: Vec<String> = ev
                .iter()
                .filter(|(_, e)| e["enabled"].as_bool().unwrap_or(true))
                .map(|(t, e)| {
                    format!(
                        "{t} {:.2} of {:.2}",
                        e["cumulative"].as_f64().unwrap_or(0.0),
                        e["threshold_cumulative"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            out.push_str(&format!("judge:    evidence {}\n", closest.join(", ")));
        }
    }
    if let Some(r) = v["rollout"].as_object() {
        out.push_str(&format!(
            "rollout:  step {} of {} ({} %), {:.0} s of bake left{}\n",
            r.get("step").and_then(Value::as_u64).unwrap_or(0) + 1,
            r.get("steps").and_then(Value::as_array).map_or(0, Vec::len),
            v["traffic_percent"],
            r.get("bake_left").and_then(Value::as_f64).unwrap_or(0.0),
            match r.get("hold_reason").and_then(Value::as_str) {
                Some(why) => format!("; holding: {why}"),
                None => String::new(),
            }
        ));
        if let Some(g) = r.get("gate").and_then(Value::as_object) {
            for (test, t) in g {
                out.push_str(&format!(
                    "  gate {test}: evidence {:.2} of {:.2}{}\n",
                    t["evidence"].as_f64().unwrap_or(0.0),
                    t["bar"].as_f64().unwrap_or(0.0),
                    match (t["passes"].as_bool(), t["requests_needed"].as_u64()) {
                        (Some(true), _) => " (passes)".to_string(),
                        (_, Some(n)) => format!(", about {n} more canary requests"),
                        _ => ", not growing at the current rates".to_string(),
                    }
                ));
            }
        }
    }
    match v["last_rollback"].as_object() {
        None => out.push_str("last rollback: none\n"),
        Some(r) => {
            out.push_str(&format!(
                "last rollback: {} by {} ({}), version {}\n",
                r.get("at").and_then(Value::as_str).unwrap_or("?"),
                r.get("trigger").and_then(Value::as_str).unwrap_or("?"),
                r.get("reason").and_then(Value::as_str).unwrap_or(""),
                r.get("canary_version")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
            ));
            if let Some(c) = r.get("figures").and_then(|f| f.get("canary")) {
                out.push_str(&format!(
                    "  canary then: {} requests, {} errors, p99 {}\n",
                    c["requests"],
                    pct(&c["error_rate"]),
                    secs(&c["p99_latency"])
                ));
            }
            if let Some(by) = r.get("replica").and_then(Value::as_str) {
                out.push_str(&format!("  decided by replica {by}\n"));
            }
        }
    }
    if let Some(f) = v["fleet"].as_object() {
        let replicas: Vec<String> = f
            .get("replicas")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| {
                        format!(
                            "{} ({} {}, {} %)",
                            r["replica"].as_str().unwrap_or("?"),
                            r["canary_version"].as_str().unwrap_or("?"),
                            r["state"].as_str().unwrap_or("?"),
                            r["traffic_percent"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "fleet:    {} as {}, Redis {}; {} replicas: {}\n",
            f.get("name").and_then(Value::as_str).unwrap_or("?"),
            f.get("replica").and_then(Value::as_str).unwrap_or("?"),
            f.get("redis").and_then(Value::as_str).unwrap_or("?"),
            replicas.len(),
            replicas.join(", ")
        ));
        if let Some(w) = f.get("warning").and_then(Value::as_str) {
            out.push_str(&format!("  WARNING: {w}\n"));
        }
    }
    out
}
