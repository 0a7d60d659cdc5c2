//! The access log, with the real binary: one well-formed JSON line per request with the right
//! cohort and never the identity itself, and a rotation (rename, SIGUSR1) loses no line.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let got = lines(path);
        if got.len() >= n || Instant::now() > until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_request_and_a_rotation_loses_none() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    let cfg = Cfg::new(&s, &k);
    std::fs::write(
        &config,
        cfg.toml().replace(
            "trusted_proxies = []",
            "trusted_proxies = []\naccess_log = \"access.log\"",
        ),
    )
    .unwrap();
    let proxy = spawn_binary(&config, &[]);
    let log = dir.path().join("access.log");
    let c = client();
    let mut cohorts = Vec::new();
    for i in 0..30 {
        let got = get(
            &c,
            &proxy.url(&format!("/item/{i}?secret=no")),
            &[("x-user-id", &format!("alice-{i}"))],
        )
        .await;
        cohorts.push(got.header("x-deployment-cohort").unwrap().to_string());
    }
    let big = get(&c, &proxy.url("/download/100000"), &[]).await;
    assert_eq!(big.status, 200);
    let missing = raw_get_without_host(proxy.addr).await;
    assert!(missing.starts_with("HTTP/1.1 400"));

    let first = wait_for_lines(&log, 32).await;
    assert_eq!(first.len(), 32, "one line per request");
    for (i, line) in first.iter().take(30).enumerate() {
        for field in [
            "time",
            "client",
            "method",
            "path",
            "status",
            "cohort",
            "version",
            "upstream",
            "latency_ms",
            "bytes_in",
            "bytes_out",
            "identity_source",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        assert_eq!(line["cohort"], cohorts[i].as_str());
        assert_eq!(
            line["path"],
            format!("/item/{i}"),
            "the path, without the query"
        );
        assert_eq!(line["status"], 200);
        assert_eq!(line["identity_source"], "header");
        assert_eq!(line["client"], "127.0.0.1");
        assert!(humantime::parse_rfc3339(line["time"].as_str().unwrap()).is_ok());
        let upstream = line["upstream"].as_str().unwrap();
        assert!(upstream == s.url() || upstream == k.url(), "{upstream}");
        assert!(
            !line.to_string().contains("alice"),
            "the identity itself is never logged: {line}"
        );
    }
    assert_eq!(first[30]["bytes_out"], 100000);
    assert_eq!(first[31]["status"], 400);
    assert!(
        first[31]["cohort"].is_null(),
        "refused before routing: no cohort"
    );

    // Rotation: move the file away, SIGUSR1, and the next lines go to a new file.
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    get(&c, &proxy.url("/after-rename"), &[]).await;
    proxy.signal("USR1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..10 {
        get(&c, &proxy.url(&format!("/rotated/{i}")), &[]).await;
    }
    let rotated = wait_for_lines(&log, 10).await;
    let old = lines(&dir.path().join("access.log.1"));
    assert_eq!(
        rotated.len() + old.len(),
        32 + 1 + 10,
        "no line lost across the rotation"
    );
    assert!(rotated
        .iter()
        .all(|l| l["path"].as_str().unwrap().starts_with("/rotated/")));
    let m = get(&client(), &format!("http://{}/metrics", proxy.admin), &[])
        .await
        .body;
    assert!(m.contains("canary_access_log_dropped_total 0"), "{m}");
}

async fn raw_get_without_host(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}
