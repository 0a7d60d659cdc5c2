//! Hostile input, sent as raw bytes: request smuggling attempts, bad heads, oversized heads and
//! targets, slowloris and slow POST; and misbehaving upstreams. The recording upstream shows
//! exactly what arrived; the proxy keeps serving after each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Writes `bytes`, then reads until the proxy closes (or `limit`): everything it answered.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server may answer and close before it has read all of a hostile request (a 431 for a
    // 200 KB head): the rest of the write then fails, and the answer is what counts.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Asserts that a whole answer read to its close is framed by its `Content-Length`: the body
/// after the head is exactly that long (the proxy's own 408 once said 54 for 55 bytes).
fn assert_length_is_the_bodys(answer: &str) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a content-length");
    assert_eq!(length, body.len(), "{answer:?}");
}

async fn proxy(extra_timeouts: &str, limits: &str) -> (TestProxy, Upstream, Upstream) {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.extra = format!("{extra_timeouts}\n[limits]\n{limits}\n");
    (cfg.start().await, s, k)
}

#[tokio::test]
async fn smuggling_attempts_never_reach_the_upstream() {
    let (proxy, s, _k) = proxy("", "").await;
    let cases: &[(&str, &[u8], u16)] = &[
        ("two lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        ("gzip then chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("missing host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("doubled host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("absolute form against host", b"GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
        ("invalid method", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ];
    for (name, bytes, want) in cases {
        let answer = raw(proxy.addr, bytes, Duration::from_secs(3)).await;
        assert_eq!(status_of(&answer), *want, "{name}: {answer:?}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{name}: one answer, then close: {answer:?}"
        );
    }
    // Content-Length with Transfer-Encoding: hyper drops the length and reads one chunked
    // request, then closes; the tail is never read as a second request.
    let answer = raw(proxy.addr, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", Duration::from_secs(3)).await;
    assert!(matches!(status_of(&answer), 200 | 400), "{answer:?}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then close: {answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    assert!(
        s.seen
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.path == "/" && r.method == "POST"),
        "no smuggled request"
    );
    s.seen.lock().unwrap().clear();
    assert_eq!(
        s.count(),
        0,
        "nothing reached the upstream: {:?}",
        s.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );

    // `CHUNKED` is chunked: accepted, and re-framed towards the upstream.
    let answer = raw(proxy.addr, b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Duration::from_secs(3)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer.contains("\r\n\r\n5 "),
        "the upstream got exactly 5 bytes: {answer}"
    );
    assert_eq!(s.count(), 1);
    let te = s
        .last()
        .headers
        .get("transfer-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        te.as_deref().is_none_or(|t| t == "chunked"),
        "re-framed, not forwarded as sent: {te:?}"
    );
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    // The two accepted chunked requests, and none of the refusals.
    assert!(
        m.contains(r#"canary_requests_total{cohort="stable",version="v1.1.0"} 2"#),
        "refusals are not cohort requests: {m}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_targets_get_414_and_oversized_heads_431() {
    let (proxy, s, _k) = proxy("", "max_header_bytes = 8192\nmax_uri_bytes = 1024").await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(2000));
    assert_eq!(
        status_of(&raw(proxy.addr, long_uri.as_bytes(), Duration::from_secs(3)).await),
        414
    );
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "h".repeat(9000)
    );
    assert_eq!(
        status_of(&raw(proxy.addr, big_head.as_bytes(), Duration::from_secs(3)).await),
        431
    );
    let both = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "u".repeat(2000),
        "h".repeat(9000)
    );
    assert_eq!(
        status_of(&raw(proxy.addr, both.as_bytes(), Duration::from_secs(3)).await),
        414,
        "414 is checked first"
    );
    // Far past any limit: hyper's bounded buffer answers 431 without reading it all.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "h".repeat(200_000)
    );
    assert_eq!(
        status_of(&raw(proxy.addr, huge.as_bytes(), Duration::from_secs(3)).await),
        431
    );
    assert_eq!(s.count(), 0);
    assert_eq!(
        get(&client(), &proxy.url("/"), &[]).await.status,
        200,
        "still serving"
    );
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains(r#"canary_rejected_total{reason="uri_too_long"} 2"#),
        "{m}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_slow_post_are_cut_off_while_others_are_served() {
    let (proxy, s, _k) = proxy("header_read = \"400ms\"\nbody_read = \"400ms\"", "").await;
    let started = Instant::now();
    // Slowloris: half a head, then nothing.
    let loris = tokio::spawn(raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: 1\r\n",
        Duration::from_secs(5),
    ));
    // Slow POST: the head whole, ten bytes of a hundred, then nothing.
    let slow_post = tokio::spawn(raw(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
        Duration::from_secs(5),
    ));
    // Meanwhile, others are served.
    for _ in 0..20 {
        assert_eq!(get(&client(), &proxy.url("/"), &[]).await.status, 200);
    }
    let (loris, slow_post) = (loris.await.unwrap(), slow_post.await.unwrap());
    assert_eq!(status_of(&loris), 408, "{loris:?}");
    assert_eq!(status_of(&slow_post), 408, "{slow_post:?}");
    assert_length_is_the_bodys(&loris);
    assert_length_is_the_bodys(&slow_post);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off by the timeouts, not the test's limit"
    );
    // A connection that never sends a byte is closed too (silently).
    let quiet_since = Instant::now();
    let silent = raw(proxy.addr, b"", Duration::from_secs(5)).await;
    assert_eq!(silent, "");
    assert!(
        quiet_since.elapsed() < Duration::from_secs(2),
        "closed at the head's allowance: {:?}",
        quiet_since.elapsed()
    );
    // So is one that starts HTTP/2's preface and stops.
    let quiet_since = Instant::now();
    let half_preface = raw(proxy.addr, b"PRI * HTTP/2.0\r\n", Duration::from_secs(5)).await;
    assert_eq!(half_preface, "");
    assert!(quiet_since.elapsed() < Duration::from_secs(2));
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains(r#"canary_rejected_total{reason="header_timeout"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"canary_rejected_total{reason="body_timeout"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"canary_errors_total{cohort="stable",version="v1.1.0"} 0"#),
        "a stalled client is not the cohort's error: {m}"
    );
    assert!(s.count() >= 20);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_upload_is_not_the_cohorts_error_and_upload_time_is_not_latency()
{
    let (proxy, _s, _k) = proxy("", "").await;
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(c);
    // A slow but steady upload: 1.2 s of sending, then a fast answer.
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for b in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.write_all(&[*b]).await.unwrap();
    }
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert_eq!(status_of(&out), 200, "{out}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let m = admin_json(&proxy, "/canary/metrics").await;
    assert_eq!(
        m["stable_requests"], 1,
        "the hung-up upload is not a cohort request"
    );
    assert_eq!(m["stable_errors"], 0);
    let text = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        text.contains(r#"canary_requests_total{cohort="stable",version="v1.1.0"} 1"#),
        "only the finished upload counts: {text}"
    );
    assert!(
        text.contains(r#"canary_errors_total{cohort="stable",version="v1.1.0"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"canary_latency_seconds_bucket{cohort="stable",version="v1.1.0",le="0.25"} 1"#
        ),
        "the slow upload is not the upstream's latency: {text}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_cap_gets_503_and_then_service_again() {
    let (proxy, _s, _k) = proxy("header_read = \"5s\"", "max_connections = 20").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"GET /sleep/1 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = 0;
    for _ in 0..10 {
        let answer = raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_secs(3),
        )
        .await;
        if status_of(&answer) == 503 {
            assert_length_is_the_bodys(&answer);
            refused += 1;
        }
    }
    assert_eq!(
        refused, 10,
        "every connection past the cap is refused with 503"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        get(&client(), &proxy.url("/"), &[]).await.status,
        200,
        "served again once connections close"
    );
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains(r#"canary_rejected_total{reason="over_capacity"} 10"#),
        "{m}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let (proxy, _s, _k) = proxy("body_read = \"500ms\"", "").await;
    // A small receive buffer, so the stall comes soon after the proxy's send buffer fills.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = socket.connect(proxy.addr).await.unwrap();
    // 200 MB asked for, nothing read: the socket buffers fill and the writes stall.
    c.write_all(b"GET /download/209715200 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
        if m.contains(r#"canary_rejected_total{reason="write_timeout"} 1"#) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the stalled writer was not cut off: {}",
            m.lines()
                .filter(
                    |l| l.starts_with("canary_requests_total") || l.starts_with("canary_rejected")
                )
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its connection is closed: reading now drains what was buffered, then ends.
    let mut sink = vec![0u8; 1 << 20];
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        let mut total = 0usize;
        loop {
            match c.read(&mut sink).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the connection ends");
    assert!(
        drained < 209_715_200,
        "only what was buffered arrives: {drained}"
    );
    assert_eq!(get(&client(), &proxy.url("/"), &[]).await.status, 200);
    proxy.stop().await;
}
