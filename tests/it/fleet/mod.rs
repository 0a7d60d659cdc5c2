//! The fleet, with a real `redis-server`: several replicas act as one — one latch (rollback,
//! resume, one record when two decide at once), one judgement over everyone's traffic — and
//! losing Redis never un-latches and never stops serving.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

pub(super) const FAST: &str = "evaluate_every = \"100ms\"\nwindow = \"30s\"";

pub(super) fn fleet_toml(
    s: &Upstream,
    k: &Upstream,
    redis: &str,
    replica: &str,
    rollback: &str,
) -> String {
    let mut cfg = Cfg::new(s, k);
    cfg.rollback = format!("{FAST}\n{rollback}");
    cfg.extra = format!("[fleet]\nredis = {redis:?}\nname = \"checkout\"\nreplica = {replica:?}\n");
    cfg.toml()
}

pub(super) async fn replicas(
    s: &Upstream,
    k: &Upstream,
    redis: &str,
    names: &[&str],
    rollback: &str,
) -> Vec<TestProxy> {
    let mut out = Vec::new();
    for n in names {
        out.push(start_proxy(&fleet_toml(s, k, redis, n, rollback)).await);
    }
    out
}

pub(super) async fn status(p: &TestProxy) -> Value {
    admin_json(p, "/canary/status").await
}

pub(super) async fn metric(p: &TestProxy, line_start: &str) -> f64 {
    let m = get(&client(), &p.admin_url("/metrics"), &[]).await.body;
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
}

/// Polls every replica until each is in `state`; returns when each got there (from `since`).
pub(super) async fn until_all(
    ps: &[&TestProxy],
    state: &str,
    since: Instant,
    limit: Duration,
) -> Vec<Duration> {
    let mut when = vec![None; ps.len()];
    while when.iter().any(Option::is_none) {
        assert!(
            since.elapsed() < limit,
            "not every replica reached {state} within {limit:?}: {when:?}"
        );
        for (i, p) in ps.iter().enumerate() {
            if when[i].is_none() && status(p).await["state"] == state {
                when[i] = Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    when.into_iter().map(Option::unwrap).collect()
}

pub(super) async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) const LATCH_KEY: &str = "canary-proxy:checkout:latch:v1.2.0-canary";

/// Whether Redis holds a rolled-back latch for the test canary.
pub(super) fn latched_in(redis: &RedisServer) -> bool {
    let v: Option<String> = redis.query(&["HGET", LATCH_KEY, "rolled_back"]);
    v.as_deref() == Some("1")
}

/// Sends bad-canary traffic through `p` alone until it rolls back; every answer is 200 or the
/// canary's 500 (never a proxy failure).
pub(super) async fn drive_until_rolled_back(p: &TestProxy, what: &str) {
    let mut rounds = 0;
    while status(p).await["state"] != "rolled_back" {
        rounds += 1;
        assert!(rounds < 40, "{what}: never rolled back");
        for (code, _) in drive(p, 100, 4, &format!("r{rounds}-"), "/").await {
            assert!(code == 200 || code == 500, "{what}: answered {code}");
        }
    }
}

pub(super) fn bad_canary() -> Behavior {
    Behavior {
        fail_every: 2,
        ..Default::default()
    }
}

mod judge;
mod latch;
mod notify;
mod outage;
mod rollout;
