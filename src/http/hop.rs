//! The hop-by-hop rule of RFC 9110 §7.6.1, in one place for every path: the fields that never
//! cross the proxy, and the names a `Connection` field lists, which go with them. Used on a
//! header map (hyper's paths) and on a head's raw lines (our HTTP/1 server, the direct path).

use http::header::{
    HeaderMap, HeaderName, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers of RFC 9110 §7.6.1 besides `Connection` (and what it names).
const HOP_BY_HOP: [HeaderName; 8] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// Whether `name` (any case) is hop-by-hop by itself (`Connection` included; not the names a
/// `Connection` header lists). By length first: on a raw head this runs for every field.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let candidates: &[&str] = match name.len() {
        2 => &["te"],
        7 => &["trailer", "upgrade"],
        10 => &["connection", "keep-alive"],
        16 => &["proxy-connection"],
        17 => &["transfer-encoding"],
        18 => &["proxy-authenticate"],
        19 => &["proxy-authorization"],
        _ => return false,
    };
    candidates
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 and every header `Connection` names.
pub fn strip(headers: &mut HeaderMap) {
    // One pass over the few names a message has, instead of a lookup per hop-by-hop name:
    // most messages carry none but `Connection: keep-alive`.
    let mut hop = false;
    let mut connection = false;
    for name in headers.keys() {
        if *name == CONNECTION {
            connection = true;
        } else if HOP_BY_HOP.contains(name) {
            hop = true;
        }
    }
    if connection {
        // Only names other than the usual options need a lookup (and, rarely, a small Vec).
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| tokens(v.as_bytes()))
            .filter(|t| names_a_field(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    if hop {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// The tokens of a `Connection` value: comma-separated, blanks trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a `Connection` token names a field (which then goes too), rather than being empty
/// or one of the connection options `keep-alive` and `close`.
pub fn names_a_field(token: &[u8]) -> bool {
    !token.is_empty()
        && !token.eq_ignore_ascii_case(b"keep-alive")
        && !token.eq_ignore_ascii_case(b"close")
}

/// Whether a `Connection` value lists any field name (rare: it usually lists options only).
pub fn lists_fields(value: &[u8]) -> bool {
    tokens(value).any(names_a_field)
}

/// Whether a `Connection` value lists `name` (any case).
pub fn lists(value: &[u8], name: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_test_knows_exactly_the_hop_by_hop_names() {
        for name in HOP_BY_HOP.iter().chain([&CONNECTION]) {
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            assert!(
                is_hop_by_hop(name.as_str().to_uppercase().as_bytes()),
                "{name}"
            );
        }
        for name in [
            "host",
            "content-length",
            "date",
            "tee",
            "x-upgrade",
            "connectionx",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
        assert_eq!(
            HOP_BY_HOP.len() + 1,
            9,
            "a new hop-by-hop name belongs in is_hop_by_hop too"
        );
    }

    #[test]
    fn connection_named_and_standard_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TE, "trailers".parse().unwrap());
        h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_tokens_name_fields_unless_they_are_options() {
        assert!(!lists_fields(b"keep-alive"));
        assert!(!lists_fields(b" Close , ,keep-alive "));
        assert!(lists_fields(b"keep-alive, X-Secret"));
        assert!(lists(b"keep-alive,  x-secret ", b"X-Secret"));
        assert!(!lists(b"keep-alive, X-Secrets", b"X-Secret"));
    }
}
