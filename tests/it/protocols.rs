//! Protocols beyond plain HTTP/1.1: a real WebSocket echo through the proxy (tunnelled both
//! ways, counted once), and HTTP/2 framing tricks. gRPC is in `grpc.rs`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn websocket_echo() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_passes_through_and_counts_once() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 100.0;
    cfg.canary = vec![websocket_echo().await];
    cfg.extra = "header_read = \"300ms\"\nidle = \"1s\"".into();
    let proxy = cfg.start().await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/chat", proxy.addr),
    )
    .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("the handshake passes the proxy");
    assert_eq!(resp.headers()["x-deployment-cohort"], "canary");
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("hello {i}"));
        // Quiet spells longer than the head deadline: a tunnel is not an HTTP connection.
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &[0u8, 1, 2, 255]
    );
    ws.close(None).await.unwrap();
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert!(
        m.contains(r#"canary_requests_total{cohort="canary",version="v1.2.0-canary"} 1"#),
        "one tunnel, one request: {m}"
    );
    proxy.stop().await;
}

/// HTTP/2 downgrade tricks, with a raw h2 client: a body shorter than its `content-length`
/// is reset, and no complete request reaches the upstream; the connection-specific headers an
/// h2 client may not send are refused by the h2 layer before they could be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_length_mismatch_is_reset_and_never_completes_upstream() {
    let (proxy, _s, _k) = proxy_at(0.0).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = Request::post(format!("http://{}/upload", proxy.addr))
        .header("content-length", "10")
        .body(())
        .unwrap();
    let (resp, mut body) = client.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"hello"), true).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        match resp.await {
            Err(e) => Err(e.to_string()),
            Ok(r) => {
                let status = r.status();
                let mut b = r.into_body();
                let mut got = Vec::new();
                while let Some(chunk) = b.data().await {
                    match chunk {
                        Ok(c) => got.extend_from_slice(&c),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok((status, String::from_utf8_lossy(&got).into_owned()))
            }
        }
    })
    .await
    .expect("the proxy answers or resets");
    match outcome {
        Err(_) => {}
        Ok((status, body)) => {
            assert!(status.is_client_error(), "{status} {body}");
            assert!(
                !body.contains("10 "),
                "the upstream never got 10 bytes: {body}"
            );
        }
    }
    // The connection-specific header never leaves an h2 client.
    let mut client = client.ready().await.unwrap();
    let bad = Request::get(format!("http://{}/", proxy.addr))
        .header("connection", "keep-alive")
        .body(())
        .unwrap();
    assert!(client.send_request(bad, true).is_err());
    let m = get(&crate::support::client(), &proxy.admin_url("/metrics"), &[])
        .await
        .body;
    assert!(
        m.contains(r#"canary_errors_total{cohort="stable",version="v1.1.0"} 0"#),
        "a client's broken body is not the cohort's error: {m}"
    );
    proxy.stop().await;
}
