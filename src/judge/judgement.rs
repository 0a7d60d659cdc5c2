//! One judgement of one canary: the window, the judge's sums, and the latency threshold T_i
//! read from the stable window's histogram. It starts afresh on a new canary version, a resume
//! and a reset. Pure: the wall-clock time it began is handed in.

use std::time::{Duration, SystemTime};

use crate::cohort::Cohort;
use crate::config::RollbackConfig;
use crate::judge::evidence::{round6, Evidence, EvidenceSet, Figures, Limit};
use crate::judge::histogram::{boundary_at_or_above, quantile_bucket, upper_edge_micros};
use crate::judge::recorder::SliceCounts;
use crate::judge::sequential::{Judge, JudgeParams, Scope, SliceInput, Trigger, Verdict};
use crate::judge::window::{CohortFigures, Window};

/// Stable requests the window must hold before the stable's latency narrows T.
pub const STABLE_LATENCY_MIN: u64 = 1_000;

pub struct Judgement {
    pub window: Window,
    judge: Judge,
    pub started: SystemTime,
    verdict: Verdict,
    /// T for the next slice, in microseconds (a histogram boundary).
    threshold_micros: u64,
    /// The canary requests of the last slice slower than its T (the gate reads the same).
    last_slow: u64,
}

/// The bar the stable's requests set: max(`latency_tolerance` × their `latency_stat`, that +
/// `latency_slack`), from the upper edge of the bucket that holds the statistic.
fn stable_bound(r: &RollbackConfig, buckets: &[u64]) -> Option<Duration> {
    let b = quantile_bucket(buckets, r.latency_stat.quantile())?;
    // A multiple alone is absurd for a fast service (1.25 x 2 ms); the slack keeps the bound at
    // least that far above the stable.
    let edge = Duration::from_micros(upper_edge_micros(b));
    Some(
        edge.mul_f64(r.latency_tolerance)
            .max(edge + r.latency_slack),
    )
}

pub fn judge_params(r: &RollbackConfig) -> JudgeParams {
    JudgeParams {
        max_error_rate: r.max_error_rate,
        max_relative_error: r.max_relative_error,
        slow_fraction: 1.0 - r.latency_stat.quantile(),
        false_rollback_budget: r.false_rollback_budget,
        min_requests: r.min_requests,
        window_slices: r.window_slices(),
    }
}

impl Judgement {
    /// `started`: now, as the wall clock says (shown as the window's start).
    pub fn new(r: &RollbackConfig, started: SystemTime) -> Self {
        let judge = Judge::new(judge_params(r));
        let verdict = judge.verdict();
        let mut j = Judgement {
            window: Window::new(r.window_slices()),
            judge,
            started,
            verdict,
            threshold_micros: 0,
            last_slow: 0,
        };
        j.threshold_micros = j.next_threshold(r).1;
        j
    }

    /// New limits restart the judge's sums (they are only meaningful for the limits they were
    /// built against) but keep the window an operator is looking at.
    pub fn retune(&mut self, r: &RollbackConfig) {
        if *self.judge.params() != judge_params(r) {
            self.judge = Judge::new(judge_params(r));
            self.verdict = self.judge.verdict();
            self.window.set_capacity(r.window_slices());
        }
        self.threshold_micros = self.next_threshold(r).1;
    }

    /// T_i: `max_latency`, or once the stable window holds 1,000 requests the smaller of it and
    /// the stable's bound (`stable_bound`); rounded up to a histogram boundary. Returns (first
    /// slow bucket, T in µs).
    fn next_threshold(&self, r: &RollbackConfig) -> (usize, u64) {
        let mut t = r.max_latency;
        let stable = self.window.totals(Cohort::Stable);
        if stable.requests >= STABLE_LATENCY_MIN {
            if let Some(bound) = stable_bound(r, &stable.buckets) {
                t = t.min(bound);
            }
        }
        boundary_at_or_above(t)
    }

    /// T for a slice just completed: the bar set before it, raised (never past `max_latency`)
    /// to the bound of the stable's own requests in that slice when they were slower. A stall
    /// both cohorts share (the host, a database, the network) is not the canary's: judged
    /// against the window before it alone, a quarter-second pause of the process rolled a
    /// healthy canary back (docs/JUDGE.md, "A slowdown both cohorts share").
    fn slice_threshold(&self, r: &RollbackConfig, stable: &SliceCounts) -> usize {
        let (slow_from, before) = self.next_threshold(r);
        // Read by nearest rank however few they are (p99 of 40 is the slowest): a slice at a
        // phase's edge holds few, and can only raise the bar, never lower it (the budget holds).
        match stable_bound(r, &stable.buckets).map(|b| boundary_at_or_above(b.min(r.max_latency))) {
            Some((raised_from, raised)) if raised > before => raised_from,
            _ => slow_from,
        }
    }

    /// Judges one completed slice of both cohorts.
    pub fn step(
        &mut self,
        r: &RollbackConfig,
        stable: &SliceCounts,
        canary: &SliceCounts,
    ) -> Verdict {
        let slow_from = self.slice_threshold(r, stable);
        let sc = canary.buckets.iter().skip(slow_from).sum();
        self.last_slow = sc;
        self.verdict = self.judge.observe(SliceInput {
            nc: canary.requests,
            ns: stable.requests,
            ec: canary.judged_errors,
            es: stable.judged_errors,
            sc,
        });
        self.window.push(stable, canary);
        self.threshold_micros = self.next_threshold(r).1;
        self.verdict
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// `sc` of the last slice judged: its canary requests slower than that slice's T.
    pub fn last_slow(&self) -> u64 {
        self.last_slow
    }

    pub fn thresholds(&self) -> [[f64; 2]; 3] {
        self.judge.thresholds()
    }

    /// The latency bar in seconds the next slice is judged against.
    pub fn latency_threshold_seconds(&self) -> f64 {
        self.threshold_micros as f64 / 1e6
    }

    /// Per trigger: evidence and thresholds per scope, whether it is on, and its limit.
    pub fn evidence(&self, r: &RollbackConfig) -> EvidenceSet {
        let th = self.thresholds();
        let v = self.verdict;
        let of = |t: Trigger| {
            let k = t as usize;
            let limit = match t {
                Trigger::ErrorRate => Limit::ErrorRate {
                    max_error_rate: r.max_error_rate,
                },
                Trigger::RelativeError => Limit::RelativeError {
                    max_relative_error: r.max_relative_error,
                },
                Trigger::Latency => Limit::Latency {
                    latency_stat: r.latency_stat.as_str(),
                    max_latency: r.max_latency.as_secs_f64(),
                    threshold_seconds: self.latency_threshold_seconds(),
                },
            };
            Evidence {
                cumulative: round6(v.evidence[k][Scope::Cumulative as usize]),
                window: round6(v.evidence[k][Scope::Window as usize]),
                threshold_cumulative: round6(th[k][Scope::Cumulative as usize]),
                threshold_window: round6(th[k][Scope::Window as usize]),
                enabled: self.judge.is_on(t),
                limit,
            }
        };
        EvidenceSet {
            error_rate: of(Trigger::ErrorRate),
            relative_error: of(Trigger::RelativeError),
            latency: of(Trigger::Latency),
        }
    }

    pub fn figures(&self, cohort: Cohort) -> CohortFigures {
        self.window.figures(cohort)
    }

    /// Both cohorts' figures and every trigger's evidence: what a rollback record keeps.
    pub fn record_figures(&self, r: &RollbackConfig) -> Figures {
        Figures {
            evidence: self.evidence(r),
            canary: self.figures(Cohort::Canary).into(),
            stable: self.figures(Cohort::Stable).into(),
            canary_requests_judged: self.verdict.cum_nc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RollbackConfig};
    use crate::judge::histogram::bucket_of;

    fn rollback(extra: &str) -> RollbackConfig {
        let toml = format!("[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n[rollback]\nevaluate_every = \"1s\"\n{extra}");
        Config::from_toml_str(&toml, "t.toml", std::path::Path::new("."), &|_| None)
            .unwrap()
            .rollback
    }

    fn slice(n: u64, latency: Duration) -> SliceCounts {
        let mut s = SliceCounts::zero();
        s.requests = n;
        s.buckets[bucket_of(latency)] = n;
        s
    }

    #[test]
    fn a_fast_stable_keeps_the_bound_at_least_the_slack_above_it() {
        // 1.25 x a 2 ms stable would be a 2.5 ms bound; the slack makes it 2 ms + 5 ms.
        let r = rollback("max_latency = \"2s\"\nlatency_tolerance = 1.25\nlatency_slack = \"5ms\"");
        let mut j = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        j.step(
            &r,
            &slice(1000, Duration::from_millis(2)),
            &SliceCounts::zero(),
        );
        let edge = upper_edge_micros(bucket_of(Duration::from_millis(2))) as f64 / 1e6;
        let t = j.latency_threshold_seconds();
        assert!(
            t >= edge + 0.005 && t <= (edge + 0.005) * 1.125,
            "{t} from edge {edge}"
        );
        let r0 = rollback("max_latency = \"2s\"\nlatency_tolerance = 1.25\nlatency_slack = \"0s\"");
        let mut j0 = Judgement::new(&r0, SystemTime::UNIX_EPOCH);
        j0.step(
            &r0,
            &slice(1000, Duration::from_millis(2)),
            &SliceCounts::zero(),
        );
        assert!(j0.latency_threshold_seconds() < edge * 1.25 * 1.125 + 1e-9);
    }

    #[test]
    fn latency_threshold_follows_the_stable_histogram_once_it_holds_1000_requests() {
        let r = rollback("max_latency = \"2s\"\nlatency_tolerance = 1.25");
        let mut j = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        // Until the stable window holds 1,000 requests, T is max_latency rounded up to a boundary.
        let t0 = j.latency_threshold_seconds();
        assert!((2.0..=2.0 * 1.125).contains(&t0), "{t0}");
        j.step(
            &r,
            &slice(999, Duration::from_millis(100)),
            &SliceCounts::zero(),
        );
        assert_eq!(j.latency_threshold_seconds(), t0);
        j.step(
            &r,
            &slice(1, Duration::from_millis(100)),
            &SliceCounts::zero(),
        );
        // Now 1.25 x the upper edge of the bucket holding 100 ms, rounded up to a boundary.
        let edge = upper_edge_micros(bucket_of(Duration::from_millis(100))) as f64 / 1e6;
        let t = j.latency_threshold_seconds();
        assert!(
            t >= edge * 1.25 && t <= edge * 1.25 * 1.125,
            "{t} from edge {edge}"
        );
        // A canary slice at 1.5 x that is slow; one at the stable's latency is not.
        let canary = slice(50, Duration::from_secs_f64(t * 1.2));
        let v = j.step(&r, &SliceCounts::zero(), &canary);
        assert!(
            v.evidence[Trigger::Latency as usize][0] > 0.0,
            "the slow slice added evidence"
        );
        let mut j2 = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        j2.step(
            &r,
            &slice(1000, Duration::from_millis(100)),
            &SliceCounts::zero(),
        );
        let v = j2.step(
            &r,
            &SliceCounts::zero(),
            &slice(50, Duration::from_millis(100)),
        );
        assert!(
            v.evidence[Trigger::Latency as usize][0] < 0.0,
            "requests as fast as stable are not slow"
        );
    }

    #[test]
    fn a_stall_both_cohorts_share_is_not_the_canarys_but_its_own_slowdown_is() {
        let r = rollback("max_latency = \"2s\"\nlatency_tolerance = 1.25");
        let calm = |j: &mut Judgement| {
            j.step(
                &r,
                &slice(2000, Duration::from_millis(20)),
                &slice(200, Duration::from_millis(20)),
            )
        };
        let lat = |v: Verdict| v.evidence[Trigger::Latency as usize][0];
        // A slice where every request of both cohorts took 80 ms (the host paused): no evidence.
        let mut shared = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        let before = lat(calm(&mut shared));
        let v = shared.step(
            &r,
            &slice(500, Duration::from_millis(80)),
            &slice(50, Duration::from_millis(80)),
        );
        assert!(
            lat(v) <= before,
            "a shared stall added evidence: {} -> {}",
            before,
            lat(v)
        );
        assert_eq!(shared.last_slow(), 0);
        // The same slice with the stable at its usual 20 ms: every canary request is slow.
        let mut alone = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        calm(&mut alone);
        let v = alone.step(
            &r,
            &slice(500, Duration::from_millis(20)),
            &slice(50, Duration::from_millis(80)),
        );
        assert_eq!(alone.last_slow(), 50);
        assert!(lat(v) > before);
        // A stall at a slice's edge, with few stable requests in it, is still shared.
        let mut sparse = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        calm(&mut sparse);
        sparse.step(
            &r,
            &slice(12, Duration::from_millis(80)),
            &slice(12, Duration::from_millis(80)),
        );
        assert_eq!(sparse.last_slow(), 0);
        // The stable as fast as ever: the bar the window set stays.
        let mut steady = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        calm(&mut steady);
        steady.step(
            &r,
            &slice(12, Duration::from_millis(20)),
            &slice(12, Duration::from_millis(80)),
        );
        assert_eq!(steady.last_slow(), 12);
    }

    #[test]
    fn a_shared_stall_never_raises_the_bar_past_max_latency() {
        let r = rollback("max_latency = \"100ms\"\nlatency_tolerance = 1.25");
        let mut j = Judgement::new(&r, SystemTime::UNIX_EPOCH);
        j.step(
            &r,
            &slice(2000, Duration::from_millis(20)),
            &SliceCounts::zero(),
        );
        j.step(
            &r,
            &slice(500, Duration::from_millis(300)),
            &slice(50, Duration::from_millis(300)),
        );
        assert_eq!(
            j.last_slow(),
            50,
            "past max_latency is slow, whatever the stable did"
        );
    }
}
