//! The series the judge saw, for people: one point per slice (both cohorts' requests, errors
//! and p99, each trigger's evidence against its thresholds, the canary's share), full
//! resolution for the last hour and one point a minute for the five before. Two bounded rings:
//! memory stays flat however long a canary runs. Written beside the state file once a minute
//! (and at shutdown) so a restart keeps the picture; unlike the latch it is not a decision, so
//! a history file that cannot be read is said and started afresh.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::lock;

/// Full resolution (one point a slice, at most one a second) this far back.
pub const FINE_SPAN: Duration = Duration::from_secs(3600);
/// One point a minute beyond, this far back in all.
pub const SPAN: Duration = Duration::from_secs(6 * 3600);
const FINE_BUCKET_MS: u64 = 1000;
const COARSE_BUCKET_MS: u64 = 60_000;
const FORMAT: u32 = 1;

/// One cohort in one point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CohortPoint {
    pub requests: u64,
    pub errors: u64,
    /// The slice's p99 in milliseconds (the largest of the slices a point merges); `None`
    /// without requests.
    pub p99_ms: Option<f64>,
}

/// One trigger in one point: `[cumulative, window, threshold_cumulative, threshold_window]`
/// (log-likelihood ratios).
pub type EvidencePoint = [f64; 4];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The slice's end, milliseconds since the epoch.
    pub t: u64,
    /// How many seconds of slices the point covers.
    pub seconds: f64,
    /// The canary's share of identities in force (0 while rolled back or disabled).
    pub share: f64,
    pub stable: CohortPoint,
    pub canary: CohortPoint,
    pub error_rate: EvidencePoint,
    pub relative_error: EvidencePoint,
    pub latency: EvidencePoint,
}

impl Point {
    /// Folds a later point of the same bucket into this one: counts add up, the p99 is the
    /// worst, the evidence and the share are the latest.
    fn merge(&mut self, later: &Point) {
        self.seconds += later.seconds;
        for (a, b) in [
            (&mut self.stable, &later.stable),
            (&mut self.canary, &later.canary),
        ] {
            a.requests += b.requests;
            a.errors += b.errors;
            a.p99_ms = match (a.p99_ms, b.p99_ms) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
        }
        let seconds = self.seconds;
        *self = Point {
            seconds,
            stable: self.stable,
            canary: self.canary,
            ..*later
        };
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Rings {
    format: u32,
    fine: VecDeque<Point>,
    coarse: VecDeque<Point>,
}

/// Adds `p` to `ring`, merged into the last point when both fall in one bucket.
fn push(ring: &mut VecDeque<Point>, p: Point, bucket_ms: u64) {
    match ring.back_mut() {
        Some(last) if last.t / bucket_ms == p.t / bucket_ms => last.merge(&p),
        _ => ring.push_back(p),
    }
}

pub struct History {
    rings: Mutex<Rings>,
}

/// Where the history lives: beside the state file (`canary-state.json` ->
/// `canary-state.history.json`).
pub fn path_for(state: &Path) -> PathBuf {
    let stem = state
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "canary-state".into());
    state.with_file_name(format!("{stem}.history.json"))
}

impl History {
    pub fn empty() -> History {
        History {
            rings: Mutex::new(Rings {
                format: FORMAT,
                ..Rings::default()
            }),
        }
    }

    /// The history a file kept, or an empty one (said, when the file is there but unreadable).
    pub fn load(path: &Path) -> History {
        let rings = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Rings>(&bytes) {
                Ok(r) if r.format == FORMAT => Some(r),
                Ok(r) => {
                    tracing::warn!(path = %path.display(), format = r.format, "the history file is of another format: the charts start afresh");
                    None
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "the history file cannot be read: the charts start afresh");
                    None
                }
            },
            Err(_) => None,
        };
        let h = History::empty();
        if let Some(r) = rings {
            *lock(&h.rings) = r;
        }
        h
    }

    /// Adds one slice's point, moving what is older than an hour to the per-minute ring and
    /// forgetting what is older than six. True when a new minute began: time to save.
    pub fn record(&self, p: Point) -> bool {
        let mut r = lock(&self.rings);
        let fine_from = p.t.saturating_sub(FINE_SPAN.as_millis() as u64);
        let from = p.t.saturating_sub(SPAN.as_millis() as u64);
        let new_minute = r
            .fine
            .back()
            .is_none_or(|l| l.t / COARSE_BUCKET_MS != p.t / COARSE_BUCKET_MS);
        push(&mut r.fine, p, FINE_BUCKET_MS);
        while r.fine.front().is_some_and(|f| f.t < fine_from) {
            let old = r.fine.pop_front().expect("a front");
            push(&mut r.coarse, old, COARSE_BUCKET_MS);
        }
        while r.coarse.front().is_some_and(|c| c.t < from) {
            r.coarse.pop_front();
        }
        new_minute
    }

    /// The points of the last `seconds`, oldest first.
    pub fn since(&self, now_ms: u64, seconds: u64) -> Vec<Point> {
        let from = now_ms.saturating_sub(seconds.saturating_mul(1000));
        let r = lock(&self.rings);
        r.coarse
            .iter()
            .chain(r.fine.iter())
            .filter(|p| p.t >= from)
            .copied()
            .collect()
    }

    /// Points held: (full resolution, per minute).
    pub fn len(&self) -> (usize, usize) {
        let r = lock(&self.rings);
        (r.fine.len(), r.coarse.len())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&*lock(&self.rings)).unwrap_or_default()
    }
}

impl crate::control::Control {
    pub fn history(&self) -> &History {
        &self.history
    }

    /// One slice's point; once a minute the history is written beside the state file.
    pub(crate) async fn record_history(
        &self,
        table: &crate::control::routing::RoutingTable,
        stable: &crate::judge::recorder::SliceCounts,
        canary: &crate::judge::recorder::SliceCounts,
    ) {
        let cohort = |c: &crate::judge::recorder::SliceCounts| CohortPoint {
            requests: c.requests,
            errors: c.errors,
            p99_ms: crate::judge::histogram::quantile_seconds(&c.buckets, 0.99)
                .map(|s| (s * 1e6).round() / 1e3),
        };
        let r = &table.config.rollback;
        let ev = self.judgement().evidence(r);
        let e = |x: &crate::judge::evidence::Evidence| {
            [
                x.cumulative,
                x.window,
                x.threshold_cumulative,
                x.threshold_window,
            ]
        };
        let point = Point {
            t: crate::control::persist::ms(std::time::SystemTime::now()),
            seconds: r.evaluate_every.as_secs_f64(),
            share: if table.threshold_ppm > 0 {
                table.percent
            } else {
                0.0
            },
            stable: cohort(stable),
            canary: cohort(canary),
            error_rate: e(&ev.error_rate),
            relative_error: e(&ev.relative_error),
            latency: e(&ev.latency),
        };
        if self.history.record(point) {
            self.save_history().await;
        }
    }

    /// Writes the history file (atomically, off the async threads); a failure is said, and
    /// the next minute tries again.
    pub async fn save_history(&self) {
        let path = path_for(&self.router.load().config.state.path);
        let bytes = self.history.to_json();
        let written = tokio::task::spawn_blocking(move || {
            crate::control::latch_file::write_atomic(&path, &bytes).map_err(|e| (path, e))
        })
        .await;
        if let Ok(Err((path, e))) = written {
            tracing::warn!(path = %path.display(), error = %e, "the history file could not be written (the charts keep their points in memory)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: u64, requests: u64) -> Point {
        let c = CohortPoint {
            requests,
            errors: 1,
            p99_ms: Some(t as f64),
        };
        Point {
            t,
            seconds: 1.0,
            share: 5.0,
            stable: c,
            canary: c,
            error_rate: [t as f64, 0.0, 9.0, 9.0],
            relative_error: [0.0; 4],
            latency: [0.0; 4],
        }
    }

    #[test]
    fn memory_stays_flat_over_a_day_of_slices() {
        let h = History::empty();
        let start = 1_000_000_000_000u64;
        for i in 0..(24 * 3600) {
            h.record(point(start + i * 1000, 10));
        }
        let (fine, coarse) = h.len();
        assert!((3600..=3601).contains(&fine), "{fine}");
        assert!((299..=301).contains(&coarse), "{coarse}");
        let all = h.since(start + 24 * 3600 * 1000, 6 * 3600);
        assert!(all.windows(2).all(|w| w[0].t < w[1].t), "oldest first");
        // A per-minute point holds the minute's counts, the worst p99, the last evidence.
        let minute = all[0];
        assert_eq!(minute.stable.requests, 600);
        assert_eq!(minute.seconds, 60.0);
        assert_eq!(minute.canary.p99_ms, Some(minute.t as f64));
        assert_eq!(minute.error_rate[0], minute.t as f64);
    }

    #[test]
    fn slices_shorter_than_a_second_merge_into_one_point_a_second() {
        let h = History::empty();
        for i in 0..40 {
            h.record(point(10_000 + i * 250, 4));
        }
        assert_eq!(h.len().0, 10);
        assert_eq!(h.since(20_000, 60)[0].stable.requests, 16);
    }

    #[test]
    fn a_saved_history_loads_back_and_a_bad_one_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("canary-state.json"));
        assert!(path.ends_with("canary-state.history.json"));
        let h = History::empty();
        h.record(point(5_000, 3));
        std::fs::write(&path, h.to_json()).unwrap();
        assert_eq!(History::load(&path).since(6_000, 60), h.since(6_000, 60));
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(History::load(&path).len(), (0, 0));
    }
}
