//! The process's life with the real binary: SIGTERM lets an in-flight request finish and exits
//! 0; SIGHUP and a change of the file on disk reload; a reload under load fails no request and
//! keeps the ramp monotonic.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

fn write(path: &Path, s: &Upstream, k: &Upstream, percent: f64, extra: &str) {
    let mut cfg = Cfg::new(s, k);
    cfg.percent = percent;
    // These tests are about reloads, signals and drains, not the judge: on a loaded CI box the
    // latency trigger could roll the canary back mid-test (seen once: the ramp to 60 % applied,
    // then every request went to stable), so automatic rollback stays off here.
    cfg.rollback = "auto = false".to_string();
    cfg.extra = extra.to_string();
    std::fs::write(path, cfg.toml()).unwrap();
}

async fn canary_ids(b: &Binary, n: usize) -> Vec<bool> {
    let c = client();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let got = get(&c, &b.url("/"), &[("x-user-id", &format!("ramp-{i}"))]).await;
        assert_eq!(got.status, 200);
        out.push(got.header("x-deployment-cohort") == Some("canary"));
    }
    out
}

async fn wait_for_share(b: &Binary, at_least: usize, of: usize) -> Vec<bool> {
    // Generous: under a loaded machine a pass of requests and the watcher's polls both slow down.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let ids = canary_ids(b, of).await;
        if ids.iter().filter(|c| **c).count() >= at_least || Instant::now() > until {
            // The reload may have landed during that pass: take a whole one after it.
            return canary_ids(b, of).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    write(&path, &s, &k, 0.0, "drain = \"10s\"");
    let mut proxy = spawn_binary(&path, &[]);
    // Both clients outlive the drain: their keep-alive connections stay open unless the proxy
    // closes them, so a drain that skipped one would run to its 10 s limit.
    let (h1, h2) = (client(), h2_client());
    let (url, c) = (proxy.url("/sleep/1500"), h1.clone());
    let slow = tokio::spawn(async move { get(&c, &url, &[]).await });
    // The same over h2c (prior knowledge): an HTTP/2 connection drains too.
    let (url, c) = (proxy.url("/sleep/1500"), h2.clone());
    let slow_h2 = tokio::spawn(async move {
        let resp = c
            .request(
                http::Request::get(url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
            .expect("the proxy answers over h2c");
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("whole body")
            .to_bytes();
        (status, body)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "new connections are refused while draining"
    );
    let got = slow.await.unwrap();
    assert_eq!(got.status, 200, "the in-flight request completed");
    let (status, body) = slow_h2.await.unwrap();
    assert_eq!(status, 200, "the in-flight h2c request completed");
    assert_eq!(&body[..], b"stable");
    assert_eq!(got.body, "stable");
    let status = tokio::task::spawn_blocking(move || {
        let s = proxy.child.wait().unwrap();
        (s, proxy)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exits once drained, not at the drain limit"
    );
    drop((h1, h2));
    assert!(
        std::fs::read_to_string(dir.path().join("canary-state.json"))
            .unwrap()
            .contains("\"rolled_back\": false"),
        "the state file is flushed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_a_file_change_reload_and_the_ramp_stays_monotonic() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    write(&path, &s, &k, 5.0, "");
    let proxy = spawn_binary(&path, &[]);
    let at5 = canary_ids(&proxy, 400).await;

    write(&path, &s, &k, 25.0, "");
    proxy.signal("HUP");
    let at25 = wait_for_share(&proxy, 60, 400).await;
    let n25 = at25.iter().filter(|c| **c).count();
    assert!(n25 > 60, "SIGHUP applied 25 %: {n25} of 400");
    assert!(
        at5.iter().zip(&at25).all(|(a, b)| !a || *b),
        "everyone in the canary at 5 % is still there at 25 %"
    );
    // The watcher sees the same edit on disk, but SIGHUP applied it already: one reload.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reloads = proxy.logs().matches("config reloaded").count();
    assert_eq!(reloads, 1, "one edit, one reload:\n{}", proxy.logs());

    // A change on disk alone is picked up by the watcher.
    write(&path, &s, &k, 60.0, "");
    let at60 = wait_for_share(&proxy, 180, 400).await;
    assert!(
        at60.iter().filter(|c| **c).count() > 180,
        "the file change was applied; the proxy's log:\n{}",
        proxy.logs()
    );
    assert!(at25.iter().zip(&at60).all(|(a, b)| !a || *b));

    // A broken file is refused; the old config keeps serving.
    std::fs::write(&path, "[canary]\ntraffic_percent = \"lots\"\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(canary_ids(&proxy, 400).await, at60);
    assert!(proxy.logs().contains("reload refused"), "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_fails_no_request() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    write(&path, &s, &k, 5.0, "");
    let proxy = std::sync::Arc::new(spawn_binary(&path, &[]));
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let mut load = Vec::new();
    for t in 0..6 {
        let (url, c) = (proxy.url("/"), client());
        load.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0, 0);
            let mut i = 0;
            while Instant::now() < stop_at {
                let got = get(&c, &url, &[("x-user-id", &format!("l{t}-{i}"))]).await;
                if got.status == 200 {
                    ok += 1
                } else {
                    bad += 1
                }
                i += 1;
            }
            (ok, bad)
        }));
    }
    for (n, percent) in [10.0, 25.0, 50.0, 25.0, 50.0].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        write(&path, &s, &k, percent, "");
        let got = admin_post(proxy.admin, "/canary/reload", None, "").await;
        assert_eq!(got.status, 200, "reload {n}: {}", got.body);
    }
    let (mut ok, mut bad) = (0, 0);
    for l in load {
        let (o, b) = l.await.unwrap();
        ok += o;
        bad += b;
    }
    assert!(ok > 300, "{ok}");
    assert_eq!(bad, 0, "a reload failed requests");
}
