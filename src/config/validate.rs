//! `RawConfig` -> `Config`: every value checked and given its type, errors naming the key
//! (or the environment variable that set it) and what was expected.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::*;

pub(super) struct Ctx<'a> {
    file: &'a str,
    base: &'a Path,
    overrides: &'a EnvOverrides,
}

impl Ctx<'_> {
    pub(super) fn err(&self, key: &str, expected: impl Into<String>) -> ConfigError {
        match self.overrides.var_for(key) {
            Some(var) => ConfigError {
                file: "environment".into(),
                key: format!("{var} (overrides {key})"),
                expected: expected.into(),
            },
            None => ConfigError {
                file: self.file.into(),
                key: key.into(),
                expected: expected.into(),
            },
        }
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn duration(&self, key: &str, text: &str) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(text.trim()).map_err(|_| {
            self.err(
                key,
                format!("a duration with a unit such as \"500ms\", \"2s\" or \"5m\", got {text:?}"),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(key, format!("a duration above zero, got {text:?}")));
        }
        Ok(d)
    }

    /// A secret given in the file (`value` at `key`) or in a file of its own (`file` at
    /// `file_key`, read and trimmed), never both; `None` when neither is set. `what` names it in
    /// errors ("the token").
    pub(super) fn secret(
        &self,
        (key, value): (&str, &str),
        (file_key, file): (&str, Option<&String>),
        what: &str,
    ) -> Result<Option<String>, ConfigError> {
        let short = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
        match (file, value.trim()) {
            (Some(_), v) if !v.is_empty() => Err(self.err(
                file_key,
                format!("either `{}` or `{}`, not both", short(key), short(file_key)),
            )),
            (Some(f), _) => {
                let path = self.path(f);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        file_key,
                        format!("a readable file with {what} ({}: {e})", path.display()),
                    )
                })?;
                Ok(Some(text.trim().to_string()))
            }
            (None, "") => Ok(None),
            (None, v) => Ok(Some(v.to_string())),
        }
    }

    fn socket(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.err(
                key,
                format!("an address such as \"127.0.0.1:8080\" or \"[::]:8080\", got {text:?}"),
            )
        })
    }

    pub(super) fn percent(&self, key: &str, v: f64) -> Result<f64, ConfigError> {
        if v.is_finite() && (0.0..=100.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.err(key, format!("a percent from 0 to 100, got {v}")))
        }
    }

    fn endpoints(&self, key: &str, list: &[String]) -> Result<Vec<EndpointConfig>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for (i, text) in list.iter().enumerate() {
            let key = format!("{key}[{i}]");
            let expected = || {
                self.err(&key, format!("an http:// or https:// URL with a host and no path, such as \"http://10.0.0.5:8080\", got {text:?}"))
            };
            let ep = EndpointConfig::parse(text).ok_or_else(expected)?;
            if out
                .iter()
                .any(|e: &EndpointConfig| e.authority == ep.authority && e.scheme == ep.scheme)
            {
                return Err(self.err(
                    &key,
                    format!("each endpoint once, {text:?} is listed twice"),
                ));
            }
            out.push(ep);
        }
        Ok(out)
    }
}

/// The share without `[rollout]` when neither the file nor the environment sets one.
const DEFAULT_PERCENT: f64 = 5.0;

/// Two listeners that would collide: the same port on the same address, or on a wildcard and
/// any address (port 0 asks for any free port and never collides).
fn same_socket(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

pub(super) fn validate(
    mut raw: RawConfig,
    file: &str,
    base: &Path,
    overrides: &EnvOverrides,
) -> Result<Config, ConfigError> {
    let cx = Ctx {
        file,
        base,
        overrides,
    };

    // [proxy]
    let listen = cx.socket("proxy.listen", &raw.proxy.listen)?;
    let mut trusted_proxies = Vec::new();
    for (i, t) in raw.proxy.trusted_proxies.iter().enumerate() {
        let net = t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                cx.err(
                    &format!("proxy.trusted_proxies[{i}]"),
                    format!("an IP or a CIDR such as \"10.0.0.0/8\", got {t:?}"),
                )
            })?;
        trusted_proxies.push(net);
    }
    let workers = match raw.proxy.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n <= 1024 => n as usize,
        n => {
            return Err(cx.err(
                "proxy.workers",
                format!("a thread count from 0 (one per CPU) to 1024, got {n}"),
            ))
        }
    };
    let access_log = match raw.proxy.access_log.trim() {
        "off" | "" => AccessLog::Off,
        "stdout" => AccessLog::Stdout,
        p => AccessLog::File(cx.path(p)),
    };
    let tls = match &raw.proxy.tls {
        None => None,
        Some(t) if t.cert.is_empty() || t.key.is_empty() => {
            return Err(cx.err("proxy.tls", "both `cert` and `key` as PEM file paths"))
        }
        Some(t) => Some(TlsFiles {
            cert: cx.path(&t.cert),
            key: cx.path(&t.key),
        }),
    };

    // [admin]
    let admin_listen = cx.socket("admin.listen", &raw.admin.listen)?;
    let token = cx.secret(
        ("admin.token", &raw.admin.token),
        ("admin.token_file", raw.admin.token_file.as_ref()),
        "the token",
    )?;
    if let (Some(""), Some(f)) = (token.as_deref(), &raw.admin.token_file) {
        return Err(cx.err(
            "admin.token_file",
            format!("a non-empty token in {}", cx.path(f).display()),
        ));
    }
    if raw.admin.protect_reads && token.is_none() {
        return Err(cx.err(
            "admin.protect_reads",
            "a token (admin.token, token_file or CANARY_ADMIN_TOKEN) to protect reads with",
        ));
    }
    if same_socket(&listen, &admin_listen) {
        return Err(cx.err(
            "admin.listen",
            format!("an address other than proxy.listen ({listen}): the two ports cannot share a socket"),
        ));
    }
    if token.is_none() && !is_loopback(&admin_listen) {
        return Err(cx.err(
            "admin.token",
            format!("a token (or token_file, or CANARY_ADMIN_TOKEN) because admin.listen {admin_listen} is not a loopback address"),
        ));
    }

    // [stable] and [canary]
    if raw.stable.version.trim().is_empty() {
        return Err(cx.err("stable.version", "a non-empty version"));
    }
    let stable_endpoints = cx.endpoints("stable.endpoints", &raw.stable.endpoints)?;
    if stable_endpoints.is_empty() {
        return Err(cx.err("stable.endpoints", "at least one endpoint URL"));
    }
    if raw.canary.version.trim().is_empty() {
        return Err(cx.err("canary.version", "a non-empty version"));
    }
    let canary_endpoints = cx.endpoints("canary.endpoints", &raw.canary.endpoints)?;
    let rollout = match &raw.rollout {
        Some(r) => Some(super::rollout::validate(
            &cx,
            r,
            raw.canary.traffic_percent,
        )?),
        None => None,
    };
    let traffic_percent = match (&rollout, raw.canary.traffic_percent) {
        (Some(r), _) => r.steps[0],
        (None, Some(p)) => cx.percent("canary.traffic_percent", p)?,
        (None, None) => DEFAULT_PERCENT,
    };
    if rollout.is_none() {
        // `check` prints the share in force, default or not.
        raw.canary.traffic_percent = Some(traffic_percent);
    }
    let failover_to_stable = match raw.canary.failover.as_str() {
        "stable" => true,
        "none" => false,
        other => {
            return Err(cx.err(
                "canary.failover",
                format!("\"stable\" (a refused canary connect is served by stable) or \"none\" (502), got {other:?}"),
            ))
        }
    };
    let forced = super::forced::validate(&cx, &raw.canary)?;
    if raw.canary.identity.is_empty() {
        return Err(cx.err(
            "canary.identity",
            "at least one source: \"header:NAME\", \"cookie:NAME\" or \"ip\"",
        ));
    }
    let mut identity = Vec::new();
    for (i, s) in raw.canary.identity.iter().enumerate() {
        identity.push(
            IdentitySource::parse(s).map_err(|e| cx.err(&format!("canary.identity[{i}]"), e))?,
        );
    }

    // [state]
    if raw.state.path.trim().is_empty() {
        return Err(cx.err("state.path", "a file path for the rollback latch"));
    }
    let state = StateConfig {
        path: cx.path(&raw.state.path),
    };

    // [timeouts]
    let t = &raw.timeouts;
    let timeouts = Timeouts {
        connect: cx.duration("timeouts.connect", &t.connect)?,
        request: cx.duration("timeouts.request", &t.request)?,
        idle: cx.duration("timeouts.idle", &t.idle)?,
        header_read: cx.duration("timeouts.header_read", &t.header_read)?,
        body_read: cx.duration("timeouts.body_read", &t.body_read)?,
        drain: cx.duration("timeouts.drain", &t.drain)?,
    };

    // [limits]
    let l = &raw.limits;
    if !(1..=1_000_000).contains(&l.max_connections) {
        return Err(cx.err(
            "limits.max_connections",
            format!("a count from 1 to 1000000, got {}", l.max_connections),
        ));
    }
    if !(1024..=1 << 20).contains(&l.max_header_bytes) {
        return Err(cx.err(
            "limits.max_header_bytes",
            format!("bytes from 1024 to 1048576, got {}", l.max_header_bytes),
        ));
    }
    if !(64..=1 << 20).contains(&l.max_uri_bytes) {
        return Err(cx.err(
            "limits.max_uri_bytes",
            format!("bytes from 64 to 1048576, got {}", l.max_uri_bytes),
        ));
    }
    let limits = Limits {
        max_connections: l.max_connections as usize,
        max_header_bytes: l.max_header_bytes as usize,
        max_uri_bytes: l.max_uri_bytes as usize,
    };

    let rollback = super::rollback::validate(&cx, &raw.rollback)?;
    let fleet = match &raw.fleet {
        Some(f) => Some(super::fleet::validate(&cx, f)?),
        None => None,
    };
    let notify = super::notify::validate(&cx, &raw.notify)?;

    Ok(Config {
        proxy: ProxyConfig {
            listen,
            trusted_proxies,
            access_log,
            tls,
            workers,
            upstream_ca_file: match raw.proxy.upstream_ca_file.trim() {
                "" => None,
                p => Some(cx.path(p)),
            },
        },
        admin: AdminConfig {
            listen: admin_listen,
            token,
            protect_reads: raw.admin.protect_reads,
        },
        stable: PoolConfig {
            version: raw.stable.version.trim().to_string(),
            endpoints: stable_endpoints,
        },
        canary: CanaryConfig {
            version: raw.canary.version.trim().to_string(),
            endpoints: canary_endpoints,
            enabled: raw.canary.enabled,
            traffic_percent,
            identity,
            salt: raw.canary.salt.clone(),
            expose_headers: raw.canary.expose_headers,
            failover_to_stable,
            forced,
        },
        rollback,
        state,
        timeouts,
        limits,
        fleet,
        rollout,
        notify,
        effective: raw,
        env: overrides.clone(),
    })
}
