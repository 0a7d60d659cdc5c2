//! The control plane's two background loops: the evaluator's slice timer and the watcher that
//! reloads the config when its file changes on disk. Both stop when their `stop` future resolves.

use std::sync::Arc;
use std::time::Duration;

use crate::control::Control;
use crate::fleet::{now_ms, Fleet};

const WATCH_EVERY: Duration = Duration::from_millis(500);

impl Control {
    /// Runs `tick` every `evaluate_every` (read afresh, so a reload can change it) until `stop`.
    pub async fn run_evaluator(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        if let Some(fleet) = self.fleet().cloned() {
            return self.run_fleet_evaluator(&fleet, stop).await;
        }
        let mut stop = std::pin::pin!(stop);
        let mut every = self.router.load().config.rollback.evaluate_every;
        let mut next = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            self.tick().await;
            let now_every = self.router.load().config.rollback.evaluate_every;
            if now_every != every {
                every = now_every;
            }
            next += every;
            let now = tokio::time::Instant::now();
            if next < now {
                // Late (a stalled machine): start the next slice now instead of catching up.
                next = now + every;
            }
        }
    }

    /// In a fleet slices follow the wall clock (slice k is [k, k+1) × `evaluate_every` since
    /// the epoch) so that every replica's slice k covers the same second and they can be summed.
    async fn run_fleet_evaluator(
        &self,
        fleet: &Fleet,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let every = self
                .router
                .load()
                .config
                .rollback
                .evaluate_every
                .as_millis() as u64;
            let every = every.max(1);
            let now = now_ms();
            let k = now / every;
            let wait = Duration::from_millis((k + 1) * every - now);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
            self.tick_fleet(fleet, k).await;
        }
    }

    /// Reloads when the config file's content changes on disk: polled twice a second, applied
    /// once it has been stable for one more poll (editors and ConfigMap swaps write in steps).
    pub async fn run_watcher(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let mut stop = std::pin::pin!(stop);
        let read = |p: &std::path::Path| std::fs::read(p).ok();
        // What the last reload read, by any path (SIGHUP, the admin call, this watcher), or the
        // file as it was at start.
        let applied = |me: &Self| crate::control::lock(&me.read_config).clone();
        let mut pending: Option<Vec<u8>> = None;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = read(&path);
            if now == applied(&self) {
                pending = None;
                continue;
            }
            if pending.is_some() && pending == now {
                tracing::info!(file = %path.display(), "the config file changed on disk: reloading");
                // A refused reload is logged by `reload`; the old config keeps serving.
                let _ = self.reload(None).await;
                pending = None;
            } else {
                pending = now;
            }
        }
    }
}
