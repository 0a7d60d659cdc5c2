//! Rollbacks through the real proxy: each trigger fires when it should and not when it should
//! not, and the swap is atomic under load.

use std::time::{Duration, Instant};

use crate::support::*;

const FAST: &str = r#"evaluate_every = "100ms"
window = "30s""#;

async fn proxy_with(
    stable: Behavior,
    canary: Behavior,
    percent: f64,
    rollback: &str,
) -> (TestProxy, Upstream, Upstream) {
    let s = spawn_upstream_with("stable", stable).await;
    let k = spawn_upstream_with("canary", canary).await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = percent;
    cfg.rollback = format!("{FAST}\n{rollback}");
    (cfg.start().await, s, k)
}

/// Drives traffic in rounds until the proxy rolls back or `rounds` pass; returns the status.
async fn drive_until_rollback(
    proxy: &TestProxy,
    rounds: usize,
    per_round: usize,
    concurrency: usize,
) -> serde_json::Value {
    for round in 0..rounds {
        drive(proxy, per_round, concurrency, &format!("r{round}-"), "/").await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let s = admin_json(proxy, "/canary/status").await;
        if s["state"] == "rolled_back" {
            return s;
        }
    }
    admin_json(proxy, "/canary/status").await
}

async fn assert_all_stable_now(proxy: &TestProxy) {
    for (status, cohort) in drive(proxy, 100, 4, "after-", "/").await {
        assert_eq!(cohort, "stable");
        assert_eq!(status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_fires_on_a_canary_with_20_percent_errors() {
    let bad = Behavior {
        fail_every: 5,
        ..Default::default()
    };
    let (proxy, _s, _k) = proxy_with(Behavior::default(), bad, 50.0, "min_requests = 100").await;
    let status = drive_until_rollback(&proxy, 20, 200, 8).await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    let last = &status["last_rollback"];
    assert_eq!(last["trigger"], "error_rate", "{last}");
    let ev = &last["figures"]["evidence"]["error_rate"];
    assert!(
        ev["cumulative"].as_f64().unwrap() >= ev["threshold_cumulative"].as_f64().unwrap()
            || ev["window"].as_f64().unwrap() >= ev["threshold_window"].as_f64().unwrap(),
        "{ev}"
    );
    assert!(last["figures"]["canary"]["requests"].as_u64().unwrap() >= 100);
    assert_all_stable_now(&proxy).await;
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains("canary_rollbacks_total{trigger=\"error_rate\"} 1"),
        "{m}"
    );
    assert!(m.contains("canary_active 0"), "{m}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_fires_on_a_canary_slower_than_max_latency() {
    let slow = Behavior {
        delay_ms: 120,
        ..Default::default()
    };
    let (proxy, _s, _k) = proxy_with(
        Behavior::default(),
        slow,
        50.0,
        "min_requests = 40\nmax_latency = \"50ms\"",
    )
    .await;
    let status = drive_until_rollback(&proxy, 10, 120, 24).await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["last_rollback"]["trigger"], "latency");
    assert!(
        status["last_rollback"]["figures"]["canary"]["p99_latency"]
            .as_f64()
            .unwrap()
            >= 0.12
    );
    assert_all_stable_now(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_error_fires_on_a_canary_clearly_worse_than_stable() {
    let stable = Behavior {
        fail_every: 50,
        ..Default::default()
    };
    let canary = Behavior {
        fail_every: 4,
        ..Default::default()
    };
    let (proxy, _s, _k) = proxy_with(
        stable,
        canary,
        50.0,
        "min_requests = 100\nmax_error_rate = 99.0",
    )
    .await;
    let status = drive_until_rollback(&proxy, 20, 200, 8).await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["last_rollback"]["trigger"], "relative_error");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_trigger_fires_under_min_requests_even_at_100_percent_errors() {
    let broken = Behavior {
        fail_every: 1,
        ..Default::default()
    };
    let (proxy, _s, _k) =
        proxy_with(Behavior::default(), broken, 50.0, "min_requests = 1000").await;
    let sent = drive(&proxy, 600, 8, "u", "/").await;
    let canary = sent.iter().filter(|(_, c)| c == "canary").count();
    assert!(canary > 200 && canary < 1000, "{canary}");
    assert!(sent
        .iter()
        .filter(|(_, c)| c == "canary")
        .all(|(s, _)| *s == 500));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = admin_json(&proxy, "/canary/metrics").await;
    assert_eq!(m["state"], "active");
    assert_eq!(m["canary_requests"].as_u64().unwrap() as usize, canary);
    let ev = m["evidence"]["error_rate"]["cumulative"].as_f64().unwrap();
    assert!(
        ev > m["evidence"]["error_rate"]["threshold_cumulative"]
            .as_f64()
            .unwrap(),
        "the evidence is there, only the gate holds: {ev}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_failing_over_and_over_is_not_enough() {
    let canary = Behavior {
        fail_identity: Some("mallory".into()),
        ..Default::default()
    };
    let (proxy, _s, _k) = proxy_with(Behavior::default(), canary, 100.0, "min_requests = 50").await;
    let c = client();
    for round in 0..6 {
        for _ in 0..100 {
            assert_eq!(
                get(&c, &proxy.url("/"), &[("x-user-id", "mallory")])
                    .await
                    .status,
                500
            );
        }
        drive(&proxy, 100, 4, &format!("honest{round}-"), "/").await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let m = admin_json(&proxy, "/canary/metrics").await;
    assert_eq!(m["state"], "active", "{m}");
    assert_eq!(m["canary_errors"], 600, "operators still see every error");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_at_its_limits_stays() {
    // 1 % errors (max_error_rate 1) and twice the stable's 0.5 % (max_relative_error 2).
    let stable = Behavior {
        fail_every: 200,
        ..Default::default()
    };
    let canary = Behavior {
        fail_every: 100,
        ..Default::default()
    };
    let (proxy, _s, _k) = proxy_with(stable, canary, 50.0, "min_requests = 100").await;
    let status = drive_until_rollback(&proxy, 10, 600, 8).await;
    assert_eq!(status["state"], "active", "{status}");
    let m = admin_json(&proxy, "/canary/metrics").await;
    assert!(m["canary_requests"].as_u64().unwrap() > 2000, "{m}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_false_never_rolls_back_but_shows_the_evidence() {
    let broken = Behavior {
        fail_every: 2,
        ..Default::default()
    };
    let (proxy, _s, _k) = proxy_with(
        Behavior::default(),
        broken,
        50.0,
        "min_requests = 50\nauto = false",
    )
    .await;
    let status = drive_until_rollback(&proxy, 5, 200, 8).await;
    assert_eq!(status["state"], "active");
    let m = admin_json(&proxy, "/canary/metrics").await;
    let ev = &m["evidence"]["error_rate"];
    assert!(
        ev["cumulative"].as_f64().unwrap() > ev["threshold_cumulative"].as_f64().unwrap(),
        "{ev}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swap_is_atomic_under_load() {
    let (proxy, _s, k) = proxy_with(Behavior::default(), Behavior::default(), 50.0, "").await;
    let proxy = std::sync::Arc::new(proxy);
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (proxy, c) = (proxy.clone(), client());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            while Instant::now() < stop_at {
                let started = Instant::now();
                let id = format!("t{t}-{i}");
                let got = get(&c, &proxy.url("/"), &[("x-user-id", &id)]).await;
                seen.push((
                    started,
                    got.status,
                    got.header("x-deployment-cohort").unwrap_or("").to_string(),
                    id,
                ));
                i += 1;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = admin_post(
        proxy.admin,
        "/canary/rollback",
        None,
        r#"{"reason": "atomicity test"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let acked = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert!(all.len() > 200, "only {} requests", all.len());
    assert!(
        all.iter().all(|(_, s, _, _)| *s == 200),
        "the swap answered a request with an error"
    );
    let after: Vec<_> = all.iter().filter(|(at, _, _, _)| *at > acked).collect();
    assert!(
        after.len() > 50,
        "too few requests after the rollback: {}",
        after.len()
    );
    assert!(
        after.iter().all(|(_, _, c, _)| c == "stable"),
        "a request that started after the rollback went to the canary"
    );
    // Every request the canary upstream received was sent before the rollback was acknowledged.
    let started: std::collections::HashMap<&str, Instant> = all
        .iter()
        .map(|(at, _, _, id)| (id.as_str(), *at))
        .collect();
    let arrivals = k.seen.lock().unwrap().clone();
    assert!(!arrivals.is_empty());
    for a in &arrivals {
        let id = a.headers["x-user-id"].to_str().unwrap();
        assert!(
            started[id] < acked,
            "{id} started after the rollback and reached the canary"
        );
    }
    assert!(all.iter().any(|(at, _, c, _)| *at < acked && c == "canary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_an_ignored_path_move_no_evidence() {
    // The canary fails every request to /status/500 (a health check, say): ignored, it is
    // routed and counted in Prometheus, and the judge never sees it.
    let (proxy, _s, _k) = proxy_with(
        Behavior::default(),
        Behavior::default(),
        100.0,
        "min_requests = 20\nignore_paths = [\"/status/*\", \"/healthz\"]",
    )
    .await;
    for round in 0..5 {
        for (code, cohort) in drive(&proxy, 100, 4, &format!("h{round}-"), "/status/500").await {
            assert_eq!((code, cohort.as_str()), (500, "canary"));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = admin_json(&proxy, "/canary/metrics").await;
    assert_eq!(
        m["canary_requests"], 0,
        "the judge saw an ignored path: {m}"
    );
    assert_eq!(m["evidence"]["error_rate"]["cumulative"], 0.0, "{m}");
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "active"
    );
    let text = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        text.contains("canary_errors_total{cohort=\"canary\",version=\"v1.2.0-canary\"} 500"),
        "Prometheus counts every request: {text}"
    );
    // A path outside the list is judged as ever.
    drive(&proxy, 50, 4, "j-", "/").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = admin_json(&proxy, "/canary/metrics").await;
    assert_eq!(m["canary_requests"], 50, "{m}");
    proxy.stop().await;
}
