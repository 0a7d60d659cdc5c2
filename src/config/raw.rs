//! The config file as written: serde structs with every default filled in.
//!
//! These structs are also what `canary-proxy check` prints, so the effective config is the
//! same shape as the file. They hold no logic beyond defaults; meaning and validation live in
//! `config::validate`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub proxy: RawProxy,
    pub admin: RawAdmin,
    pub stable: RawStable,
    pub canary: RawCanary,
    pub rollback: RawRollback,
    pub state: RawState,
    pub timeouts: RawTimeouts,
    pub limits: RawLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<RawFleet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RawRollout>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<RawNotify>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    pub listen: String,
    pub trusted_proxies: Vec<String>,
    pub access_log: String,
    /// Extra CA certificates (PEM) trusted for `https://` upstreams, besides the system's.
    pub upstream_ca_file: String,
    /// Threads serving the proxy port, each with its own listener (SO_REUSEPORT), event loop
    /// and upstream connections; 0: one per CPU this process may run on.
    pub workers: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
}

impl Default for RawProxy {
    fn default() -> Self {
        RawProxy {
            listen: "0.0.0.0:8080".into(),
            trusted_proxies: Vec::new(),
            access_log: "off".into(),
            upstream_ca_file: String::new(),
            workers: 0,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Reads (`GET`) need the token too, but for the probes and the dashboard's page.
    pub protect_reads: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9090".into(),
            token: String::new(),
            token_file: None,
            protect_reads: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStable {
    pub version: String,
    pub endpoints: Vec<String>,
}

impl Default for RawStable {
    fn default() -> Self {
        RawStable {
            version: "stable".into(),
            endpoints: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCanary {
    pub version: String,
    pub endpoints: Vec<String>,
    pub enabled: bool,
    /// `None` when neither the file nor the environment set it: 5 % without `[rollout]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_percent: Option<f64>,
    pub identity: Vec<String>,
    pub salt: String,
    pub expose_headers: bool,
    /// "stable": a request every canary endpoint refused goes to stable; "none": 502.
    pub failover: String,
    /// Testers' forced cohort: `NAME: always|never`, with `NAME-token: TOKEN` ("" = off).
    pub override_header: String,
    pub override_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_token_file: Option<String>,
    pub override_after_rollback: bool,
}

impl Default for RawCanary {
    fn default() -> Self {
        RawCanary {
            version: "canary".into(),
            endpoints: Vec::new(),
            enabled: true,
            traffic_percent: None,
            identity: vec![
                "header:x-user-id".into(),
                "cookie:session_id".into(),
                "ip".into(),
            ],
            salt: String::new(),
            expose_headers: true,
            failover: "stable".into(),
            override_header: String::new(),
            override_token: String::new(),
            override_token_file: None,
            override_after_rollback: false,
        }
    }
}

/// A status in `error_statuses`: a class such as `"5xx"`, or a code as text or as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRollback {
    pub auto: bool,
    pub window: String,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_relative_error: f64,
    pub max_latency: String,
    pub latency_tolerance: f64,
    pub latency_stat: String,
    pub false_rollback_budget: f64,
    pub error_statuses: Vec<RawStatus>,
    pub evaluate_every: String,
    pub latency_slack: String,
    pub ignore_paths: Vec<String>,
    /// gRPC status codes (names or numbers) that make a gRPC call the cohort's error.
    pub grpc_error_codes: Vec<RawStatus>,
}

impl Default for RawRollback {
    fn default() -> Self {
        RawRollback {
            auto: true,
            window: "5m".into(),
            min_requests: 100,
            max_error_rate: 1.0,
            max_relative_error: 2.0,
            max_latency: "2s".into(),
            latency_tolerance: 1.25,
            latency_stat: "p99".into(),
            false_rollback_budget: 0.001,
            error_statuses: vec![RawStatus::Text("5xx".into())],
            evaluate_every: "1s".into(),
            latency_slack: "5ms".into(),
            ignore_paths: Vec::new(),
            grpc_error_codes: [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS",
                "UNIMPLEMENTED",
            ]
            .map(|c| RawStatus::Text(c.into()))
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    pub path: String,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            path: "canary-state.json".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub connect: String,
    pub request: String,
    pub idle: String,
    pub header_read: String,
    pub body_read: String,
    pub drain: String,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            connect: "2s".into(),
            request: "30s".into(),
            idle: "90s".into(),
            header_read: "10s".into(),
            body_read: "30s".into(),
            drain: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_connections: u64,
    pub max_header_bytes: u64,
    pub max_uri_bytes: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: 10_000,
            max_header_bytes: 65_536,
            max_uri_bytes: 8_192,
        }
    }
}

/// `[fleet]`: replicas of one service sharing a latch and a judgement through Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub redis: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// The CA (PEM) that signs a `rediss://` server's certificate, instead of the system's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub redis_ca_file: String,
    /// From `CANARY_FLEET_REDIS_PASSWORD` only: never read from (or printed into) the file.
    #[serde(skip)]
    pub password: Option<String>,
}

/// `[rollout]`: the proxy ramps the canary through `steps`, each advanced by the promotion gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRollout {
    pub steps: Vec<f64>,
    pub bake: String,
    pub max_bake: String,
    pub promote_risk: f64,
    pub promote_margin: f64,
    pub auto: bool,
}

impl Default for RawRollout {
    fn default() -> Self {
        RawRollout {
            steps: vec![1.0, 5.0, 25.0, 50.0, 100.0],
            bake: "10m".into(),
            max_bake: "2h".into(),
            promote_risk: 0.01,
            promote_margin: 2.0,
            auto: true,
        }
    }
}

/// `[[notify]]`: a webhook told about every transition it asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub url: String,
    /// Empty: every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    #[serde(default = "json_format")]
    pub format: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// From `CANARY_NOTIFY_SECRET`, for a target with neither `secret` nor `secret_file`.
    #[serde(skip)]
    pub env_secret: Option<String>,
}

fn json_format() -> String {
    "json".into()
}
