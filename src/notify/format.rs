//! What a target receives: the event as JSON, or a Slack/Mattermost incoming-webhook message
//! whose text carries the same figures for people.

use serde_json::{json, Value};

use crate::config::NotifyFormat;
use crate::notify::Event;

/// The body for `format`.
pub fn body(format: NotifyFormat, event: &Event) -> Vec<u8> {
    match format {
        NotifyFormat::Json => serde_json::to_vec(event).unwrap_or_default(),
        NotifyFormat::Slack => json!({ "text": slack_text(event) })
            .to_string()
            .into_bytes(),
    }
}

fn headline(event: &Event) -> String {
    let v = &event.canary_version;
    match event.event.as_str() {
        "rolled_back" => format!(
            ":rotating_light: *canary {v} rolled back*: every request now goes to stable {}",
            event.stable_version
        ),
        "resumed" => format!(":arrow_forward: *canary {v} resumed*: the judge starts again"),
        "step_advanced" => format!(":arrow_up: *canary {v} advanced a step*"),
        "ready" => format!(":white_check_mark: *canary {v} is ready* to be promoted a step"),
        "holding" => format!(":hourglass: *canary {v} is holding* at its step"),
        "complete" => {
            format!(":tada: *canary {v} rollout complete*: make it the stable when ready")
        }
        "paused" => format!(":double_vertical_bar: *canary {v} paused*"),
        "continued" => format!(":arrow_forward: *canary {v} continues* at its step"),
        "reset" => format!(":repeat: *canary {v}*: window reset, a new judgement starts"),
        "reloaded" => format!(":gear: *config reloaded* (canary {v})"),
        "reload_refused" => {
            format!(":warning: *reload refused*: the old config keeps serving (canary {v})")
        }
        "fleet_alone" => {
            format!(":warning: *fleet: this replica is alone*: Redis is out of reach (canary {v})")
        }
        other => format!("*canary {v}: {other}*"),
    }
}

fn cohort_line(name: &str, c: &Value) -> Option<String> {
    let requests = c.get("requests")?.as_u64()?;
    let rate = c.get("error_rate").and_then(Value::as_f64).unwrap_or(0.0);
    let p99 = c.get("p99_latency").and_then(Value::as_f64).unwrap_or(0.0);
    Some(format!(
        "{name}: {requests} requests, {rate:.2} % errors, p99 {:.0} ms",
        p99 * 1000.0
    ))
}

/// The message's text: a headline, the reason, both cohorts' figures and the evidence of the
/// trigger that fired (when the figures have them), then who and when.
pub fn slack_text(event: &Event) -> String {
    let mut lines = vec![headline(event)];
    if !event.reason.is_empty() {
        let trigger = event
            .trigger
            .as_deref()
            .map(|t| format!(" (trigger `{t}`)"))
            .unwrap_or_default();
        lines.push(format!("> {}{trigger}", event.reason));
    }
    let f = &event.figures;
    let cohorts: Vec<String> = [("canary", &f["canary"]), ("stable", &f["stable"])]
        .into_iter()
        .filter_map(|(n, c)| cohort_line(n, c))
        .collect();
    if !cohorts.is_empty() {
        lines.push(cohorts.join(" · "));
    }
    if let Some(t) = event.trigger.as_deref() {
        if let Some(e) = f["evidence"].get(t) {
            let (c, th) = (
                e["cumulative"].as_f64().unwrap_or(0.0),
                e["threshold_cumulative"].as_f64().unwrap_or(0.0),
            );
            lines.push(format!(
                "evidence: the data are e^{c:.1} (≈ {}) times likelier if the canary breaks its {t} limit; the rollback fires at {th:.2}",
                likelier(c)
            ));
        }
    }
    lines.push(format!(
        "{} → {} · by {} · {}",
        event.state_before, event.state_after, event.caller, event.at
    ));
    lines.join("\n")
}

/// e^x for people: "450", "3.2 million", "more than a trillion".
pub fn likelier(x: f64) -> String {
    let v = x.exp();
    if !v.is_finite() || v >= 1e12 {
        "more than a trillion".into()
    } else if v >= 1e9 {
        format!("{:.1} billion", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} million", v / 1e6)
    } else if v >= 10.0 {
        format!("{:.0}", v)
    } else {
        format!("{v:.1}")
    }
}
