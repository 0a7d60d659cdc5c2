//! Request bodies as our own HTTP/1 server reads them (decoded in the connection's task, one
//! frame at a time): a body in any pieces reaches the upstream whole and the next request after
//! it is read as a request; a malformed chunk is the client's 400 and nothing after it is ever
//! read as a request; a request refused on its head never asks for its body; and an upstream
//! that answers as it reads (an echo over https, through hyper's client in its own task) streams
//! both ways at once; and a client that goes on sending after an early answer still reads it
//! whole before the connection ends.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn proxy_to(url: &str) -> TestProxy {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.stable = vec![url.to_string()];
    cfg.start().await
}

/// Reads what the proxy sends until it closes or `until` shows up (at most five seconds).
async fn read_until(s: &mut TcpStream, until: &str) -> String {
    read_while(s, |text| !text.contains(until)).await
}

async fn read_while(s: &mut TcpStream, more: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if !more(&text) {
            return text;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_any_pieces_arrives_whole_and_the_request_after_it_is_read() {
    let up = recorder().await;
    let p = proxy_to(&up.url).await;
    let chunked = b"POST /c HTTP/1.1\r\nhost: app\r\nx-user-id: p1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\n\r\nGET /after-chunked HTTP/1.1\r\nhost: app\r\nx-user-id: p1\r\n\r\n";
    let sized = b"POST /l HTTP/1.1\r\nhost: app\r\nx-user-id: p2\r\ncontent-length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyzGET /after-sized HTTP/1.1\r\nhost: app\r\nx-user-id: p2\r\n\r\n";
    for wire in [&chunked[..], &sized[..]] {
        // A byte at a time, with pauses: every boundary falls between two reads somewhere.
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        for (i, b) in wire.iter().enumerate() {
            s.write_all(&[*b]).await.unwrap();
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // The second answer is the bodiless GET's: its body is "0".
        let answers = read_while(&mut s, |t| {
            t.matches("HTTP/1.1 ").count() < 2 || !t.ends_with("\r\n\r\n0")
        })
        .await;
        assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    }
    let seen = up.requests();
    let c = seen.iter().find(|r| r.starts_with("POST /c")).unwrap();
    let body = &c[c.find("\r\n\r\n").unwrap() + 4..];
    let mut data = String::new();
    let mut at = body;
    while let Some((size, rest)) = at.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            break;
        }
        data.push_str(&rest[..size]);
        at = &rest[size + 2..];
    }
    assert_eq!(data, "abc0123456789abcdef", "{c:?}");
    let l = seen.iter().find(|r| r.starts_with("POST /l")).unwrap();
    assert!(l.ends_with("\r\n\r\nabcdefghijklmnopqrstuvwxyz"), "{l:?}");
    for after in ["GET /after-chunked", "GET /after-sized"] {
        assert!(
            seen.iter().any(|r| r.starts_with(after)),
            "{after}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_is_the_clients_400_and_what_follows_is_never_a_request() {
    let up = recorder().await;
    let p = proxy_to(&up.url).await;
    for (i, bad) in [
        "5\r\nhelloXX\r\n0\r\n\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        let wire = format!("POST /bad{i} HTTP/1.1\r\nhost: app\r\nx-user-id: m{i}\r\ntransfer-encoding: chunked\r\n\r\n{bad}GET /smuggled HTTP/1.1\r\nhost: app\r\n\r\n");
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(wire.as_bytes()).await.unwrap();
        let answer = read_until(&mut s, "\r\n\r\nbad request").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    let m = get(&client(), &p.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains("canary_rejected_total{reason=\"client_body\"} 3"),
        "{m}"
    );
    assert!(!m.contains("canary_errors_total{cohort=\"stable\",version=\"v1.1.0\"} 1"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = up.requests();
    assert!(
        seen.iter().all(|r| !r.contains("GET /smuggled")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_on_its_head_never_asks_for_its_body() {
    let up = recorder().await;
    let p = proxy_to(&up.url).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    // Two Host fields: refused before routing, so the body is never wanted.
    s.write_all(b"POST /x HTTP/1.1\r\nhost: a\r\nhost: b\r\nexpect: 100-continue\r\ncontent-length: 5000000\r\n\r\n").await.unwrap();
    let answer = read_until(&mut s, "more than one Host header\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    // ... and the connection ends, since the body it announced was not read.
    let mut rest = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(3), s.read(&mut rest)).await;
    assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "{end:?}");
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_as_it_reads_streams_both_ways_at_once() {
    const SIZE: usize = 16 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    // An https upstream that streams every request body straight back as its answer.
    let port =
        crate::tls::tls_upstream(
            dir.path(),
            |req: http::Request<hyper::body::Incoming>| async move {
                http::Response::new(req.into_body())
            },
        )
        .await;
    let (p, _) = crate::tls::proxy_to_tls_upstream(port, dir).await;
    let sock = TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: app\r\nx-user-id: duplex\r\ncontent-length: {SIZE}\r\n\r\n"
    );
    // Far more than the socket buffers hold: unless the proxy reads the body while it writes
    // the answer, both sides wait on each other.
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await.unwrap();
        let mut sent = Sha256::new();
        for i in 0..SIZE / 65536 {
            let piece = pattern((i * 65536) as u64, 65536);
            sent.update(&piece);
            wr.write_all(&piece).await.unwrap();
        }
        hex(&sent.finalize())
    });
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 65536];
        let head_end = loop {
            let n = rd.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the answer's head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let mut got = Sha256::new();
        let mut len = buf.len() - head_end;
        got.update(&buf[head_end..]);
        while len < SIZE {
            let n = rd.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {len} bytes");
            got.update(&chunk[..n]);
            len += n;
        }
        hex(&got.finalize())
    });
    let both = tokio::time::timeout(Duration::from_secs(60), async {
        (writer.await.unwrap(), reader.await.unwrap())
    });
    let (sent, got) = both.await.expect("the duplex exchange stalled");
    assert_eq!(sent, got, "the echo came back intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_after_an_early_answer_gets_it_whole_then_the_close() {
    let up = recorder().await;
    let p = proxy_to(&up.url).await;
    let (mut rd, mut wr) = TcpStream::connect(p.addr).await.unwrap().into_split();
    // A body far larger than is ever sent, sent without pause: the upstream refuses on the
    // head, with a refusal larger than the sockets hold. Were the proxy to close at once with
    // the body unread, the kernel's reset would discard what of the answer it still held.
    let writer = tokio::spawn(async move {
        wr.write_all(b"POST /refuse-big HTTP/1.1\r\nhost: app\r\nx-user-id: e1\r\ncontent-length: 999999999999\r\n\r\n").await.unwrap();
        let piece = [b'x'; 16384];
        let until = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < until {
            if wr.write_all(&piece).await.is_err() {
                return true;
            }
        }
        false
    });
    // Reading only once the proxy is done with the exchange: the answer must still be there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&got);
    let head = &answer[..answer.find("\r\n\r\n").expect("an answer's head") + 4];
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(
        got.len() - head.len(),
        BIG_REFUSAL,
        "the answer whole: {head}"
    );
    assert!(closed.is_ok(), "the connection ends: {head}");
    assert!(writer.await.unwrap(), "the proxy stops taking the body");
}
