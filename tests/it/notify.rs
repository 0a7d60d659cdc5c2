//! Notifications end to end: a recording webhook receiver checks what a rollback tells
//! (signature, headers, figures), the retries, the Slack format and the filter; a receiver that
//! hangs never delays a rollback, and its bounded queue drops and counts what it cannot hold.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::*;

const SECRET: &str = "a-signing-secret-of-some-length";

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
    cfg.extra = notify_target("ops", &hook.url(), &format!("secret = {SECRET:?}"));
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
async fn a_500_and_a_429_are_retried_with_the_same_delivery_and_a_404_is_not() {
    let flaky = spawn_receiver(&[500, 429], false).await;
    let gone = spawn_receiver(&[404], false).await;
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.extra = notify_target("flaky", &flaky.url(), "") + &notify_target("gone", &gone.url(), "");
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
    // 500, then 429 (too many requests: retried too) a second later, then 200 two seconds after that.
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
    cfg.extra = notify_target(
        "chat",
        &slack.url(),
        "format = \"slack\"\nevents = [\"rolled_back\", \"resumed\"]",
    ) + &notify_target("audit", &json.url(), "events = [\"resumed\"]");
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
    cfg.extra = notify_target("hung", &hung.url(), "")
        + &notify_target("dead", &format!("{dead}/hook"), "");
    let proxy = cfg.start().await;
    // 80 events, more than a target's queue holds behind the one in flight.
    let cycles = 40;
    for _ in 0..cycles {
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
    // The hung target's queue is bounded: what it cannot hold is dropped, each one counted.
    let dropped: f64 = m
        .lines()
        .filter(|l| l.starts_with("canary_notify_failures_total{") && l.contains("target=\"hung\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let held = canary_proxy::notify::QUEUE as f64 + 1.0;
    let sent = 2.0 * cycles as f64;
    assert!(
        (sent - held..=sent - held + 1.0).contains(&dropped),
        "{dropped} of {sent} dropped, {held} held:\n{m}"
    );
    proxy.stop().await;
}
