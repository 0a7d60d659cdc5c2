//! The real binary's command line: `check` prints the effective config with secrets masked;
//! every bad value, unknown key and malformed env override exits 2 naming the key or variable.

use std::process::Command;

use crate::support::bin;

const BASE: &str = r#"
[stable]
version = "v1.1.0"
endpoints = ["http://127.0.0.1:8001"]

[canary]
version = "v1.2.0-canary"
endpoints = ["http://127.0.0.1:8002"]
"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(toml: &str, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["check", "--config"]).arg(&path);
    for (var, _, _) in canary_proxy::config::ENV_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn check_prints_the_effective_config_and_masks_the_token() {
    let r = check(&format!("{BASE}\n[admin]\ntoken = \"s3cret\"\n"), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("s3cret"));
    assert!(r.stdout.contains(r#"token = "***""#), "{}", r.stdout);
    // Every default is shown, so the output is the whole effective config.
    let effective: toml::Value = toml::from_str(&r.stdout).expect("check prints TOML");
    assert_eq!(
        effective["rollback"]["false_rollback_budget"].as_float(),
        Some(0.001)
    );
    assert_eq!(effective["canary"]["traffic_percent"].as_float(), Some(5.0));
    assert_eq!(effective["timeouts"]["drain"].as_str(), Some("30s"));
}

#[test]
fn bad_values_exit_2_naming_the_file_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[canary]\ntraffic_percent = 150.0",
            "canary.traffic_percent",
        ),
        ("[canary]\ntraffic_percent = -1.0", "canary.traffic_percent"),
        (
            "[canary]\ntraffic_percent = \"five\"",
            "canary.traffic_percent",
        ),
        (
            "[canary]\nendpoints = [\"ftp://x:1\"]",
            "canary.endpoints[0]",
        ),
        (
            "[canary]\nendpoints = [\"http://x:1/api\"]",
            "canary.endpoints[0]",
        ),
        ("[canary]\nidentity = [\"query:id\"]", "canary.identity[0]"),
        ("[canary]\nidentity = []", "canary.identity"),
        ("[canary]\ntypo_key = 1", "typo_key"),
        ("[stable]\nendpoints = []", "stable.endpoints"),
        ("[proxy]\nlisten = \"nowhere\"", "proxy.listen"),
        (
            "[proxy]\ntrusted_proxies = [\"10.0.0.0/33\"]",
            "proxy.trusted_proxies[0]",
        ),
        ("[rollback]\nwindow = \"5\"", "rollback.window"),
        ("[rollback]\nmax_latency = \"fast\"", "rollback.max_latency"),
        (
            "[rollback]\nlatency_stat = \"mean\"",
            "rollback.latency_stat",
        ),
        (
            "[rollback]\nfalse_rollback_budget = 1.5",
            "rollback.false_rollback_budget",
        ),
        (
            "[rollback]\nerror_statuses = [\"6xx\"]",
            "rollback.error_statuses[0]",
        ),
        (
            "[rollback]\nerror_statuses = [700]",
            "rollback.error_statuses[0]",
        ),
        ("[timeouts]\nconnect = \"0s\"", "timeouts.connect"),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        ("[admin]\nlisten = \"0.0.0.0:9090\"", "admin.token"),
        ("[nonsense]\nx = 1", "nonsense"),
        ("[proxy]\nlisten = \"127.0.0.1:9090\"", "admin.listen"),
        (
            "[proxy]\nlisten = \"0.0.0.0:9090\"\n[admin]\nlisten = \"127.0.0.1:9090\"",
            "admin.listen",
        ),
        (
            "[rollback]\ngrpc_error_codes = [\"NOPE\"]",
            "rollback.grpc_error_codes[0]",
        ),
        (
            "[rollback]\ngrpc_error_codes = [0]",
            "rollback.grpc_error_codes[0]",
        ),
        (
            "[rollback]\nignore_paths = [\"healthz\"]",
            "rollback.ignore_paths[0]",
        ),
        (
            "[rollback]\nlatency_slack = \"fast\"",
            "rollback.latency_slack",
        ),
        (
            "[rollback]\nlatency_tolerance = 0.5",
            "rollback.latency_tolerance",
        ),
        (
            "[rollback]\nfalse_rollback_budget = 0.5",
            "rollback.false_rollback_budget",
        ),
        (
            "[rollback]\nerror_statuses = [200]",
            "rollback.error_statuses[0]",
        ),
        (
            "[rollback]\nerror_statuses = [\"5xx\", \"2xx\"]",
            "rollback.error_statuses[1]",
        ),
        ("[canary\n", "(syntax)"),
    ];
    for (snippet, key) in cases {
        // Sections appear once in TOML, so the snippet replaces the base's table of that name.
        let toml = merge(snippet);
        let r = check(&toml, &[]);
        assert_eq!(
            r.code, 2,
            "{snippet:?} should be refused; stderr: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("canary.toml"),
            "{snippet:?}: the file is not named: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains(key),
            "{snippet:?}: the key {key} is not named: {}",
            r.stderr
        );
    }
}

/// The base config with `snippet`'s table merged over it.
fn merge(snippet: &str) -> String {
    let table = snippet.lines().next().unwrap_or("");
    match table {
        "[canary]" | "[stable]" => {
            let mut out = String::new();
            let mut skip = false;
            for line in BASE.lines() {
                if line.starts_with('[') {
                    skip = line == table;
                    if skip {
                        out.push_str(snippet);
                        out.push('\n');
                    }
                }
                if !skip {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            out
        }
        _ => format!("{BASE}\n{snippet}\n"),
    }
}

#[test]
fn every_env_override_wins_over_the_file() {
    let r = check(
        BASE,
        &[
            ("CANARY_ENABLED", "No"),
            ("CANARY_TRAFFIC_PERCENT", "12.5"),
            ("CANARY_VERSION", "v9"),
            ("CANARY_ERROR_THRESHOLD", "0.5"),
            ("CANARY_LATENCY_THRESHOLD", "750ms"),
            ("CANARY_AUTO_ROLLBACK", "0"),
            ("CANARY_WINDOW", "10m"),
            ("CANARY_ADMIN_TOKEN", "from-env"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: toml::Value = toml::from_str(&r.stdout).unwrap();
    assert_eq!(v["canary"]["enabled"].as_bool(), Some(false));
    assert_eq!(v["canary"]["traffic_percent"].as_float(), Some(12.5));
    assert_eq!(v["canary"]["version"].as_str(), Some("v9"));
    assert_eq!(v["rollback"]["max_error_rate"].as_float(), Some(0.5));
    assert_eq!(v["rollback"]["max_latency"].as_str(), Some("750ms"));
    assert_eq!(v["rollback"]["auto"].as_bool(), Some(false));
    assert_eq!(v["rollback"]["window"].as_str(), Some("10m"));
    assert_eq!(
        v["admin"]["token"].as_str(),
        Some("***"),
        "the env token is set, and masked"
    );
    assert!(!r.stdout.contains("from-env"));
}

#[test]
fn malformed_or_out_of_range_env_values_exit_2_naming_the_variable() {
    for (var, value) in [
        ("CANARY_ENABLED", "maybe"),
        ("CANARY_TRAFFIC_PERCENT", "lots"),
        ("CANARY_TRAFFIC_PERCENT", "150"),
        ("CANARY_ERROR_THRESHOLD", "-3"),
        ("CANARY_LATENCY_THRESHOLD", "2"),
        ("CANARY_AUTO_ROLLBACK", ""),
        ("CANARY_WINDOW", "forever"),
        ("CANARY_VERSION", " "),
    ] {
        let r = check(BASE, &[(var, value)]);
        assert_eq!(r.code, 2, "{var}={value:?} should be refused: {}", r.stderr);
        assert!(
            r.stderr.contains(var),
            "{var}={value:?}: the variable is not named: {}",
            r.stderr
        );
    }
}

#[test]
fn check_says_which_values_the_environment_set_and_warns_of_a_misspelt_variable() {
    let r = check(
        &merge("[canary]\ntraffic_percent = 5.0"),
        &[("CANARY_TRAFFIC_PERCENT", "10")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("# canary.traffic_percent: from CANARY_TRAFFIC_PERCENT (the file says 5.0)"),
        "{}",
        r.stdout
    );
    let r = check(
        BASE,
        &[
            ("CANARY_TRAFIC_PERCENT", "10"),
            ("CANARY_SERVICE_HOST", "10.0.0.1"),
        ],
    );
    assert_eq!(r.code, 0, "a warning, not an error: {}", r.stderr);
    assert!(
        r.stderr.contains("CANARY_TRAFIC_PERCENT is not read")
            && r.stderr.contains("did you mean CANARY_TRAFFIC_PERCENT"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("CANARY_SERVICE_HOST"),
        "Kubernetes' service links are not typos: {}",
        r.stderr
    );
}

#[test]
fn a_missing_file_and_a_missing_config_flag_exit_2() {
    let out = Command::new(bin())
        .args(["check", "--config", "/nonexistent/canary.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/canary.toml"));
    let out = Command::new(bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin())
        .args(["run", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `canary-proxy --config FILE` runs the proxy (no subcommand), and `--log-format json` works
/// after the subcommand or before it: every log line is a JSON object.
#[test]
fn config_alone_runs_and_json_logs_are_json() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    let toml = BASE.replace(
        "[stable]",
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[stable]",
    );
    std::fs::write(&path, toml).unwrap();
    for args in [
        vec!["--config", path.to_str().unwrap(), "--log-format", "json"],
        vec!["--log-format", "json", "--config", path.to_str().unwrap()],
    ] {
        let mut child = Command::new(bin())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut serving = false;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while let Ok(line) =
            rx.recv_timeout(until.saturating_duration_since(std::time::Instant::now()))
        {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if v["fields"]["message"] == "canary-proxy serving" {
                assert!(v["fields"]["proxy"]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:"));
                serving = true;
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(serving, "{args:?}: the proxy did not start serving");
    }
}

#[test]
fn a_token_file_is_read_relative_to_the_config_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "  s3cret-from-file \n").unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(
        &path,
        format!("{BASE}\n[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_file = \"token\"\n"),
    )
    .unwrap();
    let c = canary_proxy::config::Config::load(&path, &|_| None)
        .expect("a token file allows a public admin address");
    assert_eq!(c.admin.token.as_deref(), Some("s3cret-from-file"));
    let r = check(
        &std::fs::read_to_string(&path)
            .unwrap()
            .replace("token_file = \"token\"", "token_file = \"missing\""),
        &[],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("admin.token_file"), "{}", r.stderr);
}
