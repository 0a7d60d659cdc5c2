//! The fields the proxy sets at its two borders: `X-Forwarded-*` and `X-Deployment-Cohort`
//! towards the upstream (after `hop::strip`), our own response fields on the way back.

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue, HOST};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_DEPLOYMENT_COHORT: HeaderName = HeaderName::from_static("x-deployment-cohort");
pub const X_DEPLOYMENT_VERSION: HeaderName = HeaderName::from_static("x-deployment-version");
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

/// Sets the forwarded headers on a request going upstream (after `hop::strip`). One map
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
