//! The observation point: every finished exchange is reported here as (cohort, status,
//! latency, whether it is the cohort's error, identity digest). Recording is a handful of
//! relaxed atomic adds into the current slice; the evaluator takes the slice once per
//! `evaluate_every` and owns everything after that.
//!
//! The only lock is on the error path, in the per-identity error set, sharded so an error storm
//! does not serialise the proxy on one mutex.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::cohort::Cohort;
use crate::histogram::{bucket_of, BUCKETS};

/// How many identities each cohort's error set remembers before errors count plainly.
pub const ERROR_SET_CAP: usize = 1_000_000;
const SHARDS: usize = 16;

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
        // Requests first: a request whose count lands in this slice has its bucket here too,
        // because `record` adds the bucket before the request count.
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

/// Identities that already erred in this judgement, per cohort.
struct ErrorSet {
    shards: [Mutex<HashSet<u64>>; SHARDS],
    len: AtomicUsize,
}

impl ErrorSet {
    fn new() -> Self {
        ErrorSet {
            shards: std::array::from_fn(|_| Mutex::new(HashSet::new())),
            len: AtomicUsize::new(0),
        }
    }

    /// Whether this error is the identity's first (or the set is full: then every error counts).
    fn first_error(&self, digest: u64) -> bool {
        let Ok(mut shard) = self.shards[(digest as usize) % SHARDS].lock() else {
            return true;
        };
        if shard.contains(&digest) {
            return false;
        }
        if self.len.load(Relaxed) >= ERROR_SET_CAP {
            return true;
        }
        shard.insert(digest);
        self.len.fetch_add(1, Relaxed);
        true
    }

    fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut s) = shard.lock() {
                s.clear();
                s.shrink_to(1024);
            }
        }
        self.len.store(0, Relaxed);
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
    erred: [ErrorSet; 2],
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            current: [Accumulator::new(), Accumulator::new()],
            erred: [ErrorSet::new(), ErrorSet::new()],
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
            let first = match ex.identity {
                Some(d) => self.erred[ex.cohort.index()].first_error(d),
                None => true,
            };
            if first {
                acc.judged_errors.fetch_add(1, Relaxed);
            }
        }
        acc.requests.fetch_add(1, Relaxed);
    }

    /// Takes the current slice of `cohort` and starts a new one.
    pub fn take_slice(&self, cohort: Cohort) -> SliceCounts {
        self.current[cohort.index()].take()
    }

    /// Forgets which identities already erred: a new judgement starts.
    pub fn forget_identities(&self) {
        for set in &self.erred {
            set.clear();
        }
    }

    /// How many identities the error set of `cohort` holds.
    pub fn identities_remembered(&self, cohort: Cohort) -> usize {
        self.erred[cohort.index()].len.load(Relaxed)
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
        let set = ErrorSet::new();
        set.len.store(ERROR_SET_CAP - 1, Relaxed);
        assert!(set.first_error(1));
        assert!(!set.first_error(1));
        assert_eq!(set.len.load(Relaxed), ERROR_SET_CAP);
        assert!(set.first_error(2));
        assert!(set.first_error(2), "past the cap every error counts");
        assert_eq!(set.len.load(Relaxed), ERROR_SET_CAP);
    }
}
