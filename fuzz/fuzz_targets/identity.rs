//! Any header bytes: cookie and header identities are found or not; never a panic, and a found
//! identity is always a slice of what the client sent.
#![no_main]
use libfuzzer_sys::fuzz_target;

use canary_proxy::identity::{identify, IdentitySource, IpText};
use http::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    let mut h = HeaderMap::new();
    for (i, part) in data.split(|b| *b == b'\n').enumerate() {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            h.append(if i % 2 == 0 { "cookie" } else { "x-user-id" }, v);
        }
    }
    let sources = ["cookie:session_id", "header:x-user-id", "cookie:a"].map(|s| IdentitySource::parse(s).unwrap());
    let ip = IpText::new("2001:db8::1".parse().unwrap());
    if let Some((_, id)) = identify(&sources, &h, &ip) {
        assert!(!id.is_empty());
        let hasher = canary_proxy::cohort::CohortHasher::new("fuzz");
        assert!(hasher.place(id).bucket < 1_000_000);
    }
});
