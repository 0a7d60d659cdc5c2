//! What the proxy keeps of what it did: the event log and the history, through a restart, and
//! every move of a rollout told in order with the evidence that made it.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_history_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.rollback = "evaluate_every = \"200ms\"".into();
    let state = dir.path().join("state.json");
    cfg.extra = format!("[state]\npath = {:?}\n", state.display().to_string());
    let proxy = cfg.start().await;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        drive(&proxy, 50, 4, "h-", "/").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = admin_post(
        proxy.admin,
        "/canary/rollback",
        None,
        r#"{"reason": "before restart"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = admin_json(&proxy, "/canary/history?seconds=60").await;
    proxy.stop().await;
    assert!(state.with_file_name("state.history.json").exists());

    let proxy = cfg.start().await;
    let events = admin_json(&proxy, "/canary/events").await;
    assert_eq!(events["events"][0]["event"], "rolled_back", "{events}");
    assert_eq!(events["events"][0]["reason"], "before restart");
    let after = admin_json(&proxy, "/canary/history?seconds=60").await;
    let points = after["points"].as_array().unwrap();
    let old = before["points"].as_array().unwrap();
    assert!(old.len() >= 2, "{before}");
    assert_eq!(
        &points[..old.len()],
        &old[..],
        "the points before the restart are kept"
    );
    let canary: u64 = points
        .iter()
        .map(|p| p["canary"]["requests"].as_u64().unwrap())
        .sum();
    assert!(canary > 0, "{after}");
    assert!(old.iter().any(|p| p["share"] == 50.0) && old.last().unwrap()["share"] == 0.0);
    let e = &old[0]["error_rate"];
    assert_eq!(e.as_array().unwrap().len(), 4, "{e}");
    let bad = get(
        &client(),
        &proxy.admin_url("/canary/history?seconds=x"),
        &[],
    )
    .await;
    assert_eq!(bad.status, 400);
    proxy.stop().await;
}

/// The events of a proxy, oldest first, as (event, caller).
async fn told(proxy: &TestProxy) -> Vec<(String, String)> {
    let v = admin_json(proxy, "/canary/events").await;
    let mut out: Vec<(String, String)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().into(),
                e["caller"].as_str().unwrap().into(),
            )
        })
        .collect();
    out.reverse();
    out
}

async fn until_told(proxy: &TestProxy, event: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while !told(proxy).await.iter().any(|(e, _)| e == event) {
        assert!(
            Instant::now() < until,
            "no {event}: {:?}",
            told(proxy).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_tells_each_move_with_the_gates_evidence() {
    let hook = spawn_receiver(&[], false).await;
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.rollback = "evaluate_every = \"100ms\"\nmin_requests = 20\nmax_error_rate = 20.0\nlatency_stat = \"p90\"".into();
    cfg.rollout = Some("steps = [10, 50]\nbake = \"200ms\"\nmax_bake = \"1500ms\"\npromote_risk = 0.1\nauto = false".into());
    cfg.extra = notify_target(
        "ops",
        &hook.url(),
        "events = [\"holding\", \"step_advanced\", \"complete\"]",
    );
    let proxy = std::sync::Arc::new(cfg.start().await);
    // No traffic: the gate cannot open, and max_bake holds the step.
    until_told(&proxy, "holding").await;
    post_ok(proxy.admin, "/canary/continue").await;
    let traffic = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(30);
            for i in 0.. {
                if Instant::now() > until || told(&proxy).await.iter().any(|(e, _)| e == "complete")
                {
                    break;
                }
                drive(&proxy, 200, 4, &format!("t{i}-"), "/").await;
            }
        })
    };
    until_told(&proxy, "ready").await;
    let got = admin_post(proxy.admin, "/canary/pause", None, r#"{"reason": "lunch"}"#).await;
    assert_eq!(got.status, 200, "{}", got.body);
    post_ok(proxy.admin, "/canary/promote").await;
    until_told(&proxy, "complete").await;
    let _ = traffic.await;
    let kinds: Vec<String> = told(&proxy).await.into_iter().map(|(e, _)| e).collect();
    let want = ["holding", "continued", "ready", "paused", "step_advanced"];
    assert_eq!(&kinds[..5], &want, "{kinds:?}");
    assert!(kinds[5..].iter().any(|k| k == "complete"), "{kinds:?}");
    let events = admin_json(&proxy, "/canary/events").await;
    let step = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "step_advanced")
        .unwrap()
        .clone();
    assert_eq!(step["reason"], "promoted: 10% -> 50%");
    assert!(
        step["caller"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{step}"
    );
    assert_eq!(
        step["figures"]["step"], 0,
        "the evidence that moved it: {step}"
    );
    assert!(
        step["figures"]["gate"]["error_rate"]["passes"]
            .as_bool()
            .unwrap(),
        "{step}"
    );
    // The target got only what it asked for, in order.
    let sent: Vec<String> = hook
        .wait_for(3)
        .await
        .iter()
        .map(|d| d.header("x-canary-event").to_string())
        .collect();
    assert_eq!(sent, ["holding", "step_advanced", "complete"]);
}
