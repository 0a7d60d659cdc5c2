//! The latch across restarts, with the real binary: roll back, SIGKILL, start again — still
//! all-stable and the status says why; a new canary version starts fresh; resume re-arms.
//! Reload through the admin port: a valid file is applied, an invalid one refused.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn write_config(path: &Path, s: &Upstream, k: &Upstream, version: &str, percent: f64) {
    let mut cfg = Cfg::new(s, k);
    cfg.percent = percent;
    cfg.rollback = "evaluate_every = \"100ms\"".into();
    let toml = cfg
        .toml()
        .replace("v1.2.0-canary", version)
        .replace("[state]", "");
    std::fs::write(path, format!("{toml}\n[state]\npath = \"latch.json\"\n")).unwrap();
}

async fn status(b: &Binary) -> Value {
    let got = get(&client(), &format!("http://{}/canary/status", b.admin), &[]).await;
    assert_eq!(got.status, 200);
    serde_json::from_str(&got.body).unwrap()
}

async fn cohorts(b: &Binary, n: usize) -> Vec<String> {
    let c = client();
    let mut out = Vec::new();
    for i in 0..n {
        let got = get(&c, &b.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
        assert_eq!(got.status, 200);
        out.push(got.header("x-upstream").unwrap().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latch_survives_sigkill_until_a_new_version_or_a_resume() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, &s, &k, "v2", 50.0);

    let mut proxy = spawn_binary(&config, &[]);
    assert!(cohorts(&proxy, 40).await.contains(&"canary".to_string()));
    let got = admin_post(
        proxy.admin,
        "/canary/rollback",
        None,
        r#"{"reason": "checkout broken"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("latch.json")).unwrap())
            .unwrap();
    assert_eq!(state["rolled_back"], true);
    assert_eq!(state["canary_version"], "v2");
    proxy.child.kill().unwrap(); // SIGKILL: no chance to flush anything more
    proxy.child.wait().unwrap();

    let proxy = spawn_binary(&config, &[]);
    let st = status(&proxy).await;
    assert_eq!(st["state"], "rolled_back", "{st}");
    assert_eq!(st["last_rollback"]["reason"], "checkout broken");
    assert_eq!(st["last_rollback"]["trigger"], "manual");
    assert!(cohorts(&proxy, 40).await.iter().all(|c| c == "stable"));
    let m = get(&client(), &format!("http://{}/metrics", proxy.admin), &[])
        .await
        .body;
    assert!(m.contains("canary_active 0"), "{m}");
    assert!(proxy.logs().contains("rolled back"), "{}", proxy.logs());
    drop(proxy);

    // A new build: the latch is for v2 only.
    write_config(&config, &s, &k, "v3", 50.0);
    let proxy = spawn_binary(&config, &[]);
    assert_eq!(status(&proxy).await["state"], "active");
    assert!(cohorts(&proxy, 40).await.contains(&"canary".to_string()));
    // Roll v3 back, then resume it: re-armed, and the file says so.
    post_ok(proxy.admin, "/canary/rollback").await;
    post_ok(proxy.admin, "/canary/resume").await;
    assert_eq!(status(&proxy).await["state"], "active");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("latch.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            state["rolled_back"].as_bool(),
            state["canary_version"].as_str()
        ),
        (Some(false), Some("v3"))
    );
    drop(proxy);
    let proxy = spawn_binary(&config, &[]);
    assert_eq!(
        status(&proxy).await["state"],
        "active",
        "a resumed canary stays resumed across a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_stops_start_up_naming_it() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, &s, &k, "v2", 50.0);
    std::fs::write(dir.path().join("latch.json"), "{\"rolled_back\": tr").unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("latch.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_valid_file_and_refuses_an_invalid_one() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, &s, &k, "v2", 0.0);
    let proxy = spawn_binary(&config, &[]);
    assert!(cohorts(&proxy, 30).await.iter().all(|c| c == "stable"));

    write_config(&config, &s, &k, "v2", 100.0);
    let got = admin_post(proxy.admin, "/canary/reload", None, "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(cohorts(&proxy, 30).await.iter().all(|c| c == "canary"));

    write_config(&config, &s, &k, "v2", 500.0);
    let got = admin_post(proxy.admin, "/canary/reload", None, "").await;
    assert_eq!(got.status, 422, "{}", got.body);
    let v: Value = serde_json::from_str(&got.body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("traffic_percent"),
        "{v}"
    );
    assert!(
        cohorts(&proxy, 30).await.iter().all(|c| c == "canary"),
        "the old config keeps serving"
    );
    // Both are told and counted: the refusal with its reason, the reload with what changed.
    let got = get(
        &client(),
        &format!("http://{}/canary/events", proxy.admin),
        &[],
    )
    .await;
    let events: Value = serde_json::from_str(&got.body).unwrap();
    let (refused, reloaded) = (&events["events"][0], &events["events"][1]);
    assert_eq!(refused["event"], "reload_refused", "{events}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("traffic_percent"),
        "{refused}"
    );
    assert_eq!(reloaded["event"], "reloaded", "{events}");
    assert_eq!(reloaded["reason"], "the canary's share 0% -> 100%");
    let m = get(&client(), &format!("http://{}/metrics", proxy.admin), &[])
        .await
        .body;
    assert!(m.contains("canary_reloads_total{result=\"ok\"} 1"), "{m}");
    assert!(
        m.contains("canary_reloads_total{result=\"refused\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("canary_info{canary_version=\"v2\",stable_version="),
        "{m}"
    );

    // What is fixed at start (the threads, the fleet) is refused with a reason, not ignored.
    write_config(&config, &s, &k, "v2", 100.0);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("workers = 2", "workers = 3")).unwrap();
    let got = admin_post(proxy.admin, "/canary/reload", None, "").await;
    assert_eq!(got.status, 422, "{}", got.body);
    assert!(
        got.body.contains("proxy.workers cannot change on reload"),
        "{}",
        got.body
    );

    // The latch survives a reload of the same version, and a new version clears it.
    write_config(&config, &s, &k, "v2", 100.0);
    post_ok(proxy.admin, "/canary/rollback").await;
    post_ok(proxy.admin, "/canary/reload").await;
    assert_eq!(status(&proxy).await["state"], "rolled_back");
    write_config(&config, &s, &k, "v4", 100.0);
    post_ok(proxy.admin, "/canary/reload").await;
    let st = status(&proxy).await;
    assert_eq!(
        (st["state"].as_str(), st["canary_version"].as_str()),
        (Some("active"), Some("v4"))
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(proxy.logs().contains("reload refused"), "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_window_unless_the_canary_version_changes() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, &s, &k, "v2", 50.0);
    let proxy = spawn_binary(&config, &[]);
    cohorts(&proxy, 60).await;
    let metrics = |b: &Binary| {
        let url = format!("http://{}/canary/metrics", b.admin);
        async move { serde_json::from_str::<Value>(&get(&client(), &url, &[]).await.body).unwrap() }
    };
    // Wait for the slices to close, so the window holds the 60 requests.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while metrics(&proxy).await["stable_requests"].as_u64().unwrap()
        + metrics(&proxy).await["canary_requests"].as_u64().unwrap()
        < 60
    {
        assert!(std::time::Instant::now() < until, "the window never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Same version, new percent: the window stays.
    write_config(&config, &s, &k, "v2", 60.0);
    post_ok(proxy.admin, "/canary/reload").await;
    let m = metrics(&proxy).await;
    assert_eq!(
        m["stable_requests"].as_u64().unwrap() + m["canary_requests"].as_u64().unwrap(),
        60,
        "{m}"
    );
    assert_eq!(m["traffic_percent"], 60.0);
    // A new version: a new judgement, an empty window.
    write_config(&config, &s, &k, "v3", 60.0);
    post_ok(proxy.admin, "/canary/reload").await;
    let m = metrics(&proxy).await;
    assert_eq!(
        (m["stable_requests"].as_u64(), m["canary_requests"].as_u64()),
        (Some(0), Some(0)),
        "{m}"
    );
    assert_eq!(m["canary_version"], "v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_folder_that_cannot_be_written_is_refused_at_start_and_a_later_failed_write_keeps_the_swap(
) {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, &s, &k, "v2", 100.0);
    // A folder that cannot be made (a file is in the way; root ignores permission bits).
    let text = std::fs::read_to_string(&config).unwrap();
    let blocked = text.replace("path = \"latch.json\"", "path = \"state/latch.json\"");
    std::fs::write(&config, &blocked).unwrap();
    std::fs::write(dir.path().join("state"), "not a folder").unwrap();
    for cmd in ["check", "run"] {
        let out = std::process::Command::new(bin())
            .args([cmd, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("state.path") && err.contains("state/latch.json"),
            "{cmd}: {err}"
        );
    }

    // Writable at start, then the folder goes away under the proxy (a full or lost disk).
    std::fs::remove_file(dir.path().join("state")).unwrap();
    let proxy = spawn_binary(&config, &[]);
    assert_eq!(status(&proxy).await["persisted"], true);
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state"), "not a folder").unwrap();
    let got = admin_post(proxy.admin, "/canary/rollback", None, "").await;
    assert_eq!(got.status, 200, "the rollback stands: {}", got.body);
    let v: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["persisted"].as_bool()),
        (Some("rolled_back"), Some(false))
    );
    assert!(
        cohorts(&proxy, 20).await.iter().all(|c| c == "stable"),
        "the swap holds"
    );
    assert_eq!(status(&proxy).await["persisted"], false);
    assert!(
        proxy.logs().contains("could not be written"),
        "{}",
        proxy.logs()
    );
    // Once a write succeeds again, the status says so.
    std::fs::remove_file(dir.path().join("state")).unwrap();
    post_ok(proxy.admin, "/canary/resume").await;
    assert_eq!(status(&proxy).await["persisted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_when_the_environment_masks_the_files_edit() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, &s, &k, "v2", 5.0);
    let proxy = spawn_binary(&config, &[("CANARY_TRAFFIC_PERCENT", "0")]);
    write_config(&config, &s, &k, "v2", 25.0);
    post_ok(proxy.admin, "/canary/reload").await;
    assert_eq!(
        status(&proxy).await["traffic_percent"],
        0.0,
        "the variable wins"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = proxy.logs();
    assert!(
        logs.contains("CANARY_TRAFFIC_PERCENT overrides canary.traffic_percent: the file's 25.0 is not in force, 0.0 is"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_for_machines_no_colours_no_debug_text_no_warning_at_a_default_start() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    write_config(&config, &s, &k, "v2", 50.0);
    let proxy = spawn_binary(&config, &[]);
    post_ok(proxy.admin, "/canary/rollback").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = proxy.logs();
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI colours into a pipe:\n{logs}"
    );
    assert!(
        !logs.contains("Some("),
        "Rust debug text in a field:\n{logs}"
    );
    assert!(logs.contains("caller=127.0.0.1:"), "{logs}");
    let start: Vec<&str> = logs
        .lines()
        .take_while(|l| !l.contains("canary-proxy serving"))
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert!(start.is_empty(), "a default start warns: {start:?}");
}
