//! The admin subcommands as the CLI runs them: where to call and with which token (flags, the
//! environment, or the proxy's own config), one call, its output for people or for `jq`, and
//! an exit code a script can branch on.

use std::path::Path;

use http::Method;
use serde_json::{json, Value};

use crate::admin::client::{self, ClientError};
use crate::config::Config;

/// Exit codes of the admin subcommands (`wait` has its own: see `client::WaitOutcome`).
pub mod exit {
    pub const OK: u8 = 0;
    /// The proxy failed the call (500), or answered what cannot be read.
    pub const FAILED: u8 = 1;
    /// Bad usage: a bad URL or token file, a refused body, or a config the proxy refused (422).
    pub const USAGE: u8 = 2;
    /// The state does not allow it (409): resume while not rolled back, promote when complete.
    pub const CONFLICT: u8 = 3;
    /// A missing or wrong token (401).
    pub const UNAUTHORIZED: u8 = 4;
    /// Nobody answered at the admin address.
    pub const UNREACHABLE: u8 = 5;
}

/// Where the call goes and with what token.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub admin: String,
    pub token: Option<String>,
}

/// The default admin address, as SPEC says.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9090";

/// `--admin` (or `CANARY_ADMIN_URL`) over the config's `admin.listen` over the default; the
/// token from `--token-file`, then `--token` (or `CANARY_ADMIN_TOKEN`), then the config's.
pub fn target(
    admin: Option<&str>,
    token: Option<&str>,
    token_file: Option<&Path>,
    config: Option<&Path>,
) -> Result<Target, String> {
    let loaded = match config {
        Some(path) => {
            let env = |k: &str| std::env::var(k).ok();
            Some(Config::load(path, &env).map_err(|e| format!("invalid config: {e}"))?)
        }
        None => None,
    };
    let admin = match (admin, &loaded) {
        (Some(a), _) => a.to_string(),
        (None, Some(c)) => {
            // A wildcard listener is reached on loopback.
            let mut addr = c.admin.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}")
        }
        (None, None) => DEFAULT_ADMIN.to_string(),
    };
    let token = match (token_file, token) {
        (Some(f), _) => Some(read_token(f)?),
        (None, Some(t)) => Some(t.to_string()),
        (None, None) => loaded.and_then(|c| c.admin.token),
    };
    Ok(Target { admin, token })
}

fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: cannot read it ({e})", path.display()))?;
    Ok(text.trim().to_string())
}

/// The exit code for a refusal.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::BadUrl(_) => exit::USAGE,
        ClientError::Unreachable { .. } => exit::UNREACHABLE,
        ClientError::Refused { status: 401, .. } => exit::UNAUTHORIZED,
        ClientError::Refused { status: 409, .. } => exit::CONFLICT,
        ClientError::Refused {
            status: 400 | 405 | 422,
            ..
        } => exit::USAGE,
        ClientError::Refused { .. } => exit::FAILED,
    }
}

/// One admin call, printed: a summary for people (or the JSON with `json`, refusals included,
/// as `{"error", "status"}`); the exit code. A rollback of a canary already rolled back is
/// done, not a failure: the state asked for holds.
pub async fn run(
    target: &Target,
    json_out: bool,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> u8 {
    let token = target.token.as_deref();
    match client::call(&target.admin, method, path, token, body).await {
        Ok(v) if json_out => {
            println!("{v}");
            exit::OK
        }
        Ok(v) => {
            if path != "/canary/status" {
                println!(
                    "{}: done (state was {}, now {})",
                    path.trim_start_matches("/canary/"),
                    v["before"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                );
            }
            let window = match v["state"].as_str() {
                Some("rolled_back") | None => None,
                Some(_) => client::call(&target.admin, Method::GET, "/canary/metrics", token, None)
                    .await
                    .ok(),
            };
            print!("{}", client::human_status(&v, window.as_ref()));
            exit::OK
        }
        Err(ClientError::Refused {
            status: 409,
            reason,
        }) if path == "/canary/rollback" => {
            if json_out {
                println!(
                    "{}",
                    json!({"already": true, "state": "rolled_back", "reason": reason})
                );
            } else {
                println!("rollback: nothing to do, {reason}");
            }
            exit::OK
        }
        Err(e) => {
            if json_out {
                let status = match &e {
                    ClientError::Refused { status, .. } => json!(status),
                    _ => Value::Null,
                };
                println!("{}", json!({"error": e.to_string(), "status": status}));
            }
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}
