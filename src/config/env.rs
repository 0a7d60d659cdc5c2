//! The twelve-factor overrides: `CANARY_*` variables win over the file. A malformed value is
//! an error that names the variable, never silently ignored; a range error found later by
//! validation names it too (through `EnvOverrides`).

use super::{ConfigError, RawConfig};

/// Every variable, the key it overrides, and what it takes.
pub const ENV_VARS: [(&str, &str, &str); 9] = [
    ("CANARY_ENABLED", "canary.enabled", "a boolean"),
    (
        "CANARY_TRAFFIC_PERCENT",
        "canary.traffic_percent",
        "a number from 0 to 100",
    ),
    ("CANARY_VERSION", "canary.version", "a version string"),
    (
        "CANARY_ERROR_THRESHOLD",
        "rollback.max_error_rate",
        "a percent from 0 to 100",
    ),
    (
        "CANARY_LATENCY_THRESHOLD",
        "rollback.max_latency",
        "a duration with a unit",
    ),
    ("CANARY_AUTO_ROLLBACK", "rollback.auto", "a boolean"),
    ("CANARY_WINDOW", "rollback.window", "a duration with a unit"),
    ("CANARY_ADMIN_TOKEN", "admin.token", "a token"),
    ("CANARY_OVERRIDE_TOKEN", "canary.override_token", "a token"),
];

/// The Redis password of `[fleet]`: from the environment only, so it stays out of files.
pub const FLEET_PASSWORD_VAR: &str = "CANARY_FLEET_REDIS_PASSWORD";

/// Which keys came from which variable, so validation can blame the variable, `check` can say
/// where a value came from, and a reload can say when the file's own value is masked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EnvOverrides {
    pairs: Vec<(&'static str, &'static str)>,
    /// What the file (or the default) said for each overridden key, as TOML text.
    file_values: Vec<String>,
}

impl EnvOverrides {
    /// The variable that set `key`, if any.
    pub fn var_for(&self, key: &str) -> Option<&'static str> {
        self.pairs.iter().find(|(_, k)| *k == key).map(|(v, _)| *v)
    }

    /// (variable, key, the file's value) for every override in force.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, &str)> {
        self.pairs
            .iter()
            .zip(&self.file_values)
            .map(|((v, k), f)| (*v, *k, f.as_str()))
    }
}

impl EnvOverrides {
    /// The overrides that hide a different value in the file: (variable, key, the file's
    /// value, the value in force). A reload warns about each, so an edit is never silently lost.
    pub fn masked<'a>(
        &'a self,
        effective: &'a RawConfig,
    ) -> impl Iterator<Item = (&'static str, &'static str, &'a str, String)> + 'a {
        self.iter().filter_map(move |(var, key, file)| {
            let now = value_of(effective, key);
            let secret = key.ends_with("token");
            (now != file && !secret).then_some((var, key, file, now))
        })
    }
}

/// Every `CANARY_*` variable this program reads (the admin client's included).
pub const KNOWN_VARS: [&str; 3] = [
    "CANARY_ADMIN_URL",
    FLEET_PASSWORD_VAR,
    super::notify::SECRET_VAR,
];

/// The `CANARY_*` variables that nothing reads, each with the closest known one: likely typos,
/// said out loud (a warning, not an error: Kubernetes injects `CANARY_SERVICE_HOST` and the like
/// for a Service named `canary`, which are skipped, and other tools may share the prefix).
pub fn unknown_vars(vars: impl Iterator<Item = String>) -> Vec<(String, &'static str)> {
    let known: Vec<&'static str> = ENV_VARS
        .iter()
        .map(|(v, _, _)| *v)
        .chain(KNOWN_VARS)
        .collect();
    vars.filter(|v| v.starts_with("CANARY_") && !known.contains(&v.as_str()))
        .filter(|v| !is_service_link(v))
        .map(|v| {
            let closest = known
                .iter()
                .min_by_key(|k| distance(k, &v))
                .copied()
                .unwrap_or("");
            (v, closest)
        })
        .collect()
}

/// Kubernetes' service-link variables: `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT[_*]`,
/// `NAME_PORT`, `NAME_PORT_<port>_<proto>[_*]`.
fn is_service_link(v: &str) -> bool {
    v.contains("_SERVICE_HOST")
        || v.contains("_SERVICE_PORT")
        || v.ends_with("_PORT")
        || v.split("_PORT_")
            .nth(1)
            .is_some_and(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + (ca != *cb) as usize).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The value `key` has in `raw`, as TOML text (what the file said before an override).
fn value_of(raw: &RawConfig, key: &str) -> String {
    let v = toml::Value::try_from(raw).ok();
    let mut at = v.as_ref();
    for part in key.split('.') {
        at = at.and_then(|t| t.get(part));
    }
    at.map(|v| v.to_string())
        .unwrap_or_else(|| "(unset)".into())
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn bad(var: &str, key: &str, expected: &str, got: &str) -> ConfigError {
    ConfigError {
        file: "environment".into(),
        key: format!("{var} (overrides {key})"),
        expected: format!("{expected}, got {got:?}"),
    }
}

/// Applies every set variable to `raw`. Types are checked here; ranges by validation.
pub fn apply_env(
    raw: &mut RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvOverrides, ConfigError> {
    let mut overrides = EnvOverrides::default();
    for (var, key, expected) in ENV_VARS {
        let Some(value) = env(var) else { continue };
        let fail = || bad(var, key, expected, &value);
        let file_value = value_of(raw, key);
        match var {
            "CANARY_ENABLED" => raw.canary.enabled = parse_bool(&value).ok_or_else(fail)?,
            "CANARY_AUTO_ROLLBACK" => raw.rollback.auto = parse_bool(&value).ok_or_else(fail)?,
            "CANARY_TRAFFIC_PERCENT" => {
                raw.canary.traffic_percent = Some(value.trim().parse().map_err(|_| fail())?)
            }
            "CANARY_ERROR_THRESHOLD" => {
                raw.rollback.max_error_rate = value.trim().parse().map_err(|_| fail())?
            }
            "CANARY_VERSION" => {
                if value.trim().is_empty() {
                    return Err(fail());
                }
                raw.canary.version = value.trim().to_string();
            }
            "CANARY_LATENCY_THRESHOLD" => {
                humantime::parse_duration(value.trim()).map_err(|_| fail())?;
                raw.rollback.max_latency = value.trim().to_string();
            }
            "CANARY_WINDOW" => {
                humantime::parse_duration(value.trim()).map_err(|_| fail())?;
                raw.rollback.window = value.trim().to_string();
            }
            "CANARY_OVERRIDE_TOKEN" => {
                raw.canary.override_token = value.trim().to_string();
                raw.canary.override_token_file = None;
            }
            "CANARY_ADMIN_TOKEN" => {
                raw.admin.token = value.trim().to_string();
                // The variable wins over a token file too.
                raw.admin.token_file = None;
            }
            _ => unreachable!("every variable of ENV_VARS is handled"),
        }
        overrides.pairs.push((var, key));
        overrides.file_values.push(file_value);
    }
    if let (Some(fleet), Some(pw)) = (&mut raw.fleet, env(FLEET_PASSWORD_VAR)) {
        fleet.password = Some(pw.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Some(secret) = env(super::notify::SECRET_VAR) {
        for n in &mut raw.notify {
            n.env_secret = Some(secret.trim().to_string());
        }
    }
    Ok(overrides)
}
