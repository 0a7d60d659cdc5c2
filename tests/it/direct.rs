//! The direct HTTP/1.1 path (requests without a body to `http://` endpoints) against an upstream
//! that answers byte for byte what each test scripts: every framing RFC 9112 allows, the ones
//! it forbids, connection reuse, and a pooled connection the upstream closed while it idled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// What the scripted upstream does with the connection after an answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    Keep,
    Close,
    /// Closes it 20 ms later without having said so, as an idle timeout would.
    CloseSoon,
}

/// 1 MiB, in chunks of uneven sizes.
fn big_body() -> Vec<u8> {
    pattern(7, 1 << 20)
}

fn big_chunked() -> Vec<u8> {
    let body = big_body();
    let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let (mut at, mut seed) = (0usize, 12345u64);
    while at < body.len() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = ((seed >> 33) as usize % 40_000 + 1).min(body.len() - at);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
    }
    out.extend_from_slice(b"0\r\nx-checksum: 1\r\n\r\n");
    out
}

fn reply(method: &str, path: &str) -> (Vec<u8>, After) {
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    match (method, path) {
        ("HEAD", "/head") => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n".to_vec(),
            After::Keep,
        ),
        (_, "/chunked") => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n".to_vec(),
            After::Keep,
        ),
        (_, "/big") => (big_chunked(), After::Keep),
        (_, "/close") => (
            b"HTTP/1.1 200 OK\r\n\r\nread until the upstream closes".to_vec(),
            After::Close,
        ),
        (_, "/nocontent") => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), After::Keep),
        (_, "/early") => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal".to_vec(),
            After::Keep,
        ),
        (_, "/smuggle") => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n".to_vec(),
            After::Keep,
        ),
        (_, "/badlength") => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\n".to_vec(),
            After::Keep,
        ),
        (_, "/switch") => (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: other\r\n\r\n".to_vec(),
            After::Keep,
        ),
        (_, "/bighead") => {
            let mut r = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            r.resize(r.len() + 70 * 1024, b'a');
            r.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            (r, After::Keep)
        }
        (_, "/extra") => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK".to_vec(),
            After::Keep,
        ),
        (_, "/conn-close") => (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            After::Keep,
        ),
        (_, "/ok-then-close") => (ok, After::CloseSoon),
        _ => (ok, After::Keep),
    }
}

struct Scripted {
    url: String,
    accepts: Arc<AtomicUsize>,
    /// "METHOD /path" of every request the upstream read.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn count(&self, line: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == line)
            .count()
    }
}

async fn scripted() -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, s) = (accepts.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let seen = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let mut words = head.split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    seen.lock().unwrap().push(format!("{method} {path}"));
                    let (bytes, after) = reply(method, path);
                    if sock.write_all(&bytes).await.is_err() {
                        return;
                    }
                    match after {
                        After::Keep => {}
                        After::Close => return,
                        After::CloseSoon => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted {
        url: format!("http://{addr}"),
        accepts,
        seen,
    }
}

async fn proxy_to(up: &Scripted) -> TestProxy {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.stable = vec![up.url.clone()];
    cfg.start().await
}

async fn send_method(c: &Client, method: &str, url: &str) -> Got {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(full(Bytes::new()))
        .unwrap();
    send(c, req).await
}

#[tokio::test]
async fn every_framing_passes_intact() {
    let up = scripted().await;
    let p = proxy_to(&up).await;
    let c = client();

    let got = get(&c, &p.url("/chunked"), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (200, "hello, world"));

    let resp = c
        .request(
            Request::get(p.url("/big"))
                .body(full(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        body[..] == big_body()[..],
        "1 MiB in uneven chunks, byte for byte"
    );

    let got = get(&c, &p.url("/close"), &[]).await;
    assert_eq!(got.body, "read until the upstream closes");

    let got = send_method(&c, "HEAD", &p.url("/head")).await;
    assert_eq!((got.status, got.body.as_str()), (200, ""));
    assert_eq!(
        got.header("content-length"),
        Some("1234"),
        "HEAD keeps its length"
    );

    let got = get(&c, &p.url("/nocontent"), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (204, ""));

    let got = get(&c, &p.url("/early"), &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, "final"),
        "an interim 103 is skipped"
    );

    let got = get(&c, &p.url("/smuggle"), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (200, "hi"));
    assert_ne!(
        got.header("content-length"),
        Some("40"),
        "Transfer-Encoding overrides Content-Length, which must not reach the client"
    );
    p.stop().await;
}

#[tokio::test]
async fn answers_that_break_http_are_502() {
    let up = scripted().await;
    let p = proxy_to(&up).await;
    let c = client();
    for path in ["/badlength", "/switch", "/bighead"] {
        let got = get(&c, &p.url(path), &[]).await;
        assert_eq!(got.status, 502, "{path}: {}", got.body);
        assert!(
            got.body.contains("invalid response"),
            "{path}: {}",
            got.body
        );
    }
    let m = get(&c, &p.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains(r#"canary_upstream_failures_total{cohort="stable",kind="protocol"} 3"#),
        "{m}"
    );
    assert_eq!(
        get(&c, &p.url("/ok"), &[]).await.status,
        200,
        "still serving"
    );
    p.stop().await;
}

#[tokio::test]
async fn connections_are_reused_only_when_the_answer_allows_it() {
    let up = scripted().await;
    let p = proxy_to(&up).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &p.url("/ok"), &[]).await.body, "ok");
    }
    assert_eq!(send_method(&c, "HEAD", &p.url("/head")).await.status, 200);
    assert_eq!(get(&c, &p.url("/chunked"), &[]).await.status, 200);
    assert_eq!(
        up.accepts(),
        1,
        "eleven answers, one upstream connection (one client connection, one worker)"
    );

    // Each of these leaves a connection that must not carry another request.
    let mut expected = 1;
    for path in ["/extra", "/close", "/conn-close", "/smuggle"] {
        let got = get(&c, &p.url(path), &[]).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(get(&c, &p.url("/ok"), &[]).await.body, "ok", "after {path}");
        expected += 1;
        assert_eq!(up.accepts(), expected, "{path} is not reused");
    }
    p.stop().await;
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_never_a_502() {
    let up = scripted().await;
    let p = proxy_to(&up).await;
    let c = client();
    for i in 0..5 {
        // The upstream closes each connection 20 ms after answering, without a word.
        assert_eq!(get(&c, &p.url("/ok-then-close"), &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let got = get(&c, &p.url(&format!("/get-{i}")), &[]).await;
        assert_eq!(
            got.status, 200,
            "an idempotent request is sent again: {}",
            got.body
        );
        assert_eq!(up.count(&format!("GET /get-{i}")), 1);

        assert_eq!(get(&c, &p.url("/ok-then-close"), &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let req = Request::post(p.url(&format!("/post-{i}")))
            .header("content-length", "0")
            .body(full(Bytes::new()))
            .unwrap();
        let got = send(&c, req).await;
        assert_eq!(
            got.status, 200,
            "a POST finds the connection closed first: {}",
            got.body
        );
        assert_eq!(
            up.count(&format!("POST /post-{i}")),
            1,
            "and is sent exactly once"
        );
    }
    p.stop().await;
}
