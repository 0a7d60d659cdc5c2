//! `[rollback]` checked: the window and its slice, the triggers' limits, the latency statistic
//! (only quantiles: a mean has no valid sequential test), the false-rollback budget, and the
//! statuses that count as errors.

use std::time::Duration;

use super::validate::Ctx;
use super::*;

/// gRPC's status codes by number (grpc/doc/statuscodes.md).
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The largest false-rollback budget accepted: beyond it the judge no longer protects a good
/// release (JUDGE.md measures 0.001).
const MAX_BUDGET: f64 = 0.1;

pub(super) fn validate(cx: &Ctx, r: &RawRollback) -> Result<RollbackConfig, ConfigError> {
    let window = cx.duration("rollback.window", &r.window)?;
    let evaluate_every = cx.duration("rollback.evaluate_every", &r.evaluate_every)?;
    if evaluate_every < Duration::from_millis(10) {
        return Err(cx.err(
            "rollback.evaluate_every",
            format!("at least \"10ms\", got {:?}", r.evaluate_every),
        ));
    }
    if window < evaluate_every {
        return Err(cx.err(
            "rollback.window",
            format!(
                "at least evaluate_every ({}), got {:?}",
                r.evaluate_every, r.window
            ),
        ));
    }
    if window.as_nanos() / evaluate_every.as_nanos() > 100_000 {
        return Err(cx.err(
            "rollback.window",
            "at most 100000 slices of evaluate_every (a shorter window or a longer slice)",
        ));
    }
    let max_error_rate = cx.percent("rollback.max_error_rate", r.max_error_rate)?;
    if !(r.max_relative_error.is_finite() && r.max_relative_error >= 0.0) {
        return Err(cx.err(
            "rollback.max_relative_error",
            format!("a ratio of 0 (off) or more, got {}", r.max_relative_error),
        ));
    }
    let max_latency = cx.duration("rollback.max_latency", &r.max_latency)?;
    if !(r.latency_tolerance.is_finite() && r.latency_tolerance >= 1.0) {
        // Below 1 the canary would have to be faster than stable to be within its limit.
        return Err(cx.err(
            "rollback.latency_tolerance",
            format!(
                "a multiple of the stable's latency of at least 1 such as 1.25, got {}",
                r.latency_tolerance
            ),
        ));
    }
    let latency_stat = match r.latency_stat.as_str() {
        "p50" => LatencyStat::P50,
        "p90" => LatencyStat::P90,
        "p95" => LatencyStat::P95,
        "p99" => LatencyStat::P99,
        "mean" => return Err(cx.err("rollback.latency_stat", "p50, p90, p95 or p99: a mean has no valid sequential test (it is shown in the metrics, but cannot be judged)")),
        other => return Err(cx.err("rollback.latency_stat", format!("p50, p90, p95 or p99, got {other:?}"))),
    };
    let budget = r.false_rollback_budget;
    if !(budget.is_finite() && budget > 0.0 && budget <= MAX_BUDGET) {
        return Err(cx.err(
            "rollback.false_rollback_budget",
            format!("a probability above 0 and at most {MAX_BUDGET} such as 0.001 (a larger budget rolls good releases back), got {budget}"),
        ));
    }
    let mut error_statuses = ErrorStatuses::none();
    for (i, s) in r.error_statuses.iter().enumerate() {
        let key = format!("rollback.error_statuses[{i}]");
        let expected = |got: String| {
            cx.err(
                &key,
                format!("a class \"4xx\" or \"5xx\", or a status code from 400 to 599 (a success or a redirect is never an error), got {got}"),
            )
        };
        match s {
            RawStatus::Code(c) if (400..=599).contains(c) => error_statuses.insert(*c as u16),
            RawStatus::Code(c) => return Err(expected(c.to_string())),
            RawStatus::Text(t) => {
                let t = t.trim().to_ascii_lowercase();
                if let Some(class) = t
                    .strip_suffix("xx")
                    .and_then(|d| d.parse::<u16>().ok())
                    .filter(|d| (4..=5).contains(d))
                {
                    (class * 100..class * 100 + 100).for_each(|c| error_statuses.insert(c));
                } else if let Some(c) = t.parse::<u16>().ok().filter(|c| (400..=599).contains(c)) {
                    error_statuses.insert(c);
                } else {
                    return Err(expected(format!("{t:?}")));
                }
            }
        }
    }

    // Zero is allowed here (the bound is then the tolerance alone), unlike other durations.
    let latency_slack = match r.latency_slack.trim() {
        "0" | "0s" | "0ms" => Duration::ZERO,
        text => cx.duration("rollback.latency_slack", text)?,
    };
    for (i, p) in r.ignore_paths.iter().enumerate() {
        let body = p.strip_suffix('*').unwrap_or(p);
        if !body.starts_with('/') || body.contains('*') || body.contains('?') {
            return Err(cx.err(
                &format!("rollback.ignore_paths[{i}]"),
                format!("a path such as \"/healthz\", or a prefix ending in * such as \"/internal/*\", got {p:?}"),
            ));
        }
    }

    let mut grpc_error_codes = 0u32;
    for (i, c) in r.grpc_error_codes.iter().enumerate() {
        let code = match c {
            RawStatus::Code(n) => u32::try_from(*n).ok().filter(|n| *n <= 16),
            RawStatus::Text(t) => GRPC_CODES
                .iter()
                .position(|name| name.eq_ignore_ascii_case(t.trim()))
                .map(|n| n as u32)
                .or_else(|| t.trim().parse().ok().filter(|n| *n <= 16)),
        };
        match code {
            Some(0) | None => {
                return Err(cx.err(
                    &format!("rollback.grpc_error_codes[{i}]"),
                    format!(
                        "a gRPC status from 1 to 16 or its name ({}), got {c:?}",
                        GRPC_CODES[1..].join(", ")
                    ),
                ))
            }
            Some(n) => grpc_error_codes |= 1 << n,
        }
    }

    Ok(RollbackConfig {
        auto: r.auto,
        window,
        min_requests: r.min_requests,
        max_error_rate,
        max_relative_error: r.max_relative_error,
        max_latency,
        latency_tolerance: r.latency_tolerance,
        latency_stat,
        false_rollback_budget: budget,
        error_statuses,
        evaluate_every,
        latency_slack,
        ignore_paths: IgnorePaths::new(&r.ignore_paths),
        grpc_error_codes,
    })
}

/// `rollback.ignore_paths`: exact paths, or prefixes written with a trailing `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnorePaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl IgnorePaths {
    pub fn new(patterns: &[String]) -> Self {
        let mut p = IgnorePaths::default();
        for pat in patterns {
            match pat.strip_suffix('*') {
                Some(prefix) => p.prefixes.push(prefix.to_string()),
                None => p.exact.push(pat.clone()),
            }
        }
        p
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether a request to `path` (no query) stays out of the judgement.
    pub fn matches(&self, path: &str) -> bool {
        self.exact.iter().any(|e| e == path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}
