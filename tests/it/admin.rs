//! The admin port: auth on mutating calls, 405 with Allow, 400 on bad JSON, 409 on calls that
//! do not fit the state, `/canary/metrics` with every field and true counts, reset, and a
//! Prometheus exposition that a real parser (promtool) accepts and whose counters are true.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

async fn token_proxy() -> (TestProxy, Upstream, Upstream) {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.token = "s3cret".into();
    cfg.rollback = "evaluate_every = \"100ms\"".into();
    (cfg.start().await, s, k)
}

#[tokio::test]
async fn mutating_calls_need_the_token_and_reads_do_not() {
    let (proxy, _s, _k) = token_proxy().await;
    for path in [
        "/canary/status",
        "/canary/metrics",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert_eq!(
            get(&client(), &proxy.admin_url(path), &[]).await.status,
            200,
            "{path}"
        );
    }
    for path in [
        "/canary/rollback",
        "/canary/resume",
        "/canary/metrics/reset",
        "/canary/reload",
    ] {
        let none = admin_post(proxy.admin, path, None, "").await;
        assert_eq!(none.status, 401, "{path} without a token");
        assert!(none.body.contains("error"));
        assert_eq!(
            admin_post(proxy.admin, path, Some("wrong"), "")
                .await
                .status,
            401,
            "{path} with a wrong token"
        );
    }
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "active",
        "nothing changed"
    );
    let ok = admin_post(proxy.admin, "/canary/metrics/reset", Some("s3cret"), "").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    proxy.stop().await;
}

#[tokio::test]
async fn protect_reads_asks_the_token_of_every_read_but_the_probes_and_the_page() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.token = "s3cret".into();
    let toml = cfg.toml().replace(
        "token = \"s3cret\"",
        "token = \"s3cret\"\nprotect_reads = true",
    );
    let proxy = start_proxy(&toml).await;
    for path in ["/canary/status", "/canary/metrics", "/metrics"] {
        let url = proxy.admin_url(path);
        assert_eq!(get(&client(), &url, &[]).await.status, 401, "{path}");
        let with = [("authorization", "Bearer s3cret")];
        assert_eq!(get(&client(), &url, &with).await.status, 200, "{path}");
    }
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(
            get(&client(), &proxy.admin_url(path), &[]).await.status,
            200,
            "{path}"
        );
    }
    proxy.stop().await;
    // Protecting reads with no token to protect them with is refused.
    let mut open = Cfg::new(&s, &k);
    open.extra = String::new();
    let toml = open
        .toml()
        .replace("token = \"\"", "token = \"\"\nprotect_reads = true");
    let e = canary_proxy::config::Config::from_toml_str(
        &toml,
        "c.toml",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(e.key, "admin.protect_reads");
}

#[tokio::test]
async fn wrong_methods_bad_json_and_conflicts() {
    let (proxy, _s, k) = token_proxy().await;
    let c = client();
    let got = get(&c, &proxy.admin_url("/canary/rollback"), &[]).await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("POST"));
    let got = admin_post(proxy.admin, "/canary/status", Some("s3cret"), "").await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("GET"));
    for body in ["{not json", "[1, 2]", "\"text\""] {
        let got = admin_post(proxy.admin, "/canary/rollback", Some("s3cret"), body).await;
        assert_eq!(got.status, 400, "{body}");
        let v: Value = serde_json::from_str(&got.body).unwrap();
        assert!(v["error"].is_string());
    }
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "active",
        "a refused call changed nothing"
    );
    assert_eq!(get(&c, &proxy.admin_url("/nope"), &[]).await.status, 404);

    let got = admin_post(
        proxy.admin,
        "/canary/rollback",
        Some("s3cret"),
        r#"{"reason": "bad deploy"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["state"], "rolled_back");
    assert_eq!(v["before"], "active");
    assert_eq!(v["last_rollback"]["trigger"], "manual");
    assert_eq!(v["last_rollback"]["reason"], "bad deploy");
    assert!(humantime::parse_rfc3339(v["last_rollback"]["at"].as_str().unwrap()).is_ok());
    assert_eq!(
        admin_post(proxy.admin, "/canary/rollback", Some("s3cret"), "")
            .await
            .status,
        409
    );
    for i in 0..50 {
        assert_eq!(
            get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))])
                .await
                .header("x-upstream"),
            Some("stable")
        );
    }
    let before = k.count();
    let got = admin_post(proxy.admin, "/canary/resume", Some("s3cret"), "{}").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "active"
    );
    assert_eq!(
        admin_post(proxy.admin, "/canary/resume", Some("s3cret"), "")
            .await
            .status,
        409
    );
    drive(&proxy, 50, 2, "again", "/").await;
    assert!(k.count() > before, "resume re-armed the canary");
    // Started without a file, a reload has nothing to read.
    assert_eq!(
        admin_post(proxy.admin, "/canary/reload", Some("s3cret"), "")
            .await
            .status,
        422
    );
    let m = get(&c, &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains("canary_rollbacks_total{trigger=\"manual\"} 1"),
        "{m}"
    );
    proxy.stop().await;
}

fn count(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_metrics_and_prometheus_count_what_was_sent() {
    let s = spawn_upstream("stable").await;
    let k = spawn_upstream_with(
        "canary",
        Behavior {
            fail_every: 10,
            ..Default::default()
        },
    )
    .await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.rollback = "evaluate_every = \"100ms\"\nmin_requests = 100000".into();
    let proxy = cfg.start().await;
    let sent = drive(&proxy, 400, 4, "m", "/").await;
    let canary = sent.iter().filter(|(_, c)| c == "canary").count() as u64;
    let canary_errors = sent
        .iter()
        .filter(|(s, c)| c == "canary" && *s == 500)
        .count() as u64;
    let stable = sent.len() as u64 - canary;
    assert!(canary_errors > 0);
    tokio::time::sleep(Duration::from_millis(350)).await;

    let m = admin_json(&proxy, "/canary/metrics").await;
    for (field, kind) in [
        ("canary_requests", "u"),
        ("canary_errors", "u"),
        ("canary_error_rate", "f"),
        ("canary_avg_latency", "f"),
        ("canary_p50_latency", "f"),
        ("canary_p99_latency", "f"),
        ("stable_requests", "u"),
        ("stable_errors", "u"),
        ("stable_error_rate", "f"),
        ("stable_avg_latency", "f"),
        ("stable_p50_latency", "f"),
        ("stable_p99_latency", "f"),
        ("window_start", "s"),
        ("window_duration", "s"),
        ("canary_active", "b"),
        ("canary_version", "s"),
        ("stable_version", "s"),
        ("traffic_percent", "f"),
        ("evidence", "o"),
    ] {
        let v = &m[field];
        let ok = match kind {
            "u" => v.is_u64(),
            "f" => v.is_number(),
            "s" => v.is_string(),
            "b" => v.is_boolean(),
            _ => v.is_object(),
        };
        assert!(ok, "{field} is {v}");
    }
    assert_eq!(m["canary_requests"], canary);
    assert_eq!(m["canary_errors"], canary_errors);
    assert_eq!(m["stable_requests"], stable);
    assert_eq!(m["stable_errors"], 0);
    let rate = m["canary_error_rate"].as_f64().unwrap();
    assert!(
        (rate - canary_errors as f64 * 100.0 / canary as f64).abs() < 1e-3,
        "{rate}"
    );
    assert_eq!(m["window_duration"], "5m0s");
    assert!(humantime::parse_rfc3339(m["window_start"].as_str().unwrap()).is_ok());
    for t in ["error_rate", "relative_error", "latency"] {
        for f in [
            "cumulative",
            "window",
            "threshold_cumulative",
            "threshold_window",
        ] {
            assert!(m["evidence"][t][f].is_number(), "evidence.{t}.{f}");
        }
    }
    assert_eq!(
        m["evidence"]["relative_error"]["threshold_cumulative"]
            .as_f64()
            .unwrap(),
        7.888585
    );

    // Prometheus: a real parser accepts it, and the counters are what was sent.
    let text = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; scripts/test.sh installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let complaints =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !complaints.contains("error"),
        "promtool: {complaints}"
    );
    assert_eq!(
        count(
            &text,
            r#"canary_requests_total{cohort="canary",version="v1.2.0-canary"}"#
        ),
        canary as f64
    );
    assert_eq!(
        count(
            &text,
            r#"canary_requests_total{cohort="stable",version="v1.1.0"}"#
        ),
        stable as f64
    );
    assert_eq!(
        count(
            &text,
            r#"canary_errors_total{cohort="canary",version="v1.2.0-canary"}"#
        ),
        canary_errors as f64
    );
    assert_eq!(
        count(
            &text,
            r#"canary_latency_seconds_count{cohort="canary",version="v1.2.0-canary"}"#
        ),
        canary as f64
    );
    assert_eq!(count(&text, "canary_active"), 1.0);
    assert_eq!(count(&text, "canary_traffic_percent"), 50.0);
    assert!(
        (count(
            &text,
            r#"canary_judge_threshold{scope="cumulative",trigger="relative_error"}"#
        ) - 7.8886)
            .abs()
            < 1e-3
    );
    count(
        &text,
        r#"canary_judge_evidence{scope="window",trigger="error_rate"}"#,
    );

    // Reset zeroes the window.
    assert_eq!(
        admin_post(proxy.admin, "/canary/metrics/reset", None, "")
            .await
            .status,
        200
    );
    let m = admin_json(&proxy, "/canary/metrics").await;
    assert_eq!(
        (
            m["canary_requests"].as_u64(),
            m["stable_requests"].as_u64(),
            m["canary_errors"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(m["evidence"]["error_rate"]["cumulative"], 0.0);
    proxy.stop().await;
}
