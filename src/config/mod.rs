//! The typed, validated configuration: TOML -> `RawConfig` (serde, unknown keys rejected) ->
//! env overrides -> `Config`. Every error names the file, the key (or the variable) and what
//! was expected. No IO besides reading the file and the token file in `load`.

mod env;
mod fleet;
mod forced;
mod identity;
mod notify;
mod raw;
mod rollback;
mod rollout;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use env::{apply_env, unknown_vars, EnvOverrides, ENV_VARS, KNOWN_VARS};
pub use fleet::mask_password;
pub use forced::ForcedCohort;
pub use identity::IdentitySource;
pub use notify::{mask_url, NotifyFormat, NotifyTarget, Secret, EVENTS};
pub use raw::*;
pub use rollback::IgnorePaths;

/// A config that could not be loaded: where, which key, and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {key}: {expected}")]
pub struct ConfigError {
    /// The file, or `environment` for an override.
    pub file: String,
    /// A dotted key, or the environment variable (with the key it overrides).
    pub key: String,
    pub expected: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub stable: PoolConfig,
    pub canary: CanaryConfig,
    pub rollback: RollbackConfig,
    pub state: StateConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub fleet: Option<FleetConfig>,
    /// `[rollout]`: with it, the current step's percent is the canary's share.
    pub rollout: Option<RolloutConfig>,
    /// `[[notify]]`: the webhooks told about transitions.
    pub notify: Vec<NotifyTarget>,
    /// What the config was built from, with env overrides and defaults applied: `check` prints it.
    pub effective: RawConfig,
    /// Which keys the environment set, over what the file said.
    pub env: EnvOverrides,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
    pub access_log: AccessLog,
    pub tls: Option<TlsFiles>,
    pub upstream_ca_file: Option<PathBuf>,
    /// At least 1: `proxy.workers`, or the CPUs available when it is 0.
    pub workers: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `None` when no token is set: mutating calls are then open (loopback only).
    pub token: Option<String>,
    /// Reads need the token too (`/healthz`, `/readyz` and the dashboard's page stay open).
    pub protect_reads: bool,
}

/// An upstream endpoint: `http(s)://host:port`, no path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointConfig {
    pub url: String,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

impl EndpointConfig {
    /// `None` unless `text` is an `http://` or `https://` URL with a host and no path, query or
    /// user info; the URL is kept normalised (`scheme://authority`).
    pub fn parse(text: &str) -> Option<EndpointConfig> {
        let uri: http::Uri = text.parse().ok()?;
        let scheme = uri.scheme().cloned()?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return None;
        }
        let authority = uri.authority().cloned()?;
        let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
        if !path_ok || authority.host().is_empty() || authority.as_str().contains('@') {
            return None;
        }
        Some(EndpointConfig {
            url: format!("{scheme}://{authority}"),
            scheme,
            authority,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub version: String,
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    pub version: String,
    pub endpoints: Vec<EndpointConfig>,
    pub enabled: bool,
    /// The configured share; with `[rollout]`, the first step (the table holds the current one).
    pub traffic_percent: f64,
    pub identity: Vec<IdentitySource>,
    pub salt: String,
    pub expose_headers: bool,
    /// A request that every canary endpoint refused (nothing sent) is served by stable.
    pub failover_to_stable: bool,
    /// Testers' forced cohort, when `override_header` is set.
    pub forced: Option<ForcedCohort>,
}

/// `[rollout]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// Percent, strictly increasing, each in (0, 100].
    pub steps: Vec<f64>,
    pub bake: Duration,
    pub max_bake: Duration,
    pub promote_risk: f64,
    pub promote_margin: f64,
    pub auto: bool,
}

impl RolloutConfig {
    /// Where a canary at `percent` stands when the steps change: at its percent if that is a
    /// step, else at the highest step below it (a new list never raises the share), else at
    /// the first step.
    pub fn step_for(&self, percent: f64) -> usize {
        self.steps
            .iter()
            .rposition(|s| *s <= percent + 1e-9)
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyStat {
    P50,
    P90,
    P95,
    P99,
}

impl LatencyStat {
    /// The quantile, e.g. 0.99 for p99.
    pub fn quantile(self) -> f64 {
        match self {
            LatencyStat::P50 => 0.50,
            LatencyStat::P90 => 0.90,
            LatencyStat::P95 => 0.95,
            LatencyStat::P99 => 0.99,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LatencyStat::P50 => "p50",
            LatencyStat::P90 => "p90",
            LatencyStat::P95 => "p95",
            LatencyStat::P99 => "p99",
        }
    }
}

/// Which upstream statuses are errors: a bitmap over 100..=599.
#[derive(Clone, PartialEq, Eq)]
pub struct ErrorStatuses {
    bits: [u64; 10],
}

impl ErrorStatuses {
    pub fn none() -> Self {
        ErrorStatuses { bits: [0; 10] }
    }

    pub fn insert(&mut self, code: u16) {
        if code < 640 {
            self.bits[code as usize / 64] |= 1 << (code % 64);
        }
    }

    pub fn contains(&self, code: u16) -> bool {
        code < 640 && self.bits[code as usize / 64] & (1 << (code % 64)) != 0
    }
}

impl std::fmt::Debug for ErrorStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((100u16..600).filter(|c| self.contains(*c)))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RollbackConfig {
    pub auto: bool,
    pub window: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_relative_error: f64,
    pub max_latency: Duration,
    pub latency_tolerance: f64,
    pub latency_stat: LatencyStat,
    pub false_rollback_budget: f64,
    pub error_statuses: ErrorStatuses,
    pub evaluate_every: Duration,
    /// The stable-relative latency bound is at least the stable's plus this.
    pub latency_slack: Duration,
    /// Requests to these paths are routed and counted but never judged.
    pub ignore_paths: IgnorePaths,
    /// gRPC status codes (0..=16, a bit each) that make a gRPC call an error.
    pub grpc_error_codes: u32,
}

impl RollbackConfig {
    /// `window / evaluate_every`, rounded up.
    pub fn window_slices(&self) -> usize {
        let w = self.window.as_nanos();
        let s = self.evaluate_every.as_nanos().max(1);
        w.div_ceil(s) as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub path: PathBuf,
}

/// `[fleet]`, checked: the Redis address with any password applied, the key prefix and this
/// replica's name.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub redis: String,
    pub password: Option<String>,
    pub name: String,
    pub replica: String,
    pub redis_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub idle: Duration,
    pub header_read: Duration,
    pub body_read: Duration,
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
}

impl Config {
    /// Reads `path`, applies the environment (`env` looks a variable up), validates.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            expected: format!("a readable TOML file ({e})"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_str(&text, &file, base, env)
    }

    /// Parses TOML text; `file` names it in errors, `base` anchors relative paths.
    pub fn from_toml_str(
        text: &str,
        file: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut raw = parse_raw(text, file)?;
        let overrides = apply_env(&mut raw, env)?;
        validate::validate(raw, file, base, &overrides)
    }

    /// The effective config as TOML, with secrets shown as `"***"`, after a comment naming each
    /// value the environment set.
    pub fn render_masked(&self) -> String {
        let mut from_env = String::new();
        for (var, key, file) in self.env.iter() {
            let file = if key == "admin.token" {
                "\"***\""
            } else {
                file
            };
            from_env.push_str(&format!("# {key}: from {var} (the file says {file})\n"));
        }
        if !from_env.is_empty() {
            from_env.insert_str(0, "# Set by the environment, over the file:\n");
            from_env.push('\n');
        }
        from_env + &self.render_masked_toml()
    }

    /// The masked TOML alone.
    fn render_masked_toml(&self) -> String {
        let mut shown = self.effective.clone();
        if !shown.admin.token.is_empty() || self.admin.token.is_some() {
            shown.admin.token = "***".into();
        }
        if !shown.canary.override_token.is_empty() {
            shown.canary.override_token = "***".into();
        }
        if let Some(f) = &mut shown.fleet {
            f.redis = mask_password(&f.redis);
        }
        for n in &mut shown.notify {
            n.url = mask_url(&n.url);
            if !n.secret.is_empty() {
                n.secret = "***".into();
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
        file: file.into(),
        key: "(syntax)".into(),
        expected: format!("valid TOML: {}", one_line(&e.to_string())),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError {
            file: file.into(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            expected: one_line(&e.into_inner().to_string()),
        }
    })
}

/// toml's messages quote the offending line over several lines; one line reads better in logs.
fn one_line(msg: &str) -> String {
    let last = msg
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'));
    let lead = msg.lines().next().unwrap_or("").trim();
    match last {
        Some(l) if l != lead && lead.starts_with("TOML parse error") => format!("{l} ({lead})"),
        Some(l) => l.to_string(),
        None => lead.to_string(),
    }
}
