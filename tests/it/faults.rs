//! Upstream faults: 502 for a closed port, 504 for an upstream that never answers, a refused
//! endpoint retried on another of the same pool (and, for an upload failed over to stable, once
//! there too); the proxy keeps serving after each.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::hostile::{raw, status_of};
use crate::support::*;

async fn scrape(admin: std::net::SocketAddr) -> String {
    get(&client(), &format!("http://{admin}/metrics"), &[])
        .await
        .body
}

#[tokio::test]
async fn a_closed_port_gives_502_and_the_other_cohort_keeps_serving() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    let (closed, _held) = closed_port().await;
    cfg.stable = vec![closed];
    let proxy = cfg.start().await;
    let c = client();
    let (mut bad, mut good) = (0, 0);
    for i in 0..60 {
        let got = get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
        match got.header("x-deployment-cohort") {
            Some("stable") => {
                assert_eq!(got.status, 502);
                assert_eq!(got.body.lines().count(), 1, "one line: {:?}", got.body);
                assert!(got.body.contains("bad gateway"));
                bad += 1;
            }
            Some("canary") => {
                assert_eq!(got.status, 200);
                good += 1;
            }
            other => panic!("no cohort header: {other:?}"),
        }
    }
    assert!(bad > 10 && good > 10, "bad {bad} good {good}");
    let m = scrape(proxy.admin).await;
    assert!(
        m.contains(r#"canary_upstream_failures_total{cohort="stable",kind="connect"}"#),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            r#"canary_errors_total{{cohort="stable",version="v1.1.0"}} {bad}"#
        )),
        "{m}"
    );
    proxy.stop().await;
}

async fn assert_timeouts_counted(proxy: &TestProxy, n: u32) {
    let m = scrape(proxy.admin).await;
    let line = format!(r#"canary_upstream_failures_total{{cohort="stable",kind="timeout"}} {n}"#);
    assert!(m.contains(&line), "{m}");
}

/// All traffic to stable, whose upstream must answer within 300 ms.
async fn stable_with_a_300ms_request_timeout() -> (Upstream, Upstream, TestProxy) {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.request_timeout = "300ms".into();
    let proxy = cfg.start().await;
    (s, k, proxy)
}

#[tokio::test]
async fn an_upstream_that_never_answers_gives_504_within_the_request_timeout() {
    let (_s, _k, proxy) = stable_with_a_300ms_request_timeout().await;
    let c = client();
    let started = std::time::Instant::now();
    let got = get(&c, &proxy.url("/sleep/5000"), &[]).await;
    assert_eq!(got.status, 504);
    assert!(got.body.contains("gateway timeout"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the timeout did not cut the wait"
    );
    assert_eq!(
        get(&c, &proxy.url("/"), &[]).await.status,
        200,
        "serving after a timeout"
    );
    assert_timeouts_counted(&proxy, 1).await;
    proxy.stop().await;
}

/// The direct path keeps one request timer per pooled upstream connection and moves it on per
/// exchange: the deadline must hold on a reused connection, both when its timer is still armed
/// from the last exchange and when that old deadline already passed while it idled.
#[tokio::test]
async fn the_request_timeout_holds_on_a_pooled_upstream_connection() {
    let (s, _k, proxy) = stable_with_a_300ms_request_timeout().await;
    let c = client();
    let slow_is_cut = |why: &'static str| {
        let (c, url) = (c.clone(), proxy.url("/sleep/5000"));
        async move {
            let started = std::time::Instant::now();
            let got = get(&c, &url, &[]).await;
            assert_eq!(got.status, 504, "{why}");
            let took = started.elapsed();
            assert!(
                took >= std::time::Duration::from_millis(250)
                    && took < std::time::Duration::from_secs(3),
                "{why}: answered after {took:?}"
            );
        }
    };
    // Pooled, then idle past the old deadline: the timer has fired and must be armed again.
    assert_eq!(get(&c, &proxy.url("/"), &[]).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    slow_is_cut("a pooled connection whose last deadline passed while it idled").await;
    // Pooled and straight back in use: the armed timer is moved on, not replaced.
    assert_eq!(get(&c, &proxy.url("/"), &[]).await.status, 200);
    slow_is_cut("a pooled connection used again at once").await;
    assert_eq!(get(&c, &proxy.url("/"), &[]).await.status, 200);
    assert_eq!(
        s.count(),
        5,
        "every request reached the upstream once (no resend of a timed-out one)"
    );
    assert_timeouts_counted(&proxy, 2).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_endpoint_is_retried_on_another_of_the_same_pool() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    let (closed, _held) = closed_port().await;
    cfg.stable = vec![closed, s.url()];
    let proxy = cfg.start().await;
    let c = client();
    // First a request with a body: it was never sent to the refused endpoint, so it may go again.
    let req = http::Request::post(proxy.url("/upload"))
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::from_static(b"hello"),
        )))
        .unwrap();
    let got = send(&c, req).await;
    assert_eq!(got.status, 200);
    assert!(got.body.starts_with("5 "), "{}", got.body);
    for i in 0..20 {
        let got = get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
        assert_eq!(got.status, 200, "request {i}");
        assert_eq!(got.header("x-upstream"), Some("stable"));
    }
    assert_eq!(k.count(), 0, "a retry never crosses to the other cohort");
    let m = scrape(proxy.admin).await;
    assert!(
        m.contains(r#"canary_upstream_failures_total{cohort="stable",kind="connect"} 1"#),
        "one refusal, then back-off: {m}"
    );
    assert!(
        m.contains(r#"canary_errors_total{cohort="stable",version="v1.1.0"} 0"#),
        "{m}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_upload_failed_over_to_stable_is_retried_there_once_too() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 100.0;
    let (dead_canary, _c) = closed_port().await;
    let (dead_stable, _s) = closed_port().await;
    cfg.canary = vec![dead_canary];
    cfg.stable = vec![dead_stable, s.url()];
    let proxy = cfg.start().await;
    let c = client();
    // Round-robin reaches the refusing stable endpoint within two failovers; each upload was
    // never sent anywhere, so it goes on to the other stable endpoint.
    for i in 0..4 {
        let req = http::Request::post(proxy.url("/upload"))
            .header("x-user-id", format!("f{i}"))
            .body(full(b"hello".to_vec()))
            .unwrap();
        let got = send(&c, req).await;
        assert_eq!(got.status, 200, "upload {i}: {}", got.body);
        assert!(got.body.starts_with("5 "), "upload {i}: {}", got.body);
    }
    let m = scrape(proxy.admin).await;
    assert!(
        m.contains(r#"canary_upstream_failures_total{cohort="stable",kind="connect"} 1"#),
        "stable's refusing endpoint was tried once, then backed off: {m}"
    );
    proxy.stop().await;
}

/// An upstream that answers every connection with `reply` and closes.
async fn raw_upstream(reply: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_mid_body_resets_from_upstreams() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.stable = vec![raw_upstream(b"THIS IS NOT HTTP\r\n\r\n").await];
    let p = cfg.start().await;
    let got = get(&client(), &p.url("/"), &[]).await;
    assert_eq!(got.status, 502, "{}", got.body);
    let m = scrape(p.admin).await;
    assert!(
        m.contains(r#"canary_upstream_failures_total{cohort="stable",kind="protocol"} 1"#),
        "garbage is a protocol failure: {m}"
    );
    p.stop().await;

    cfg.stable =
        vec![raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b").await];
    let p = cfg.start().await;
    for _ in 0..3 {
        let answer = raw(
            p.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_secs(3),
        )
        .await;
        // Either the head went out and the body stops short, or the connection closed first.
        let complete = answer.contains("content-length: 1000")
            && answer
                .split("\r\n\r\n")
                .nth(1)
                .is_some_and(|b| b.len() >= 1000);
        assert!(
            !complete,
            "the client sees an aborted response, never a complete-looking one: {answer:?}"
        );
        assert!(answer.is_empty() || status_of(&answer) == 200, "{answer:?}");
    }
    assert_eq!(
        get(&client(), &format!("http://{}/healthz", p.admin), &[])
            .await
            .status,
        200,
        "still serving"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_canary_is_served_by_stable_and_rolled_back_without_a_user_seeing_an_error() {
    let (s, _k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &s);
    let (closed, _held) = closed_port().await;
    cfg.canary = vec![closed];
    cfg.rollback = "evaluate_every = \"100ms\"\nmin_requests = 30".into();
    let proxy = cfg.start().await;
    let c = client();
    let body = pattern(0, 5000);
    let want = format!(
        "5000 {}",
        hex(&<sha2::Sha256 as sha2::Digest>::digest(&body))
    );
    let mut i = 0;
    while admin_json(&proxy, "/canary/status").await["state"] != "rolled_back" {
        assert!(i < 2000, "a dead canary was never rolled back");
        // Body-less requests (the direct path) and uploads (hyper's client) alike.
        let got = get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
        assert_eq!(got.status, 200, "a user saw {}: {}", got.status, got.body);
        assert_eq!(got.header("x-deployment-cohort"), Some("stable"));
        assert_eq!(got.header("x-deployment-version"), Some("v1.1.0"));
        let req = http::Request::post(proxy.url("/upload"))
            .header("x-user-id", format!("u{i}"))
            .body(full(body.clone()))
            .unwrap();
        let got = send(&c, req).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (200, want.as_str()),
            "the upload reached stable whole"
        );
        i += 1;
    }
    let m = scrape(proxy.admin).await;
    assert!(
        m.contains(r#"canary_upstream_failures_total{cohort="canary",kind="connect"}"#),
        "{m}"
    );
    let last = admin_json(&proxy, "/canary/status").await["last_rollback"].clone();
    assert_eq!(last["trigger"], "error_rate", "{last}");
    proxy.stop().await;
}

#[tokio::test]
async fn failover_none_answers_a_dead_canary_with_502() {
    let (s, _k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &s);
    cfg.percent = 100.0;
    let (closed, _held) = closed_port().await;
    cfg.canary = vec![closed];
    cfg.rollback = "auto = false".into();
    let toml = cfg
        .toml()
        .replace("expose_headers", "failover = \"none\"\nexpose_headers");
    let proxy = start_proxy(&toml).await;
    let got = get(&client(), &proxy.url("/"), &[("x-user-id", "u1")]).await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(got.header("x-deployment-cohort"), Some("canary"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_path_keeps_a_chunked_answers_trailers() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.stable = vec![raw_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n",
    )
    .await];
    let proxy = cfg.start().await;
    // Over HTTP/1.1 (the body-less GET takes the direct path) the trailer section is written on.
    let answer = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("hello"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-checksum: abc123"),
        "the trailers were lost: {answer:?}"
    );
    // And over HTTP/2 they arrive as a trailers frame.
    let resp = h2_client()
        .request(
            http::Request::get(proxy.url("/"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    let trailers = collected.trailers().cloned().expect("trailers over h2");
    assert_eq!(trailers["x-checksum"], "abc123");
    proxy.stop().await;
}
