//! Our own HTTP/1.1 server (plain connections), spoken to byte for byte: pipelined requests
//! answered in order, the hand-over to hyper's server at the first request with a body (and
//! back to nothing lost), HEAD and `Connection: close`, and a client that hangs up while the
//! upstream thinks.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hostile::raw;
use crate::support::*;

async fn proxy() -> (TestProxy, Upstream, Upstream) {
    proxy_at(0.0).await
}

/// Each answer's status code, in order (a status line may follow a body directly).
fn statuses(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect()
}

#[tokio::test]
async fn pipelined_requests_and_a_body_in_between_are_answered_in_order_on_one_connection() {
    let (proxy, stable, _canary) = proxy().await;
    // All at once: two for our server, one with a body (hyper's from there on), and a last
    // one that closes.
    let answer = raw(
        proxy.addr,
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(statuses(&answer).len(), 4, "{answer}");
    assert!(statuses(&answer).iter().all(|s| *s == "200"), "{answer}");
    let paths: Vec<String> = stable
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/a", "/b", "/upload", "/c"]);
    let sha = hex(&Sha256::digest(b"hello"));
    let (upload, last) = (
        answer.find(&format!("5 {sha}")),
        answer.rfind("HTTP/1.1 200"),
    );
    assert!(
        upload.is_some_and(|u| Some(u) < last),
        "the upload's answer comes third: {answer}"
    );
    // The connection was closed by the proxy (`raw` read to the end well inside its limit),
    // after an answer that says so.
    assert!(answer[last.unwrap()..]
        .to_ascii_lowercase()
        .contains("connection: close"));
    proxy.stop().await;
}

#[tokio::test]
async fn head_keeps_the_announced_length_without_a_body_and_close_closes() {
    let (proxy, _stable, _canary) = proxy().await;
    let answer = raw(
        proxy.addr,
        b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-length: 6\r\n"),
        "stable's size: {head}"
    );
    assert!(lower.contains("\r\ndate: "), "{head}");
    assert!(lower.contains("x-deployment-cohort: stable"), "{head}");
    // No body after the HEAD answer: the GET's answer follows at once, ends with its body, and
    // the connection closes after it.
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\nstable"), "{rest}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_while_the_upstream_thinks_is_not_counted() {
    let (proxy, stable, _canary) = proxy().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /sleep/400 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Wait until the request is upstream, then hang up.
    for _ in 0..200 {
        if stable.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stable.count(), 1);
    drop(s);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let metrics = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    let counted = metrics
        .lines()
        .find(|l| l.starts_with(r#"canary_requests_total{cohort="stable""#));
    assert!(
        counted.is_none_or(|l| l.ends_with(" 0")),
        "an answer nobody waited for is not the cohort's: {counted:?}"
    );

    // The proxy goes on serving, and a client that stays gets its slow answer counted.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /sleep/50 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let metrics = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        metrics.contains(r#"canary_requests_total{cohort="stable",version="v1.1.0"} 1"#),
        "{metrics}"
    );
    proxy.stop().await;
}

/// Between requests a connection holds no read buffer (`bufpool`): the next head's first bytes
/// are read onto the stack and copied into a pooled one, the rest read into that. Heads that
/// come in pieces, after idle gaps, must arrive whole and in order.
#[tokio::test]
async fn heads_that_come_in_pieces_after_idle_gaps_are_read_whole() {
    let (proxy, stable, _canary) = proxy().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let pieces: [&[&[u8]]; 3] = [
        &[
            b"G",
            b"ET /a HTTP/1.1\r\nHo",
            b"st: t\r\nx-user-id: u-1\r\n",
            b"\r\n",
        ],
        &[b"GET /b HTTP/1.1\r\nHost: t\r\nx-user-id: u-2\r\n\r\n"],
        &[
            b"GET /c HTTP/1.1\r\n",
            b"Host: t\r\nConnection: close\r\nx-user-id: u-3\r\n\r\n",
        ],
    ];
    let mut answers = String::new();
    for request in pieces {
        tokio::time::sleep(Duration::from_millis(30)).await;
        for piece in request {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Each answer ends in the upstream's name; wait for it before the next request.
        let mut buf = [0u8; 4096];
        let before = answers.matches("stable").count();
        while answers.matches("stable").count() == before {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("an answer within 5 s")
                .unwrap();
            assert!(n > 0, "closed early: {answers}");
            answers.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert_eq!(statuses(&answers), ["200", "200", "200"], "{answers}");
    let got: Vec<(String, String, String)> = stable
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| {
            let id = s.headers.get("x-user-id").map(|v| v.to_str().unwrap());
            (
                s.method.clone(),
                s.path.clone(),
                id.unwrap_or("-").to_string(),
            )
        })
        .collect();
    let want = [
        ("GET", "/a", "u-1"),
        ("GET", "/b", "u-2"),
        ("GET", "/c", "u-3"),
    ]
    .map(|(m, p, id)| (m.to_string(), p.to_string(), id.to_string()));
    assert_eq!(got, want);
    proxy.stop().await;
}
