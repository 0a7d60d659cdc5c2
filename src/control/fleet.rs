//! The control plane's side of the fleet: the latch as this replica holds it, adopting the
//! fleet's when it ranks higher, and the evaluator's slice judged on the fleet's sums.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cohort::Cohort;
use crate::control::events::Told;
use crate::control::latch_file::RollbackRecord;
use crate::control::persist::{from_ms, ms};
use crate::control::routing::{CanaryState, RoutingTable};
use crate::control::Control;
use crate::fleet::wire::{Latch, PauseOp, RemoteLatch, ReplicaCard, SliceWire, StepWire};
use crate::fleet::{now_ms, Fleet, LatchHolder};

/// How long a replica waits after a slice ends for the others to publish theirs.
pub fn grace(every: Duration) -> Duration {
    (every / 5).min(Duration::from_millis(200))
}

/// The rollback record a remote latch carries, if it carries one.
pub(crate) fn record_of(remote: &RemoteLatch) -> Option<RollbackRecord> {
    serde_json::from_str(&remote.record).ok()
}

impl LatchHolder for Control {
    /// This replica's latch for its canary version, with the record that goes with it.
    fn latch_now(&self) -> (String, Latch, String) {
        let table = self.router.load();
        let rolled_back = table.state == CanaryState::RolledBack;
        let record = match (rolled_back, self.last_rollback()) {
            (true, Some(r)) => serde_json::to_string(&r).unwrap_or_default(),
            _ => String::new(),
        };
        let latch = Latch {
            generation: self.generation.load(Ordering::Acquire),
            rolled_back,
        };
        (table.config.canary.version.clone(), latch, record)
    }

    /// Applies a latch from the fleet when it ranks above ours (for our canary version).
    async fn adopt(&self, remote: &RemoteLatch) {
        let _serial = self.transitions.lock().await;
        self.adopt_locked(remote).await;
    }

    /// Redis went out of reach: said once each time, by this replica.
    async fn alone(&self, why: &str) {
        let state = self.state_name(&self.router.load());
        let replica = self
            .fleet
            .as_ref()
            .map(|f| f.config.replica.as_str())
            .unwrap_or("");
        let why = format!("replica {replica}: {why}; serving and judging alone until it is back");
        self.announce(Told::new("fleet_alone", state, state, why));
        self.flush().await;
    }
}

impl Control {
    pub fn card(&self, table: &RoutingTable, requests: u64) -> ReplicaCard {
        let c = &table.config;
        ReplicaCard {
            replica: self
                .fleet
                .as_ref()
                .map(|f| f.config.replica.clone())
                .unwrap_or_default(),
            stable_version: c.stable.version.clone(),
            canary_version: c.canary.version.clone(),
            traffic_percent: table.percent,
            state: self.state_name(table).into(),
            evaluate_every_ms: c.rollback.evaluate_every.as_millis() as u64,
            requests,
        }
    }

    pub(crate) async fn adopt_locked(&self, remote: &RemoteLatch) {
        let table = self.router.load();
        if remote.version != table.config.canary.version {
            return;
        }
        let rolled_back = table.state == CanaryState::RolledBack;
        let ours = Latch {
            generation: self.generation.load(Ordering::Acquire),
            rolled_back,
        };
        let theirs = remote.latch();
        if theirs <= ours {
            return;
        }
        self.generation.store(theirs.generation, Ordering::Release);
        let delay = remote
            .at_ms()
            .map(|at| Duration::from_millis(now_ms().saturating_sub(at)));
        let delay_ms = delay.map(|d| d.as_millis() as u64);
        let before = self.state_name(&table);
        match (theirs.rolled_back, rolled_back) {
            (true, false) => {
                let Some((_, table)) = self.router.update(|t| {
                    (t.state != CanaryState::RolledBack).then(|| t.with_latch(true, &self.metrics))
                }) else {
                    return;
                };
                self.publish(&table);
                let record = record_of(remote);
                tracing::warn!(
                    by = %remote.by, trigger = record.as_ref().map(|r| r.trigger.as_str()).unwrap_or(""),
                    canary_version = %remote.version, delay_ms, before = "active", after = "rolled_back",
                    "rolled back by the fleet: replica {} decided; every new request now goes to stable", remote.by
                );
                let why = record
                    .as_ref()
                    .map_or("rolled back by the fleet".into(), |r| r.reason.clone());
                let mut told = Told::new("rolled_back", before, "rolled_back", why);
                if let Some(r) = &record {
                    told = told.trigger(&r.trigger).figures(r.figures.clone());
                }
                self.announce(told.by_replica(&remote.by));
                self.set_last_rollback(record);
            }
            (false, true) => {
                // Resumed elsewhere: here too the rollout starts again at its first step.
                let Some((_, table)) = self.router.update(|t| {
                    let percent = t.config.rollout.as_ref().map_or(t.percent, |r| r.steps[0]);
                    (t.state == CanaryState::RolledBack)
                        .then(|| t.with(percent, false, &self.metrics))
                }) else {
                    return;
                };
                self.restart_judgement(&table);
                *self.rollout() = crate::control::rollout_from_start(&table);
                let after = self.state_name(&table);
                tracing::warn!(by = %remote.by, canary_version = %remote.version, delay_ms, before = "rolled_back", after, "resumed by the fleet: replica {} re-armed the canary", remote.by);
                let why = "re-armed by the fleet with an empty window";
                self.announce(
                    Told::new("resumed", "rolled_back", after, why).by_replica(&remote.by),
                );
            }
            _ => {}
        }
        if theirs.rolled_back != rolled_back {
            if let (Some(f), Some(d)) = (&self.fleet, delay) {
                f.metrics().propagation.observe(d.as_secs_f64());
            }
        }
        self.flush().await;
    }

    /// One wall-clock slice `k` in a fleet: publish ours, read the others', judge the sum.
    /// Without Redis the slice is judged on our own counts, as on one machine.
    pub async fn tick_fleet(&self, fleet: &Fleet, k: u64) {
        let table = self.router.load();
        let every = table.config.rollback.evaluate_every;
        let stable = self.recorder.take_slice(Cohort::Stable);
        let canary = self.recorder.take_slice(Cohort::Canary);
        let mine = SliceWire::new(&stable, &canary);
        let (mut s, mut c) = (stable, canary);
        let at = (
            table.config.canary.version.as_str(),
            every.as_millis() as u64,
            k,
        );
        if let Some(others) = fleet.exchange_slice(at, &mine, grace(every)).await {
            for (_, w) in &others {
                w.add_to(&mut s, &mut c);
            }
        }
        if fleet.is_up() {
            fleet
                .heartbeat(&self.card(&table, mine.requests()), every)
                .await;
            // Anti-entropy: a missed message or a Redis that restarted empty is mended here.
            fleet.reconcile(self).await;
        }
        if fleet.is_up() {
            let _serial = self.transitions.lock().await;
            self.sync_step_locked(PauseOp::Keep).await;
        }
        self.judge_slice(&table, &s, &c).await;
    }

    /// Offers our rollout step (and a pause change) to the fleet and follows the fleet's when
    /// it is ahead: one step per canary version for every replica. Callers hold `transitions`.
    pub(crate) async fn sync_step_locked(&self, pause: PauseOp<'_>) {
        let Some(fleet) = &self.fleet else { return };
        let table = self.router.load();
        if table.state != CanaryState::Active || table.config.rollout.is_none() {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let Some(offer) = self.rollout().as_ref().map(|ro| StepWire {
            generation,
            step: ro.step,
            since_ms: ms(ro.since),
            by: fleet.config.replica.clone(),
            paused: ro.paused.clone(),
            continued_ms: ms(ro.bake_from),
        }) else {
            return;
        };
        let version = table.config.canary.version.clone();
        let Some(remote) = fleet.offer_step(&version, &offer, pause).await else {
            return;
        };
        if remote.generation != generation {
            // A resume elsewhere: the latch brings it, with the first step.
            return;
        }
        if remote.step > offer.step {
            if !self.enter_step(remote.step, from_ms(remote.since_ms)) {
                return;
            }
            if let Some(ro) = self.rollout().as_mut() {
                ro.paused = remote.paused.clone();
            }
            let now = self.router.load();
            tracing::info!(by = %remote.by, to_step = remote.step, from_percent = table.percent, to_percent = now.percent, "rollout step followed the fleet: replica {} advanced it", remote.by);
            let why = format!("followed the fleet: {}% -> {}%", table.percent, now.percent);
            let (before, after) = (self.state_name(&table), self.state_name(&now));
            self.announce(Told::new("step_advanced", before, after, why).by_replica(&remote.by));
        } else if remote.step == offer.step && remote.paused != offer.paused {
            if let Some(ro) = self.rollout().as_mut() {
                ro.paused = remote.paused.clone();
            }
            tracing::info!(
                paused = remote.paused.as_deref().unwrap_or(""),
                "rollout pause followed the fleet"
            );
        } else {
            return;
        }
        self.publish(&self.router.load());
        self.flush().await;
    }
}
