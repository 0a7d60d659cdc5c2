//! The request head towards the upstream written from the client's head as our HTTP/1 server
//! read it, without a header map in between: its fields go on in their order and spelling,
//! less the hop-by-hop ones, and the proxy's forwarded fields follow, by the same rules as
//! `headers::to_upstream` (which the tests hold this to).

use http::Method;

use crate::http::fields::{Fields, Span};
use crate::http::headers::Hop;
use crate::http::headers::X_FORWARDED_FOR;
use crate::http::hop;

/// What the copy saw of the fields the proxy sets or reads.
struct Seen<'r> {
    /// The peer is one of ours: its `X-Forwarded-Proto` and `-Host` stand.
    trusted: bool,
    host: Option<&'r [u8]>,
    forwarded_for: bool,
    /// A trusted peer's `X-Forwarded-Proto` / `-Host` went on.
    proto: bool,
    forwarded_host: bool,
}

impl<'r> Seen<'r> {
    fn keep(&mut self, name: &'r [u8], value: &'r [u8]) -> bool {
        // Lengths first: most names are none of these.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                self.host.get_or_insert(value.trim_ascii());
                true
            }
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => {
                // Written once, with this peer added to the chain.
                self.forwarded_for = true;
                false
            }
            16 if name.eq_ignore_ascii_case(b"x-forwarded-host") => {
                self.forwarded_host |= self.trusted;
                self.trusted
            }
            17 if name.eq_ignore_ascii_case(b"x-forwarded-proto") => {
                self.proto |= self.trusted;
                self.trusted
            }
            19 if name.eq_ignore_ascii_case(b"x-deployment-cohort") => false,
            // The body is streamed as it comes: no upstream is asked for a `100 Continue`.
            6 if name.eq_ignore_ascii_case(b"expect") => false,
            _ => true,
        }
    }
}

/// Writes `METHOD target HTTP/1.1`, the fields of `raw` (the client's whole head, its fields at
/// `spans`) that go on, then `X-Forwarded-For`, `-Proto`, `Host` when the client sent none (the
/// request's authority, else `authority`, the endpoint's), `X-Forwarded-Host` and
/// `X-Deployment-Cohort`.
pub fn write_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    (raw, spans): (&[u8], &[Span]),
    hop: &Hop<'_>,
    authority: &str,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut seen = Seen {
        trusted: hop.peer_trusted,
        host: None,
        forwarded_for: false,
        proto: false,
        forwarded_host: false,
    };
    let field = |&(n0, n1, v0, v1): &Span| {
        (
            &raw[n0 as usize..n1 as usize],
            &raw[v0 as usize..v1 as usize],
        )
    };
    // Names a `Connection` field lists go too (rare: it usually lists options only).
    let listed = |name: &[u8]| {
        spans
            .iter()
            .map(field)
            .any(|(n, v)| n.eq_ignore_ascii_case(b"connection") && hop::lists(v, name))
    };
    let any_listed = spans.iter().map(field).any(|(n, v)| {
        n.len() == 10 && n.eq_ignore_ascii_case(b"connection") && hop::lists_fields(v)
    });
    for (name, value) in spans.iter().map(field) {
        if hop::is_hop_by_hop(name) || (any_listed && listed(name)) || !seen.keep(name, value) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }

    out.extend_from_slice(b"x-forwarded-for: ");
    if seen.forwarded_for {
        let fields = Fields::AsCame { head: raw, spans };
        for v in fields.all(&X_FORWARDED_FOR) {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(hop.peer.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !seen.proto {
        out.extend_from_slice(if hop.tls {
            b"x-forwarded-proto: https\r\n"
        } else {
            b"x-forwarded-proto: http\r\n"
        });
    }
    let host = seen
        .host
        .or_else(|| hop.authority.map(|a| a.as_str().as_bytes()));
    if seen.host.is_none() {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.unwrap_or(authority.as_bytes()));
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(host), false) = (host, seen.forwarded_host) {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-deployment-cohort: ");
    out.extend_from_slice(hop.cohort.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers::to_upstream;
    use crate::http::hop::strip as strip_hop_by_hop;
    use crate::server::h1::request::{parse, Parsed};
    use bytes::BytesMut;
    use http::HeaderValue;

    /// The request line and the fields (lowercased names, stably sorted by name) of a head.
    fn fields(head: &[u8]) -> (String, Vec<(String, String)>) {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(head).unwrap().is_complete(), "{head:?}");
        let line = format!("{} {}", req.method.unwrap(), req.path.unwrap());
        let mut got: Vec<_> = req
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8(h.value.to_vec()).unwrap();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        (line, got)
    }

    /// The head written both ways: through the header map as hyper's paths do, and raw.
    fn both_ways(head: &str, trusted: bool, tls: bool) -> (Vec<u8>, Vec<u8>) {
        let Parsed::Ours(parsed) = parse(&mut BytesMut::from(head), 8192, &mut Vec::new(), true)
        else {
            panic!("not ours: {head:?}")
        };
        let (mut parts, _) = parsed.req.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = parts.uri.authority().cloned();
        let (peer, cohort) = (
            HeaderValue::from_static("10.0.0.9"),
            HeaderValue::from_static("canary"),
        );
        let hop = Hop {
            peer: &peer,
            peer_trusted: trusted,
            tls,
            authority: authority.as_ref(),
            cohort: &cohort,
        };
        let mut raw = Vec::new();
        let spans = crate::http::fields::index(head.as_bytes()).unwrap();
        write_head(
            &mut raw,
            &parts.method,
            &target,
            (head.as_bytes(), &spans),
            &hop,
            "up:8080",
        );
        strip_hop_by_hop(&mut parts.headers);
        to_upstream(&mut parts.headers, &hop);
        let mut mapped = Vec::new();
        super::super::codec::write_head(
            &mut mapped,
            &parts.method,
            &target,
            &parts.headers,
            "up:8080",
            false,
        );
        (mapped, raw)
    }

    #[test]
    fn the_raw_head_carries_what_the_header_map_would() {
        let heads = [
            "GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-User-Id: 7\r\n\r\n",
            // Forwarded fields from the client, forged ones, every hop-by-hop kind, odd case,
            // a bare LF, and a name `Connection` lists.
            "GET / HTTP/1.1\r\nHOST: shop.example\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-proto: https\r\nX-Forwarded-Host: evil\r\nx-DEPLOYMENT-cohort: forged\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\nX-FORWARDED-FOR: 2.2.2.2 \r\nAccept: */*\r\n\r\n",
            // The chain itself named in `Connection`: it goes, and a new one starts here.
            "HEAD /h HTTP/1.1\r\nHost: shop\r\nConnection: X-Forwarded-For\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
            // Absolute form without `Host`: the target's authority becomes it.
            "GET http://shop.example:8443/p HTTP/1.1\r\nX-A: 1\r\n\r\n",
            "DELETE /x HTTP/1.1\r\nHost: shop\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n",
        ];
        for head in heads {
            for (trusted, tls) in [(false, false), (true, false), (false, true), (true, true)] {
                let (mapped, raw) = both_ways(head, trusted, tls);
                assert_eq!(
                    fields(&mapped),
                    fields(&raw),
                    "{head:?} trusted={trusted} tls={tls}\nmap: {}\nraw: {}",
                    String::from_utf8_lossy(&mapped),
                    String::from_utf8_lossy(&raw)
                );
            }
        }
    }

    #[test]
    fn the_raw_head_keeps_the_clients_order_and_spelling() {
        let (_, raw) = both_ways(
            "GET / HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 1.1.1.1\r\nX-Custom-Thing: A\r\nConnection: keep-alive\r\nx-other: b\r\n\r\n",
            false,
            false,
        );
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "GET / HTTP/1.1\r\nHost: shop\r\nX-Custom-Thing: A\r\nx-other: b\r\nx-forwarded-for: 1.1.1.1, 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: shop\r\nx-deployment-cohort: canary\r\n\r\n"
        );
    }
}
