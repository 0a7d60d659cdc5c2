//! The routing table: everything a request's routing depends on, immutable, behind one
//! `ArcSwap`. A request loads it once; writers (rollback, resume, reload) build a whole new
//! table and store it in one step, serialised by a writer-only mutex. The request path never
//! takes that mutex.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::cohort::{assign, threshold_ppm, Cohort, CohortHasher, Placement};
use crate::config::{Config, EndpointConfig};
use crate::metrics::Metrics;
use crate::upstream::Pool;

/// The canary's state, first match wins: rolled back (the latch), disabled, active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryState {
    RolledBack,
    Disabled,
    Active,
}

impl CanaryState {
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryState::RolledBack => "rolled_back",
            CanaryState::Disabled => "disabled",
            CanaryState::Active => "active",
        }
    }
}

pub struct RoutingTable {
    pub config: Arc<Config>,
    pub state: CanaryState,
    /// The canary's share in force: `traffic_percent`, or the rollout's current step.
    pub percent: f64,
    /// Canary buckets lie below this; 0 unless the canary is active.
    pub threshold_ppm: u64,
    pub hasher: CohortHasher,
    pub stable: Arc<Pool>,
    pub canary: Arc<Pool>,
    /// `X-Deployment-Cohort` values, by `Cohort::index`.
    pub cohort_headers: [HeaderValue; 2],
    /// The proxy port's TLS, loaded with the config (so a reload renews the certificate).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl RoutingTable {
    /// A table for `config`. Pools whose endpoints did not change are carried over from
    /// `previous`, so their health and connections survive a reload.
    pub fn build(
        config: Arc<Config>,
        percent: f64,
        rolled_back: bool,
        previous: Option<&RoutingTable>,
        metrics: &Metrics,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let reuse =
            |old: Option<&Arc<Pool>>, version: &str, eps: &[EndpointConfig], cohort| match old {
                Some(p) if p.version == version && same_endpoints(p, eps) => p.clone(),
                _ => Arc::new(Pool::new(
                    cohort,
                    version,
                    eps,
                    metrics.cohort(cohort.as_str(), version),
                )),
            };
        let stable = reuse(
            previous.map(|p| &p.stable),
            &config.stable.version,
            &config.stable.endpoints,
            Cohort::Stable,
        );
        let canary = reuse(
            previous.map(|p| &p.canary),
            &config.canary.version,
            &config.canary.endpoints,
            Cohort::Canary,
        );
        let c = &config.canary;
        let state = if rolled_back {
            CanaryState::RolledBack
        } else if !c.enabled || threshold_ppm(percent) == 0 || c.endpoints.is_empty() {
            CanaryState::Disabled
        } else {
            CanaryState::Active
        };
        RoutingTable {
            threshold_ppm: if state == CanaryState::Active {
                threshold_ppm(percent)
            } else {
                0
            },
            hasher: CohortHasher::new(&c.salt),
            state,
            percent,
            stable,
            canary,
            cohort_headers: [
                HeaderValue::from_static("stable"),
                HeaderValue::from_static("canary"),
            ],
            config,
            tls,
        }
    }

    /// The same table with the latch set or cleared.
    pub fn with_latch(&self, rolled_back: bool, metrics: &Metrics) -> Self {
        self.with(self.percent, rolled_back, metrics)
    }

    /// The same table at another share (a rollout step), latch as given.
    pub fn with(&self, percent: f64, rolled_back: bool, metrics: &Metrics) -> Self {
        RoutingTable::build(
            self.config.clone(),
            percent,
            rolled_back,
            Some(self),
            metrics,
            self.tls.clone(),
        )
    }

    /// The cohort of a request with this identity (stable when it has none).
    pub fn route(&self, identity: Option<&[u8]>) -> (Cohort, Option<Placement>) {
        match identity {
            Some(id) => {
                let p = self.hasher.place(id);
                (assign(p.bucket, self.threshold_ppm), Some(p))
            }
            None => (Cohort::Stable, None),
        }
    }

    pub fn pool(&self, cohort: Cohort) -> &Arc<Pool> {
        match cohort {
            Cohort::Stable => &self.stable,
            Cohort::Canary => &self.canary,
        }
    }
}

fn same_endpoints(pool: &Pool, eps: &[EndpointConfig]) -> bool {
    pool.endpoints.len() == eps.len() && pool.endpoints.iter().zip(eps).all(|(a, b)| &a.config == b)
}

/// The one place routing lives.
pub struct Router {
    table: ArcSwap<RoutingTable>,
    writer: Mutex<()>,
}

impl Router {
    pub fn new(table: RoutingTable) -> Self {
        Router {
            table: ArcSwap::from_pointee(table),
            writer: Mutex::new(()),
        }
    }

    /// The current table, for one request's whole life.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Replaces the table with `f(current)` in one store, or leaves it when `f` says `None`.
    /// Writers are serialised so that two of them (a rollback and a reload) cannot lose each
    /// other's change. Returns the old and the new table when it swapped.
    pub fn update<F>(&self, f: F) -> Option<(Arc<RoutingTable>, Arc<RoutingTable>)>
    where
        F: FnOnce(&RoutingTable) -> Option<RoutingTable>,
    {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.table.load_full();
        let new = Arc::new(f(&old)?);
        self.table.store(new.clone());
        Some((old, new))
    }
}
