//! What replicas write to Redis and read back: the latch, one slice of window counts, and a
//! replica's card for the fleet view. JSON with short keys: a slice crosses the wire every
//! `evaluate_every` per replica, so it stays small (only non-empty histogram buckets).

use serde::{Deserialize, Serialize};

use crate::judge::histogram::BUCKETS;
use crate::judge::recorder::SliceCounts;

/// The fleet's latch for one canary version, ordered so that it only grows: a rollback
/// outranks the active state of its generation, and a resume starts a higher generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Latch {
    pub generation: u64,
    pub rolled_back: bool,
}

/// The latch as Redis holds it (and publishes it), with who wrote it and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteLatch {
    pub version: String,
    pub generation: u64,
    pub rolled_back: bool,
    /// The rollback record as JSON (the control plane's; opaque here), or empty.
    #[serde(default)]
    pub record: String,
    #[serde(default)]
    pub by: String,
    /// Wall-clock milliseconds of the write, as text (Lua numbers lose digits).
    #[serde(default)]
    pub at_ms: String,
}

impl RemoteLatch {
    pub fn latch(&self) -> Latch {
        Latch {
            generation: self.generation,
            rolled_back: self.rolled_back,
        }
    }

    pub fn at_ms(&self) -> Option<u64> {
        self.at_ms.parse().ok()
    }
}

/// A rollout's step as the fleet holds it for one canary version: one step for every replica,
/// the highest of the current generation (a rollback outranks it through the latch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWire {
    pub generation: u64,
    pub step: usize,
    /// When the step began, wall-clock milliseconds: every replica bakes from the same moment.
    pub since_ms: u64,
    pub by: String,
    /// The fleet-wide pause at this step: who paused and why.
    pub paused: Option<String>,
    /// The last `continue` at this step (wall-clock ms; 0 for none): `max_bake` counts from it.
    pub continued_ms: u64,
}

/// What an offer of a step does to the pause.
#[derive(Debug, Clone, Copy)]
pub enum PauseOp<'a> {
    Keep,
    Set(&'a str),
    /// `continue`, at this wall-clock millisecond.
    Clear(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CohortWire {
    n: u64,
    e: u64,
    j: u64,
    us: u64,
    b: Vec<(u8, u64)>,
}

impl CohortWire {
    fn from(s: &SliceCounts) -> Self {
        CohortWire {
            n: s.requests,
            e: s.errors,
            j: s.judged_errors,
            us: s.latency_micros_sum,
            b: s.sparse_buckets().into_vec(),
        }
    }

    fn add_to(&self, s: &mut SliceCounts) {
        s.requests += self.n;
        s.errors += self.e;
        s.judged_errors += self.j;
        s.latency_micros_sum += self.us;
        for (i, c) in &self.b {
            if let Some(b) = s.buckets.get_mut(*i as usize) {
                *b += c;
            }
        }
    }
}

/// One replica's counts for one slice of both cohorts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceWire {
    s: CohortWire,
    c: CohortWire,
}

impl SliceWire {
    pub fn new(stable: &SliceCounts, canary: &SliceCounts) -> Self {
        SliceWire {
            s: CohortWire::from(stable),
            c: CohortWire::from(canary),
        }
    }

    /// Adds these counts into the fleet's sums.
    pub fn add_to(&self, stable: &mut SliceCounts, canary: &mut SliceCounts) {
        self.s.add_to(stable);
        self.c.add_to(canary);
    }

    pub fn requests(&self) -> u64 {
        self.s.n + self.c.n
    }
}

/// What a replica says about itself each slice, for the fleet view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaCard {
    pub replica: String,
    pub stable_version: String,
    pub canary_version: String,
    pub traffic_percent: f64,
    pub state: String,
    pub evaluate_every_ms: u64,
    /// Requests this replica answered in its last slice.
    pub requests: u64,
}

const _: () = assert!(BUCKETS <= 256, "bucket indexes travel as u8");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::histogram::bucket_of;
    use std::time::Duration;

    #[test]
    fn a_slice_survives_the_wire_and_sums() {
        let mut s = SliceCounts::zero();
        s.requests = 7;
        s.errors = 2;
        s.judged_errors = 1;
        s.latency_micros_sum = 7000;
        s.buckets[bucket_of(Duration::from_millis(1))] = 7;
        let mut c = SliceCounts::zero();
        c.requests = 3;
        c.buckets[bucket_of(Duration::from_secs(3))] = 3;
        let text = serde_json::to_string(&SliceWire::new(&s, &c)).unwrap();
        let back: SliceWire = serde_json::from_str(&text).unwrap();
        let (mut ss, mut cc) = (s.clone(), c.clone());
        back.add_to(&mut ss, &mut cc);
        assert_eq!((ss.requests, ss.errors, ss.judged_errors), (14, 4, 2));
        assert_eq!(ss.buckets[bucket_of(Duration::from_millis(1))], 14);
        assert_eq!(cc.buckets[bucket_of(Duration::from_secs(3))], 6);
        assert_eq!(back.requests(), 10);
    }

    #[test]
    fn the_latch_only_grows_through_resume_generations() {
        let l = |generation, rolled_back| Latch {
            generation,
            rolled_back,
        };
        assert!(l(0, true) > l(0, false));
        assert!(
            l(1, false) > l(0, true),
            "a resume outranks the rollback it clears"
        );
        assert!(l(1, true) > l(1, false));
    }
}
