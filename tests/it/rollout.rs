//! The rollout against the real binary: a healthy canary ramps to `complete` with the observed
//! share following each step; `auto = false` stops at `ready`; pause, continue and promote
//! (forced, audited); `max_bake` holds with a reason; a canary that turns bad mid-ramp is
//! rolled back and a resume starts again at the first step; the step survives a restart; an
//! invalid `[rollout]` on reload is refused; `canary-proxy wait` exits 0, 1 and 3.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Limits a few hundred requests can prove or break: p90 and 20 % errors, a risk of 0.1.
const ROLLBACK: &str = r#"evaluate_every = "100ms"
window = "10s"
min_requests = 20
max_error_rate = 20.0
latency_stat = "p90"
"#;

fn write_config(path: &Path, s: &Upstream, k: &Upstream, rollout: &str) {
    let mut cfg = Cfg::new(s, k);
    cfg.rollback = ROLLBACK.into();
    cfg.rollout = Some(rollout.into());
    let toml = cfg.toml().replace("[state]", "");
    std::fs::write(path, format!("{toml}\n[state]\npath = \"state.json\"\n")).unwrap();
}

/// The binary on a config with this `[rollout]`, in a folder of its own.
fn start(s: &Upstream, k: &Upstream, rollout: &str) -> (Binary, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, s, k, rollout);
    (spawn_binary(&config, &[]), config, dir)
}

async fn status(b: &Binary) -> Value {
    let got = get(&client(), &format!("http://{}/canary/status", b.admin), &[]).await;
    serde_json::from_str(&got.body).unwrap()
}

/// Polls the status until `done` holds (or fails naming what it last saw).
async fn until(b: &Binary, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(b).await;
        if done(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "never {what}: {st:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Background traffic from 3,000 identities in turn, until dropped.
struct Traffic(tokio::task::JoinHandle<()>);

impl Traffic {
    fn start(b: &Binary) -> Self {
        let url = b.url("/");
        Traffic(tokio::spawn(async move {
            let c = client();
            for i in 0u64.. {
                let id = format!("u{}", i % 3000);
                let _ = get(&c, &url, &[("x-user-id", &id)]).await;
            }
        }))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The share of 400 fresh identities the proxy sends to the canary.
async fn observed_share(b: &Binary, tag: &str) -> f64 {
    let c = client();
    let mut canary = 0;
    for i in 0..400 {
        let id = format!("{tag}-{i}");
        let got = get(&c, &b.url("/"), &[("x-user-id", &id)]).await;
        canary += (got.header("x-deployment-cohort") == Some("canary")) as u32;
    }
    canary as f64 / 4.0
}

fn wait_cli(b: &Binary, timeout: &str) -> tokio::task::JoinHandle<(i32, String)> {
    let admin = format!("http://{}", b.admin);
    let timeout = timeout.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin())
            .args(["wait", "--admin", &admin, "--timeout", &timeout])
            .env_remove("CANARY_ADMIN_TOKEN")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_ramps_to_complete_and_the_share_follows_each_step() {
    let (s, k) = upstreams().await;
    let (proxy, _config, _dir) = start(
        &s,
        &k,
        "steps = [10, 50, 100]\nbake = \"2s\"\nmax_bake = \"1m\"\npromote_risk = 0.1",
    );
    let wait = wait_cli(&proxy, "60s");
    let st = status(&proxy).await;
    assert_eq!(st["state"], "ramping", "{st:#}");
    assert_eq!(st["rollout"]["step"], 0);
    assert_eq!(st["traffic_percent"], 10.0);
    let share = observed_share(&proxy, "a").await;
    assert!((4.0..=16.0).contains(&share), "step 0 at 10 %: {share} %");
    let _traffic = Traffic::start(&proxy);
    let st = until(&proxy, 30, "at step 1", |v| v["rollout"]["step"] == 1).await;
    assert_eq!(st["traffic_percent"], 50.0);
    let share = observed_share(&proxy, "b").await;
    assert!((42.0..=58.0).contains(&share), "step 1 at 50 %: {share} %");
    let st = until(&proxy, 30, "complete", |v| v["state"] == "complete").await;
    assert_eq!(st["rollout"]["step"], 2, "{st:#}");
    assert_eq!(st["traffic_percent"], 100.0);
    assert_eq!(observed_share(&proxy, "c").await, 100.0);
    for test in ["error_rate", "latency", "relative_error"] {
        assert_eq!(
            st["rollout"]["gate"][test]["passes"], true,
            "{test}: {st:#}"
        );
    }
    let (code, out) = wait.await.unwrap();
    assert_eq!(code, 0, "wait exits 0 on complete: {out}");
    assert!(out.contains("complete"), "{out}");
    let metrics = get(&client(), &format!("http://{}/metrics", proxy.admin), &[])
        .await
        .body;
    assert!(metrics.contains("canary_rollout_step 2"), "{metrics}");
    assert!(metrics.contains("canary_rollout_state{state=\"complete\"} 1"));
    assert!(metrics.contains("canary_promote_evidence{test=\"floor\"}"));
    assert!(metrics.contains("canary_traffic_percent 100"));
    assert!(
        proxy.logs().contains("rollout step advanced"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_a_step_waits_at_ready_and_pause_promote_and_restart_keep_the_step() {
    let (s, k) = upstreams().await;
    let rollout = "steps = [10, 50, 100]\nbake = \"300ms\"\nmax_bake = \"1m\"\npromote_risk = 0.1\nauto = false";
    let (mut proxy, config, dir) = start(&s, &k, rollout);

    // At the start of a step the gate is shut: promoting needs force, and says so.
    let got = admin_post(proxy.admin, "/canary/promote", None, "").await;
    assert_eq!(got.status, 409, "{}", got.body);
    assert!(got.body.contains("force"), "{}", got.body);

    let traffic = Traffic::start(&proxy);
    let st = until(&proxy, 30, "ready", |v| v["state"] == "ready").await;
    assert_eq!(
        st["rollout"]["step"], 0,
        "auto = false never advances by itself"
    );
    assert_eq!(st["rollout"]["ready"], true);

    // Pause holds with who and why; continue clears it; the gate stays open.
    let got = admin_post(proxy.admin, "/canary/pause", None, r#"{"reason": "lunch"}"#).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["state"], "holding");
    let why = v["rollout"]["hold_reason"].as_str().unwrap();
    assert!(
        why.contains("paused by 127.0.0.1") && why.contains("lunch"),
        "{why}"
    );
    let got = admin_post(proxy.admin, "/canary/continue", None, "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(status(&proxy).await["state"], "ready");
    let got = admin_post(proxy.admin, "/canary/continue", None, "").await;
    assert_eq!(got.status, 409, "nothing to continue: {}", got.body);

    // Promote from ready: one step, the share follows.
    let out = std::process::Command::new(bin())
        .args(["promote", "--reason", "looks good", "--admin"])
        .arg(format!("http://{}", proxy.admin))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status(&proxy).await;
    assert_eq!(
        (
            st["rollout"]["step"].as_u64(),
            st["traffic_percent"].as_f64()
        ),
        (Some(1), Some(50.0))
    );
    drop(traffic);

    // A forced promotion through the shut gate of the new step is audited as forced.
    let got = admin_post(
        proxy.admin,
        "/canary/promote",
        None,
        r#"{"force": true, "reason": "hotfix"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(status(&proxy).await["rollout"]["step"], 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = proxy.logs();
    assert!(
        logs.lines().any(|l| l.contains("admin call")
            && l.contains("promote")
            && l.contains("forced=true")
            && l.contains("hotfix")),
        "{logs}"
    );
    let since = status(&proxy).await["rollout"]["since"].clone();

    // The step survives a restart, with when it began.
    proxy.signal("TERM");
    let _ = tokio::task::spawn_blocking(move || {
        let _ = proxy.child.wait();
        proxy
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(text.contains("\"step\": 2"), "{text}");
    let proxy = spawn_binary(&config, &[]);
    let st = status(&proxy).await;
    assert_eq!(st["rollout"]["step"], 2, "{st:#}");
    assert_eq!(st["traffic_percent"], 100.0);
    assert_eq!(st["rollout"]["since"], since);

    // An invalid [rollout] on reload is refused; the schedule keeps running.
    write_config(&config, &s, &k, "steps = [50, 10]");
    let got = admin_post(proxy.admin, "/canary/reload", None, "").await;
    assert_eq!(got.status, 422, "{}", got.body);
    assert!(got.body.contains("rollout.steps[1]"), "{}", got.body);
    assert_eq!(status(&proxy).await["rollout"]["step"], 2);

    // A reload with new steps never raises the share: 100 % is not a step, 60 is below it.
    write_config(
        &config,
        &s,
        &k,
        "steps = [20, 60]\nbake = \"1h\"\nmax_bake = \"2h\"",
    );
    post_ok(proxy.admin, "/canary/reload").await;
    let st = status(&proxy).await;
    assert_eq!(
        (
            st["rollout"]["step"].as_u64(),
            st["traffic_percent"].as_f64()
        ),
        (Some(1), Some(60.0)),
        "{st:#}"
    );

    // A new canary version is a new rollout, at the first step.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("v1.2.0-canary", "v1.3.0")).unwrap();
    post_ok(proxy.admin, "/canary/reload").await;
    let st = status(&proxy).await;
    assert_eq!(
        (
            st["rollout"]["step"].as_u64(),
            st["traffic_percent"].as_f64(),
            st["state"].as_str()
        ),
        (Some(0), Some(20.0), Some("ramping")),
        "{st:#}"
    );

    // Promoting the last step completes the rollout at that step's share; nothing is left.
    for want in [(1, "ramping"), (1, "complete")] {
        let got = admin_post(proxy.admin, "/canary/promote", None, r#"{"force": true}"#).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let st = status(&proxy).await;
        assert_eq!(
            (st["rollout"]["step"].as_u64(), st["state"].as_str()),
            (Some(want.0), Some(want.1)),
            "{st:#}"
        );
        assert_eq!(st["traffic_percent"], 60.0);
    }
    let got = admin_post(proxy.admin, "/canary/promote", None, r#"{"force": true}"#).await;
    assert_eq!(
        got.status, 409,
        "a completed rollout has no step to promote: {}",
        got.body
    );
    let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(text.contains("\"complete\": true"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_max_bake_holds_with_the_reason_and_wait_exits_3() {
    let (s, k) = upstreams().await;
    let (proxy, _config, _dir) = start(
        &s,
        &k,
        "steps = [10, 100]\nbake = \"500ms\"\nmax_bake = \"1s\"",
    );
    let wait = wait_cli(&proxy, "30s");
    // No traffic: the gate can never open, so the step holds instead of advancing blind.
    let st = until(&proxy, 10, "holding", |v| v["state"] == "holding").await;
    let why = st["rollout"]["hold_reason"].as_str().unwrap();
    assert!(
        why.contains("max_bake 1s passed") && why.contains("min_requests needs 20 more"),
        "{why}"
    );
    assert_eq!(st["rollout"]["step"], 0);
    let (code, out) = wait.await.unwrap();
    assert_eq!(code, 3, "wait exits 3 on holding: {out}");
    assert!(out.contains("max_bake"), "{out}");
    // Continue gives the step another max_bake: ramping again, not advanced.
    let got = admin_post(proxy.admin, "/canary/continue", None, "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["rollout"]["step"].as_u64()),
        (Some("ramping"), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_turns_bad_mid_ramp_is_rolled_back_and_resume_starts_at_the_first_step() {
    let bad = Arc::new(AtomicBool::new(false));
    let s = spawn_upstream("stable").await;
    let k = spawn_upstream_with(
        "canary",
        Behavior {
            fail_switch: Some(bad.clone()),
            ..Default::default()
        },
    )
    .await;
    let (proxy, _config, _dir) = start(
        &s,
        &k,
        "steps = [10, 50, 100]\nbake = \"300ms\"\nmax_bake = \"1m\"\npromote_risk = 0.1",
    );
    let wait = wait_cli(&proxy, "60s");
    let _traffic = Traffic::start(&proxy);
    until(&proxy, 30, "at step 1", |v| v["rollout"]["step"] == 1).await;
    bad.store(true, Ordering::Relaxed);
    let st = until(&proxy, 30, "rolled back", |v| v["state"] == "rolled_back").await;
    let trigger = st["last_rollback"]["trigger"].as_str().unwrap();
    assert!(
        ["error_rate", "relative_error"].contains(&trigger),
        "{st:#}"
    );
    assert_eq!(observed_share(&proxy, "r").await, 0.0);
    let (code, out) = wait.await.unwrap();
    assert_eq!(code, 1, "wait exits 1 on a rollback: {out}");
    bad.store(false, Ordering::Relaxed);
    let got = admin_post(proxy.admin, "/canary/resume", None, "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["state"], "ramping", "{v:#}");
    assert_eq!(
        (v["rollout"]["step"].as_u64(), v["traffic_percent"].as_f64()),
        (Some(0), Some(10.0))
    );
}
