//! The response on the wire towards the client: the head, and how the body is framed. The
//! framing is always ours (the body's own length, or chunked), never a header passed along, so
//! what we announce is what we send.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};

use crate::http::headers::{X_DEPLOYMENT_COHORT, X_DEPLOYMENT_VERSION};
use crate::http::lines::RawHead;
use crate::http::lines::{copy_kept, Keep};

/// How the body after a response head is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow: a `HEAD` request, 1xx, 204, 304. Headers go as they are (a
    /// `Content-Length` there tells the size the body would have).
    None,
    Length(u64),
    Chunked,
}

impl Framing {
    /// `exact`: the body's exact size, when known before it is read.
    pub fn of(head_request: bool, status: StatusCode, exact: Option<u64>) -> Framing {
        if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::None;
        }
        match exact {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    }
}

/// Writes the status line, the headers, our framing header, `date` when the answer has none
/// (as hyper's server adds it), and `connection: close` when this answer ends the connection.
///
/// `raw`: the upstream's head as it came (`direct::codec::Head::raw`); its fields follow the
/// map's, less the hop-by-hop ones, its framing, and any the map sets itself.
pub fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    raw: Option<&RawHead>,
    framing: Framing,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        if name == CONNECTION
            || (framing != Framing::None && (name == CONTENT_LENGTH || name == TRANSFER_ENCODING))
        {
            continue;
        }
        dated |= name == DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(raw) = raw {
        if let Some(ours) = &raw.ours {
            out.extend_from_slice(ours);
        }
        let mut skip = Skip {
            map: headers,
            ours: raw.ours.is_some(),
            framing,
            dated: false,
        };
        copy_kept(out, &raw.upstream, &mut skip);
        dated |= skip.dated;
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What of an upstream's raw head does not go on besides its hop-by-hop fields.
struct Skip<'a> {
    /// Fields the proxy set in the response's map.
    map: &'a HeaderMap,
    /// The proxy's own `X-Deployment-*` lines were written (`RawHead::ours`).
    ours: bool,
    /// With a body, the framing fields are ours.
    framing: Framing,
    /// A `date` field went on.
    dated: bool,
}

impl<'r> Keep<'r> for Skip<'_> {
    fn keep(&mut self, name: &'r [u8], _value: &'r [u8]) -> bool {
        let skips = (self.framing != Framing::None && name.eq_ignore_ascii_case(b"content-length"))
            || (self.ours
                && (name.eq_ignore_ascii_case(X_DEPLOYMENT_COHORT.as_str().as_bytes())
                    || name.eq_ignore_ascii_case(X_DEPLOYMENT_VERSION.as_str().as_bytes())))
            || self
                .map
                .keys()
                .any(|k| name.eq_ignore_ascii_case(k.as_str().as_bytes()));
        self.dated |= !skips && name.eq_ignore_ascii_case(b"date");
        !skips
    }

    fn restart(&mut self) {
        self.dated = false;
    }
}

/// The start of one chunk of `len` bytes.
pub fn chunk_start(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and the trailer section (empty, or these fields).
pub fn chunked_end(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

thread_local! {
    /// The `date` text, made once a second per thread rather than per answer.
    static DATE_TEXT: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_TEXT.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if let Ok(bytes) = <[u8; 29]>::try_from(text.as_bytes()) {
                *cached = (second, bytes);
            }
        }
        f(&cached.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head_text(map: &HeaderMap, raw: Option<&RawHead>, framing: Framing, close: bool) -> String {
        let mut out = Vec::new();
        write_head(&mut out, StatusCode::OK, map, raw, framing, close);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_head_frames_the_body_itself() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(
            DATE,
            HeaderValue::from_static("Thu, 26 Nov 2026 22:00:00 GMT"),
        );
        assert_eq!(
            head_text(&headers, None, Framing::Length(2), false),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Thu, 26 Nov 2026 22:00:00 GMT\r\ncontent-length: 2\r\n\r\n"
        );
        // A HEAD answer keeps the size it announces; a closing answer says so.
        let text = head_text(&headers, None, Framing::None, true);
        assert!(
            text.contains("content-length: 999\r\n") && text.ends_with("connection: close\r\n\r\n")
        );
    }

    #[test]
    fn an_answer_without_a_date_gets_one() {
        let mut out = Vec::new();
        write_head(
            &mut out,
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            None,
            Framing::Chunked,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        let date = text.lines().find_map(|l| l.strip_prefix("date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{text}");
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\ntransfer-encoding: chunked\r\n"));
    }

    #[test]
    fn an_upstream_head_goes_on_less_its_hop_fields_framing_and_what_the_proxy_sets() {
        let upstream = &b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nx-deployment-cohort: forged\r\nDate: Thu, 26 Nov 2026 22:00:00 GMT\nSet-Cookie: a=1\r\nX-Mine: up\r\nSet-Cookie: b=2\r\n\r\n"[..];
        let raw = RawHead {
            upstream: bytes::Bytes::from_static(upstream),
            ours: Some(bytes::Bytes::from_static(
                b"x-deployment-cohort: canary\r\nx-deployment-version: v2\r\n",
            )),
        };
        let mut map = HeaderMap::new();
        map.insert("x-mine", HeaderValue::from_static("proxy"));
        assert_eq!(
            head_text(&map, Some(&raw), Framing::Length(2), false),
            "HTTP/1.1 200 OK\r\nx-mine: proxy\r\nx-deployment-cohort: canary\r\nx-deployment-version: v2\r\nServer: up\r\nDate: Thu, 26 Nov 2026 22:00:00 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\ncontent-length: 2\r\n\r\n"
        );
        // Without a body the announced length stays; without our lines, the upstream's go on.
        let raw = RawHead { ours: None, ..raw };
        let text = head_text(&HeaderMap::new(), Some(&raw), Framing::None, false);
        assert!(
            text.contains("Content-Length: 2\r\n")
                && text.contains("x-deployment-cohort: forged\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("X-Secret") && !text.contains("Keep-Alive"),
            "{text}"
        );
    }

    #[test]
    fn chunk_sizes_and_lengths_are_written_exactly() {
        for n in [0usize, 1, 9, 15, 16, 255, 256, 4095, 65536, usize::MAX >> 4] {
            let mut out = Vec::new();
            chunk_start(&mut out, n);
            assert_eq!(out, format!("{n:x}\r\n").into_bytes());
        }
        for n in [0u64, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
