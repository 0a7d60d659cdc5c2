//! Property tests (proptest) for what clients and operators control: config parsing, cookie and
//! header identity extraction, and `X-Forwarded-For` handling, each against a plain model.

use std::net::{IpAddr, Ipv4Addr};

use canary_proxy::config::Config;
use canary_proxy::http::fields::Fields;
use canary_proxy::proxy::identity::{client_ip, cookie, identify, IdentitySource, IpText};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use proptest::prelude::*;

fn parse(toml: &str) -> Result<Config, canary_proxy::config::ConfigError> {
    Config::from_toml_str(toml, "prop.toml", std::path::Path::new("/tmp"), &|_| None)
}

/// The fields of `h` as a head our HTTP/1 server would hand over (no header map).
fn as_came(h: &HeaderMap) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for (k, v) in h {
        head.extend_from_slice(k.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

const STABLE: &str = "[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text at all: an error or a config, never a panic.
    #[test]
    fn any_text_parses_or_fails_cleanly(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }

    /// Percentages: accepted exactly in 0..=100, refused outside naming the key.
    #[test]
    fn percentages_are_checked(p in -50.0f64..150.0) {
        let got = parse(&format!("{STABLE}[canary]\ntraffic_percent = {p:?}\n"));
        if (0.0..=100.0).contains(&p) {
            prop_assert_eq!(got.unwrap().canary.traffic_percent, p);
        } else {
            let e = got.unwrap_err();
            prop_assert_eq!(e.key, "canary.traffic_percent");
        }
    }

    /// Durations: a number with a unit is accepted and means what it says; without one, refused.
    #[test]
    fn durations_need_a_unit(n in 1u64..100_000, unit in prop::sample::select(vec!["ms", "s", "m", "h", ""])) {
        let got = parse(&format!("{STABLE}[timeouts]\nconnect = \"{n}{unit}\"\n"));
        let ms = match unit { "ms" => Some(n), "s" => Some(n * 1000), "m" => Some(n * 60_000), "h" => Some(n * 3_600_000), _ => None };
        match ms {
            Some(ms) => prop_assert_eq!(got.unwrap().timeouts.connect.as_millis() as u64, ms),
            None => prop_assert_eq!(got.unwrap_err().key, "timeouts.connect"),
        }
    }

    /// An unknown key anywhere is refused, named.
    #[test]
    fn unknown_keys_are_refused(table in prop::sample::select(vec!["proxy", "admin", "canary", "rollback", "timeouts", "limits", "state"]), key in "[a-z]{3,12}_x") {
        let e = parse(&format!("{STABLE}[{table}]\n{key} = 1\n")).unwrap_err();
        prop_assert!(e.key.contains(&key) || e.expected.contains(&key), "{e}");
    }

    /// Cookies: the first pair named `name` with a non-empty value, as a plain model finds it.
    #[test]
    fn cookie_extraction_matches_the_model(
        jar in prop::collection::vec(("[a-z]{1,4}", "[A-Za-z0-9._-]{0,6}"), 0..8),
        split in 0usize..8,
        name in "[a-z]{1,4}",
    ) {
        let pairs: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut h = HeaderMap::new();
        let cut = split.min(pairs.len());
        for part in [&pairs[..cut], &pairs[cut..]] {
            if !part.is_empty() {
                h.append("cookie", HeaderValue::from_str(&part.join("; ")).unwrap());
            }
        }
        let model = jar.iter().find(|(k, v)| *k == name && !v.is_empty()).map(|(_, v)| v.as_bytes().to_vec());
        prop_assert_eq!(cookie(Fields::Map(&h), &name).map(|v| v.to_vec()), model.clone());
        let head = as_came(&h);
        prop_assert_eq!(cookie(Fields::AsCame { head: &head, spans: &canary_proxy::http::fields::index(&head).unwrap() }, &name).map(|v| v.to_vec()), model);
    }

    /// Sources are tried in order; the first present and non-empty wins; `ip` always answers.
    #[test]
    fn identity_follows_the_source_order(user in "[ -~]{0,10}", sid in "[A-Za-z0-9]{0,6}", with_ip in any::<bool>()) {
        let mut sources = vec![IdentitySource::parse("header:x-user-id").unwrap(), IdentitySource::parse("cookie:sid").unwrap()];
        if with_ip {
            sources.push(IdentitySource::Ip);
        }
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_str(&user).unwrap());
        h.insert("cookie", HeaderValue::from_str(&format!("sid={sid}")).unwrap());
        let ip = IpText::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let model = |user: &str| if !user.is_empty() {
            Some(user.as_bytes().to_vec())
        } else if !sid.is_empty() {
            Some(sid.as_bytes().to_vec())
        } else if with_ip {
            Some(b"192.0.2.1".to_vec())
        } else {
            None
        };
        let got = identify(&sources, Fields::Map(&h), &ip).map(|(_, v)| v.to_vec());
        prop_assert_eq!(got, model(&user));
        // A head as it came is read as RFC 9110 has it (and `httparse` fills a map): a value
        // without the blanks around it.
        let head = as_came(&h);
        let got = identify(&sources, Fields::AsCame { head: &head, spans: &canary_proxy::http::fields::index(&head).unwrap() }, &ip).map(|(_, v)| v.to_vec());
        prop_assert_eq!(got, model(user.trim_matches(' ')));
    }

    /// X-Forwarded-For: only a trusted peer's list is read, right to left, skipping trusted hops.
    #[test]
    fn forwarded_for_matches_the_model(
        hops in prop::collection::vec(0u8..8, 0..6),
        trusted_hops in prop::collection::vec(0u8..8, 0..4),
        peer in 0u8..8,
    ) {
        let addr = |i: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
        let trusted: Vec<IpNet> = trusted_hops.iter().map(|i| IpNet::from(addr(*i))).collect();
        let mut h = HeaderMap::new();
        if !hops.is_empty() {
            let list: Vec<String> = hops.iter().map(|i| addr(*i).to_string()).collect();
            h.insert("x-forwarded-for", HeaderValue::from_str(&list.join(", ")).unwrap());
        }
        let is_trusted = |i: u8| trusted_hops.contains(&i);
        let model = if !is_trusted(peer) {
            addr(peer)
        } else {
            hops.iter().rev().find(|i| !is_trusted(**i)).map(|i| addr(*i))
                .unwrap_or_else(|| hops.first().map(|i| addr(*i)).unwrap_or(addr(peer)))
        };
        prop_assert_eq!(client_ip(addr(peer), Fields::Map(&h), &trusted), model);
        let head = as_came(&h);
        prop_assert_eq!(client_ip(addr(peer), Fields::AsCame { head: &head, spans: &canary_proxy::http::fields::index(&head).unwrap() }, &trusted), model);
    }
}
