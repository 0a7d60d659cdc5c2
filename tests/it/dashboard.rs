//! The live dashboard, end to end in headless Chromium (driven over WebDriver by chromedriver):
//! the page opened after a rollback draws the server's history with the rollback marked, and
//! its buttons act with the token; the rollout's ramp in words and its buttons.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opened_after_a_rollback_the_dashboard_shows_the_history_marked_and_its_buttons_work() {
    let s = spawn_upstream("stable").await;
    let bad = Behavior {
        fail_every: 3,
        ..Default::default()
    };
    let k = spawn_upstream_with("canary", bad).await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.token = "tok".into();
    cfg.percent = 30.0;
    cfg.rollback = "evaluate_every = \"250ms\"\nmin_requests = 200".into();
    let proxy = Arc::new(cfg.start().await);
    // Traffic for the charts, bounded; the judge rolls the failing canary back under it.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let until = Instant::now() + Duration::from_secs(90);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || Instant::now() > until {
                    break;
                }
                get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(40);
    while admin_json(&proxy, "/canary/status").await["state"] != "rolled_back" {
        assert!(Instant::now() < until, "the judge did not roll back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Some life after the rollback too, so the page has both sides of it.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let page = Page::open(&proxy.admin_url("/")).await;
    let seen = "return window.__ready === true && window.__history.length >= 4 && \
        document.querySelectorAll('svg.chart line.mark[data-event=rolled_back]').length === 5;";
    page.until(
        seen,
        json!(true),
        "the history with the rollback marked on all five charts",
    )
    .await;
    let v = page
        .js("const h = window.__history; return { canary: h.some(p => p.canary.rate > 0 && p.canary.errors > 20), \
             stable: h.some(p => p.stable.rate > 0), share: h[h.length - 1].share, \
             last: document.getElementById('last-rollback').textContent, \
             words: document.getElementById('evidence').textContent, \
             events: document.getElementById('events').textContent, \
             rollback: document.getElementById('rollback').disabled, resume: document.getElementById('resume').disabled, \
             axis: document.querySelector('#chart-rate svg text:last-of-type').textContent };")
        .await;
    assert_eq!(
        v["canary"], true,
        "the canary's errors before the rollback: {v}"
    );
    assert_eq!(v["stable"], true, "{v}");
    assert_eq!(
        v["share"], 0.0,
        "nothing is sent to the canary after it: {v}"
    );
    let last = v["last"].as_str().unwrap();
    assert!(
        last.contains("error_rate") && last.contains("times likelier"),
        "{last}"
    );
    assert!(
        v["words"]
            .as_str()
            .unwrap()
            .contains("the rollback fires at"),
        "{v}"
    );
    assert!(v["events"].as_str().unwrap().contains("rolled back"), "{v}");
    assert!(
        v["axis"].as_str().unwrap().contains(':'),
        "a time axis: {v}"
    );
    assert_eq!(
        (v["rollback"].clone(), v["resume"].clone()),
        (json!(true), json!(false))
    );

    let shot = page
        .driver
        .call("GET", &page.at("/screenshot"), None)
        .await
        .unwrap();
    let png = base64_decode(shot.as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "a screenshot");
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target"));
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard.png"),
        &png,
    );

    // Resume through its button: a confirmation, then the token asked for once.
    page.js("window.confirm = () => true; window.prompt = (q) => q.startsWith('Admin') ? 'tok' : 'rolled back from the browser'; return true;")
        .await;
    page.click("resume").await;
    let state = "return document.getElementById('state').dataset.state;";
    page.until(state, json!("active"), "resumed").await;
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "active"
    );
    page.until(
        "return document.querySelectorAll('svg.chart line.mark[data-event=resumed]').length > 0;",
        json!(true),
        "the resume marked",
    )
    .await;
    // And roll back again through its own, with the reason asked for.
    page.click("rollback").await;
    page.until(state, json!("rolled_back"), "rolled back from the page")
        .await;
    let status = admin_json(&proxy, "/canary/status").await;
    assert_eq!(
        status["last_rollback"]["reason"],
        "rolled back from the browser"
    );
    let events = admin_json(&proxy, "/canary/events").await;
    assert_eq!(events["events"][0]["event"], "rolled_back");
    assert!(events["events"][0]["caller"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_ramp_in_words_and_its_buttons_promote_and_pause() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.rollback = "evaluate_every = \"100ms\"\nmin_requests = 20\nmax_error_rate = 20.0\nlatency_stat = \"p90\"".into();
    cfg.rollout = Some("steps = [10, 50, 100]\nbake = \"300ms\"\nmax_bake = \"1m\"\npromote_risk = 0.1\nauto = false".into());
    let proxy = Arc::new(cfg.start().await);
    let page = Page::open(&proxy.admin_url("/")).await;
    // Before any traffic the gate is shut and says what it needs.
    page.until(
        "return document.getElementById('rollout').hidden;",
        json!(false),
        "the ramp is shown",
    )
    .await;
    let steps = page
        .js("return document.getElementById('steps').textContent;")
        .await;
    assert_eq!(steps, "10 %50 %100 %");
    assert_eq!(
        page.js("return document.getElementById('continue').disabled;")
            .await,
        true
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let until = Instant::now() + Duration::from_secs(60);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || Instant::now() > until {
                    break;
                }
                get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
            }
        })
    };
    page.until(
        "return document.getElementById('state').dataset.state;",
        json!("ready"),
        "ready",
    )
    .await;
    let words = page
        .js("return document.getElementById('gate').textContent;")
        .await;
    let words = words.as_str().unwrap();
    assert!(
        words.contains("error rate: evidence") && words.contains("passes"),
        "{words}"
    );
    let shot = page
        .driver
        .call("GET", &page.at("/screenshot"), None)
        .await
        .unwrap();
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard-rollout.png"),
        base64_decode(shot.as_str().unwrap()),
    );
    // Promote through the button: one step, and the page follows.
    page.js("window.prompt = () => 'from the browser'; window.confirm = () => true; return true;")
        .await;
    page.click("promote").await;
    page.until(
        "return document.querySelector('#steps .now').textContent;",
        json!("50 %"),
        "step 2 shown",
    )
    .await;
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["rollout"]["step"],
        1
    );
    // Pause, then continue, through the buttons.
    page.click("pause").await;
    page.until(
        "return document.getElementById('state').dataset.state;",
        json!("holding"),
        "paused",
    )
    .await;
    let hold = page
        .js("return document.getElementById('hold').textContent;")
        .await;
    assert!(
        hold.as_str().unwrap().contains("from the browser"),
        "{hold}"
    );
    page.click("continue").await;
    let state = page.js("return new Promise(r => setTimeout(() => r(document.getElementById('state').dataset.state), 1500));").await;
    assert_ne!(state, "holding");
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
}
