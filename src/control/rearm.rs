//! The paths that re-arm the judge: a resume after a rollback (the rollout starts again at its
//! first step, the fleet's latch generation moves on) and a window reset.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::cohort::Cohort;
use crate::control::events::Told;
use crate::control::routing::{CanaryState, RoutingTable};
use crate::control::{rollout_from_start, Control, ControlError, Transition};
use crate::fleet::Claim;
use crate::judge::judgement::Judgement;

impl Control {
    /// Re-arms a rolled-back canary with a fresh judgement.
    pub async fn resume(
        &self,
        caller: Option<SocketAddr>,
        reason: Option<&str>,
    ) -> Result<Transition, ControlError> {
        let _serial = self.transitions.lock().await;
        // A resume starts the rollout again at its first step.
        let swapped = self.router.update(|t| {
            let percent = match &t.config.rollout {
                Some(r) => r.steps[0],
                None => t.percent,
            };
            (t.state == CanaryState::RolledBack).then(|| t.with(percent, false, &self.metrics))
        });
        let Some((_, table)) = swapped else {
            let state = self.router.load().state;
            return Err(ControlError::Conflict(format!(
                "the canary is not rolled back (state: {})",
                state.as_str()
            )));
        };
        self.restart_judgement(&table);
        *self.rollout() = rollout_from_start(&table);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let after = self.state_name(&table);
        tracing::warn!(caller = %crate::control::who(caller), canary_version = %table.config.canary.version, before = "rolled_back", after, "resumed: the canary is re-armed with an empty window");
        let why = crate::control::events::said(reason, "re-armed with an empty window");
        self.announce(Told::new("resumed", "rolled_back", after, why).by(caller));
        self.persist(
            &table.config.state.path,
            &table.config.canary.version,
            false,
        )
        .await;
        if let Some(f) = &self.fleet {
            let latch = crate::fleet::wire::Latch {
                generation,
                rolled_back: false,
            };
            if let Claim::Lost(remote) = f.claim(&table.config.canary.version, latch, "").await {
                self.adopt_locked(&remote).await;
            }
        }
        Ok(Transition {
            before: "rolled_back",
            after,
            forced: false,
        })
    }

    /// Clears the window and the judge's sums: a new stage with a fresh budget.
    pub async fn reset(&self, caller: Option<SocketAddr>, reason: Option<&str>) -> Transition {
        let _serial = self.transitions.lock().await;
        let table = self.router.load();
        self.restart_judgement(&table);
        let state = self.state_name(&table);
        tracing::info!(caller = %crate::control::who(caller), state, "window reset: a new judgement starts");
        let why = crate::control::events::said(reason, "window reset: a new judgement starts");
        self.announce(Told::new("reset", state, state, why).by(caller));
        self.flush().await;
        Transition {
            before: state,
            after: state,
            forced: false,
        }
    }

    pub(crate) fn restart_judgement(&self, table: &RoutingTable) {
        // Counts recorded before now belong to the old judgement.
        let _ = self.recorder.take_slice(Cohort::Stable);
        let _ = self.recorder.take_slice(Cohort::Canary);
        self.recorder.forget_identities();
        *self.judgement() = Judgement::new(&table.config.rollback, SystemTime::now());
        self.publish(table);
    }
}
