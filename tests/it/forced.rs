//! Testers' forced cohort through the real proxy: `x-canary: always` with the token reaches the
//! canary at 0 %, without it the hash decides (and the refusal is counted); forced failures
//! never roll back; after a rollback `always` goes to stable unless allowed; the access log
//! marks forced requests.

use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "tester-token-1";

fn toml(s: &Upstream, k: &Upstream, percent: f64, extra_canary: &str, log: &str) -> String {
    let mut cfg = Cfg::new(s, k);
    cfg.percent = percent;
    cfg.rollback = "evaluate_every = \"100ms\"\nmin_requests = 20".into();
    cfg.toml()
        .replace(
            "expose_headers",
            &format!("override_header = \"x-canary\"\noverride_token = \"{TOKEN}\"\n{extra_canary}\nexpose_headers"),
        )
        .replace("trusted_proxies = [", &format!("access_log = {log:?}\ntrusted_proxies = ["))
}

async fn cohort_of(proxy: &TestProxy, id: &str, headers: &[(&str, &str)]) -> String {
    let mut h = vec![("x-user-id", id)];
    h.extend_from_slice(headers);
    let got = get(&client(), &proxy.url("/"), &h).await;
    got.header("x-deployment-cohort").unwrap_or("?").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tester_with_the_token_reaches_the_canary_and_nobody_else_can() {
    let s = spawn_upstream("stable").await;
    let k = spawn_upstream_with(
        "canary",
        Behavior {
            fail_every: 1,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = start_proxy(&toml(&s, &k, 0.0, "", &log.display().to_string())).await;
    let always = [("x-canary", "always"), ("x-canary-token", TOKEN)];
    assert_eq!(cohort_of(&proxy, "t1", &always).await, "canary");
    assert_eq!(
        cohort_of(&proxy, "t1", &[("x-canary", "always")]).await,
        "stable"
    );
    let wrong = [("x-canary", "always"), ("x-canary-token", "guess")];
    assert_eq!(cohort_of(&proxy, "t1", &wrong).await, "stable");
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(m.contains("canary_override_refused_total 2"), "{m}");

    // The canary fails every request, but testers are not users: no evidence, no rollback.
    for i in 0..200 {
        let got = get(
            &client(),
            &proxy.url("/"),
            &[("x-user-id", &format!("t{i}")), always[0], always[1]],
        )
        .await;
        assert_eq!(got.status, 500);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let w = admin_json(&proxy, "/canary/metrics").await;
    assert_eq!(
        w["canary_requests"], 0,
        "forced requests are never judged: {w}"
    );
    assert_eq!(w["canary_forced_requests"], 201, "{w}");
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "disabled"
    );
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains("canary_forced_requests_total{cohort=\"canary\",version=\"v1.2.0-canary\"} 201"),
        "{m}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let forced = lines
        .lines()
        .filter(|l| l.contains("\"forced\":true"))
        .count();
    assert_eq!(forced, 201, "{lines}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rollback_always_goes_to_stable_unless_testers_are_allowed_in() {
    let (s, k) = upstreams().await;
    let always = [("x-canary", "always"), ("x-canary-token", TOKEN)];
    for (allowed, want) in [(false, "stable"), (true, "canary")] {
        let extra = format!("override_after_rollback = {allowed}");
        let proxy = start_proxy(&toml(&s, &k, 50.0, &extra, "off")).await;
        // `never` wins over the hash too.
        let never = [("x-canary", "never"), ("x-canary-token", TOKEN)];
        for i in 0..20 {
            assert_eq!(cohort_of(&proxy, &format!("n{i}"), &never).await, "stable");
        }
        post_ok(proxy.admin, "/canary/rollback").await;
        assert_eq!(
            cohort_of(&proxy, "t1", &always).await,
            want,
            "allowed: {allowed}"
        );
        assert_eq!(cohort_of(&proxy, "u1", &[]).await, "stable");
        proxy.stop().await;
    }
}

#[test]
fn an_override_header_without_a_token_is_refused() {
    let toml = "[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n[canary]\noverride_header = \"x-canary\"\n";
    let e = canary_proxy::config::Config::from_toml_str(
        toml,
        "c.toml",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(e.key, "canary.override_token", "{e}");
    let with_env = |k: &str| (k == "CANARY_OVERRIDE_TOKEN").then(|| "from-the-env-1".to_string());
    let c = canary_proxy::config::Config::from_toml_str(
        toml,
        "c.toml",
        std::path::Path::new("."),
        &with_env,
    )
    .unwrap();
    assert_eq!(c.canary.forced.as_ref().unwrap().token, "from-the-env-1");
    assert!(c.render_masked().contains("override_token = \"***\""));
}

#[test]
fn the_override_token_can_live_in_a_file_beside_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n[canary]\noverride_header = \"x-canary\"\n";
    let parse = |extra: &str| {
        canary_proxy::config::Config::from_toml_str(
            &format!("{base}{extra}"),
            "c.toml",
            dir.path(),
            &|_| None,
        )
    };
    // Relative to the config's folder, its line end trimmed (as `echo token > file` writes it).
    std::fs::write(dir.path().join("override.token"), "from-a-file-1\n").unwrap();
    let c = parse("override_token_file = \"override.token\"\n").unwrap();
    assert_eq!(c.canary.forced.as_ref().unwrap().token, "from-a-file-1");
    assert!(!c.render_masked().contains("from-a-file-1"));

    let e = parse("override_token_file = \"missing.token\"\n").unwrap_err();
    assert_eq!(e.key, "canary.override_token_file", "{e}");
    assert!(e.to_string().contains("missing.token"), "{e}");

    std::fs::write(dir.path().join("short.token"), "short\n").unwrap();
    let e = parse("override_token_file = \"short.token\"\n").unwrap_err();
    assert_eq!(e.key, "canary.override_token", "{e}");

    let e =
        parse("override_token_file = \"override.token\"\noverride_token = \"inline-token-1\"\n")
            .unwrap_err();
    assert!(e.to_string().contains("not both"), "{e}");
}
