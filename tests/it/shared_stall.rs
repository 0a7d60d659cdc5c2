//! The latency trigger judges the canary against the stable under the same conditions: a
//! stall both cohorts share (the host, a database, the network) rolls nothing back, and the
//! same stall on the canary alone does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::*;

// Quarter-second slices, as the demo's: a stall's edges fall in slices that hold a few of its
// requests. The bar follows the stable (1.25 x its p99), not max_latency.
const JUDGED: &str = r#"evaluate_every = "250ms"
window = "30s"
min_requests = 40
max_latency = "2s"
latency_tolerance = 1.25"#;

/// Warms the window (its stable half past 1,000 requests, so the bar follows the stable), then
/// drives traffic while `stall` is set on the upstreams that share it, then after.
async fn stall_then_judge(stable_stalls: bool) -> serde_json::Value {
    let stall = Arc::new(AtomicBool::new(false));
    let behaving = |shared: bool| Behavior {
        delay_ms: 80,
        slow_switch: Some(if shared {
            stall.clone()
        } else {
            Arc::new(AtomicBool::new(false))
        }),
        ..Default::default()
    };
    let s = spawn_upstream_with("stable", behaving(stable_stalls)).await;
    let k = spawn_upstream_with("canary", behaving(true)).await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 50.0;
    cfg.rollback = JUDGED.to_string();
    let proxy = cfg.start().await;
    drive(&proxy, 3000, 32, "warm-", "/").await;
    // The judge has seen the calm: the bar it sets now is about 1.25 x a loopback p99.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let calm = admin_json(&proxy, "/canary/metrics").await;
    let bar = calm["evidence"]["latency"]["limit"]["threshold_seconds"]
        .as_f64()
        .unwrap_or(2.0);
    assert!(
        bar < 0.08,
        "the bar follows the stable before the stall: {calm}"
    );
    stall.store(true, Ordering::Relaxed);
    drive(&proxy, 1200, 64, "stalled-", "/").await;
    stall.store(false, Ordering::Relaxed);
    drive(&proxy, 1000, 32, "after-", "/").await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let status = admin_json(&proxy, "/canary/status").await;
    proxy.stop().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_both_cohorts_share_rolls_nothing_back() {
    let status = stall_then_judge(true).await;
    assert_ne!(status["state"], "rolled_back", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_stall_on_the_canary_alone_is_rolled_back_by_latency() {
    let status = stall_then_judge(false).await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["last_rollback"]["trigger"], "latency", "{status}");
}
