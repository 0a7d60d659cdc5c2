//! The judge of `JUDGE.md`, exactly: per-slice log-likelihood-ratio increments for three
//! triggers against six alternatives each, mixed with fixed weights, summed over the whole
//! judgement (cumulative) and over the window, and compared with thresholds that split the
//! false-rollback budget so a canary within its limits is rolled back with probability at most
//! `false_rollback_budget` over its whole life (Ville's inequality).
//!
//! Pure: plain numbers in, a verdict out. No clock, no IO; the evaluator feeds it slices.

use std::collections::VecDeque;

pub const WEIGHTS: [f64; 6] = [0.15, 0.35, 0.15, 0.15, 0.10, 0.10];
const ABS_MULTIPLES: [f64; 6] = [1.5, 2.0, 3.0, 5.0, 10.0, 30.0];
const REL_MULTIPLES: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];
const CAP: f64 = 0.999;

/// The three triggers, in the order that names a rollback when several fire at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    ErrorRate,
    RelativeError,
    Latency,
}

impl Trigger {
    pub const ALL: [Trigger; 3] = [Trigger::ErrorRate, Trigger::RelativeError, Trigger::Latency];

    /// The trigger `as_str` names.
    pub fn from_name(name: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::ErrorRate => "error_rate",
            Trigger::RelativeError => "relative_error",
            Trigger::Latency => "latency",
        }
    }

    /// This trigger's share of the budget: relative ½, error rate and latency ¼ each.
    fn alpha_share(self) -> f64 {
        match self {
            Trigger::RelativeError => 0.5,
            _ => 0.25,
        }
    }
}

/// The two sums each trigger keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cumulative,
    Window,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Cumulative, Scope::Window];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Cumulative => "cumulative",
            Scope::Window => "window",
        }
    }

    fn alpha_share(self) -> f64 {
        match self {
            Scope::Cumulative => 0.75,
            Scope::Window => 0.25,
        }
    }
}

/// The judge's parameters, from `[rollback]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgeParams {
    /// Percent, as configured.
    pub max_error_rate: f64,
    pub max_relative_error: f64,
    /// f0 = 1 - quantile of `latency_stat` (0.01 for p99).
    pub slow_fraction: f64,
    pub false_rollback_budget: f64,
    pub min_requests: u64,
    pub window_slices: usize,
}

/// One completed slice's inputs: `ec`, `es` already counted once per identity, `sc` against T_i.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SliceInput {
    pub nc: u64,
    pub ns: u64,
    pub ec: u64,
    pub es: u64,
    pub sc: u64,
}

type Sums = [[f64; 6]; 3];

/// What the judge concluded after a slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// M(L) per trigger (`Trigger as usize`) and scope (`Scope as usize`).
    pub evidence: [[f64; 2]; 3],
    pub fires: [[bool; 2]; 3],
    /// The first trigger that fires, in `Trigger::ALL` order.
    pub fired: Option<Trigger>,
    pub cum_nc: u64,
    pub win_nc: u64,
}

pub struct Judge {
    params: JudgeParams,
    /// Alternatives per trigger; `None` when the trigger is off.
    alternatives: [Option<[f64; 6]>; 3],
    null: [f64; 3],
    thresholds: [[f64; 2]; 3],
    cumulative: Sums,
    window: Sums,
    slices: VecDeque<(Sums, u64)>,
    cum_nc: u64,
    win_nc: u64,
}

/// `m + ln Σ w_j exp(L_j − m)`, the log of the weighted mixture.
pub fn mixture(l: &[f64; 6]) -> f64 {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = WEIGHTS.iter().zip(l).map(|(w, x)| w * (x - m).exp()).sum();
    m + s.ln()
}

/// `ln(1 / (scope share × trigger share × α))`.
pub fn threshold(trigger: Trigger, scope: Scope, alpha: f64) -> f64 {
    (1.0 / (scope.alpha_share() * trigger.alpha_share() * alpha)).ln()
}

fn capped(base: f64, multiples: &[f64; 6]) -> [f64; 6] {
    multiples.map(|m| (base * m).min(CAP))
}

impl Judge {
    pub fn new(params: JudgeParams) -> Self {
        let q0 = params.max_error_rate / 100.0;
        let r0 = params.max_relative_error;
        let f0 = params.slow_fraction;
        let abs = (q0 > 0.0 && q0 < CAP).then(|| capped(q0, &ABS_MULTIPLES));
        let rel = (r0 > 0.0).then(|| REL_MULTIPLES.map(|m| r0 * m));
        let lat = (f0 > 0.0 && f0 < CAP).then(|| capped(f0, &ABS_MULTIPLES));
        let alpha = params.false_rollback_budget;
        Judge {
            params,
            alternatives: [abs, rel, lat],
            null: [q0, r0, f0],
            thresholds: Trigger::ALL.map(|t| Scope::ALL.map(|s| threshold(t, s, alpha))),
            cumulative: [[0.0; 6]; 3],
            window: [[0.0; 6]; 3],
            slices: VecDeque::with_capacity(params.window_slices.min(4096)),
            cum_nc: 0,
            win_nc: 0,
        }
    }

    pub fn params(&self) -> &JudgeParams {
        &self.params
    }

    /// Thresholds per trigger and scope.
    pub fn thresholds(&self) -> [[f64; 2]; 3] {
        self.thresholds
    }

    pub fn is_on(&self, t: Trigger) -> bool {
        self.alternatives[t as usize].is_some()
    }

    /// The per-slice increments of every trigger.
    pub fn increments(&self, s: SliceInput) -> Sums {
        let mut inc = [[0.0; 6]; 3];
        let (nc, ns, ec, es, sc) = (
            s.nc as f64,
            s.ns as f64,
            s.ec as f64,
            s.es as f64,
            s.sc as f64,
        );
        // A count can exceed its total by a request straddling a slice edge; clamp.
        let ec = ec.min(nc);
        let sc = sc.min(nc);
        if let Some(q) = self.alternatives[Trigger::ErrorRate as usize] {
            let q0 = self.null[0];
            for j in 0..6 {
                inc[0][j] = ec * (q[j] / q0).ln() + (nc - ec) * ((1.0 - q[j]) / (1.0 - q0)).ln();
            }
        }
        if let Some(r) = self.alternatives[Trigger::RelativeError as usize] {
            if s.nc > 0 && s.ns > 0 {
                let r0 = self.null[1];
                let rho = nc / (nc + ns);
                for j in 0..6 {
                    inc[1][j] = ec * (r[j] / r0).ln()
                        - (ec + es) * ((1.0 + (r[j] - 1.0) * rho) / (1.0 + (r0 - 1.0) * rho)).ln();
                }
            }
        }
        if let Some(f) = self.alternatives[Trigger::Latency as usize] {
            let f0 = self.null[2];
            for j in 0..6 {
                inc[2][j] = sc * (f[j] / f0).ln() + (nc - sc) * ((1.0 - f[j]) / (1.0 - f0)).ln();
            }
        }
        inc
    }

    /// Adds one completed slice and decides.
    pub fn observe(&mut self, s: SliceInput) -> Verdict {
        let inc = self.increments(s);
        add(&mut self.cumulative, &inc, 1.0);
        add(&mut self.window, &inc, 1.0);
        self.cum_nc += s.nc;
        self.win_nc += s.nc;
        self.slices.push_back((inc, s.nc));
        if self.slices.len() > self.params.window_slices {
            if let Some((old, nc)) = self.slices.pop_front() {
                add(&mut self.window, &old, -1.0);
                self.win_nc -= nc;
            }
        }
        self.verdict()
    }

    /// The current evidence and decision, without adding a slice.
    pub fn verdict(&self) -> Verdict {
        let mut v = Verdict {
            evidence: [[0.0; 2]; 3],
            fires: [[false; 2]; 3],
            fired: None,
            cum_nc: self.cum_nc,
            win_nc: self.win_nc,
        };
        for t in Trigger::ALL {
            let k = t as usize;
            if !self.is_on(t) {
                continue;
            }
            v.evidence[k] = [mixture(&self.cumulative[k]), mixture(&self.window[k])];
            let gate = [self.cum_nc, self.win_nc].map(|n| n >= self.params.min_requests);
            for (s, open) in gate.iter().enumerate() {
                v.fires[k][s] = *open && v.evidence[k][s] >= self.thresholds[k][s];
            }
            if v.fired.is_none() && (v.fires[k][0] || v.fires[k][1]) {
                v.fired = Some(t);
            }
        }
        v
    }
}

fn add(into: &mut Sums, inc: &Sums, sign: f64) {
    for (a, b) in into.iter_mut().zip(inc) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += sign * y;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> JudgeParams {
        JudgeParams {
            max_error_rate: 1.0,
            max_relative_error: 2.0,
            slow_fraction: 0.01,
            false_rollback_budget: 0.001,
            min_requests: 100,
            window_slices: 5,
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn thresholds_match_the_page() {
        close(
            threshold(Trigger::RelativeError, Scope::Cumulative, 0.001),
            (1.0f64 / 0.000375).ln(),
        );
        assert_eq!(
            format!(
                "{:.2}",
                threshold(Trigger::RelativeError, Scope::Cumulative, 0.001)
            ),
            "7.89"
        );
        assert_eq!(
            format!(
                "{:.2}",
                threshold(Trigger::RelativeError, Scope::Window, 0.001)
            ),
            "8.99"
        );
        assert_eq!(
            format!(
                "{:.2}",
                threshold(Trigger::ErrorRate, Scope::Cumulative, 0.001)
            ),
            "8.58"
        );
        assert_eq!(
            format!("{:.2}", threshold(Trigger::Latency, Scope::Window, 0.001)),
            "9.68"
        );
    }

    #[test]
    fn mixture_of_equal_sums_is_that_sum() {
        close(mixture(&[2.5; 6]), 2.5);
        close(mixture(&[0.0; 6]), 0.0);
        // Hand-computed: ln(0.15 e^1 + 0.35 e^0 + 0.5 e^-1).
        let want = (0.15 * 1f64.exp() + 0.35 + 0.5 * (-1f64).exp()).ln();
        close(mixture(&[1.0, 0.0, -1.0, -1.0, -1.0, -1.0]), want);
    }

    #[test]
    fn increments_by_hand() {
        let j = Judge::new(params());
        let inc = j.increments(SliceInput {
            nc: 100,
            ns: 900,
            ec: 3,
            es: 2,
            sc: 1,
        });
        // error_rate, j = 1 (q = 2 %): 3 ln 2 + 97 ln(0.98 / 0.99).
        close(inc[0][1], 3.0 * 2f64.ln() + 97.0 * (0.98f64 / 0.99).ln());
        // relative, j = 2 (r = 4): 3 ln 2 − 5 ln((1 + 3·0.1) / (1 + 1·0.1)).
        close(inc[1][2], 3.0 * 2f64.ln() - 5.0 * (1.3f64 / 1.1).ln());
        // latency, j = 0 (f = 1.5 %): 1 ln 1.5 + 99 ln(0.985 / 0.99).
        close(inc[2][0], 1.5f64.ln() + 99.0 * (0.985f64 / 0.99).ln());
        // Relative skips slices without both cohorts.
        assert_eq!(
            j.increments(SliceInput {
                nc: 0,
                ns: 10,
                ec: 0,
                es: 3,
                sc: 0
            })[1],
            [0.0; 6]
        );
        assert_eq!(
            j.increments(SliceInput {
                nc: 10,
                ns: 0,
                ec: 3,
                es: 0,
                sc: 0
            })[1],
            [0.0; 6]
        );
    }

    #[test]
    fn triggers_turn_off() {
        let mut p = params();
        p.max_error_rate = 0.0;
        p.max_relative_error = 0.0;
        let mut j = Judge::new(p);
        let v = j.observe(SliceInput {
            nc: 1000,
            ns: 1000,
            ec: 1000,
            es: 0,
            sc: 0,
        });
        assert_eq!(v.evidence[0], [0.0, 0.0]);
        assert_eq!(v.evidence[1], [0.0, 0.0]);
        assert_eq!(v.fired, None);
        p.max_error_rate = 99.9;
        assert!(!Judge::new(p).is_on(Trigger::ErrorRate));
    }
}
