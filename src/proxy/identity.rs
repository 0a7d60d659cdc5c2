//! Who a request belongs to: the first configured identity source that is present and
//! non-empty, and the client's IP as the spec defines it (the socket peer, or the right-most
//! untrusted `X-Forwarded-For` entry when the peer is a trusted proxy).
//!
//! Pure and allocation-free: identities are borrowed from the request's headers, and an IP is
//! written as text into a stack buffer.

use std::net::{IpAddr, SocketAddr};

use http::header::COOKIE;

pub use crate::config::IdentitySource;
use crate::http::fields::Fields;
use crate::http::headers::X_FORWARDED_FOR;
use ipnet::IpNet;

pub use crate::http::ip_text::IpText;

/// Which kind of source matched: logged, unlike the identity itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Header,
    Cookie,
    Ip,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Header => "header",
            SourceKind::Cookie => "cookie",
            SourceKind::Ip => "ip",
        }
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Parses one `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `1.2.3.4:80`, `[2001:db8::1]:80`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

/// The client's IP: the peer, unless the peer is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not itself trusted (the left-most when all are trusted).
/// An entry that is not an IP ends the walk at the last address we could believe.
pub fn client_ip(peer: IpAddr, fields: Fields<'_>, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut believed = peer;
    // Several X-Forwarded-For headers form one list, in order; walk it from the right.
    for value in fields.all(&X_FORWARDED_FOR).rev() {
        let Some(text) = crate::http::fields::text(value) else {
            return believed;
        };
        for entry in text.rsplit(',') {
            match parse_forwarded_ip(entry) {
                Some(ip) => {
                    let ip = ip.to_canonical();
                    if !is_trusted(ip, trusted) {
                        return ip;
                    }
                    believed = ip;
                }
                None => return believed,
            }
        }
    }
    believed
}

/// The value of cookie `name` in the request's `Cookie` headers, if present and non-empty.
pub fn cookie<'a>(fields: Fields<'a>, name: &str) -> Option<&'a [u8]> {
    for value in fields.all(&COOKIE) {
        for pair in value.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] == name.as_bytes() {
                let v = pair[eq + 1..].trim_ascii();
                if !v.is_empty() {
                    return Some(v);
                }
            }
        }
    }
    None
}

/// The first source present and non-empty. `ip` is always present.
pub fn identify<'a>(
    sources: &'a [IdentitySource],
    fields: Fields<'a>,
    ip: &'a IpText,
) -> Option<(SourceKind, &'a [u8])> {
    for source in sources {
        match source {
            IdentitySource::Header(name) => {
                if let Some(v) = fields.get(name) {
                    if !v.is_empty() {
                        return Some((SourceKind::Header, v));
                    }
                }
            }
            IdentitySource::Cookie(name) => {
                if let Some(v) = cookie(fields, name) {
                    return Some((SourceKind::Cookie, v));
                }
            }
            IdentitySource::Ip => return Some((SourceKind::Ip, ip.as_bytes())),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;
    use http::HeaderMap;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// The same fields as a head as it came: names in another case, blanks around values.
    fn as_came(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for (k, v) in pairs {
            head.extend_from_slice(format!("{}:  {v} \r\n", k.to_uppercase()).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn check_ip(peer: &str, xff: &[&str], trusted: &[&str], expected: &str) {
        let pairs: Vec<_> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let (h, head) = (headers(&pairs), as_came(&pairs));
        let spans = crate::http::fields::index(&head).unwrap();
        let raw = Fields::AsCame {
            head: &head,
            spans: &spans,
        };
        for fields in [Fields::Map(&h), raw] {
            let got = client_ip(peer.parse().unwrap(), fields, &nets(trusted));
            assert_eq!(
                got.to_string(),
                expected,
                "peer {peer} xff {xff:?} trusted {trusted:?}"
            );
        }
    }

    #[test]
    fn client_ip_table() {
        check_ip("10.0.0.1", &["1.1.1.1"], &[], "10.0.0.1");
        check_ip("10.0.0.1", &["1.1.1.1"], &["192.168.0.0/16"], "10.0.0.1");
        check_ip("10.0.0.1", &["1.1.1.1"], &["10.0.0.0/8"], "1.1.1.1");
        check_ip(
            "10.0.0.1",
            &["6.6.6.6, 1.1.1.1, 10.0.0.2"],
            &["10.0.0.0/8"],
            "1.1.1.1",
        );
        check_ip(
            "10.0.0.1",
            &["6.6.6.6", "1.1.1.1"],
            &["10.0.0.0/8"],
            "1.1.1.1",
        );
        check_ip(
            "10.0.0.1",
            &["10.0.0.3, 10.0.0.2"],
            &["10.0.0.0/8"],
            "10.0.0.3",
        );
        check_ip("10.0.0.1", &[], &["10.0.0.1/32"], "10.0.0.1");
        check_ip(
            "10.0.0.1",
            &["garbage, 1.1.1.1"],
            &["10.0.0.0/8"],
            "1.1.1.1",
        );
        check_ip(
            "10.0.0.1",
            &["1.1.1.1, garbage"],
            &["10.0.0.0/8"],
            "10.0.0.1",
        );
        check_ip(
            "10.0.0.1",
            &["[2001:db8::1]:443"],
            &["10.0.0.0/8"],
            "2001:db8::1",
        );
        check_ip("10.0.0.1", &["1.1.1.1:5000"], &["10.0.0.0/8"], "1.1.1.1");
        check_ip("::ffff:10.0.0.1", &["1.1.1.1"], &["10.0.0.0/8"], "1.1.1.1");
    }

    fn check_identity(
        sources: &[&str],
        pairs: &[(&str, &str)],
        expected: Option<(SourceKind, &str)>,
    ) {
        let sources: Vec<_> = sources
            .iter()
            .map(|s| IdentitySource::parse(s).unwrap())
            .collect();
        let (h, head) = (headers(pairs), as_came(pairs));
        let ip = IpText::new("203.0.113.7".parse().unwrap());
        let spans = crate::http::fields::index(&head).unwrap();
        let raw = Fields::AsCame {
            head: &head,
            spans: &spans,
        };
        for fields in [Fields::Map(&h), raw] {
            let got =
                identify(&sources, fields, &ip).map(|(k, v)| (k, std::str::from_utf8(v).unwrap()));
            assert_eq!(got, expected, "sources {sources:?} headers {pairs:?}");
        }
    }

    #[test]
    fn identity_table() {
        let all = ["header:x-user-id", "cookie:session_id", "ip"];
        check_identity(
            &all,
            &[("x-user-id", "u1")],
            Some((SourceKind::Header, "u1")),
        );
        check_identity(
            &all,
            &[("x-user-id", ""), ("cookie", "session_id=s1")],
            Some((SourceKind::Cookie, "s1")),
        );
        check_identity(
            &all,
            &[("cookie", "a=1; session_id=s2; b=3")],
            Some((SourceKind::Cookie, "s2")),
        );
        check_identity(
            &all,
            &[("cookie", "a=1"), ("cookie", "session_id=s3")],
            Some((SourceKind::Cookie, "s3")),
        );
        check_identity(
            &all,
            &[("cookie", "xsession_id=s4")],
            Some((SourceKind::Ip, "203.0.113.7")),
        );
        check_identity(
            &all,
            &[("cookie", "session_id=")],
            Some((SourceKind::Ip, "203.0.113.7")),
        );
        check_identity(&["header:x-user-id"], &[], None);
        check_identity(&["cookie:sid"], &[("cookie", "sid = v9 ")], None);
        check_identity(
            &["cookie:sid"],
            &[("cookie", "sid=v9 ")],
            Some((SourceKind::Cookie, "v9")),
        );
    }

    #[test]
    fn source_parsing() {
        assert_eq!(IdentitySource::parse("ip"), Ok(IdentitySource::Ip));
        assert!(IdentitySource::parse("header:").is_err());
        assert!(IdentitySource::parse("header:bad name").is_err());
        assert!(IdentitySource::parse("cookie:").is_err());
        assert!(IdentitySource::parse("query:id").is_err());
        assert_eq!(
            IdentitySource::parse("header:X-User-Id").unwrap().render(),
            "header:x-user-id"
        );
    }
}
