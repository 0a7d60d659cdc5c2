//! `[fleet]` checked: the Redis URL (its password masked in any error), plain names for the
//! fleet and the replica, and a CA file only where TLS is asked for.

use super::validate::Ctx;
use super::*;

/// A Redis URL fit for logs and `check`: any password replaced by `***`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// Fleet and replica names go into Redis keys and log lines: keep them plain.
fn plain_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub(super) fn validate(cx: &Ctx, f: &RawFleet) -> Result<FleetConfig, ConfigError> {
    let redis = f.redis.trim();
    let scheme_ok = redis.starts_with("redis://") || redis.starts_with("rediss://");
    if !scheme_ok || redis::Client::open(redis).is_err() {
        return Err(cx.err(
            "fleet.redis",
            format!(
                "a redis:// or rediss:// URL such as \"redis://10.0.0.9:6379/0\", got {:?}",
                mask_password(redis)
            ),
        ));
    }
    if !plain_name(f.name.trim()) {
        return Err(cx.err(
            "fleet.name",
            format!("the fleet's name: letters, digits, '-', '_' or '.', shared by the replicas of one service, got {:?}", f.name),
        ));
    }
    let replica = match f.replica.trim() {
        "" => crate::sys::hostname(),
        r => r.to_string(),
    };
    if !plain_name(&replica) {
        return Err(cx.err(
            "fleet.replica",
            format!("this replica's name: letters, digits, '-', '_' or '.' (default: the hostname), got {replica:?}"),
        ));
    }
    let redis_ca_file = match f.redis_ca_file.trim() {
        "" => None,
        _ if !redis.starts_with("rediss://") => {
            return Err(cx.err(
                "fleet.redis_ca_file",
                "no CA file with a plain redis:// URL: use rediss:// for TLS",
            ))
        }
        p => Some(cx.path(p)),
    };
    Ok(FleetConfig {
        redis_ca_file,
        redis: redis.to_string(),
        password: f.password.clone().filter(|p| !p.is_empty()),
        name: f.name.trim().to_string(),
        replica,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(fleet: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let toml = format!("[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n[fleet]\n{fleet}");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::from_toml_str(&toml, "fleet.toml", Path::new("."), &lookup)
    }

    #[test]
    fn a_fleet_is_checked_key_by_key() {
        let ok = load(
            "redis = \"redis://127.0.0.1:6379/0\"\nname = \"checkout\"",
            &[("CANARY_FLEET_REDIS_PASSWORD", "s3cret\n")],
        )
        .unwrap();
        let f = ok.fleet.as_ref().unwrap();
        assert_eq!(f.password.as_deref(), Some("s3cret"));
        assert!(!f.replica.is_empty(), "the hostname by default");
        assert!(!ok.render_masked().contains("s3cret"));

        let cases = [
            (
                "redis = \"http://x:1\"\nname = \"a\"",
                "fleet.redis",
                "redis://",
            ),
            (
                "redis = \"redis://x:1\"\nname = \"a b\"",
                "fleet.name",
                "letters",
            ),
            (
                "redis = \"redis://x:1\"\nname = \"a\"\nreplica = \"p/q\"",
                "fleet.replica",
                "letters",
            ),
            ("redis = \"redis://x:1\"", "fleet", "name"),
            (
                "redis = \"redis://x:1\"\nname = \"a\"\npassword = \"p\"",
                "fleet",
                "password",
            ),
        ];
        for (text, key, says) in cases {
            let e = load(text, &[]).unwrap_err();
            let shown = e.to_string();
            assert!(
                shown.contains("fleet.toml") && shown.contains(key) && shown.contains(says),
                "{text:?}: {shown}"
            );
        }
        let masked = load("redis = \"redis://:pw@x:1/0/9\"\nname = \"a\"", &[])
            .unwrap_err()
            .to_string();
        assert!(!masked.contains("pw@"), "{masked}");
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            mask_password("redis://:s3cret@10.0.0.9:6379/0"),
            "redis://:***@10.0.0.9:6379/0"
        );
        assert_eq!(
            mask_password("rediss://app:s3cret@r.example:6380"),
            "rediss://app:***@r.example:6380"
        );
        assert_eq!(
            mask_password("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
