//! What a judgement shows, as typed values: each trigger's evidence against its thresholds and
//! limit, and both cohorts' figures as a rollback record keeps them. Whoever shows them makes
//! the JSON (`Serialize`); nothing here builds any.

use serde::Serialize;

use crate::judge::sequential::Trigger;
use crate::judge::window::CohortFigures;

/// One trigger's evidence (log-likelihood ratios) in both scopes, against their thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evidence {
    pub cumulative: f64,
    pub window: f64,
    pub threshold_cumulative: f64,
    pub threshold_window: f64,
    /// Off when its limit is not configured.
    pub enabled: bool,
    pub limit: Limit,
}

impl Evidence {
    /// How near the closer of the two sums is to its threshold (positive: past it).
    pub fn gap(&self) -> f64 {
        (self.cumulative - self.threshold_cumulative).max(self.window - self.threshold_window)
    }
}

/// The limit a trigger judges against, as configured (and, for latency, as it stands now).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Limit {
    ErrorRate {
        max_error_rate: f64,
    },
    RelativeError {
        max_relative_error: f64,
    },
    Latency {
        latency_stat: &'static str,
        max_latency: f64,
        /// The bar this slice is judged against: `max_latency`, or narrower from stable's.
        threshold_seconds: f64,
    },
}

/// Every trigger's evidence; in JSON, an object keyed by the trigger's name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvidenceSet {
    pub error_rate: Evidence,
    pub relative_error: Evidence,
    pub latency: Evidence,
}

impl EvidenceSet {
    pub fn get(&self, trigger: Trigger) -> &Evidence {
        match trigger {
            Trigger::ErrorRate => &self.error_rate,
            Trigger::RelativeError => &self.relative_error,
            Trigger::Latency => &self.latency,
        }
    }

    /// The trigger nearest its threshold in either scope: what a manual rollback, which has
    /// no evidence of its own, shows.
    pub fn closest(&self) -> Trigger {
        Trigger::ALL
            .into_iter()
            .max_by(|a, b| self.get(*a).gap().total_cmp(&self.get(*b).gap()))
            .unwrap_or(Trigger::ErrorRate)
    }
}

/// One cohort's figures over the window, rounded for people.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CohortSummary {
    pub requests: u64,
    pub errors: u64,
    /// Percent.
    pub error_rate: f64,
    /// Seconds.
    pub p50_latency: f64,
    pub p99_latency: f64,
    pub avg_latency: f64,
}

impl From<CohortFigures> for CohortSummary {
    fn from(f: CohortFigures) -> Self {
        CohortSummary {
            requests: f.requests,
            errors: f.errors,
            error_rate: round6(f.error_rate),
            p50_latency: f.p50_latency,
            p99_latency: f.p99_latency,
            avg_latency: round6(f.avg_latency),
        }
    }
}

/// What a rollback record keeps: every trigger's evidence and both cohorts' figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub evidence: EvidenceSet,
    pub canary: CohortSummary,
    pub stable: CohortSummary,
    pub canary_requests_judged: u64,
}

/// Six decimals: what people read, and what stays stable across a round trip through JSON.
pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(cumulative: f64, window: f64) -> Evidence {
        Evidence {
            cumulative,
            window,
            threshold_cumulative: 8.0,
            threshold_window: 9.0,
            enabled: true,
            limit: Limit::ErrorRate {
                max_error_rate: 5.0,
            },
        }
    }

    #[test]
    fn the_closest_trigger_is_the_one_nearest_its_threshold_in_either_scope() {
        let set = EvidenceSet {
            error_rate: evidence(1.0, -3.0),
            relative_error: evidence(-2.0, 8.5),
            latency: evidence(6.0, 0.0),
        };
        assert_eq!(set.closest(), Trigger::RelativeError);
        assert_eq!(set.get(Trigger::Latency).gap(), -2.0);
    }

    #[test]
    fn a_limit_is_shown_as_its_keys_alone() {
        let json = serde_json::to_value(Limit::RelativeError {
            max_relative_error: 1.5,
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"max_relative_error": 1.5}));
    }
}
