//! Notifications, events and history end to end: a recording webhook receiver checks what a
//! rollback tells (signature, headers, figures), the retries, the Slack format and the filter;
//! a receiver that hangs never delays a rollback; events and history come back after a restart.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::*;

const SECRET: &str = "a-signing-secret-of-some-length";

fn target(name: &str, url: &str, more: &str) -> String {
    format!("\n[[notify]]\nname = {name:?}\nurl = {url:?}\n{more}\n")
}

fn signed(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

async fn metrics_text(proxy: &TestProxy) -> String {
    get(&client(), &proxy.admin_url("/metrics"), &[]).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judged_rollback_is_told_signed_with_its_figures() {
    let hook = spawn_receiver(&[], false).await;
    let s = spawn_upstream("stable").await;
    let bad = Behavior {
        fail_every: 4,
        ..Default::default()
    };
    let k = spawn_upstream_with("canary", bad).await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.rollback = "evaluate_every = \"100ms\"\nwindow = \"30s\"\nmin_requests = 100".into();
    cfg.extra = target("ops", &hook.url(), &format!("secret = {SECRET:?}"));
    let proxy = cfg.start().await;
    for round in 0..30 {
        drive(&proxy, 200, 8, &format!("r{round}-"), "/").await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        if admin_json(&proxy, "/canary/status").await["state"] == "rolled_back" {
            break;
        }
    }
    let got = hook.wait_for(1).await;
    let d = &got[0];
    assert_eq!(d.header("x-canary-event"), "rolled_back");
    assert_eq!(d.header("content-type"), "application/json");
    assert_eq!(
        d.header("x-canary-signature"),
        signed(&d.body),
        "the HMAC of the body"
    );
    let body = d.json();
    assert_eq!(d.header("x-canary-delivery"), body["delivery"]);
    assert_eq!(body["event"], "rolled_back");
    assert_eq!(body["state_before"], "active");
    assert_eq!(body["state_after"], "rolled_back");
    assert_eq!(body["trigger"], "error_rate");
    assert_eq!(body["caller"], "internal");
    assert_eq!(body["canary_version"], "v1.2.0-canary");
    assert_eq!(body["stable_version"], "v1.1.0");
    assert!(
        body["reason"].as_str().unwrap().contains("error_rate"),
        "{body}"
    );
    // The figures are the rollback record's, as /canary/status shows them.
    let status = admin_json(&proxy, "/canary/status").await;
    assert_eq!(body["figures"], status["last_rollback"]["figures"]);
    assert!(
        body["figures"]["canary"]["errors"].as_u64().unwrap() > 0,
        "{body}"
    );
    let ev = &body["figures"]["evidence"]["error_rate"];
    assert!(ev["cumulative"].as_f64().unwrap() > 0.0, "{ev}");
    // The event is kept too, latest first.
    let events = admin_json(&proxy, "/canary/events?limit=1").await;
    assert_eq!(events["events"][0]["delivery"], body["delivery"]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_with_the_same_delivery_and_a_404_is_not() {
    let flaky = spawn_receiver(&[500, 503], false).await;
    let gone = spawn_receiver(&[404], false).await;
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.extra = target("flaky", &flaky.url(), "") + &target("gone", &gone.url(), "");
    let proxy = cfg.start().await;
    let started = Instant::now();
    let got = admin_post(
        proxy.admin,
        "/canary/rollback",
        None,
        r#"{"reason": "bad build"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    // 500, then 503 a second later, then 200 two seconds after that.
    let tries = flaky.wait_for(3).await;
    let ids: Vec<&str> = tries
        .iter()
        .map(|d| d.header("x-canary-delivery"))
        .collect();
    assert!(
        !ids[0].is_empty() && ids.iter().all(|i| *i == ids[0]),
        "{ids:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "1 s, then 2 s between tries"
    );
    assert_eq!(tries[0].body, tries[2].body, "the same body every time");
    assert_eq!(tries[2].json()["reason"], "bad build");
    assert!(
        tries[0].header("x-canary-signature").is_empty(),
        "no secret, no signature"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gone.deliveries().len(),
        1,
        "a 404 is the receiver saying no: not retried"
    );
    let m = metrics_text(&proxy).await;
    for line in [
        "canary_notify_failures_total{event=\"rolled_back\",target=\"flaky\"} 2",
        "canary_notify_failures_total{event=\"rolled_back\",target=\"gone\"} 1",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_text_and_each_target_only_the_events_it_asked_for() {
    let slack = spawn_receiver(&[], false).await;
    let json = spawn_receiver(&[], false).await;
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.extra = target(
        "chat",
        &slack.url(),
        "format = \"slack\"\nevents = [\"rolled_back\", \"resumed\"]",
    ) + &target("audit", &json.url(), "events = [\"resumed\"]");
    let proxy = cfg.start().await;
    let got = admin_post(
        proxy.admin,
        "/canary/rollback",
        None,
        r#"{"reason": "p99 doubled"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    post_ok(proxy.admin, "/canary/metrics/reset").await;
    let got = admin_post(
        proxy.admin,
        "/canary/resume",
        None,
        r#"{"reason": "fixed in v1.2.1"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    let chat = slack.wait_for(2).await;
    let text = chat[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("rolled back") && text.contains("v1.2.0-canary"),
        "{text}"
    );
    assert!(
        text.contains("p99 doubled") && text.contains("`manual`"),
        "{text}"
    );
    assert!(
        text.contains("canary: 0 requests") && text.contains("active → rolled_back"),
        "{text}"
    );
    assert_eq!(chat[1].header("x-canary-event"), "resumed");
    let audit = json.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(json.deliveries().len(), 1, "only the resume: {audit:?}");
    assert_eq!(audit[0].json()["event"], "resumed");
    assert_eq!(slack.deliveries().len(), 2, "the reset was not asked for");
    // Every event is kept, whatever the targets asked for: latest first, with the caller.
    let events = admin_json(&proxy, "/canary/events").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["resumed", "reset", "rolled_back"]);
    assert!(events["events"][0]["caller"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // A manual action keeps the operator's reason, or says what it did.
    assert_eq!(events["events"][0]["reason"], "fixed in v1.2.1");
    assert_eq!(
        events["events"][1]["reason"],
        "window reset: a new judgement starts"
    );
    let bad = get(&client(), &proxy.admin_url("/canary/events?limit=0"), &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_or_is_gone_never_delays_a_rollback() {
    let hung = spawn_receiver(&[], true).await;
    let (dead, _held) = closed_port().await;
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.extra = target("hung", &hung.url(), "") + &target("dead", &format!("{dead}/hook"), "");
    let proxy = cfg.start().await;
    for _ in 0..3 {
        let started = Instant::now();
        let got = admin_post(proxy.admin, "/canary/rollback", None, "").await;
        assert_eq!(got.status, 200, "{}", got.body);
        // The receiver's 5 s timeout is nowhere in the rollback's path.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            admin_json(&proxy, "/canary/status").await["state"],
            "rolled_back"
        );
        post_ok(proxy.admin, "/canary/resume").await;
    }
    // One delivery at a time per target, in order: the hung one holds the first.
    hung.wait_for(1).await;
    assert_eq!(hung.deliveries().len(), 1);
    let m = metrics_text(&proxy).await;
    assert!(
        m.contains("canary_notify_failures_total{event=\"rolled_back\",target=\"dead\"}"),
        "{m}"
    );
    proxy.stop().await;
}

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
    cfg.extra = target(
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
