//! What the control plane did, told: each transition becomes one `Event`, kept here (the last
//! 1,000 in memory, the last 100 in the state file so a restart keeps them) and offered to the
//! notifier. Telling never waits: the event is pushed and queued, and the transition goes on.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::control::{lock, Control};
use crate::notify::{delivery_id, Event};

/// Events kept in memory (`GET /canary/events`).
pub const KEPT: usize = 1000;
/// Events written to the state file.
pub const SAVED: usize = 100;

/// The last `KEPT` events, oldest first.
pub struct EventLog {
    ring: Mutex<VecDeque<Arc<Event>>>,
}

impl EventLog {
    /// Starts from the events a state file kept.
    pub fn new(saved: Vec<Event>) -> EventLog {
        let mut ring: VecDeque<Arc<Event>> = saved.into_iter().map(Arc::new).collect();
        while ring.len() > KEPT {
            ring.pop_front();
        }
        EventLog {
            ring: Mutex::new(ring),
        }
    }

    fn push(&self, e: Arc<Event>) {
        let mut ring = lock(&self.ring);
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(e);
    }

    /// Up to `limit` events, the latest first.
    pub fn latest(&self, limit: usize) -> Vec<Arc<Event>> {
        lock(&self.ring).iter().rev().take(limit).cloned().collect()
    }

    /// The last `SAVED`, oldest first: what the state file holds.
    pub fn saved(&self) -> Vec<Event> {
        let ring = lock(&self.ring);
        let skip = ring.len().saturating_sub(SAVED);
        ring.iter().skip(skip).map(|e| (**e).clone()).collect()
    }
}

/// The caller's reason when it gave one, else what the transition does.
pub(crate) fn said(reason: Option<&str>, default: &str) -> String {
    match reason.map(str::trim) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => default.to_string(),
    }
}

/// One transition to tell, built where it happens.
pub(crate) struct Told {
    event: &'static str,
    before: &'static str,
    after: &'static str,
    reason: String,
    trigger: Option<String>,
    caller: String,
    figures: Value,
    /// Sent to the targets; off for what another replica decided (it tells, once).
    send: bool,
}

impl Told {
    pub(crate) fn new(
        event: &'static str,
        before: &'static str,
        after: &'static str,
        reason: impl Into<String>,
    ) -> Told {
        Told {
            event,
            before,
            after,
            reason: reason.into(),
            trigger: None,
            caller: "internal".into(),
            figures: Value::Null,
            send: true,
        }
    }

    pub(crate) fn by(mut self, caller: Option<SocketAddr>) -> Told {
        self.caller = crate::control::who(caller);
        self
    }

    /// Decided by another replica of the fleet: kept here, told by that replica.
    pub(crate) fn by_replica(mut self, replica: &str) -> Told {
        self.caller = format!("replica {replica}");
        self.send = false;
        self
    }

    pub(crate) fn trigger(mut self, trigger: &str) -> Told {
        self.trigger = Some(trigger.into());
        self
    }

    pub(crate) fn figures(mut self, figures: Value) -> Told {
        self.figures = figures;
        self
    }
}

impl Control {
    /// Keeps the event and offers it to the targets. Callers write the state file after it
    /// (most transitions do anyway), so a restart keeps it.
    pub(crate) fn announce(&self, t: Told) {
        let table = self.router.load();
        let c = &table.config;
        let event = Arc::new(Event {
            event: t.event.into(),
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            delivery: delivery_id(),
            state_before: t.before.into(),
            state_after: t.after.into(),
            stable_version: c.stable.version.clone(),
            canary_version: c.canary.version.clone(),
            reason: t.reason,
            trigger: t.trigger,
            caller: t.caller,
            figures: t.figures,
        });
        if let (true, Some(n)) = (t.send, &self.notifier) {
            n.send(&event);
        }
        self.events.push(event);
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The gate's evidence as a step event carries it.
    pub(crate) fn gate_figures(&self) -> Value {
        let table = self.router.load();
        self.rollout_status(&table)
            .map(|r| {
                serde_json::json!({
                    "step": r.step, "percent": r.percent, "canary_requests": r.canary_requests,
                    "gate": r.gate,
                })
            })
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Arc<Event> {
        Arc::new(Event {
            event: "reset".into(),
            at: String::new(),
            delivery: n.to_string(),
            state_before: "active".into(),
            state_after: "active".into(),
            stable_version: "v1".into(),
            canary_version: "v2".into(),
            reason: String::new(),
            trigger: None,
            caller: "internal".into(),
            figures: Value::Null,
        })
    }

    #[test]
    fn the_log_keeps_the_last_thousand_and_saves_the_last_hundred() {
        let log = EventLog::new((0..1_200).map(|n| (*event(n)).clone()).collect());
        assert_eq!(
            log.latest(5_000).len(),
            KEPT,
            "a long saved list is cut at start too"
        );
        for n in 1_200..1_500 {
            log.push(event(n));
        }
        let latest = log.latest(5_000);
        assert_eq!(latest.len(), KEPT);
        assert_eq!(latest[0].delivery, "1499", "latest first");
        assert_eq!(latest[KEPT - 1].delivery, "500");
        let saved = log.saved();
        assert_eq!(saved.len(), SAVED);
        assert_eq!(
            (
                saved[0].delivery.as_str(),
                saved[SAVED - 1].delivery.as_str()
            ),
            ("1400", "1499")
        );
    }
}
