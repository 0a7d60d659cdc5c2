//! The rollout's moves: each slice's gate deciding to advance, complete or hold, and the
//! operator's promote, pause and continue. A step change is one table swap under the
//! transitions lock, then the state file, like a rollback.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::control::events::Told;
use crate::control::rollout::{since, Rollout};
use crate::control::routing::CanaryState;
use crate::control::{Control, ControlError, Transition};
use crate::fleet::wire::PauseOp;
use crate::judge::promotion::PromoteInput;
use crate::judge::sequential::Verdict;

impl Control {
    /// One slice for the gate, after the rollback side judged it: advance, complete or hold.
    pub(crate) async fn rollout_slice(&self, verdict: &Verdict, input: PromoteInput) {
        // Loaded afresh: the rollback side may have just swapped the table.
        let table = self.router.load();
        let Some(r) = &table.config.rollout else {
            return;
        };
        if table.state != CanaryState::Active {
            return;
        }
        let now = SystemTime::now();
        let before = self.state_name(&table);
        let advance = {
            let mut guard = self.rollout();
            let Some(ro) = guard.as_mut() else { return };
            let baked = since(ro.since, now) >= r.bake;
            let m_rel =
                verdict.evidence[crate::judge::sequential::Trigger::RelativeError as usize][0];
            let view = ro
                .gate
                .observe(input, baked, verdict.fired.is_some(), m_rel);
            let blocked = ro.paused.is_some() || ro.held || ro.complete;
            if view.open && !blocked {
                if ro.step + 1 == r.steps.len() {
                    ro.complete = true;
                    tracing::info!(step = ro.step, percent = table.percent, canary_requests = view.step_nc, "rollout complete: the last step's gate opened; make the canary the stable in config when ready");
                    None
                } else if r.auto {
                    Some(ro.step + 1)
                } else {
                    None
                }
            } else {
                if !view.open && !ro.held && since(ro.bake_from, now) >= r.max_bake {
                    ro.held = true;
                    tracing::warn!(
                        step = ro.step,
                        percent = table.percent,
                        reason = ro.hold_reason(r).unwrap_or_default(),
                        "rollout holding"
                    );
                }
                None
            }
        };
        let persist = match advance {
            Some(to) => {
                if let Err(e) = self.move_to(to, "the gate opened", None, false).await {
                    tracing::error!(error = %e, "the rollout step could not advance");
                }
                false
            }
            None => true,
        };
        let table = self.router.load();
        self.publish(&table);
        let after = self.state_name(&table);
        if persist && after != before {
            // The gate's own moves: ready for a promotion, holding past max_bake, complete.
            let why = match after {
                "ready" => "the gate opened: promote when ready (rollout.auto is off)".into(),
                "complete" => "the last step's gate opened".into(),
                "holding" => self
                    .rollout()
                    .as_ref()
                    .and_then(|ro| ro.hold_reason(r))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            if !why.is_empty() {
                let figures = self.gate_figures();
                self.announce(Told::new(after, before, after, why).figures(figures));
                self.flush().await;
                return;
            }
        }
        if persist
            && self
                .rollout()
                .as_ref()
                .is_some_and(|ro| ro.complete || ro.held)
        {
            // A completed or held rollout is written once, so a restart shows the same.
            self.save_rollout_once().await;
        }
    }

    /// Advances to step `to` (or completes at the last step): one table swap, then the state
    /// file. Refused unless the canary is active with a rollout.
    async fn move_to(
        &self,
        to: usize,
        why: &str,
        caller: Option<SocketAddr>,
        forced: bool,
    ) -> Result<Transition, ControlError> {
        let _serial = self.transitions.lock().await;
        self.move_locked(to, why, caller, forced).await
    }

    async fn move_locked(
        &self,
        to: usize,
        why: &str,
        caller: Option<SocketAddr>,
        forced: bool,
    ) -> Result<Transition, ControlError> {
        let table = self.router.load();
        let before = self.state_name(&table);
        let (Some(r), CanaryState::Active) = (&table.config.rollout, table.state) else {
            return Err(ControlError::Conflict(format!(
                "no rollout step to move (state: {before})"
            )));
        };
        let from = self.rollout().as_ref().map(|ro| ro.step).unwrap_or(0);
        // The evidence that moved the step, before the new step's gate starts afresh.
        let figures = self.gate_figures();
        if to >= r.steps.len() {
            // Promoting the last step completes the rollout: the share stays.
            if let Some(ro) = self.rollout().as_mut() {
                ro.complete = true;
                ro.paused = None;
                ro.held = false;
            }
            tracing::info!(caller = %crate::control::who(caller), forced, why, step = from, "rollout complete");
        } else {
            let percent = r.steps[to];
            if !self.enter_step(to, SystemTime::now()) {
                return Err(ControlError::Conflict(
                    "the canary changed state while the step moved".into(),
                ));
            }
            tracing::info!(
                caller = %crate::control::who(caller), forced, why, from_step = from, to_step = to,
                from_percent = table.percent, to_percent = percent,
                "rollout step advanced: {}% -> {}% of identities now go to the canary",
                table.percent, percent
            );
        }
        let table = self.router.load();
        self.publish(&table);
        let after = self.state_name(&table);
        let told = if to >= r.steps.len() {
            Told::new("complete", before, after, why)
        } else {
            let moved = format!("{why}: {}% -> {}%", r.steps[from], r.steps[to]);
            Told::new("step_advanced", before, after, moved)
        };
        self.announce(told.by(caller).figures(figures));
        self.persist(
            &table.config.state.path,
            &table.config.canary.version,
            false,
        )
        .await;
        // The fleet follows within a slice (and a replica ahead of us pulls us along).
        self.sync_step_locked(PauseOp::Keep).await;
        Ok(Transition {
            before,
            after: self.state_name(&table),
            forced,
        })
    }

    /// Swaps the table to step `to` and starts that step's clock at `since`: one store. False
    /// when the canary is no longer active with a rollout (a rollback came first).
    pub(crate) fn enter_step(&self, to: usize, since: SystemTime) -> bool {
        let swapped = self.router.update(|t| match (&t.config.rollout, t.state) {
            (Some(r), CanaryState::Active) if to < r.steps.len() => {
                Some(t.with(r.steps[to], false, &self.metrics))
            }
            _ => None,
        });
        let Some((_, table)) = swapped else {
            return false;
        };
        if let Some(r) = &table.config.rollout {
            *self.rollout() = Some(Rollout::start(&table.config, r, to, since));
        }
        true
    }

    /// `POST /canary/promote`: one step now, from ready, ramping or holding; a shut gate needs
    /// `force`. Clears a pause.
    pub async fn promote(
        &self,
        force: bool,
        caller: Option<SocketAddr>,
        reason: Option<&str>,
    ) -> Result<Transition, ControlError> {
        let _serial = self.transitions.lock().await;
        self.mid_ramp("promote")?;
        let (step, open) = match self.rollout().as_ref() {
            Some(ro) => (ro.step, ro.gate.view().open),
            None => (0, false),
        };
        if !open && !force {
            return Err(ControlError::Conflict(
                "the promotion gate is shut: the evidence does not yet rule out a canary beyond its limits; send {\"force\": true} to promote anyway".into(),
            ));
        }
        let why = if open { "promoted" } else { "forced promotion" };
        let why = match reason.filter(|r| !r.trim().is_empty()) {
            Some(r) => format!("{why} ({r})"),
            None => why.into(),
        };
        self.move_locked(step + 1, &why, caller, !open).await
    }

    /// `POST /canary/pause`: holds at the current step; the judge still rolls back.
    pub async fn pause(
        &self,
        reason: &str,
        caller: Option<SocketAddr>,
    ) -> Result<Transition, ControlError> {
        let _serial = self.transitions.lock().await;
        let before = self.mid_ramp("pause")?;
        let who = match caller {
            Some(c) => format!("by {c}: {reason}"),
            None => format!(": {reason}"),
        };
        if let Some(ro) = self.rollout().as_mut() {
            ro.paused = Some(who.clone());
        }
        self.sync_step_locked(PauseOp::Set(&who)).await;
        let after = self.state_name(&self.router.load());
        self.announce(Told::new("paused", before, after, reason).by(caller));
        self.settle(before).await
    }

    /// `POST /canary/continue`: clears a pause, or gives a step held by `max_bake` another
    /// `max_bake` from now. Never advances by itself.
    pub async fn resume_rollout(
        &self,
        caller: Option<SocketAddr>,
        reason: Option<&str>,
    ) -> Result<Transition, ControlError> {
        let _serial = self.transitions.lock().await;
        let table = self.router.load();
        let before = self.state_name(&table);
        if before != "holding" {
            return Err(ControlError::Conflict(format!(
                "the rollout is not holding (state: {before})"
            )));
        }
        if let Some(ro) = self.rollout().as_mut() {
            ro.paused = None;
            if ro.held {
                ro.held = false;
                ro.bake_from = SystemTime::now();
            }
        }
        tracing::info!(caller = %crate::control::who(caller), "rollout continues at its step");
        let now = crate::control::persist::ms(SystemTime::now());
        self.sync_step_locked(PauseOp::Clear(now)).await;
        let after = self.state_name(&self.router.load());
        let why = crate::control::events::said(reason, "the rollout continues at its step");
        self.announce(Told::new("continued", before, after, why).by(caller));
        self.settle(before).await
    }

    /// The state, when a rollout is under way (ramping, ready or holding); else a 409 that
    /// says there is nothing to `act` on.
    fn mid_ramp(&self, act: &str) -> Result<&'static str, ControlError> {
        let state = self.state_name(&self.router.load());
        match state {
            "ready" | "ramping" | "holding" => Ok(state),
            _ => Err(ControlError::Conflict(format!(
                "nothing to {act} (state: {state})"
            ))),
        }
    }

    /// After a pause or a continue: the state file, the gauges, and the answer.
    async fn settle(&self, before: &'static str) -> Result<Transition, ControlError> {
        self.flush().await;
        let table = self.router.load();
        self.publish(&table);
        Ok(Transition {
            before,
            after: self.state_name(&table),
            forced: false,
        })
    }

    async fn save_rollout_once(&self) {
        if self.saved_rollout() != self.rollout_record() {
            self.flush().await;
        }
    }
}
