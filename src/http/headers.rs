//! Header rewriting at the proxy's two borders: hop-by-hop headers (and every header named in
//! `Connection`) removed both ways, `X-Forwarded-*` and `X-Deployment-Cohort` set towards the
//! upstream, our own response headers added after the stripping.

use http::header::{
    Entry, HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::header::{PROXY_AUTHENTICATE, PROXY_AUTHORIZATION};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_DEPLOYMENT_COHORT: HeaderName = HeaderName::from_static("x-deployment-cohort");
pub const X_DEPLOYMENT_VERSION: HeaderName = HeaderName::from_static("x-deployment-version");
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
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("close")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
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

/// What the forwarded headers need to know about this hop.
pub struct Hop<'a> {
    /// The peer's address as a header value (made once per connection).
    pub peer: &'a HeaderValue,
    pub peer_trusted: bool,
    pub tls: bool,
    /// The request's authority when it came as an HTTP/2 `:authority` or absolute URI.
    pub authority: Option<&'a http::uri::Authority>,
    pub cohort: &'a HeaderValue,
}

/// Sets the forwarded headers on a request going upstream (after `strip_hop_by_hop`). One map
/// lookup per header (the entry API), as this runs for every request.
pub fn to_upstream(headers: &mut HeaderMap, hop: &Hop<'_>) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(v) => {
            v.insert(hop.peer.clone());
        }
        Entry::Occupied(mut o) => {
            let mut joined = Vec::with_capacity(64);
            for v in o.iter() {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(hop.peer.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                o.insert(v);
            }
        }
    }

    let proto = HeaderValue::from_static(if hop.tls { "https" } else { "http" });
    set_unless_trusted(headers, X_FORWARDED_PROTO, proto, hop.peer_trusted);

    // The client's Host is kept; an HTTP/2 request carries it as :authority instead.
    let host = match headers.entry(HOST) {
        Entry::Occupied(o) => Some(o.get().clone()),
        Entry::Vacant(v) => hop
            .authority
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .map(|h| v.insert(h).clone()),
    };
    if let Some(host) = host {
        set_unless_trusted(headers, X_FORWARDED_HOST, host, hop.peer_trusted);
    }
    headers.insert(X_DEPLOYMENT_COHORT, hop.cohort.clone());
}

/// Sets `name` to `value`, unless a trusted peer (another proxy of ours) already set it.
fn set_unless_trusted(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderValue,
    trusted: bool,
) {
    match headers.entry(name) {
        Entry::Occupied(_) if trusted => {}
        Entry::Occupied(mut o) => {
            o.insert(value);
        }
        Entry::Vacant(v) => {
            v.insert(value);
        }
    }
}

/// Adds `X-Deployment-Cohort` and `X-Deployment-Version` to a response.
pub fn expose(headers: &mut HeaderMap, cohort: &HeaderValue, version: &HeaderValue) {
    headers.insert(X_DEPLOYMENT_COHORT, cohort.clone());
    headers.insert(X_DEPLOYMENT_VERSION, version.clone());
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
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_host_set_for_untrusted_peers() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.append(X_FORWARDED_FOR, "2.2.2.2".parse().unwrap());
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        h.insert(HOST, "shop.example".parse().unwrap());
        let cohort = HeaderValue::from_static("canary");
        let peer = HeaderValue::from_static("10.0.0.9");
        let hop = Hop {
            peer: &peer,
            peer_trusted: false,
            tls: false,
            authority: None,
            cohort: &cohort,
        };
        to_upstream(&mut h, &hop);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "shop.example");
        assert_eq!(h[X_DEPLOYMENT_COHORT], "canary");
    }
}
