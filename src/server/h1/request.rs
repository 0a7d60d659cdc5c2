//! The request heads our own HTTP/1 server takes, parsed with `httparse` (header values share
//! the read buffer's bytes), and the rule for which it leaves to hyper: an upgrade, HTTP/1.0,
//! `CONNECT`, any framing but one plain `Content-Length` or one `Transfer-Encoding: chunked`
//! (both together, two lengths, other codings: the smuggler's tools), an `Expect` but
//! `100-continue`, or anything malformed or over the limits. hyper answers those exactly as it
//! always did, so every refusal keeps one source.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::body::Reading;
use super::scan::scan;
use crate::http::body::ClientBody;

/// As many request headers as hyper's server is set to take (`server::http1_settings`).
const MAX_HEADERS: usize = 256;
pub use crate::http::fields::Span;

/// A request we serve ourselves.
#[derive(Debug)]
pub struct Head {
    pub req: Request<ClientBody>,
    /// The client asked to close after this exchange (`Connection: close`).
    pub close: bool,
    /// The client takes trailers (`TE: trailers`): a chunked answer may carry them.
    pub trailers: bool,
    /// The head as it came (request line and fields): the direct path writes its fields on
    /// without going through the header map (`direct::forwarded`).
    pub raw: Bytes,
    /// The request's body, read by the connection as the handler asks for it. Boxed: a head is
    /// moved a few times, and most carry none.
    pub body: Option<Box<Reading>>,
}

// Returned once per request and unpacked at once: boxing the head would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    Ours(Head),
    /// More bytes are needed.
    Partial,
    /// hyper's to answer; the buffer is as it was.
    Hyper,
    /// hyper's to answer, with these bytes first (the head already taken off the buffer).
    HyperFrom(Bytes),
}

/// Parses one request head off the front of `buf`; `spans` gets where each field sits in
/// `Head::raw` (a connection's own `Vec`, reused, so that no room is zeroed per request).
/// `map`: the fields go into the request's header map too; without it the map stays
/// empty and the fields are read where they are (`fields::Fields::AsCame`).
pub fn parse(buf: &mut BytesMut, max_head: usize, spans: &mut Vec<Span>, map: bool) -> Parsed {
    spans.clear();
    let (len, method, target, scan) = {
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) if len <= max_head => len,
            Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
            _ => return Parsed::Hyper,
        };
        if req.version != Some(1) {
            return Parsed::Hyper;
        }
        let Some(scan) = scan(req.headers) else {
            return Parsed::Hyper;
        };
        let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
            Some(Ok(m)) if m != Method::CONNECT => m,
            _ => return Parsed::Hyper,
        };
        let base = buf.as_ptr() as usize;
        let path = req.path.unwrap_or("");
        let p = (path.as_ptr() as usize - base) as u32;
        for h in req.headers.iter() {
            // Within the head, which is at most `max_head` long (well under 4 GiB).
            let n = (h.name.as_ptr() as usize - base) as u32;
            let v = (h.value.as_ptr() as usize - base) as u32;
            spans.push((n, n + h.name.len() as u32, v, v + h.value.len() as u32));
        }
        (len, method, (p, p + path.len() as u32), scan)
    };
    let bytes = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(bytes.slice(target.0 as usize..target.1 as usize)) else {
        return Parsed::HyperFrom(bytes);
    };
    if !map {
        // `httparse` has checked every name and value, as hyper relies on too.
        let (body, reading) = scan.body();
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        return Parsed::Ours(Head {
            req,
            close: scan.close,
            trailers: scan.trailers,
            raw: bytes,
            body: reading,
        });
    }
    // Room for the forwarded headers the pipeline adds: growing the map would move it.
    let mut headers = reused_map(spans.len() + 6);
    for &(n0, n1, v0, v1) in spans.iter() {
        let Some(name) = header_name(&bytes[n0 as usize..n1 as usize]) else {
            return Parsed::HyperFrom(bytes);
        };
        // httparse has checked the value's bytes, as hyper relies on too.
        let value = match HeaderValue::from_maybe_shared(bytes.slice(v0 as usize..v1 as usize)) {
            Ok(v) => v,
            Err(_) => return Parsed::HyperFrom(bytes),
        };
        headers.append(name, value);
    }
    let (body, reading) = scan.body();
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Parsed::Ours(Head {
        req,
        close: scan.close,
        trailers: scan.trailers,
        raw: bytes,
        body: reading,
    })
}

thread_local! {
    /// Header maps done with, kept for the next heads this worker parses: a new map costs two
    /// allocations. Bounded in number and size, so a burst leaves little behind.
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

const MAPS_KEPT: usize = 64;
const MAP_CAPACITY_KEPT: usize = 64;

/// Gives a map back once its exchange is done (its values, and their share of a read buffer,
/// are dropped here).
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() > MAP_CAPACITY_KEPT || map.capacity() == 0 {
        return;
    }
    map.clear();
    MAPS.with(|maps| {
        let mut maps = maps.borrow_mut();
        if maps.len() < MAPS_KEPT {
            maps.push(map);
        }
    });
}

fn reused_map(want: usize) -> HeaderMap {
    match MAPS.with(|maps| maps.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(want);
            map
        }
        None => HeaderMap::with_capacity(want),
    }
}

thread_local! {
    /// Header names seen lately, one per slot of a cheap hash of their bytes. A name the `http`
    /// crate has no constant for (`x-user-id`, `x-forwarded-for`) is copied into an allocation
    /// of its own every time it is parsed; from here it is shared instead.
    static NAMES: RefCell<[Option<HeaderName>; 64]> = const { RefCell::new([const { None }; 64]) };
}

fn header_name(bytes: &[u8]) -> Option<HeaderName> {
    let (first, last) = (*bytes.first()?, *bytes.last()?);
    // Case-blind: `| 0x20` lowercases letters and leaves token punctuation as it finds it.
    let slot = (bytes.len() * 31 + (first | 0x20) as usize + (last | 0x20) as usize) % 64;
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(known) = &names[slot] {
            if bytes.eq_ignore_ascii_case(known.as_str().as_bytes()) {
                return Some(known.clone());
            }
        }
        let name = HeaderName::from_bytes(bytes).ok()?;
        names[slot] = Some(name.clone());
        Some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Parsed {
        parse(&mut BytesMut::from(head), 8192, &mut Vec::new(), true)
    }

    #[test]
    fn a_plain_get_is_ours_and_leaves_what_follows() {
        let mut buf = BytesMut::from(
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-User-Id: 7\r\nConnection: close\r\n\r\nGET /next",
        );
        let Parsed::Ours(head) = parse(&mut buf, 8192, &mut Vec::new(), true) else {
            panic!("not ours")
        };
        assert_eq!(head.req.uri(), "/a?b=1");
        assert_eq!(head.req.headers()["x-user-id"], "7");
        assert_eq!(head.req.headers()["host"], "x");
        assert!(head.close);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn without_a_map_the_fields_are_read_where_they_came() {
        let mut spans = Vec::new();
        let mut buf = BytesMut::from(
            "GET /a HTTP/1.1\r\nHost: x\r\nX-User-Id:  7 \r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        );
        let Parsed::Ours(head) = parse(&mut buf, 8192, &mut spans, false) else {
            panic!("not ours")
        };
        assert!(head.req.headers().is_empty());
        let fields = crate::http::fields::Fields::AsCame {
            head: &head.raw,
            spans: &spans,
        };
        let name = HeaderName::from_static("x-user-id");
        assert_eq!(fields.get(&name), Some(&b"7"[..]));
        let cookie = http::header::COOKIE;
        let all: Vec<_> = fields.all(&cookie).collect();
        assert_eq!(all, [&b"a=1"[..], b"b=2"]);
        assert_eq!(fields.all(&cookie).next_back(), Some(&b"b=2"[..]));
    }

    #[test]
    fn a_head_with_many_headers_is_whole() {
        for n in [2, 32, 33, 200] {
            let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
            for i in 1..n {
                head.push_str(&format!("X-H{i}: v{i}\r\n"));
            }
            head.push_str("\r\n");
            let Parsed::Ours(got) = parsed(&head) else {
                panic!("{n} headers: not ours")
            };
            let h = got.req.headers();
            assert_eq!(h.len(), n, "{n} headers");
            assert_eq!(h["host"], "x");
            assert_eq!(
                h[format!("x-h{}", n - 1).as_str()],
                format!("v{}", n - 1).as_str()
            );
        }
    }

    #[test]
    fn plain_bodies_are_ours_and_the_smugglers_framings_hypers() {
        for head in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n",
        ] {
            let Parsed::Ours(got) = parsed(head) else {
                panic!("{head:?}: not ours")
            };
            assert!(got.body.is_some(), "{head:?}");
        }
        for head in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: fancy\r\nContent-Length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(matches!(parsed(head), Parsed::Hyper), "{head:?}");
        }
        // An announced empty body is no body.
        let Parsed::Ours(got) = parsed("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        else {
            panic!("not ours")
        };
        assert!(got.body.is_none());
    }

    #[test]
    fn header_names_are_the_same_from_the_cache_in_any_case() {
        for name in [
            "X-User-Id",
            "x-user-id",
            "HOST",
            "host",
            "x-a",
            "x-b",
            "Accept",
        ] {
            for _ in 0..3 {
                let got = header_name(name.as_bytes()).unwrap();
                assert_eq!(
                    got,
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    "{name}"
                );
            }
        }
        assert!(header_name(b"").is_none() && header_name(b"bad name").is_none());
    }

    #[test]
    fn a_head_is_partial_until_whole_and_hypers_past_the_limit() {
        assert!(matches!(parsed("GET / HTTP/1.1\r\nHost:"), Parsed::Partial));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert!(matches!(parsed(&long), Parsed::Hyper));
        let whole = format!("{long}\r\n");
        assert!(matches!(parsed(&whole), Parsed::Hyper));
    }
}
