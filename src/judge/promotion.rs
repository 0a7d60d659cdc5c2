//! The promotion gate of `JUDGE.md`, exactly: four one-alternative sequential tests of the
//! *bad* null (a canary `promote_margin` times beyond a limit) against the limit itself, summed
//! over the slices since the step began. Each sum is a non-negative martingale under the bad
//! null, so it ever reaches ln(1/β) with probability at most β however long the step bakes.
//!
//! Fed the raw error counts (every error): a noisy client can only hold a step back. Pure: the
//! caller says whether the step has baked and hands in the rollback side's verdict.

use crate::judge::sequential::JudgeParams;

const CAP: f64 = 0.999;

/// The gate's four tests, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    ErrorRate,
    Latency,
    RelativeError,
    Floor,
}

impl Test {
    pub const ALL: [Test; 4] = [
        Test::ErrorRate,
        Test::Latency,
        Test::RelativeError,
        Test::Floor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Test::ErrorRate => "error_rate",
            Test::Latency => "latency",
            Test::RelativeError => "relative_error",
            Test::Floor => "floor",
        }
    }
}

/// One slice for the gate: the raw error counts, and `sc` against the rollback side's T_i.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromoteInput {
    pub nc: u64,
    pub ns: u64,
    pub ec_raw: u64,
    pub es_raw: u64,
    pub sc: u64,
}

/// The gate's parameters: the limits of `[rollback]` and β, k of `[rollout]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateParams {
    pub limits: JudgeParams,
    pub promote_risk: f64,
    pub promote_margin: f64,
}

/// One test as operators see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestView {
    pub evidence: f64,
    pub bar: f64,
    pub passes: bool,
    /// Canary requests still needed at the step's rate so far; `None` when the evidence does
    /// not grow (P ≤ 0), `Some(0)` when it passes.
    pub requests_needed: Option<u64>,
}

/// The gate after a slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateView {
    /// By `Test as usize`; `relative_error.passes` is the relative test's verdict either way.
    pub tests: [TestView; 4],
    pub step_nc: u64,
    pub baked: bool,
    /// A rollback trigger crossed its threshold during this step.
    pub fired: bool,
    /// The gate opened on this slice or an earlier one of this step (and nothing fired since).
    pub open: bool,
}

/// One step's promotion sums.
pub struct Gate {
    p: GateParams,
    /// (rate at which the test passes, the bad null it rules out) per test; `None` when the
    /// test is off (it then passes).
    pairs: [Option<(f64, f64)>; 4],
    sums: [f64; 4],
    step_nc: u64,
    fired: bool,
    opened: bool,
    view: GateView,
}

impl Gate {
    pub fn new(p: GateParams) -> Self {
        let k = p.promote_margin;
        let q0 = p.limits.max_error_rate / 100.0;
        let f0 = p.limits.slow_fraction;
        let r0 = p.limits.max_relative_error;
        let qf = q0 / k;
        // The same switches as the rollback side: an error_rate trigger that is off leaves no
        // absolute test (and no floor), a relative one that is off no relative test.
        let abs_on = q0 > 0.0 && q0 < CAP;
        let pairs = [
            abs_on.then(|| (q0, (k * q0).min(CAP))),
            (f0 > 0.0 && f0 < CAP).then(|| (f0, (k * f0).min(CAP))),
            (r0 > 0.0).then_some((r0, k * r0)),
            abs_on.then_some((qf / k, qf)),
        ];
        let mut g = Gate {
            p,
            pairs,
            sums: [0.0; 4],
            step_nc: 0,
            fired: false,
            opened: false,
            view: GateView {
                tests: [TestView {
                    evidence: 0.0,
                    bar: 0.0,
                    passes: false,
                    requests_needed: None,
                }; 4],
                step_nc: 0,
                baked: false,
                fired: false,
                open: false,
            },
        };
        g.view = g.compute(false, f64::INFINITY);
        g
    }

    pub fn params(&self) -> &GateParams {
        &self.p
    }

    /// ln(1/β) for error rate and latency, ln(2/β) for the relative test's two ways.
    pub fn bar(&self, t: Test) -> f64 {
        let beta = self.p.promote_risk;
        match t {
            Test::ErrorRate | Test::Latency => (1.0 / beta).ln(),
            Test::RelativeError | Test::Floor => (2.0 / beta).ln(),
        }
    }

    /// The per-slice increments, by `Test as usize`.
    pub fn increments(&self, s: PromoteInput) -> [f64; 4] {
        let nc = s.nc as f64;
        let ec = (s.ec_raw as f64).min(nc);
        let es = s.es_raw as f64;
        let sc = (s.sc as f64).min(nc);
        let bernoulli = |hits: f64, (null, bad): (f64, f64)| {
            hits * (null / bad).ln() + (nc - hits) * ((1.0 - null) / (1.0 - bad)).ln()
        };
        let mut inc = [0.0; 4];
        if let Some(pair) = self.pairs[Test::ErrorRate as usize] {
            inc[0] = bernoulli(ec, pair);
        }
        if let Some(pair) = self.pairs[Test::Latency as usize] {
            inc[1] = bernoulli(sc, pair);
        }
        if let (Some((r0, rs)), true) = (self.pairs[2], s.nc > 0 && s.ns > 0) {
            let rho = nc / (nc + s.ns as f64);
            inc[2] = -(ec * (rs / r0).ln()
                - (ec + es) * ((1.0 + (rs - 1.0) * rho) / (1.0 + (r0 - 1.0) * rho)).ln());
        }
        if let Some(pair) = self.pairs[Test::Floor as usize] {
            inc[3] = bernoulli(ec, pair);
        }
        inc
    }

    /// Adds one slice of the step. `baked`: the step has lasted `bake`; `fired`: a rollback
    /// trigger crossed its threshold on this slice; `m_rel`: the rollback side's relative
    /// M(cumulative).
    pub fn observe(&mut self, s: PromoteInput, baked: bool, fired: bool, m_rel: f64) -> GateView {
        let inc = self.increments(s);
        for (sum, inc) in self.sums.iter_mut().zip(inc) {
            *sum += inc;
        }
        self.step_nc += s.nc;
        self.fired |= fired;
        self.view = self.compute(baked, m_rel);
        self.opened = self.view.open;
        self.view
    }

    pub fn view(&self) -> GateView {
        self.view
    }

    fn compute(&self, baked: bool, m_rel: f64) -> GateView {
        let mut tests = Test::ALL.map(|t| {
            let (evidence, bar) = (self.sums[t as usize], self.bar(t));
            let passes = self.pairs[t as usize].is_none() || evidence >= bar;
            TestView {
                evidence,
                bar,
                passes,
                requests_needed: None,
            }
        });
        // The relative test's second way: the canary's rate is proved below half the absolute
        // limit while the rollback side does not lean toward a relative breach.
        let floor_way = self.pairs[Test::Floor as usize].is_some()
            && tests[Test::Floor as usize].passes
            && m_rel <= 0.0;
        let rel = &mut tests[Test::RelativeError as usize];
        rel.passes = self.pairs[Test::RelativeError as usize].is_none() || rel.passes || floor_way;
        for t in &mut tests {
            t.requests_needed = if t.passes || t.evidence >= t.bar {
                Some(0)
            } else if t.evidence > 0.0 && self.step_nc > 0 {
                let per_request = t.evidence / self.step_nc as f64;
                Some(((t.bar - t.evidence) / per_request).ceil() as u64)
            } else {
                None
            };
        }
        let enough = baked && self.step_nc >= self.p.limits.min_requests;
        let all = tests[..3].iter().all(|t| t.passes);
        GateView {
            tests,
            step_nc: self.step_nc,
            baked,
            fired: self.fired,
            open: !self.fired && (self.opened || (enough && all)),
        }
    }
}
