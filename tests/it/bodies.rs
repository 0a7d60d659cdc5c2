//! Requests with a body on the direct path, against an upstream that records every byte it
//! reads: the framing the client chose reaches it (a length as a length, chunks as chunks, with
//! their trailers), `Expect` is answered by the proxy and not passed on, pipelined requests with
//! bodies keep their order, an upstream that answers before the body ends gets its answer
//! through, and a client that stops mid-body is the client's failure, not the cohort's.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn proxy_to(up: &Recorder) -> TestProxy {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.stable = vec![up.url.clone()];
    cfg.rollback = "evaluate_every = \"100ms\"".into();
    cfg.start().await
}

/// A small POST on a connection of its own: the proxy still serves, with a 200.
async fn still_serves(proxy: &TestProxy, id: &str) {
    let req = format!(
        "POST /after HTTP/1.1\r\nhost: app\r\nx-user-id: {id}\r\ncontent-length: 2\r\n\r\nok"
    );
    let next = raw(proxy, req.as_bytes(), 1).await;
    assert!(
        next.starts_with("HTTP/1.1 200") && next.ends_with('2'),
        "{next}"
    );
}

/// Writes `bytes` to the proxy and reads until `answers` answers (by their length) came.
async fn raw(proxy: &TestProxy, bytes: &[u8], answers: usize) -> String {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_answers(&mut s, answers).await
}

async fn read_answers(s: &mut TcpStream, answers: usize) -> String {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.matches("HTTP/1.1 ").filter(|_| true).count() >= answers && complete(&text, answers)
        {
            return text;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return text,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no {answers} answers in time: {text}"),
        }
    }
}

/// Whether `text` holds `n` final answers with their (content-length) bodies.
fn complete(text: &str, n: usize) -> bool {
    let mut rest = text;
    for _ in 0..n {
        let Some(start) = rest.find("HTTP/1.1 ") else {
            return false;
        };
        rest = &rest[start..];
        if rest.starts_with("HTTP/1.1 100") {
            let Some(e) = rest.find("\r\n\r\n") else {
                return false;
            };
            rest = &rest[e + 4..];
            return complete(rest, n);
        }
        let Some(e) = rest.find("\r\n\r\n") else {
            return false;
        };
        let len = rest[..e]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        if rest.len() < e + 4 + len {
            return false;
        }
        rest = &rest[e + 4 + len..];
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_stays_a_length_and_chunks_stay_chunks_with_their_trailers() {
    let up = recorder().await;
    let p = proxy_to(&up).await;
    let sized = raw(
        &p,
        b"POST /a HTTP/1.1\r\nhost: app\r\nx-user-id: u1\r\ncontent-length: 11\r\n\r\nhello world",
        1,
    )
    .await;
    assert!(
        sized.starts_with("HTTP/1.1 200") && sized.ends_with("11"),
        "{sized}"
    );
    let chunked = raw(&p, b"POST /b HTTP/1.1\r\nhost: app\r\nx-user-id: u2\r\ntransfer-encoding: chunked\r\nte: trailers\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 42\r\n\r\n", 1).await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    let seen = up.requests();
    let a = seen
        .iter()
        .find(|r| r.starts_with("POST /a"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        a.contains("content-length: 11\r\n") && !a.contains("transfer-encoding"),
        "{a}"
    );
    assert!(a.ends_with("\r\n\r\nhello world"), "{a}");
    let b = seen
        .iter()
        .find(|r| r.starts_with("POST /b"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        b.contains("transfer-encoding: chunked\r\n") && !b.contains("content-length"),
        "{b}"
    );
    let body = &b[b.find("\r\n\r\n").unwrap() + 4..];
    // Re-chunked as the frames came; the bytes and the trailer are the client's.
    let mut data = String::new();
    let mut at = body;
    loop {
        let (size, rest) = at.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
        if size == 0 {
            assert!(rest.contains("x-sum: 42\r\n"), "the trailer: {body:?}");
            break;
        }
        data.push_str(&rest[..size]);
        at = &rest[size + 2..];
    }
    assert_eq!(data, "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_by_the_proxy_and_pipelined_bodies_keep_their_order() {
    let up = recorder().await;
    let p = proxy_to(&up).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /e HTTP/1.1\r\nhost: app\r\nx-user-id: u3\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n").await.unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).await.unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    s.write_all(b"ping").await.unwrap();
    let answer = read_answers(&mut s, 1).await;
    assert!(
        answer.contains("HTTP/1.1 200") && answer.ends_with('4'),
        "{answer}"
    );
    let e = up
        .requests()
        .into_iter()
        .find(|r| r.starts_with("POST /e"))
        .unwrap();
    assert!(
        !e.to_ascii_lowercase().contains("expect"),
        "not passed on: {e}"
    );

    // Three requests with bodies in one write: three answers, in order, each body whole.
    let mut many = Vec::new();
    for (i, body) in ["one", "three", "fifteen bytes!!"].iter().enumerate() {
        many.extend_from_slice(format!("POST /p{i} HTTP/1.1\r\nhost: app\r\nx-user-id: u4\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }
    let answers = raw(&p, &many, 3).await;
    let lengths: Vec<&str> = answers
        .split("HTTP/1.1 200 OK")
        .skip(1)
        .map(|a| a.rsplit("\r\n").next().unwrap())
        .collect();
    assert_eq!(lengths, ["3", "5", "15"], "{answers}");
    let order: Vec<String> = up
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /p"))
        .map(|r| r[..8].to_string())
        .collect();
    assert_eq!(order, ["POST /p0", "POST /p1", "POST /p2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_before_the_body_ends_is_heard_and_not_reused() {
    let up = recorder().await;
    let p = proxy_to(&up).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    // Ten megabytes announced, a little sent: the upstream's 413 comes back at once.
    s.write_all(
        b"POST /refuse HTTP/1.1\r\nhost: app\r\nx-user-id: u5\r\ncontent-length: 10000000\r\n\r\n",
    )
    .await
    .unwrap();
    s.write_all(&[b'x'; 4096]).await.unwrap();
    let answer = read_answers(&mut s, 1).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    drop(s);
    // The next request goes on a connection of its own, and works.
    // (The refused one's connection is held open, unread: reusing it would hang this one.)
    still_serves(&p, "u6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_mid_body_is_its_own_failure_not_the_cohorts() {
    let up = recorder().await;
    let p = proxy_to(&up).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /cut HTTP/1.1\r\nhost: app\r\nx-user-id: u7\r\ncontent-length: 1000\r\n\r\n0123456789").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = get(&client(), &p.admin_url("/metrics"), &[]).await.body;
        if m.contains("canary_rejected_total{reason=\"client_body\"} 1") {
            assert!(
                !m.contains("canary_errors_total{cohort=\"stable\",version=\"v1.1.0\"} 1"),
                "{m}"
            );
            assert!(
                !m.contains("canary_upstream_failures_total{cohort=\"stable\""),
                "{m}"
            );
            break;
        }
        assert!(std::time::Instant::now() < until, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cut = up
        .requests()
        .into_iter()
        .find(|r| r.starts_with("POST /cut"))
        .unwrap();
    assert!(
        cut.ends_with("0123456789"),
        "what came reached the upstream, no more: {cut}"
    );
    // The proxy goes on serving.
    still_serves(&p, "u8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_never_reach_the_upstream_as_a_second_request() {
    let up = recorder().await;
    let p = proxy_to(&up).await;
    let attempts: [&[u8]; 6] = [
        b"POST /s1 HTTP/1.1\r\nhost: app\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n",
        b"POST /s2 HTTP/1.1\r\nhost: app\r\ncontent-length: 4\r\ncontent-length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n",
        b"POST /s3 HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n",
        b"POST /s4 HTTP/1.1\r\nhost: app\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n",
        b"POST /s5 HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff1\r\nGET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n",
        b"POST /s6 HTTP/1.1\r\nhost: app\r\ncontent-length: +4\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n",
    ];
    for a in attempts {
        let answer = raw(&p, a, 1).await;
        let status = answer.get(9..12).unwrap_or("");
        // Refused, or (RFC 9112 §6.1: Transfer-Encoding over Content-Length) answered once
        // and the connection closed, so nothing after the body is ever read as a request.
        let closed = answer.to_ascii_lowercase().contains("connection: close");
        assert!(
            status.starts_with('4') || status.starts_with('5') || closed,
            "{}: {answer}",
            String::from_utf8_lossy(&a[..8])
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = up.requests();
    assert!(
        seen.iter().all(|r| !r.contains("GET /smuggled")),
        "a smuggled request reached the upstream: {seen:?}"
    );
}
