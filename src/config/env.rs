//! The twelve-factor overrides: `CANARY_*` variables win over the file. A malformed value is
//! an error that names the variable, never silently ignored; a range error found later by
//! validation names it too (through `EnvOverrides`).

use super::{ConfigError, RawConfig};

/// Every variable, the key it overrides, and what it takes.
pub const ENV_VARS: [(&str, &str, &str); 8] = [
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
];

/// The Redis password of `[fleet]`: from the environment only, so it stays out of files.
pub const FLEET_PASSWORD_VAR: &str = "CANARY_FLEET_REDIS_PASSWORD";

/// Which keys came from which variable, so validation can blame the variable.
#[derive(Debug, Default, Clone)]
pub struct EnvOverrides {
    pairs: Vec<(&'static str, &'static str)>,
}

impl EnvOverrides {
    /// The variable that set `key`, if any.
    pub fn var_for(&self, key: &str) -> Option<&'static str> {
        self.pairs.iter().find(|(_, k)| *k == key).map(|(v, _)| *v)
    }
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
            "CANARY_ADMIN_TOKEN" => {
                raw.admin.token = value.trim().to_string();
                // The variable wins over a token file too.
                raw.admin.token_file = None;
            }
            _ => unreachable!("every variable of ENV_VARS is handled"),
        }
        overrides.pairs.push((var, key));
    }
    if let (Some(fleet), Some(pw)) = (&mut raw.fleet, env(FLEET_PASSWORD_VAR)) {
        fleet.password = Some(pw.trim_end_matches(['\r', '\n']).to_string());
    }
    Ok(overrides)
}
