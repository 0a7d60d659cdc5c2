//! Reload: the config file read again, checked whole, and swapped in as one routing table — or
//! refused, with the old one serving on. A new canary version starts a fresh judgement (and, in a
//! fleet, reads that version's latch first).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::time::SystemTime;

use crate::config::Config;
use crate::control::events::Told;
use crate::control::rollout::{gate_params, Rollout};
use crate::control::routing::{CanaryState, RoutingTable};
use crate::control::{Control, ControlError, Transition};
use crate::fleet::{Claim, LatchHolder};
use crate::judge::promotion::Gate;

impl Control {
    /// Re-reads the config file; a valid one is swapped in whole, an invalid one refused.
    /// Told either way: `reloaded` with what changed, or `reload_refused` with why.
    pub async fn reload(&self, caller: Option<SocketAddr>) -> Result<Transition, ControlError> {
        let _serial = self.transitions.lock().await;
        let outcome = self.reload_locked(caller).await;
        let told = match &outcome {
            Ok((t, what)) => {
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                if let Some(n) = &self.notifier {
                    n.configure(&self.router.load().config.notify);
                }
                Told::new("reloaded", t.before, t.after, what.clone())
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                let state = self.state_name(&self.router.load());
                Told::new("reload_refused", state, state, e.to_string())
            }
        };
        self.announce(told.by(caller));
        self.flush().await;
        outcome.map(|(t, _)| t)
    }

    async fn reload_locked(
        &self,
        caller: Option<SocketAddr>,
    ) -> Result<(Transition, String), ControlError> {
        let path = self.config_path.clone().ok_or_else(|| {
            ControlError::Invalid("this proxy was not started from a config file".into())
        })?;
        let env = |k: &str| std::env::var(k).ok();
        let refuse = |msg: String| {
            tracing::error!(caller = %crate::control::who(caller), error = %msg, "reload refused; the old config keeps serving");
            ControlError::Invalid(msg)
        };
        // Read once: the bytes checked are the bytes the watcher compares with afterwards.
        let read = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path);
            let config = match &bytes {
                Ok(b) => {
                    let base = path.parent().unwrap_or(std::path::Path::new("."));
                    let file = path.display().to_string();
                    Config::from_toml_str(&String::from_utf8_lossy(b), &file, base, &env)
                }
                Err(_) => Config::load(&path, &env),
            };
            (bytes.ok(), config)
        })
        .await
        .map_err(|e| refuse(e.to_string()))?;
        *crate::control::lock(&self.read_config) = read.0;
        let config = read.1.map_err(|e| refuse(e.to_string()))?;
        for (var, key, file, now) in config.env.masked(&config.effective) {
            tracing::warn!(variable = var, key, file_value = file, value = %now, "{var} overrides {key}: the file's {file} is not in force, {now} is (unset the variable to use the file)");
        }
        let old = self.router.load();
        for (key, a, b) in [
            ("proxy.listen", old.config.proxy.listen, config.proxy.listen),
            ("admin.listen", old.config.admin.listen, config.admin.listen),
        ] {
            if a != b {
                return Err(refuse(format!(
                    "{key} cannot change on reload ({a} -> {b}): restart instead"
                )));
            }
        }
        if old.config.proxy.workers != config.proxy.workers {
            return Err(refuse(format!(
                "proxy.workers cannot change on reload ({} -> {}): restart instead",
                old.config.proxy.workers, config.proxy.workers
            )));
        }
        if old.config.fleet != config.fleet {
            return Err(refuse(
                "[fleet] cannot change on reload: restart instead".into(),
            ));
        }
        let tls = match &config.proxy.tls {
            Some(files) => Some(crate::server::tls::server_config(files).map_err(refuse)?),
            None => None,
        };
        let new_version = old.config.canary.version != config.canary.version;
        let config = Arc::new(config);
        let before = self.state_name(&old);
        let (percent, rollout) = self.rollout_after_reload(&old, &config, new_version);
        *self.rollout() = rollout;
        let (old, table) = self
            .router
            .update(|t| {
                let latched = t.state == CanaryState::RolledBack && !new_version;
                Some(RoutingTable::build(
                    config.clone(),
                    percent,
                    latched,
                    Some(t),
                    &self.metrics,
                    tls.clone(),
                ))
            })
            .expect("a reload always swaps");
        if new_version {
            self.generation.store(0, Ordering::Release);
            self.restart_judgement(&table);
            self.persist(
                &table.config.state.path,
                &table.config.canary.version,
                false,
            )
            .await;
        } else {
            self.judgement().retune(&table.config.rollback);
            self.publish(&table);
        }
        if let (true, Some(f)) = (new_version, &self.fleet) {
            // The fleet may have judged this version already: read its latch before going on.
            let (version, latch, record) = self.latch_now();
            if let Claim::Lost(remote) = f.claim(&version, latch, &record).await {
                self.adopt_locked(&remote).await;
            }
        }
        tracing::info!(
            caller = %crate::control::who(caller), before, after = self.state_name(&table),
            old_percent = old.percent, percent = table.percent, old_canary_version = %old.config.canary.version, canary_version = %table.config.canary.version,
            new_version, "config reloaded"
        );
        let what = if new_version {
            format!(
                "a new canary version: {} -> {} at {}%",
                old.config.canary.version, table.config.canary.version, table.percent
            )
        } else {
            format!("the canary's share {}% -> {}%", old.percent, table.percent)
        };
        let t = Transition {
            before,
            after: self.state_name(&table),
            forced: false,
        };
        Ok((t, what))
    }

    /// The share and the rollout a reload leaves: a new canary version starts at the first
    /// step; otherwise the canary stays at its percent if that is still a step, else goes to
    /// the highest step below it (a reload never raises the share), keeping the step's clock
    /// when its percent did not change.
    fn rollout_after_reload(
        &self,
        old: &RoutingTable,
        config: &Config,
        new_version: bool,
    ) -> (f64, Option<Rollout>) {
        let Some(r) = &config.rollout else {
            return (config.canary.traffic_percent, None);
        };
        let now = SystemTime::now();
        if new_version {
            return (r.steps[0], Some(Rollout::start(config, r, 0, now)));
        }
        let step = r.step_for(old.percent);
        let percent = r.steps[step];
        let kept = self
            .rollout()
            .take()
            .filter(|_| old.config.rollout.is_some() && (percent - old.percent).abs() < 1e-9);
        let mut ro = match kept {
            Some(mut ro) => {
                ro.step = step;
                ro.complete &= step + 1 == r.steps.len();
                if *ro.gate.params() != gate_params(config, r) {
                    ro.gate = Gate::new(gate_params(config, r));
                }
                ro
            }
            None => Rollout::start(config, r, step, now),
        };
        if old.config.rollout.is_none() {
            ro.since = now;
            ro.bake_from = now;
        }
        (percent, Some(ro))
    }
}
