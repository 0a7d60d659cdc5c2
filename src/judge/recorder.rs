//! The observation point: every finished exchange is reported here as (cohort, status,
//! latency, whether it is the cohort's error, identity digest). Recording is a handful of
//! relaxed atomic adds into the current slice, plus, for an error, one lock-free push of the
//! identity's digest; no lock, no allocation. The evaluator takes the slice once per
//! `evaluate_every`, and only it decides which errors are an identity's first.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::cohort::Cohort;
use crate::judge::histogram::{bucket_of, BUCKETS};

/// How many identities each cohort's error set remembers before errors count plainly.
pub const ERROR_SET_CAP: usize = 1_000_000;
/// Error digests a cohort can queue within one slice; past it, errors count plainly.
pub const ERROR_QUEUE: usize = 16_384;

/// One slice's counts for one cohort, as plain numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceCounts {
    pub requests: u64,
    /// Every error, as operators count them.
    pub errors: u64,
    /// Errors counted at most once per identity: what the judge reads.
    pub judged_errors: u64,
    pub latency_micros_sum: u64,
    pub buckets: Vec<u64>,
}

impl SliceCounts {
    pub fn zero() -> Self {
        SliceCounts {
            requests: 0,
            errors: 0,
            judged_errors: 0,
            latency_micros_sum: 0,
            buckets: vec![0; BUCKETS],
        }
    }

    /// The non-empty buckets as (index, count): how slices are kept and sent.
    pub fn sparse_buckets(&self) -> Box<[(u8, u64)]> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as u8, *c))
            .collect()
    }

    pub fn add(&mut self, other: &SliceCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.judged_errors += other.judged_errors;
        self.latency_micros_sum += other.latency_micros_sum;
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    pub fn sub(&mut self, other: &SliceCounts) {
        self.requests -= other.requests;
        self.errors -= other.errors;
        self.judged_errors -= other.judged_errors;
        self.latency_micros_sum -= other.latency_micros_sum;
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a -= b;
        }
    }
}

struct Accumulator {
    requests: AtomicU64,
    errors: AtomicU64,
    judged_errors: AtomicU64,
    latency_micros_sum: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Accumulator {
    fn new() -> Self {
        Accumulator {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            judged_errors: AtomicU64::new(0),
            latency_micros_sum: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn take(&self) -> SliceCounts {
        // Requests first: a request whose count lands in this slice has its bucket (and its
        // queued digest) here too, because `record` adds those before the request count.
        let requests = self.requests.swap(0, Relaxed);
        SliceCounts {
            requests,
            errors: self.errors.swap(0, Relaxed),
            judged_errors: self.judged_errors.swap(0, Relaxed),
            latency_micros_sum: self.latency_micros_sum.swap(0, Relaxed),
            buckets: self.buckets.iter().map(|b| b.swap(0, Relaxed)).collect(),
        }
    }
}

/// Identities that already erred in this judgement, per cohort. Only the evaluator touches it.
#[derive(Default)]
struct ErrorSet {
    seen: HashSet<u64>,
}

impl ErrorSet {
    /// Whether this error is the identity's first (or the set is full: then every error counts).
    fn first_error(&mut self, digest: u64) -> bool {
        if self.seen.contains(&digest) {
            return false;
        }
        if self.seen.len() < ERROR_SET_CAP {
            self.seen.insert(digest);
        }
        true
    }
}

/// One finished exchange, as the request path reports it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub cohort: Cohort,
    pub status: u16,
    pub latency: Duration,
    /// Counts against the cohort (an error status, or a 502/504 the upstream caused).
    pub error: bool,
    /// The identity's digest, so the judge counts one client's errors once.
    pub identity: Option<u64>,
}

pub struct Recorder {
    current: [Accumulator; 2],
    /// Digests of this slice's errors, waiting for the evaluator.
    queued: [ArrayQueue<u64>; 2],
    erred: Mutex<[ErrorSet; 2]>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            current: [Accumulator::new(), Accumulator::new()],
            queued: [ArrayQueue::new(ERROR_QUEUE), ArrayQueue::new(ERROR_QUEUE)],
            erred: Mutex::new([ErrorSet::default(), ErrorSet::default()]),
        }
    }
}

impl Recorder {
    pub fn record(&self, ex: &Exchange) {
        let acc = &self.current[ex.cohort.index()];
        let micros = ex.latency.as_micros().min(u64::MAX as u128) as u64;
        acc.buckets[bucket_of(ex.latency)].fetch_add(1, Relaxed);
        acc.latency_micros_sum.fetch_add(micros, Relaxed);
        if ex.error {
            acc.errors.fetch_add(1, Relaxed);
            // Without an identity, or with the queue full, the error counts plainly.
            let queued = ex
                .identity
                .is_some_and(|d| self.queued[ex.cohort.index()].push(d).is_ok());
            if !queued {
                acc.judged_errors.fetch_add(1, Relaxed);
            }
        }
        acc.requests.fetch_add(1, Relaxed);
    }

    /// Takes the current slice of `cohort` and starts a new one; counts each identity's first
    /// error of this judgement towards `judged_errors`.
    pub fn take_slice(&self, cohort: Cohort) -> SliceCounts {
        let mut s = self.current[cohort.index()].take();
        let mut sets = self.erred.lock().unwrap_or_else(|e| e.into_inner());
        let set = &mut sets[cohort.index()];
        while let Some(d) = self.queued[cohort.index()].pop() {
            if set.first_error(d) {
                s.judged_errors += 1;
            }
        }
        s
    }

    /// Forgets which identities already erred: a new judgement starts.
    pub fn forget_identities(&self) {
        let mut sets = self.erred.lock().unwrap_or_else(|e| e.into_inner());
        for (k, set) in sets.iter_mut().enumerate() {
            while self.queued[k].pop().is_some() {}
            *set = ErrorSet::default();
        }
    }

    /// How many identities the error set of `cohort` holds.
    pub fn identities_remembered(&self, cohort: Cohort) -> usize {
        self.erred.lock().unwrap_or_else(|e| e.into_inner())[cohort.index()]
            .seen
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(cohort: Cohort, error: bool, identity: Option<u64>, ms: u64) -> Exchange {
        Exchange {
            cohort,
            status: if error { 500 } else { 200 },
            latency: Duration::from_millis(ms),
            error,
            identity,
        }
    }

    #[test]
    fn one_identity_counts_once_for_the_judge_but_every_time_for_operators() {
        let r = Recorder::default();
        for _ in 0..10 {
            r.record(&ex(Cohort::Canary, true, Some(42), 5));
        }
        r.record(&ex(Cohort::Canary, true, Some(43), 5));
        r.record(&ex(Cohort::Canary, true, None, 5));
        r.record(&ex(Cohort::Canary, true, None, 5));
        r.record(&ex(Cohort::Canary, false, Some(44), 5));
        let s = r.take_slice(Cohort::Canary);
        assert_eq!((s.requests, s.errors, s.judged_errors), (14, 13, 4));
        assert_eq!(s.buckets.iter().sum::<u64>(), 14);
        assert_eq!(r.take_slice(Cohort::Canary), SliceCounts::zero());
        assert_eq!(r.take_slice(Cohort::Stable).requests, 0);

        // The identity stays remembered across slices, until the judgement restarts.
        r.record(&ex(Cohort::Canary, true, Some(42), 5));
        assert_eq!(r.take_slice(Cohort::Canary).judged_errors, 0);
        r.forget_identities();
        r.record(&ex(Cohort::Canary, true, Some(42), 5));
        assert_eq!(r.take_slice(Cohort::Canary).judged_errors, 1);
    }

    #[test]
    fn cohorts_keep_separate_sets() {
        let r = Recorder::default();
        r.record(&ex(Cohort::Canary, true, Some(1), 1));
        r.record(&ex(Cohort::Stable, true, Some(1), 1));
        assert_eq!(r.take_slice(Cohort::Canary).judged_errors, 1);
        assert_eq!(r.take_slice(Cohort::Stable).judged_errors, 1);
    }

    #[test]
    fn the_set_is_bounded_and_past_its_cap_errors_count_plainly() {
        let mut set = ErrorSet::default();
        set.seen
            .extend((0..ERROR_SET_CAP as u64 - 1).map(|i| i + 1000));
        assert!(set.first_error(1));
        assert!(!set.first_error(1));
        assert_eq!(set.seen.len(), ERROR_SET_CAP);
        assert!(set.first_error(2));
        assert!(set.first_error(2), "past the cap every error counts");
        assert_eq!(set.seen.len(), ERROR_SET_CAP);
    }

    #[test]
    fn a_full_queue_counts_errors_plainly() {
        let r = Recorder::default();
        for _ in 0..ERROR_QUEUE + 10 {
            r.record(&ex(Cohort::Canary, true, Some(5), 1));
        }
        let s = r.take_slice(Cohort::Canary);
        assert_eq!(s.errors, ERROR_QUEUE as u64 + 10);
        assert_eq!(
            s.judged_errors,
            1 + 10,
            "one from the queue, the overflow plainly"
        );
    }
}
