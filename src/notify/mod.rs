//! Telling people: every transition becomes an `Event`, kept by the control plane and handed
//! here to be delivered to each `[[notify]]` target that asks for it. Delivery is off the
//! request path and off the transition: `send` only offers the event to each target's bounded
//! queue and returns, so a rollback never waits for a webhook.

pub mod deliver;
pub mod format;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::NotifyTarget;
use crate::metrics::Metrics;

/// Events waiting for one target beyond the one being delivered: past this, an event is
/// dropped and counted (a receiver down for minutes must not grow memory).
pub const QUEUE: usize = 64;

/// One transition, as kept (`GET /canary/events`, the state file) and as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: String,
    /// RFC 3339, milliseconds.
    pub at: String,
    /// Unique per event, the same on every retry: receivers drop duplicates by it.
    pub delivery: String,
    pub state_before: String,
    pub state_after: String,
    pub stable_version: String,
    pub canary_version: String,
    pub reason: String,
    /// The trigger of a rollback (`manual` for an operator's); `null` otherwise.
    pub trigger: Option<String>,
    /// The admin caller's address, a replica of the fleet, or `internal`.
    pub caller: String,
    /// A rollback's figures (as `last_rollback.figures`), or the gate's evidence for a step.
    pub figures: serde_json::Value,
}

/// A delivery id: unique across replicas and restarts without a random source of our own
/// (the process, the clock to the nanosecond and a counter, hashed).
pub fn delivery_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(nanos.to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Target {
    config: NotifyTarget,
    queue: mpsc::Sender<Arc<Event>>,
}

/// The targets in force and their delivery tasks.
pub struct Notifier {
    targets: Mutex<Vec<Target>>,
    metrics: Arc<Metrics>,
    tls: rustls::ClientConfig,
}

impl Notifier {
    pub fn new(metrics: Arc<Metrics>, tls: rustls::ClientConfig) -> Notifier {
        Notifier {
            targets: Mutex::new(Vec::new()),
            metrics,
            tls,
        }
    }

    /// Puts `targets` in force (at start and on every reload). A target whose settings did
    /// not change keeps its task and its queue; a removed one delivers what it holds, then
    /// stops.
    pub fn configure(&self, targets: &[NotifyTarget]) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut now = lock(&self.targets);
        let mut kept: Vec<Target> = Vec::with_capacity(targets.len());
        for t in targets {
            if let Some(i) = now.iter().position(|o| o.config == *t) {
                kept.push(now.swap_remove(i));
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let worker = deliver::Worker::new(t.clone(), self.tls.clone(), self.metrics.clone());
            rt.spawn(worker.run(rx));
            kept.push(Target {
                config: t.clone(),
                queue: tx,
            });
        }
        *now = kept;
    }

    /// Offers `event` to every target that asks for it; never waits.
    pub fn send(&self, event: &Arc<Event>) {
        for t in lock(&self.targets).iter() {
            if !t.config.wants(&event.event) {
                continue;
            }
            if t.queue.try_send(event.clone()).is_err() {
                self.metrics.notify_failure(&t.config.name, &event.event);
                tracing::warn!(target_name = %t.config.name, event = %event.event, delivery = %event.delivery, "notify: the target's queue is full (its receiver is slow or down); this event is dropped for it");
            }
        }
    }
}
