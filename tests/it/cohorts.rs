//! Cohort assignment through the real proxy: the spec's formula, computed here independently,
//! decides the cohort header and the upstream actually hit.

use sha2::{Digest, Sha256};

use crate::support::*;

/// The spec's formula, written again from the spec's words (not the crate's code).
fn expected_canary(salt: &str, identity: &str, percent: f64) -> bool {
    let digest = Sha256::digest(format!("{salt}:{identity}").as_bytes());
    let bucket = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 1_000_000;
    bucket < (percent * 10_000.0).round() as u64
}

async fn split_of(
    proxy: &TestProxy,
    c: &Client,
    ids: impl Iterator<Item = String>,
    salt: &str,
    percent: f64,
) {
    for id in ids {
        let got = get(c, &proxy.url("/"), &[("x-user-id", &id)]).await;
        assert_eq!(got.status, 200);
        let want = if expected_canary(salt, &id, percent) {
            "canary"
        } else {
            "stable"
        };
        assert_eq!(got.header("x-deployment-cohort"), Some(want), "id {id}");
        assert_eq!(
            got.header("x-upstream"),
            Some(want),
            "id {id} hit the wrong upstream"
        );
        let version = if want == "canary" {
            "v1.2.0-canary"
        } else {
            "v1.1.0"
        };
        assert_eq!(got.header("x-deployment-version"), Some(version));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_header_ids_land_where_the_formula_says() {
    let (proxy, s, k) = proxy_at(30.0).await;
    let c = client();
    split_of(&proxy, &c, (0..1200).map(|i| format!("user-{i}")), "", 30.0).await;
    // The upstream saw each request with the cohort it was routed to.
    assert!(k
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.headers["x-deployment-cohort"] == "canary"));
    assert!(s
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.headers["x-deployment-cohort"] == "stable"));
    assert_eq!(s.count() + k.count(), 1200);
    proxy.stop().await;
}

#[tokio::test]
async fn salt_reshuffles_and_cookie_and_ip_sources_follow_the_formula() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.salt = "spring-sale".into();
    let proxy = cfg.start().await;
    let c = client();
    split_of(
        &proxy,
        &c,
        (0..300).map(|i| format!("u{i}")),
        "spring-sale",
        50.0,
    )
    .await;
    let moved = (0..300)
        .map(|i| format!("u{i}"))
        .filter(|id| expected_canary("spring-sale", id, 50.0) != expected_canary("", id, 50.0))
        .count();
    assert!(
        moved > 100,
        "a salt must reshuffle about half the ids, moved {moved}"
    );

    for i in 0..200 {
        let sid = format!("sess-{i}");
        let got = get(
            &c,
            &proxy.url("/"),
            &[("cookie", &format!("theme=dark; session_id={sid}"))],
        )
        .await;
        let want = if expected_canary("spring-sale", &sid, 50.0) {
            "canary"
        } else {
            "stable"
        };
        assert_eq!(
            got.header("x-deployment-cohort"),
            Some(want),
            "cookie {sid}"
        );
    }
    // No header, no cookie: the socket peer's IP.
    let got = get(&c, &proxy.url("/"), &[]).await;
    let want = if expected_canary("spring-sale", "127.0.0.1", 50.0) {
        "canary"
    } else {
        "stable"
    };
    assert_eq!(got.header("x-deployment-cohort"), Some(want));
    proxy.stop().await;
}

#[tokio::test]
async fn forwarded_for_chooses_the_ip_only_from_a_trusted_peer() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.identity = vec!["ip".into()];
    cfg.percent = 50.0;
    // Find two client addresses that the formula puts in different cohorts from 127.0.0.1.
    let local = expected_canary("", "127.0.0.1", 50.0);
    let other = (1..255)
        .map(|i| format!("203.0.113.{i}"))
        .find(|ip| expected_canary("", ip, 50.0) != local)
        .unwrap();
    let c = client();

    let untrusted = cfg.start().await;
    for _ in 0..5 {
        let got = get(&c, &untrusted.url("/"), &[("x-forwarded-for", &other)]).await;
        let want = if local { "canary" } else { "stable" };
        assert_eq!(
            got.header("x-deployment-cohort"),
            Some(want),
            "a forged X-Forwarded-For chose the cohort"
        );
    }
    untrusted.stop().await;

    cfg.trusted = vec!["127.0.0.1".into()];
    let trusted = cfg.start().await;
    let got = get(
        &c,
        &trusted.url("/"),
        &[("x-forwarded-for", &format!("{other}, 127.0.0.1"))],
    )
    .await;
    let want = if local { "stable" } else { "canary" };
    assert_eq!(
        got.header("x-deployment-cohort"),
        Some(want),
        "the trusted proxy's client IP decides"
    );
    trusted.stop().await;
}

#[tokio::test]
async fn disabled_zero_percent_and_endpointless_canaries_send_everyone_to_stable() {
    let (s, k) = upstreams().await;
    let c = client();
    for variant in ["disabled", "zero", "no endpoints"] {
        let mut cfg = Cfg::new(&s, &k);
        cfg.percent = 100.0;
        match variant {
            "disabled" => cfg.enabled = false,
            "zero" => cfg.percent = 0.0,
            _ => cfg.canary = vec![],
        }
        let proxy = cfg.start().await;
        for i in 0..100 {
            let got = get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
            assert_eq!(got.header("x-upstream"), Some("stable"), "{variant}");
        }
        proxy.stop().await;
    }
    assert_eq!(k.count(), 0);
    // And 100 % sends everyone to the canary.
    let mut cfg = Cfg::new(&s, &k);
    cfg.percent = 100.0;
    let proxy = cfg.start().await;
    for i in 0..50 {
        let got = get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
        assert_eq!(got.header("x-upstream"), Some("canary"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn expose_headers_off_hides_cohort_and_version() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.expose_headers = false;
    let proxy = cfg.start().await;
    let c = client();
    for i in 0..20 {
        let got = get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
        assert!(got.header("x-deployment-cohort").is_none());
        assert!(got.header("x-deployment-version").is_none());
    }
    // The upstream still learns the cohort.
    assert!(s
        .seen
        .lock()
        .unwrap()
        .iter()
        .chain(k.seen.lock().unwrap().iter())
        .all(|r| r.headers.contains_key("x-deployment-cohort")));
    proxy.stop().await;
}
