//! The control plane: the evaluator's tick, and the only paths that change routing — rollback,
//! resume, reset and reload. Transitions are serialised; the swap itself is one store and comes
//! before any IO, so a rollback cannot be delayed or undone by a slow disk.

pub mod events;
pub mod fleet;
pub mod gauges;
pub mod history;
pub mod latch_file;
pub mod persist;
pub mod rearm;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod schedule;
pub mod steps;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::cohort::Cohort;
use crate::control::routing::{CanaryState, Router, RoutingTable};
use crate::fleet::{Claim, Fleet};
use crate::judge::judgement::Judgement;
use crate::judge::recorder::Recorder;
use crate::judge::sequential::Trigger;
use crate::metrics::Metrics;
use latch_file::RollbackRecord;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The call does not fit the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A reload with a config that is refused (422); the old one keeps serving.
    #[error("{0}")]
    Invalid(String),
}

/// The states before and after a transition, for the audit line and the caller.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    pub before: &'static str,
    pub after: &'static str,
    /// A promotion through a shut gate (`force`): the audit line says so.
    pub forced: bool,
}

/// The control plane. Its fields are its own: every change to routing goes through its methods
/// (here and in this folder's other files), serialised by `transitions`.
pub struct Control {
    router: Arc<Router>,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    judgement: Mutex<Judgement>,
    last_rollback: Mutex<Option<RollbackRecord>>,
    config_path: Option<PathBuf>,
    transitions: tokio::sync::Mutex<()>,
    fleet: Option<Arc<Fleet>>,
    /// The latch's generation for this canary version (resumes seen): see `fleet::wire::Latch`.
    generation: AtomicU64,
    /// The last write of the state file succeeded.
    persisted: std::sync::atomic::AtomicBool,
    /// With `[rollout]`, where it stands (`None` without).
    rollout: Mutex<Option<rollout::Rollout>>,
    /// The rollout as last written to the state file.
    saved_rollout: Mutex<Option<latch_file::RolloutRecord>>,
    /// The config file's bytes as the last reload read them (whatever asked for it), so the
    /// file watcher never reloads again what a SIGHUP just applied.
    read_config: Mutex<Option<Vec<u8>>>,
    events: events::EventLog,
    notifier: Option<Arc<crate::notify::Notifier>>,
    history: history::History,
}

/// What a `Control` starts from besides the routing parts.
#[derive(Default)]
pub struct Start {
    pub config_path: Option<PathBuf>,
    pub last_rollback: Option<RollbackRecord>,
    pub generation: u64,
    pub fleet: Option<Arc<Fleet>>,
    pub rollout: Option<rollout::Rollout>,
    /// The events a state file kept.
    pub events: Vec<crate::notify::Event>,
    pub notifier: Option<Arc<crate::notify::Notifier>>,
    pub history: Option<history::History>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who asked, for a log line: the admin caller's address, or `internal` (the judge, the file
/// watcher, a signal).
pub(crate) fn who(caller: Option<SocketAddr>) -> String {
    caller.map_or_else(|| "internal".into(), |c| c.to_string())
}

/// A rollout at its first step from now, when the table's config has one.
pub(crate) fn rollout_from_start(table: &RoutingTable) -> Option<rollout::Rollout> {
    let r = table.config.rollout.as_ref()?;
    Some(rollout::Rollout::start(
        &table.config,
        r,
        0,
        SystemTime::now(),
    ))
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Control {
    pub fn new(
        router: Arc<Router>,
        recorder: Arc<Recorder>,
        metrics: Arc<Metrics>,
        start: Start,
    ) -> Self {
        let table = router.load();
        let judgement = Judgement::new(&table.config.rollback, SystemTime::now());
        let c = Control {
            router,
            recorder,
            metrics,
            judgement: Mutex::new(judgement),
            last_rollback: Mutex::new(start.last_rollback),
            config_path: start.config_path.clone(),
            transitions: tokio::sync::Mutex::new(()),
            fleet: start.fleet,
            generation: AtomicU64::new(start.generation),
            persisted: std::sync::atomic::AtomicBool::new(true),
            rollout: Mutex::new(start.rollout),
            saved_rollout: Mutex::new(None),
            // As the file stands at start: the watcher's first reference.
            read_config: Mutex::new(
                start
                    .config_path
                    .as_ref()
                    .and_then(|p| std::fs::read(p).ok()),
            ),
            events: events::EventLog::new(start.events),
            notifier: start.notifier,
            history: start.history.unwrap_or_else(history::History::empty),
        };
        if let Some(n) = &c.notifier {
            n.configure(&table.config.notify);
        }
        c.publish(&table);
        c
    }

    /// The routing table as it stands (one load; keep it for what you read together).
    pub fn table(&self) -> Arc<RoutingTable> {
        self.router.load()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn judgement(&self) -> MutexGuard<'_, Judgement> {
        lock(&self.judgement)
    }

    pub(crate) fn rollout(&self) -> MutexGuard<'_, Option<rollout::Rollout>> {
        lock(&self.rollout)
    }

    pub fn last_rollback(&self) -> Option<RollbackRecord> {
        lock(&self.last_rollback).clone()
    }

    pub(crate) fn set_last_rollback(&self, record: Option<RollbackRecord>) {
        *lock(&self.last_rollback) = record;
    }

    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// One `evaluate_every` slice: take both cohorts' counts, judge, and roll back on a trigger.
    pub async fn tick(&self) {
        let table = self.router.load();
        let stable = self.recorder.take_slice(Cohort::Stable);
        let canary = self.recorder.take_slice(Cohort::Canary);
        self.judge_slice(&table, &stable, &canary).await;
    }

    /// Judges one slice's counts (this replica's, or the fleet's sums) and rolls back on a trigger.
    pub(crate) async fn judge_slice(
        &self,
        table: &RoutingTable,
        stable: &crate::judge::recorder::SliceCounts,
        canary: &crate::judge::recorder::SliceCounts,
    ) {
        let r = &table.config.rollback;
        let (verdict, slow) = {
            let mut j = self.judgement();
            (j.step(r, stable, canary), j.last_slow())
        };
        self.publish(table);
        self.record_history(table, stable, canary).await;
        if let (Some(trigger), true, CanaryState::Active) = (verdict.fired, r.auto, table.state) {
            let reason = format!(
                "the judge found the canary beyond its {} limit",
                trigger.as_str()
            );
            // Refused only when already rolled back; a failed write says so itself.
            let _ = self.rollback(trigger.as_str(), reason, None).await;
        }
        let input = crate::judge::promotion::PromoteInput {
            nc: canary.requests,
            ns: stable.requests,
            ec_raw: canary.errors,
            es_raw: stable.errors,
            sc: slow,
        };
        self.rollout_slice(&verdict, input).await;
    }

    /// Swaps routing to stable-only, then logs, counts and writes the latch.
    pub async fn rollback(
        &self,
        trigger: &str,
        reason: String,
        caller: Option<SocketAddr>,
    ) -> Result<(RollbackRecord, Transition), ControlError> {
        let _serial = self.transitions.lock().await;
        let fired_at = Instant::now();
        let before = self.state_name(&self.router.load());
        let swapped = self.router.update(|t| {
            (t.state != CanaryState::RolledBack).then(|| t.with_latch(true, &self.metrics))
        });
        let swap = fired_at.elapsed();
        let Some((_, table)) = swapped else {
            let by = match self.last_rollback() {
                Some(RollbackRecord {
                    replica: Some(r),
                    trigger,
                    ..
                }) => format!(" (by replica {r}, trigger {trigger})"),
                _ => String::new(),
            };
            return Err(ControlError::Conflict(format!(
                "the canary is already rolled back{by}"
            )));
        };
        self.publish(&table);
        let cfg = &table.config;
        let figures = self.judgement().record_figures(&cfg.rollback);
        let (canary, stable) = (figures.canary, figures.stable);
        // A manual rollback has no evidence of its own: show the trigger closest to firing.
        let shown = Trigger::from_name(trigger).unwrap_or_else(|| figures.evidence.closest());
        let ev = *figures.evidence.get(shown);
        let mut record = RollbackRecord {
            trigger: trigger.into(),
            reason: reason.clone(),
            at: now_rfc3339(),
            canary_version: cfg.canary.version.clone(),
            figures: serde_json::to_value(figures).unwrap_or_default(),
            replica: self.fleet.as_ref().map(|f| f.config.replica.clone()),
        };
        // In a fleet the first decision written wins: one record, one count, everywhere.
        let latch = crate::fleet::wire::Latch {
            generation: self.generation.load(Ordering::Acquire),
            rolled_back: true,
        };
        let claim = match &self.fleet {
            Some(f) => {
                let text = serde_json::to_string(&record).unwrap_or_default();
                f.claim(&cfg.canary.version, latch, &text).await
            }
            None => Claim::Alone,
        };
        let mut ahead = None;
        match claim {
            Claim::Lost(remote) if remote.latch() == latch => {
                tracing::warn!(by = %remote.by, trigger, "rolled back; replica {} decided first and its record is kept", remote.by);
                record = fleet::record_of(&remote).unwrap_or(record);
                *lock(&self.last_rollback) = Some(record.clone());
                self.announce(
                    events::Told::new("rolled_back", before, "rolled_back", &record.reason)
                        .trigger(&record.trigger)
                        .figures(record.figures.clone())
                        .by_replica(&remote.by),
                );
                self.persist(&cfg.state.path, &cfg.canary.version, true)
                    .await;
                return Ok((
                    record,
                    Transition {
                        before,
                        after: "rolled_back",
                        forced: false,
                    },
                ));
            }
            Claim::Lost(remote) => ahead = Some(remote),
            Claim::Won | Claim::Alone => {}
        }
        self.metrics.rollbacks.with_label_values(&[trigger]).inc();
        tracing::error!(
            trigger,
            evidence_trigger = shown.as_str(),
            evidence_cumulative = ev.cumulative,
            threshold_cumulative = ev.threshold_cumulative,
            evidence_window = ev.window,
            threshold_window = ev.threshold_window,
            canary_requests = canary.requests,
            canary_error_rate = canary.error_rate,
            canary_p99 = canary.p99_latency,
            stable_requests = stable.requests,
            stable_error_rate = stable.error_rate,
            stable_p99 = stable.p99_latency,
            swap_us = swap.as_micros() as u64,
            "canary rolled back by trigger {trigger}: every new request now goes to stable"
        );
        tracing::warn!(%reason, canary_version = %cfg.canary.version, caller = %crate::control::who(caller), before, after = "rolled_back", "rolled back");
        *lock(&self.last_rollback) = Some(record.clone());
        self.announce(
            events::Told::new("rolled_back", before, "rolled_back", reason)
                .trigger(trigger)
                .figures(record.figures.clone())
                .by(caller),
        );
        self.persist(&cfg.state.path, &cfg.canary.version, true)
            .await;
        if let Some(remote) = ahead {
            // The fleet moved past this rollback already (a resume raced it): follow it.
            self.adopt_locked(&remote).await;
        }
        Ok((
            record,
            Transition {
                before,
                after: "rolled_back",
                forced: false,
            },
        ))
    }
}
