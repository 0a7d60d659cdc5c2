//! Protocols beyond plain HTTP/1.1: a real WebSocket echo through the proxy (tunnelled both
//! ways, counted once), and a gRPC-shaped call over h2c with its trailers.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// An h2c upstream that answers a gRPC-shaped call with a message and trailers.
async fn grpc_upstream(
    seen: std::sync::Arc<std::sync::Mutex<Vec<(http::Version, HeaderMap)>>>,
) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock()
                            .unwrap()
                            .push((req.version(), req.headers().clone()));
                        let got = req.into_body().collect().await.unwrap().to_bytes();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        trailers.insert(
                            "grpc-message",
                            format!("got {} bytes", got.len()).parse().unwrap(),
                        );
                        let frames = vec![
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let mut resp =
                            Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_over_h2c_keeps_its_trailers() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.stable = vec![grpc_upstream(seen.clone()).await];
    let proxy = cfg.start().await;
    let h2 = h2_client();
    let req = Request::post(proxy.url("/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let resp = h2.request(req).await.expect("the call passes");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-deployment-cohort"], "stable");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "got 10 bytes");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    let (version, headers) = seen.lock().unwrap()[0].clone();
    assert_eq!(version, http::Version::HTTP_2, "forwarded over h2c");
    assert_eq!(headers["te"], "trailers");
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

/// An h2c gRPC upstream that ends each call with the `grpc-status` the call asks for in
/// `x-want-status`, in trailers, or in the headers alone with `x-trailers-only`.
async fn grpc_status_upstream() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let want = req.headers().get("x-want-status").cloned();
                    let only = req.headers().contains_key("x-trailers-only");
                    let _ = req.into_body().collect().await;
                    let status = want.unwrap_or_else(|| "0".parse().unwrap());
                    let mut frames = Vec::new();
                    if !only {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", status.clone());
                        frames.push(Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                            b"\0\0\0\0\x00",
                        ))));
                        frames.push(Ok(Frame::trailers(trailers)));
                    }
                    let mut resp =
                        Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    if only {
                        resp.headers_mut().insert("grpc-status", status);
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_judged_by_their_grpc_status_not_the_http_200() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 100.0;
    cfg.canary = vec![grpc_status_upstream().await];
    cfg.rollback = "evaluate_every = \"100ms\"\nmin_requests = 20".into();
    let proxy = cfg.start().await;
    let h2 = h2_client();
    let call = |i: usize, status: &'static str, only: bool| {
        let mut req = Request::post(proxy.url("/pkg.Service/Method"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-user-id", format!("g{i}"))
            .header("x-want-status", status);
        if only {
            req = req.header("x-trailers-only", "1");
        }
        let req = req
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\x00")))
            .unwrap();
        let h2 = h2.clone();
        async move {
            let resp = h2.request(req).await.expect("the call passes");
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.expect("the whole answer");
        }
    };
    let errors = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("canary_errors_total{cohort=\"canary\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    // Status 0 and a status not in grpc_error_codes (NOT_FOUND, 5): no error.
    for i in 0..30 {
        call(i, if i % 2 == 0 { "0" } else { "5" }, false).await;
    }
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert_eq!(errors(&m), 0, "{m}");
    // Trailers-only with UNAVAILABLE (14): errors, judged at the headers.
    for i in 30..35 {
        call(i, "14", true).await;
    }
    let m = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    assert_eq!(errors(&m), 5, "{m}");
    assert_eq!(
        admin_json(&proxy, "/canary/status").await["state"],
        "active"
    );
    // INTERNAL (13) in the trailers of every call: rolled back, although every answer is 200.
    let mut i = 35;
    while admin_json(&proxy, "/canary/status").await["state"] != "rolled_back" {
        assert!(
            i < 2000,
            "a canary failing every gRPC call was never rolled back"
        );
        call(i, "13", false).await;
        i += 1;
    }
    let last = admin_json(&proxy, "/canary/status").await["last_rollback"].clone();
    assert_eq!(last["trigger"], "error_rate", "{last}");
    proxy.stop().await;
}
