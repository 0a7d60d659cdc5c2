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
    let stdout = demo(&["--duration", "15s"]);
    assert!(stdout.contains("ROLLED BACK"), "{stdout}");
    assert!(stdout.contains("rolled back"), "{stdout}");
    assert!(
        stdout.contains("STEP 2 of 4"),
        "the ramp is shown: {stdout}"
    );
    assert!(stdout.contains("summary:"), "{stdout}");
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

    let (code, out, _) = run(vec!["status", "--admin", &url], vec![]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("state:    active"), "{out}");
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
    assert_eq!(code, 1, "no token: refused");
    assert!(
        err.contains("401") && err.contains("CANARY_ADMIN_TOKEN"),
        "{err}"
    );
    let (code, _, err) = run(vec!["rollback", "--admin", &url, "--token", "bad"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

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
    let (code, _, err) = run(vec!["rollback", "--admin", &url, "--token", "tok"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("409") && err.contains("already rolled back"),
        "{err}"
    );
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
    assert_eq!(code, 1, "started without a file: nothing to reload");
    assert!(err.contains("422"), "{err}");

    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (code, _, err) = run(vec!["status", "--admin", &closed], vec![])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, err) = run(vec!["status", "--admin", "ftp://x"], vec![])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("not an admin URL"), "{err}");
    proxy.stop().await;
}
