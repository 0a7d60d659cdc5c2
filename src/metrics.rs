//! Every Prometheus series of the spec, in a registry owned by one `Metrics` value (no global
//! statics, so tests in one process never collide). Label sets are bounded: cohort, version,
//! trigger, scope, kind, reason; never an identity or a path.
//!
//! The request path uses `CohortMetrics`, handles resolved once per pool, so recording is a
//! few atomic adds and no label lookup.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets for web traffic, 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    pub active: IntGauge,
    pub traffic_percent: Gauge,
    pub rollbacks: IntCounterVec,
    pub upstream_failures: IntCounterVec,
    pub rejected: IntCounterVec,
    pub judge_evidence: GaugeVec,
    pub judge_threshold: GaugeVec,
    pub access_log_dropped: IntCounter,
    forced: IntCounterVec,
    /// Override fields sent with a wrong or missing token (ignored: the hash decided).
    pub override_refused: IntCounter,
    /// The rollout's series: they appear once a rollout has set them (with `[rollout]`).
    pub rollout_step: GaugeVec,
    pub rollout_state: GaugeVec,
    pub promote_evidence: GaugeVec,
    pub promote_bar: GaugeVec,
    /// 1 for the state and versions in force (one series at a time).
    pub info: GaugeVec,
    pub reloads: IntCounterVec,
    notify_failures: IntCounterVec,
}

#[derive(Clone)]
pub struct FleetMetrics {
    pub replicas: IntGauge,
    pub redis_up: IntGauge,
    pub propagation: Histogram,
}

/// One cohort-and-version's handles, resolved when its pool is built.
#[derive(Clone)]
pub struct CohortMetrics {
    pub requests: IntCounter,
    pub errors: IntCounter,
    pub latency: Histogram,
    /// Testers' forced requests to this cohort and version.
    pub forced: IntCounter,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let cv = ["cohort", "version"];
        let requests = counter_vec(
            &r,
            "canary_requests_total",
            "Requests answered, by cohort and version.",
            &cv,
        );
        let errors = counter_vec(
            &r,
            "canary_errors_total",
            "Requests that count as the cohort's errors.",
            &cv,
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "canary_latency_seconds",
                "Upstream latency: request sent in full to response headers.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &cv,
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone()))
            .expect("registered once");
        let active = IntGauge::new(
            "canary_active",
            "1 while any traffic is sent to the canary.",
        )
        .expect("valid metric");
        r.register(Box::new(active.clone()))
            .expect("registered once");
        let traffic_percent = Gauge::new(
            "canary_traffic_percent",
            "The canary share in force, in percent (the rollout's step with [rollout]).",
        )
        .expect("valid metric");
        r.register(Box::new(traffic_percent.clone()))
            .expect("registered once");
        let rollbacks = counter_vec(
            &r,
            "canary_rollbacks_total",
            "Rollbacks, by trigger.",
            &["trigger"],
        );
        let upstream_failures = counter_vec(
            &r,
            "canary_upstream_failures_total",
            "Failed upstream attempts, by cohort and kind.",
            &["cohort", "kind"],
        );
        let rejected = counter_vec(
            &r,
            "canary_rejected_total",
            "Requests refused before routing or failed by the client, by reason.",
            &["reason"],
        );
        let judge_evidence = gauge_vec(
            &r,
            "canary_judge_evidence",
            "The judge's evidence M(L) per trigger and scope.",
            &["trigger", "scope"],
        );
        let judge_threshold = gauge_vec(
            &r,
            "canary_judge_threshold",
            "The evidence at which a trigger fires.",
            &["trigger", "scope"],
        );
        let access_log_dropped = IntCounter::new(
            "canary_access_log_dropped_total",
            "Access log lines dropped under back-pressure.",
        )
        .expect("valid metric");
        r.register(Box::new(access_log_dropped.clone()))
            .expect("registered once");
        let forced = counter_vec(
            &r,
            "canary_forced_requests_total",
            "Requests a tester forced into a cohort (override_header): never judged.",
            &cv,
        );
        let override_refused = IntCounter::new(
            "canary_override_refused_total",
            "Override fields sent with a wrong or missing token: ignored, the hash decided.",
        )
        .expect("valid metric");
        r.register(Box::new(override_refused.clone()))
            .expect("registered once");
        let rollout_step = gauge_vec(
            &r,
            "canary_rollout_step",
            "The rollout's current step, an index into rollout.steps.",
            &[],
        );
        let rollout_state = gauge_vec(
            &r,
            "canary_rollout_state",
            "1 for the canary's current state, 0 for the others.",
            &["state"],
        );
        let promote_evidence = gauge_vec(
            &r,
            "canary_promote_evidence",
            "The promotion gate's evidence P per test, since the step began.",
            &["test"],
        );
        let promote_bar = gauge_vec(
            &r,
            "canary_promote_bar",
            "The evidence at which a promotion test passes.",
            &["test"],
        );
        let info = gauge_vec(
            &r,
            "canary_info",
            "1 for the canary's state and the versions in force.",
            &["state", "stable_version", "canary_version"],
        );
        let reloads = counter_vec(
            &r,
            "canary_reloads_total",
            "Config reloads, by result (ok, refused).",
            &["result"],
        );
        for result in ["ok", "refused"] {
            reloads.with_label_values(&[result]);
        }
        let notify_failures = counter_vec(
            &r,
            "canary_notify_failures_total",
            "Failed notification attempts (and events dropped on a full queue), by target and event.",
            &["target", "event"],
        );
        for t in ["error_rate", "relative_error", "latency", "manual"] {
            rollbacks.with_label_values(&[t]);
        }
        Metrics {
            registry: r,
            requests,
            errors,
            latency,
            active,
            traffic_percent,
            rollbacks,
            upstream_failures,
            rejected,
            judge_evidence,
            judge_threshold,
            access_log_dropped,
            forced,
            override_refused,
            rollout_step,
            rollout_state,
            promote_evidence,
            promote_bar,
            info,
            reloads,
            notify_failures,
        }
    }

    /// Sets `canary_info` to the one series that stands now.
    pub fn set_info(&self, state: &str, stable: &str, canary: &str) {
        let l = [state, stable, canary];
        if self.info.with_label_values(&l).get() == 1.0 {
            return;
        }
        self.info.reset();
        self.info.with_label_values(&l).set(1.0);
    }

    pub fn notify_failure(&self, target: &str, event: &str) {
        self.notify_failures
            .with_label_values(&[target, event])
            .inc();
    }

    /// The fleet's series, registered only with `[fleet]`.
    pub fn register_fleet(&self) -> FleetMetrics {
        let r = &self.registry;
        let replicas = IntGauge::new(
            "canary_fleet_replicas",
            "Replicas of this fleet seen alive, this one included.",
        )
        .expect("valid metric");
        let redis_up = IntGauge::new(
            "canary_fleet_redis_up",
            "1 while this replica reaches the fleet's Redis.",
        )
        .expect("valid metric");
        let propagation = Histogram::with_opts(
            HistogramOpts::new(
                "canary_fleet_latch_propagation_seconds",
                "From a latch change written by another replica to its swap here.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        for m in [&replicas, &redis_up] {
            r.register(Box::new(m.clone())).expect("registered once");
        }
        r.register(Box::new(propagation.clone()))
            .expect("registered once");
        replicas.set(1);
        FleetMetrics {
            replicas,
            redis_up,
            propagation,
        }
    }

    pub fn cohort(&self, cohort: &str, version: &str) -> CohortMetrics {
        let l = [cohort, version];
        CohortMetrics {
            requests: self.requests.with_label_values(&l),
            errors: self.errors.with_label_values(&l),
            latency: self.latency.with_label_values(&l),
            forced: self.forced.with_label_values(&l),
        }
    }

    /// Testers' forced requests to this cohort and version so far.
    pub fn forced_requests(&self, cohort: &str, version: &str) -> u64 {
        self.forced.with_label_values(&[cohort, version]).get()
    }

    pub fn reject(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    pub fn upstream_failure(&self, cohort: &str, kind: &str) {
        self.upstream_failures
            .with_label_values(&[cohort, kind])
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
