//! What an operator types: the demo runs to completion and shows a rollback; each admin
//! subcommand works against a running proxy, including the refusals.

use std::process::Command;

use crate::support::*;

/// `canary-proxy demo ARGS`, which must exit 0; its stdout.
fn demo(args: &[&str]) -> String {
    let out = Command::new(bin()).arg("demo").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_demo_runs_to_completion_and_shows_a_rollback() {
    let stdout = demo(&["--duration", "25s"]);
    assert!(stdout.contains("ROLLED BACK"), "{stdout}");
    assert!(!stdout.contains("a false rollback"), "{stdout}");
    assert!(stdout.contains("rolled back"), "{stdout}");
    assert!(
        stdout.contains("STEP 2 of 4"),
        "the ramp is shown: {stdout}"
    );
    assert!(stdout.contains("summary:"), "{stdout}");
    // It says 20 % errors and +250 ms, and shows about that since the canary degraded.
    let line = stdout.lines().find(|l| l.contains("ROLLED BACK")).unwrap();
    let after = line
        .split("since then ")
        .nth(1)
        .expect("figures since the degradation");
    let pct: f64 = after
        .split(" canary requests, ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (8.0..=35.0).contains(&pct),
        "{pct} % errors after turning bad: {line}"
    );
    let p99: f64 = after
        .split("p99 ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(p99 >= 250.0, "p99 {p99} ms: {line}");
}

#[test]
fn the_good_demo_ramps_a_healthy_canary_to_complete() {
    let stdout = demo(&["--scenario", "good", "--duration", "50s"]);
    for step in ["STEP 2 of 4", "STEP 3 of 4", "STEP 4 of 4", "COMPLETE"] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }
    assert!(!stdout.contains("ROLLED BACK"), "{stdout}");
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("CANARY_ADMIN_URL")
        .env_remove("CANARY_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_subcommands_against_a_running_proxy() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.token = "tok".into();
    cfg.rollback = "evaluate_every = \"100ms\"".into();
    let proxy = cfg.start().await;
    let url = format!("http://{}", proxy.admin);
    let run = |args: Vec<&str>, env: Vec<(&str, &str)>| {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let e: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            cli(&a, &e)
        })
    };

    for i in 0..40 {
        get(
            &client(),
            &proxy.url("/"),
            &[("x-user-id", &format!("u{i}"))],
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (code, out, _) = run(vec!["status", "--admin", &url], vec![]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("state:    active"), "{out}");
    // Figures while active, rounded for people.
    assert!(
        out.contains("canary:") && out.contains("requests in the window"),
        "{out}"
    );
    assert!(
        out.contains(" ms") && out.contains(".00 %") && out.contains("evidence error_rate"),
        "{out}"
    );
    let (code, out, _) = run(vec!["status", "--json"], vec![("CANARY_ADMIN_URL", &url)])
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["state"],
        "active"
    );

    let (code, _, err) = run(vec!["rollback", "--admin", &url, "--reason", "x"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 4, "no token: refused as unauthorized");
    assert!(
        err.contains("401") && err.contains("CANARY_ADMIN_TOKEN"),
        "{err}"
    );
    let (code, out, err) = run(
        vec!["rollback", "--admin", &url, "--token", "bad", "--json"],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(code, 4);
    assert!(err.contains("401"), "{err}");
    let refused: serde_json::Value =
        serde_json::from_str(&out).expect("a refusal is JSON with --json");
    assert_eq!(refused["status"], 401, "{out}");

    let (code, out, err) = run(
        vec!["rollback", "--admin", &url, "--reason", "latency spike"],
        vec![("CANARY_ADMIN_TOKEN", "tok")],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rolled_back") && out.contains("latency spike"),
        "{out}"
    );
    // A second rollback is done, not a failure: the state asked for holds.
    let (code, out, err) = run(vec!["rollback", "--admin", &url, "--token", "tok"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("already rolled back"), "{out}");
    // The token from a file (out of `ps`), and the address and token from the proxy's config.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok\n").unwrap();
    let file = dir.path().join("token").display().to_string();
    let (code, _, err) = run(
        vec!["resume", "--admin", &url, "--token-file", &file],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(vec!["resume", "--admin", &url, "--token", "tok"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 3, "not rolled back: a conflict");
    assert!(err.contains("409"), "{err}");
    let conf = dir.path().join("canary.toml");
    let toml = cfg.toml().replace(
        "listen = \"127.0.0.1:0\"\ntoken",
        &format!("listen = \"{}\"\ntoken", proxy.admin),
    );
    std::fs::write(&conf, toml).unwrap();
    let conf = conf.display().to_string();
    let (code, out, err) = run(
        vec!["rollback", "--config", &conf, "--reason", "from the config"],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rolled_back"), "{out}");
    let (code, out, _) = run(vec!["resume", "--admin", &url, "--token", "tok"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("state:    active"), "{out}");
    let (code, _, _) = run(vec!["reset", "--admin", &url, "--token", "tok"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 0);
    let (code, _, err) = run(vec!["reload", "--admin", &url, "--token", "tok"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 2, "started without a file: nothing to reload");
    assert!(err.contains("422"), "{err}");
    // Into a closed pipe: a quiet end, not a panic.
    let sh = format!(
        "{} status --admin {url} | head -c1 >/dev/null; echo ${{PIPESTATUS[0]}}",
        bin()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &sh])
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        code == "0" || code == "141",
        "exit {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (code, _, err) = run(vec!["status", "--admin", &closed], vec![])
        .await
        .unwrap();
    assert_eq!(code, 5, "unreachable");
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, err) = run(vec!["status", "--admin", "ftp://x"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("not an admin URL"), "{err}");
    proxy.stop().await;
}
