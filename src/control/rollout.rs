//! The rollout: the canary's share raised step by step, each step advanced only when the
//! promotion gate (`judge::promotion`) opens. A step change is one table swap, like a rollback,
//! serialised with every other transition and written to the state file. The judge keeps
//! judging at every step; a rollback outranks any step.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, RolloutConfig};
use crate::control::routing::{CanaryState, RoutingTable};
use crate::control::Control;
use crate::judge::judgement::judge_params;
use crate::judge::promotion::{Gate, GateParams, GateView, Test};

/// Where a rollout stands, when the canary is active (first match wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Holding,
    Complete,
    Ready,
    Ramping,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Holding,
        Phase::Complete,
        Phase::Ready,
        Phase::Ramping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Holding => "holding",
            Phase::Complete => "complete",
            Phase::Ready => "ready",
            Phase::Ramping => "ramping",
        }
    }
}

/// One rollout's position and its current step's gate.
pub struct Rollout {
    pub step: usize,
    /// When the step began (wall clock: it is kept across restarts).
    pub since: SystemTime,
    /// `max_bake` counts from here: the step's start, or the last `continue`.
    pub bake_from: SystemTime,
    /// Set by `POST /canary/pause`: who paused and why.
    pub paused: Option<String>,
    /// `max_bake` passed without an open gate; cleared by `continue` or `promote`.
    pub held: bool,
    pub complete: bool,
    pub gate: Gate,
}

pub fn gate_params(config: &Config, r: &RolloutConfig) -> GateParams {
    GateParams {
        limits: judge_params(&config.rollback),
        promote_risk: r.promote_risk,
        promote_margin: r.promote_margin,
    }
}

pub(crate) fn since(from: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(from).unwrap_or_default()
}

impl Rollout {
    pub fn start(config: &Config, r: &RolloutConfig, step: usize, at: SystemTime) -> Self {
        Rollout {
            step,
            since: at,
            bake_from: at,
            paused: None,
            held: false,
            complete: false,
            gate: Gate::new(gate_params(config, r)),
        }
    }

    pub fn phase(&self, r: &RolloutConfig) -> Phase {
        if self.complete {
            Phase::Complete
        } else if self.paused.is_some() || self.held {
            Phase::Holding
        } else if self.gate.view().open && !r.auto {
            Phase::Ready
        } else {
            Phase::Ramping
        }
    }

    /// What holds the step, in words; `None` unless it is holding.
    pub fn hold_reason(&self, r: &RolloutConfig) -> Option<String> {
        if let Some(p) = &self.paused {
            return Some(format!("paused {p}"));
        }
        if !self.held {
            return None;
        }
        let view = self.gate.view();
        let mut short: Vec<String> = Vec::new();
        if view.step_nc < self.gate.params().limits.min_requests {
            short.push(format!(
                "min_requests needs {} more canary requests",
                self.gate.params().limits.min_requests - view.step_nc
            ));
        }
        for t in [Test::ErrorRate, Test::Latency, Test::RelativeError] {
            let v = view.tests[t as usize];
            if v.passes {
                continue;
            }
            short.push(match v.requests_needed {
                Some(n) => format!(
                    "{} needs about {n} more canary requests at the current rate (evidence {:.2} of {:.2})",
                    t.as_str(), v.evidence, v.bar
                ),
                None => format!(
                    "{} does not grow at the current rates (evidence {:.2} of {:.2})",
                    t.as_str(),
                    v.evidence,
                    v.bar
                ),
            });
        }
        if view.fired {
            short.push("a rollback trigger crossed its threshold during this step".into());
        }
        if short.is_empty() {
            short.push("the gate opened after max_bake: continue or promote".into());
        }
        Some(format!(
            "max_bake {} passed without an open gate: {}",
            humantime::format_duration(r.max_bake),
            short.join("; ")
        ))
    }
}

/// The rollout as `GET /canary/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutStatus {
    pub step: usize,
    pub steps: Vec<f64>,
    pub percent: f64,
    pub since: String,
    pub bake_left: f64,
    pub gate: serde_json::Map<String, serde_json::Value>,
    pub ready: bool,
    pub hold_reason: Option<String>,
    pub phase: &'static str,
    pub canary_requests: u64,
}

impl Control {
    /// The state operators see: the routing state, refined by the rollout when it is active.
    pub fn state_name(&self, table: &RoutingTable) -> &'static str {
        match (table.state, &table.config.rollout) {
            (CanaryState::Active, Some(r)) => match self.rollout().as_ref() {
                Some(ro) => ro.phase(r).as_str(),
                None => Phase::Ramping.as_str(),
            },
            (state, _) => state.as_str(),
        }
    }

    pub fn rollout_status(&self, table: &RoutingTable) -> Option<RolloutStatus> {
        let r = table.config.rollout.as_ref()?;
        let guard = self.rollout();
        let ro = guard.as_ref()?;
        let view: GateView = ro.gate.view();
        let mut gate = serde_json::Map::new();
        for t in Test::ALL {
            let v = view.tests[t as usize];
            gate.insert(
                t.as_str().into(),
                serde_json::json!({
                    "evidence": crate::judge::evidence::round6(v.evidence),
                    "bar": crate::judge::evidence::round6(v.bar),
                    "passes": v.passes,
                    "requests_needed": v.requests_needed,
                }),
            );
        }
        let now = SystemTime::now();
        Some(RolloutStatus {
            step: ro.step,
            steps: r.steps.clone(),
            percent: table.percent,
            since: humantime::format_rfc3339_seconds(ro.since).to_string(),
            bake_left: r.bake.saturating_sub(since(ro.since, now)).as_secs_f64(),
            gate,
            ready: view.open && !ro.complete,
            hold_reason: ro.hold_reason(r),
            phase: ro.phase(r).as_str(),
            canary_requests: view.step_nc,
        })
    }
}
