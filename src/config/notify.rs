//! `[[notify]]` checked: where the proxy tells people what it did. A target's URL may hold a
//! secret (Slack's does), so it is never a label, a log field or printed whole by `check`; the
//! `name` is what names the target everywhere.

use super::validate::Ctx;
use super::*;

/// Every event a target can ask for, in the order the docs list them.
pub const EVENTS: [&str; 12] = [
    "rolled_back",
    "resumed",
    "step_advanced",
    "ready",
    "holding",
    "complete",
    "paused",
    "continued",
    "reset",
    "reloaded",
    "reload_refused",
    "fleet_alone",
];

/// The variable a target without `secret` or `secret_file` takes its secret from.
pub const SECRET_VAR: &str = "CANARY_NOTIFY_SECRET";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    Json,
    Slack,
}

/// A signing secret: compared and used, never shown (`Debug` prints `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyTarget {
    /// The `target` label and the log field: `notify-N` (1-based) unless named.
    pub name: String,
    pub url: http::Uri,
    /// A bit per `EVENTS` entry.
    pub events: u32,
    pub format: NotifyFormat,
    pub secret: Option<Secret>,
}

impl NotifyTarget {
    pub fn wants(&self, event: &str) -> bool {
        EVENTS
            .iter()
            .position(|e| *e == event)
            .is_some_and(|i| self.events & (1 << i) != 0)
    }
}

/// A URL fit for `check` and error messages: scheme and authority, the rest (where Slack keeps
/// its token) as `***`.
pub fn mask_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) if u.scheme().is_some() && u.authority().is_some() => {
            let rest = u.path_and_query().map_or("", |p| p.as_str());
            let shown = if matches!(rest, "" | "/") { "" } else { "/***" };
            let host = u.authority().map_or("", |a| a.host());
            let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{shown}", u.scheme_str().unwrap_or(""))
        }
        _ => "***".into(),
    }
}

pub(super) fn validate(cx: &Ctx, list: &[RawNotify]) -> Result<Vec<NotifyTarget>, ConfigError> {
    let mut out: Vec<NotifyTarget> = Vec::with_capacity(list.len());
    for (i, n) in list.iter().enumerate() {
        let key = |k: &str| format!("notify[{i}].{k}");
        let name = match n.name.trim() {
            "" => format!("notify-{}", i + 1),
            s => s.to_string(),
        };
        let plain = name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !plain {
            return Err(cx.err(
                &key("name"),
                format!("a plain name (letters, digits, '-', '_', '.'; at most 64), got {name:?}"),
            ));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(cx.err(
                &key("name"),
                format!("a name no other target has, got {name:?} twice"),
            ));
        }
        let url: http::Uri = n
            .url
            .trim()
            .parse()
            .ok()
            .filter(|u: &http::Uri| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            })
            .ok_or_else(|| {
                cx.err(
                    &key("url"),
                    format!(
                        "an http:// or https:// URL such as \"https://hooks.example.com/canary\", got {:?}",
                        mask_url(&n.url)
                    ),
                )
            })?;
        let mut events = 0u32;
        for (j, e) in n.events.iter().enumerate() {
            let Some(bit) = EVENTS.iter().position(|k| *k == e.trim()) else {
                return Err(cx.err(
                    &format!("notify[{i}].events[{j}]"),
                    format!("one of {}, got {e:?}", EVENTS.join(", ")),
                ));
            };
            events |= 1 << bit;
        }
        if n.events.is_empty() {
            events = (1 << EVENTS.len()) - 1;
        }
        let format = match n.format.trim() {
            "json" | "" => NotifyFormat::Json,
            "slack" => NotifyFormat::Slack,
            other => {
                return Err(cx.err(
                    &key("format"),
                    format!("\"json\" (signed, for programs) or \"slack\" (a Slack or Mattermost incoming webhook), got {other:?}"),
                ))
            }
        };
        let secret = cx
            .secret(
                (&key("secret"), &n.secret),
                (&key("secret_file"), n.secret_file.as_ref()),
                "the secret",
            )?
            .or_else(|| n.env_secret.clone());
        if secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(cx.err(
                &key("secret"),
                "a secret of at least 16 characters (a short one is guessed from the signatures)",
            ));
        }
        out.push(NotifyTarget {
            name,
            url,
            events,
            format,
            secret: secret.map(Secret),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, NotifyFormat};

    fn load(notify: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let toml = format!("[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n{notify}");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::from_toml_str(&toml, "t.toml", std::path::Path::new("."), &lookup)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn targets_are_named_by_position_filtered_and_masked_in_check() {
        let c = load(
            "[[notify]]\nurl = \"https://hooks.slack.com/services/T0/B0/XYZ\"\nformat = \"slack\"\nevents = [\"rolled_back\"]\n\
             [[notify]]\nname = \"audit\"\nurl = \"http://10.0.0.7:8080/\"\nsecret = \"0123456789abcdef0\"\n",
            &[],
        )
        .unwrap();
        let (a, b) = (&c.notify[0], &c.notify[1]);
        assert_eq!(
            (a.name.as_str(), a.format),
            ("notify-1", NotifyFormat::Slack)
        );
        assert!(a.wants("rolled_back") && !a.wants("resumed") && a.secret.is_none());
        assert!(b.wants("fleet_alone") && b.wants("reload_refused"));
        let shown = c.render_masked();
        assert!(shown.contains("https://hooks.slack.com/***"), "{shown}");
        assert!(
            !shown.contains("XYZ") && !shown.contains("0123456789abcdef0"),
            "{shown}"
        );
        assert!(!format!("{b:?}").contains("0123456789abcdef0"));
    }

    #[test]
    fn the_environment_signs_targets_without_a_secret_of_their_own() {
        let c = load(
            "[[notify]]\nurl = \"http://h/\"\n[[notify]]\nurl = \"http://h/\"\nname = \"own\"\nsecret = \"a-secret-of-its-own\"\n",
            &[("CANARY_NOTIFY_SECRET", "from-the-environment\n")],
        )
        .unwrap();
        assert_eq!(
            c.notify[0].secret.as_ref().unwrap().0,
            "from-the-environment"
        );
        assert_eq!(
            c.notify[1].secret.as_ref().unwrap().0,
            "a-secret-of-its-own"
        );
    }

    #[test]
    fn bad_targets_name_the_key() {
        for (toml, key, says) in [
            (
                "url = \"ftp://h/x\"",
                "notify[0].url",
                "http:// or https://",
            ),
            (
                "url = \"http://h/\"\nevents = [\"rolledback\"]",
                "notify[0].events[0]",
                "rolled_back",
            ),
            (
                "url = \"http://h/\"\nformat = \"teams\"",
                "notify[0].format",
                "slack",
            ),
            (
                "url = \"http://h/\"\nsecret = \"short\"",
                "notify[0].secret",
                "16 characters",
            ),
            (
                "url = \"http://h/\"\nname = \"a b\"",
                "notify[0].name",
                "plain name",
            ),
        ] {
            let e = load(&format!("[[notify]]\n{toml}\n"), &[]).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{e}");
        }
        let e = load("[[notify]]\nurl = \"http://h/\"\nname = \"x\"\n[[notify]]\nurl = \"http://h/\"\nname = \"x\"\n", &[]).unwrap_err();
        assert!(e.contains("notify[1].name") && e.contains("twice"), "{e}");
    }
}
