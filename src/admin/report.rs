//! What the admin port shows: `GET /canary/status` and `GET /canary/metrics`, as JSON built
//! from one routing snapshot and one look at the judgement.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::cohort::Cohort;
use crate::control::Control;
use crate::judge::evidence::round6;

/// A duration the way Go and Prometheus print it: "5m0s", "1h30m0s", "1.5s", "250ms".
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (d.as_secs() / 3600, d.as_secs_f64() % 3600.0);
    let (m, s) = ((rest / 60.0).floor() as u64, rest % 60.0);
    let s = if (s - s.round()).abs() < 1e-9 {
        format!("{}s", s.round() as u64)
    } else {
        format!("{}s", (s * 1000.0).round() / 1000.0)
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

pub fn status(control: &Control) -> Value {
    let table = control.table();
    let c = &table.config;
    let mut out = json!({
        "state": control.state_name(&table),
        "traffic_percent": table.percent,
        "stable_version": c.stable.version,
        "canary_version": c.canary.version,
        "canary_active": table.threshold_ppm > 0,
        "auto_rollback": c.rollback.auto,
        "persisted": control.persisted(),
        "last_rollback": control.last_rollback().map(|r| json!({
            "trigger": r.trigger, "reason": r.reason, "at": r.at,
            "canary_version": r.canary_version, "figures": r.figures, "replica": r.replica,
        })),
    });
    if let Some(r) = control.rollout_status(&table) {
        out["rollout"] = serde_json::to_value(r).unwrap_or_default();
    }
    if let Some(f) = control.fleet() {
        out["fleet"] = f.view(&control.card(&table, 0));
    }
    out
}

pub fn metrics(control: &Control) -> Value {
    let table = control.table();
    let c = &table.config;
    let j = control.judgement();
    let (canary, stable) = (j.figures(Cohort::Canary), j.figures(Cohort::Stable));
    // The window reaches back at most `window`, and never before the judgement began.
    let reach = SystemTime::now()
        .checked_sub(c.rollback.window)
        .unwrap_or(j.started);
    let window_start = reach.max(j.started);
    json!({
        "canary_requests": canary.requests,
        "canary_errors": canary.errors,
        "canary_error_rate": round6(canary.error_rate),
        "canary_avg_latency": round6(canary.avg_latency),
        "canary_p50_latency": canary.p50_latency,
        "canary_p90_latency": canary.p90_latency,
        "canary_p95_latency": canary.p95_latency,
        "canary_p99_latency": canary.p99_latency,
        "stable_requests": stable.requests,
        "stable_errors": stable.errors,
        "stable_error_rate": round6(stable.error_rate),
        "stable_avg_latency": round6(stable.avg_latency),
        "stable_p50_latency": stable.p50_latency,
        "stable_p90_latency": stable.p90_latency,
        "stable_p95_latency": stable.p95_latency,
        "stable_p99_latency": stable.p99_latency,
        "window_start": humantime::format_rfc3339_seconds(window_start).to_string(),
        "window_duration": go_duration(c.rollback.window),
        "canary_active": table.threshold_ppm > 0,
        "canary_version": c.canary.version,
        "stable_version": c.stable.version,
        "traffic_percent": table.percent,
        "state": control.state_name(&table),
        "canary_requests_judged": j.verdict().cum_nc,
        // Testers' forced requests since start, outside every judged figure above.
        "canary_forced_requests": control.metrics().forced_requests("canary", &c.canary.version),
        "stable_forced_requests": control.metrics().forced_requests("stable", &c.stable.version),
        "evidence": j.evidence(&c.rollback),
    })
}

/// A query parameter as a number in `range`, `default` when absent; an error says which.
pub fn number(
    query: &str,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    let Some((_, v)) = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
    else {
        return Ok(default);
    };
    v.parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            format!(
                "{key}: a whole number from {} to {}, got {v:?}",
                range.start(),
                range.end()
            )
        })
}

/// `GET /canary/events`: the latest first.
pub fn events(control: &Control, limit: u64) -> Value {
    let list = control.events().latest(limit as usize);
    json!({ "events": list.iter().map(|e| &**e).collect::<Vec<_>>() })
}

/// `GET /canary/history`: the points of the last `seconds`, oldest first, with what the
/// charts need to read them (the slice length, the triggers' names in each point).
pub fn history(control: &Control, seconds: u64) -> Value {
    let table = control.table();
    let now = crate::control::persist::ms(SystemTime::now());
    let points = control.history().since(now, seconds);
    json!({
        "now": now,
        "seconds": seconds,
        "evaluate_every_ms": table.config.rollback.evaluate_every.as_millis() as u64,
        "evidence_fields": ["cumulative", "window", "threshold_cumulative", "threshold_window"],
        "points": points,
    })
}

#[cfg(test)]
mod tests {
    use super::go_duration;
    use std::time::Duration;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(42)), "42s");
    }
}
