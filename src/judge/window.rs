//! The sliding window per cohort: the last `window / evaluate_every` slices, kept as a ring so
//! old data ages out one slice at a time (never a tumbling reset), with running totals.
//!
//! Owned by the evaluator (one writer, behind the judgement's mutex); the request path never
//! touches it. Slices are stored sparsely (only non-empty histogram buckets), so a long window
//! of quiet slices costs little memory.

use std::collections::VecDeque;

use crate::cohort::Cohort;
use crate::judge::histogram::{quantile_seconds, BUCKETS};
use crate::judge::recorder::SliceCounts;

struct Stored {
    requests: u64,
    errors: u64,
    judged_errors: u64,
    latency_micros_sum: u64,
    buckets: Box<[(u8, u64)]>,
}

impl Stored {
    fn from(s: &SliceCounts) -> Self {
        Stored {
            requests: s.requests,
            errors: s.errors,
            judged_errors: s.judged_errors,
            latency_micros_sum: s.latency_micros_sum,
            buckets: s.sparse_buckets(),
        }
    }

    fn subtract_from(&self, totals: &mut SliceCounts) {
        totals.requests -= self.requests;
        totals.errors -= self.errors;
        totals.judged_errors -= self.judged_errors;
        totals.latency_micros_sum -= self.latency_micros_sum;
        for (i, c) in self.buckets.iter() {
            totals.buckets[*i as usize] -= c;
        }
    }
}

/// Point figures of one cohort over the window, as operators see them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CohortFigures {
    pub requests: u64,
    pub errors: u64,
    /// Percent; 0 without requests.
    pub error_rate: f64,
    /// Seconds; 0 without requests. Quantiles are bucket upper edges (at most 12.5 % high).
    pub avg_latency: f64,
    pub p50_latency: f64,
    pub p90_latency: f64,
    pub p95_latency: f64,
    pub p99_latency: f64,
}

pub struct Window {
    capacity: usize,
    rings: [VecDeque<Stored>; 2],
    totals: [SliceCounts; 2],
}

impl Window {
    pub fn new(capacity: usize) -> Self {
        Window {
            capacity: capacity.max(1),
            rings: [VecDeque::new(), VecDeque::new()],
            totals: [SliceCounts::zero(), SliceCounts::zero()],
        }
    }

    /// Adds one completed slice per cohort; the oldest leaves once the window is full.
    pub fn push(&mut self, stable: &SliceCounts, canary: &SliceCounts) {
        for (k, s) in [stable, canary].into_iter().enumerate() {
            self.totals[k].add(s);
            self.rings[k].push_back(Stored::from(s));
            if self.rings[k].len() > self.capacity {
                if let Some(old) = self.rings[k].pop_front() {
                    old.subtract_from(&mut self.totals[k]);
                }
            }
        }
    }

    /// A new window length: the oldest slices leave if it is now shorter.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        for k in 0..2 {
            while self.rings[k].len() > self.capacity {
                if let Some(old) = self.rings[k].pop_front() {
                    old.subtract_from(&mut self.totals[k]);
                }
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Window::new(self.capacity);
    }

    pub fn totals(&self, cohort: Cohort) -> &SliceCounts {
        &self.totals[cohort.index()]
    }

    /// How many slices the window holds now (at most its capacity).
    pub fn len(&self) -> usize {
        self.rings[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn figures(&self, cohort: Cohort) -> CohortFigures {
        let t = self.totals(cohort);
        let q = |p| quantile_seconds(&t.buckets, p).unwrap_or(0.0);
        let per = |x: u64| {
            if t.requests == 0 {
                0.0
            } else {
                x as f64 / t.requests as f64
            }
        };
        CohortFigures {
            requests: t.requests,
            errors: t.errors,
            error_rate: per(t.errors) * 100.0,
            avg_latency: per(t.latency_micros_sum) / 1e6,
            p50_latency: q(0.5),
            p90_latency: q(0.9),
            p95_latency: q(0.95),
            p99_latency: q(0.99),
        }
    }
}

const _: () = assert!(BUCKETS <= 256, "bucket indexes are stored as u8");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::histogram::bucket_of;
    use std::time::Duration;

    fn slice(requests: u64, errors: u64, ms: u64) -> SliceCounts {
        let mut s = SliceCounts::zero();
        s.requests = requests;
        s.errors = errors;
        s.judged_errors = errors;
        s.latency_micros_sum = requests * ms * 1000;
        s.buckets[bucket_of(Duration::from_millis(ms))] = requests;
        s
    }

    #[test]
    fn old_slices_age_out_one_at_a_time() {
        let mut w = Window::new(3);
        let empty = SliceCounts::zero();
        for i in 1..=5 {
            w.push(&empty, &slice(i * 10, i, 5));
        }
        // Slices 3, 4, 5 remain.
        let f = w.figures(Cohort::Canary);
        assert_eq!((f.requests, f.errors), (120, 12));
        assert!((f.error_rate - 10.0).abs() < 1e-9);
        assert!((f.avg_latency - 0.005).abs() < 1e-9);
        assert_eq!(w.len(), 3);
        assert_eq!(w.totals(Cohort::Canary).buckets.iter().sum::<u64>(), 120);
        w.clear();
        assert_eq!(w.figures(Cohort::Canary).requests, 0);
        assert_eq!(w.figures(Cohort::Canary).error_rate, 0.0);
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut w = Window::new(10);
        let mut s = slice(990, 0, 10);
        s.buckets[bucket_of(Duration::from_millis(800))] += 10;
        s.requests += 10;
        w.push(&s, &SliceCounts::zero());
        let f = w.figures(Cohort::Stable);
        assert!(f.p50_latency >= 0.010 && f.p50_latency <= 0.010 * 1.125);
        assert!(
            f.p99_latency >= 0.010 && f.p99_latency <= 0.0113,
            "{}",
            f.p99_latency
        );
        assert!(f.p99_latency < 0.8);
    }
}
