//! Any X-Forwarded-For bytes from a trusted peer: the client IP is the peer or one of the
//! listed addresses; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

use canary_proxy::http::fields::Fields;
use canary_proxy::proxy::identity::client_ip;
use http::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    let mut h = HeaderMap::new();
    for part in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            h.append("x-forwarded-for", v);
        }
    }
    let trusted = ["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let peer = "10.1.2.3".parse().unwrap();
    let ip = client_ip(peer, Fields::Map(&h), &trusted);
    // The same bytes as a head our HTTP/1 server read (no map): the same rule holds.
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for part in data.split(|b| *b == b'\n') {
        head.extend_from_slice(b"x-forwarded-for: ");
        head.extend_from_slice(part);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let as_came = canary_proxy::http::fields::index(&head).map(|spans| {
        client_ip(
            peer,
            Fields::AsCame {
                head: &head,
                spans: &spans,
            },
            &trusted,
        )
    });
    // The answer is the peer, or an address the client listed.
    let listed = |entry: &str| -> Option<std::net::IpAddr> {
        let e = entry.trim();
        e.parse::<std::net::IpAddr>()
            .ok()
            .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            .or_else(|| e.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
            .map(|ip| ip.to_canonical())
    };
    let text = String::from_utf8_lossy(data);
    let found = text.split(['\n', ',']).filter_map(listed).any(|l| l == ip);
    assert!(
        ip == peer || found,
        "{ip} is neither the peer nor listed in {text:?}"
    );
    if let Some(ip) = as_came {
        let found = text.split(['\n', ',']).filter_map(listed).any(|l| l == ip);
        assert!(
            ip == peer || found,
            "as it came: {ip} is neither the peer nor listed in {text:?}"
        );
    }
});
