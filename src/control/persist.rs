//! The control plane's state file: the latch and the rollout's position as they stand,
//! written through `latch_file`'s atomic save off the async threads, and the rollout read
//! back at start-up.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::control::latch_file::{self, LatchState, RolloutRecord, StateError};
use crate::control::rollout::Rollout;
use crate::control::routing::CanaryState;
use crate::control::{lock, Control};

pub(crate) fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The rollout a restart continues: the recorded step if it is still at the recorded percent,
/// else the step `step_for` picks (a changed list never raises the share). A step that moved
/// starts its bake again; the promotion sums always start again.
pub fn restore_rollout(config: &Config, record: Option<&RolloutRecord>) -> Option<Rollout> {
    let r = config.rollout.as_ref()?;
    let now = SystemTime::now();
    let Some(rec) = record else {
        return Some(Rollout::start(config, r, 0, now));
    };
    let same = r
        .steps
        .get(rec.step)
        .is_some_and(|p| (p - rec.percent).abs() < 1e-9);
    let step = if same {
        rec.step
    } else {
        r.step_for(rec.percent)
    };
    let mut ro = Rollout::start(config, r, step, now);
    if (r.steps[step] - rec.percent).abs() < 1e-9 {
        ro.since = from_ms(rec.since_ms).min(now);
        ro.bake_from = from_ms(rec.bake_from_ms).min(now);
        ro.paused = rec.paused.clone();
        ro.held = rec.held;
        ro.complete = rec.complete && step + 1 == r.steps.len();
    }
    Some(ro)
}

impl Control {
    /// The rollout as it would be written now.
    pub(crate) fn rollout_record(&self) -> Option<RolloutRecord> {
        let table = self.router.load();
        let guard = self.rollout();
        let ro = guard.as_ref()?;
        Some(RolloutRecord {
            step: ro.step,
            percent: table.percent,
            since: humantime::format_rfc3339_seconds(ro.since).to_string(),
            since_ms: ms(ro.since),
            bake_from_ms: ms(ro.bake_from),
            paused: ro.paused.clone(),
            held: ro.held,
            complete: ro.complete,
        })
    }

    /// The rollout as last written.
    pub(crate) fn saved_rollout(&self) -> Option<RolloutRecord> {
        lock(&self.saved_rollout).clone()
    }

    /// Whether the last write of the state file succeeded (`"persisted"` in the status).
    pub fn persisted(&self) -> bool {
        self.persisted.load(Ordering::Acquire)
    }

    /// Writes the state file as the table and the rollout stand (after a step, a pause, the
    /// fleet's latch, and at shutdown); whether it was written (a failure says so itself).
    pub async fn flush(&self) -> bool {
        let table = self.router.load();
        let rolled_back = table.state == CanaryState::RolledBack;
        self.persist(
            &table.config.state.path,
            &table.config.canary.version,
            rolled_back,
        )
        .await
    }

    /// Writes the state file as it stands. A failed write (a full disk) never undoes what it
    /// records: the swap came first and holds; it logs an ERROR and shows `"persisted": false`
    /// until a later write succeeds. Whether it was written.
    pub(crate) async fn persist(
        &self,
        path: &std::path::Path,
        version: &str,
        rolled_back: bool,
    ) -> bool {
        match self.write_state(path, version, rolled_back).await {
            Ok(()) => {
                if !self.persisted.swap(true, Ordering::AcqRel) {
                    tracing::info!(path = %path.display(), "the state file is written again");
                }
                true
            }
            Err(e) => {
                self.persisted.store(false, Ordering::Release);
                tracing::error!(error = %e, rolled_back, "the state file could not be written: the decision holds in memory only until a write succeeds");
                false
            }
        }
    }

    async fn write_state(
        &self,
        path: &std::path::Path,
        version: &str,
        rolled_back: bool,
    ) -> Result<(), StateError> {
        let state = LatchState {
            format: latch_file::FORMAT,
            canary_version: version.to_string(),
            rolled_back,
            last_rollback: self.last_rollback(),
            generation: self.generation.load(Ordering::Acquire),
            rollout: self.rollout_record(),
            events: self.events().saved(),
        };
        let record = state.rollout.clone();
        let path = path.to_path_buf();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || latch_file::save(&path, &state))
            .await
            .unwrap_or_else(|e| {
                Err(StateError::Write {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        if result.is_ok() {
            *lock(&self.saved_rollout) = record;
        }
        if started.elapsed() > Duration::from_secs(1) {
            tracing::warn!(took = ?started.elapsed(), "the state file was slow to write");
        }
        result
    }
}
