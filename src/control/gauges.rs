//! The control plane's gauges: they follow the routing table, the judgement and the rollout,
//! and are set after every transition and every slice.

use crate::control::rollout::Phase;
use crate::control::routing::RoutingTable;
use crate::control::Control;
use crate::judge::promotion::Test;
use crate::judge::sequential::{Scope, Trigger};

impl Control {
    /// Gauges that follow the routing table and the judgement.
    pub(crate) fn publish(&self, table: &RoutingTable) {
        self.metrics.active.set((table.threshold_ppm > 0) as i64);
        self.metrics.traffic_percent.set(table.percent);
        let c = &table.config;
        self.metrics
            .set_info(self.state_name(table), &c.stable.version, &c.canary.version);
        self.publish_rollout(table);
        let j = self.judgement();
        let (v, th) = (j.verdict(), j.thresholds());
        for t in Trigger::ALL {
            for s in Scope::ALL {
                let l = [t.as_str(), s.as_str()];
                self.metrics
                    .judge_evidence
                    .with_label_values(&l)
                    .set(v.evidence[t as usize][s as usize]);
                self.metrics
                    .judge_threshold
                    .with_label_values(&l)
                    .set(th[t as usize][s as usize]);
            }
        }
    }

    /// The rollout's gauges: step, state (every state named, 1 for the current), and the gate.
    pub(crate) fn publish_rollout(&self, table: &RoutingTable) {
        if table.config.rollout.is_none() {
            return;
        }
        let m = &self.metrics;
        let state = self.state_name(table);
        for s in ["rolled_back", "disabled"]
            .into_iter()
            .chain(Phase::ALL.map(Phase::as_str))
        {
            m.rollout_state
                .with_label_values(&[s])
                .set((s == state) as i64 as f64);
        }
        let guard = self.rollout();
        let Some(ro) = guard.as_ref() else { return };
        m.rollout_step
            .with_label_values::<&str>(&[])
            .set(ro.step as f64);
        let view = ro.gate.view();
        for t in Test::ALL {
            let v = view.tests[t as usize];
            m.promote_evidence
                .with_label_values(&[t.as_str()])
                .set(v.evidence);
            m.promote_bar.with_label_values(&[t.as_str()]).set(v.bar);
        }
    }
}
