//! Any header bytes: cookie and header identities are found or not; never a panic, and a found
//! identity is always a slice of what the client sent.
#![no_main]
use libfuzzer_sys::fuzz_target;

use canary_proxy::http::fields::Fields;
use canary_proxy::proxy::identity::{identify, IdentitySource, IpText};
use http::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    let mut h = HeaderMap::new();
    for (i, part) in data.split(|b| *b == b'\n').enumerate() {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            h.append(if i % 2 == 0 { "cookie" } else { "x-user-id" }, v);
        }
    }
    let sources = ["cookie:session_id", "header:x-user-id", "cookie:a"]
        .map(|s| IdentitySource::parse(s).unwrap());
    let ip = IpText::new("2001:db8::1".parse().unwrap());
    let hasher = canary_proxy::cohort::CohortHasher::new("fuzz");
    if let Some((_, id)) = identify(&sources, Fields::Map(&h), &ip) {
        assert!(!id.is_empty());
        assert!(hasher.place(id).bucket < 1_000_000);
    }
    // The same bytes as a head our HTTP/1 server read (no map).
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for (i, part) in data.split(|b| *b == b'\n').enumerate() {
        head.extend_from_slice(if i % 2 == 0 {
            b"cookie: "
        } else {
            b"x-user-id: "
        });
        head.extend_from_slice(part);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if let Some(spans) = canary_proxy::http::fields::index(&head) {
        let fields = Fields::AsCame {
            head: &head,
            spans: &spans,
        };
        if let Some((_, id)) = identify(&sources, fields, &ip) {
            assert!(!id.is_empty());
            assert!(hasher.place(id).bucket < 1_000_000);
        }
    }
});
