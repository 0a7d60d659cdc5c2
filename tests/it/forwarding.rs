//! What crosses the proxy: forwarded headers reach the upstream, hop-by-hop headers do not
//! (either way), the client's Host is kept, and h2c works on the same port.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use crate::support::*;

#[tokio::test]
async fn forwarded_headers_reach_the_upstream_and_hop_by_hop_ones_do_not() {
    let (proxy, s, _k) = proxy_at(0.0).await;
    let c = client();
    let got = get(
        &c,
        &proxy.url("/path?q=1"),
        &[
            ("host", "shop.example"),
            ("connection", "keep-alive, x-client-secret"),
            ("x-client-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-deployment-cohort", "canary"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = s.last();
    let h = &seen.headers;
    assert_eq!(seen.path, "/path?q=1");
    assert_eq!(h["host"], "shop.example", "the client's Host is kept");
    assert_eq!(h["x-kept"], "yes");
    assert!(
        !h.contains_key("x-client-secret"),
        "a header named in Connection was forwarded"
    );
    assert!(!h.contains_key("keep-alive"));
    assert!(!h.contains_key("proxy-authorization"));
    assert_eq!(
        h["x-deployment-cohort"], "stable",
        "a client-sent cohort header is replaced"
    );
    assert_eq!(h.get_all("x-deployment-cohort").iter().count(), 1);
    assert_eq!(h["x-forwarded-for"], "198.51.100.1, 127.0.0.1");
    assert_eq!(
        h["x-forwarded-proto"], "http",
        "an untrusted peer's proto is not believed"
    );
    assert_eq!(h["x-forwarded-host"], "shop.example");
    proxy.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarded_proto_and_host() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 0.0;
    cfg.trusted = vec!["127.0.0.0/8".into()];
    let proxy = cfg.start().await;
    let c = client();
    get(
        &c,
        &proxy.url("/"),
        &[
            ("host", "internal:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
        ],
    )
    .await;
    let h = s.last().headers;
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["host"], "internal:8080");
    proxy.stop().await;
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed_and_ours_added() {
    let (proxy, _s, _k) = proxy_at(100.0).await;
    let got = get(&client(), &proxy.url("/hop"), &[("x-user-id", "u1")]).await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("x-up-secret").is_none(),
        "a header the upstream named in Connection reached the client"
    );
    assert!(got.header("keep-alive").is_none());
    assert_eq!(got.header("x-up-kept"), Some("1"));
    assert_eq!(got.header("x-deployment-cohort"), Some("canary"));
    assert_eq!(got.header("x-deployment-version"), Some("v1.2.0-canary"));
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_requests_are_served_on_the_same_port() {
    let (proxy, s, _k) = proxy_at(0.0).await;
    let h2 = h2_client();
    let mut req = Request::get(format!("http://127.0.0.1:{}/h2", proxy.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.headers_mut().insert("x-user-id", "u1".parse().unwrap());
    let resp = h2.request(req).await.expect("h2c answer");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-deployment-cohort"], "stable");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"stable");
    let seen = s.last();
    assert_eq!(seen.path, "/h2");
    assert_eq!(
        seen.headers["host"],
        format!("127.0.0.1:{}", proxy.addr.port()),
        ":authority becomes Host upstream"
    );
    proxy.stop().await;
}
