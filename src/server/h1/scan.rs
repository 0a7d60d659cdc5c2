//! The fields of a request head that decide whether our own HTTP/1 server takes it, and how its
//! body is framed: one plain `Content-Length`, or one `Transfer-Encoding: chunked`. Anything
//! a smuggler would try (both at once, two lengths, a signed or listed length, another coding)
//! and any `Expect` but `100-continue` is left to hyper, which refuses it as it always did.

use super::body::{Coding, Reading};
use crate::http::body::ClientBody;
use crate::http::chunked::Chunked;
use crate::http::fed;

/// What the header pass learned, before anything is taken off the buffer.
#[derive(Default)]
pub(super) struct Scan {
    pub close: bool,
    pub trailers: bool,
    length: Option<u64>,
    chunked: bool,
    expect: bool,
}

impl Scan {
    /// The body and the handler's end of it.
    #[inline]
    pub fn body(&self) -> (ClientBody, Option<Box<Reading>>) {
        let coding = match self.length {
            _ if self.chunked => Coding::Chunked(Chunked::Size),
            Some(n) if n > 0 => Coding::Length(n),
            _ => return (ClientBody::Empty, None),
        };
        let (body, feed) = fed::channel(self.length);
        (
            ClientBody::Fed(body),
            Some(Box::new(Reading::new(feed, coding, self.expect))),
        )
    }
}

/// Reads the headers that decide whether the request is ours, and how its body is framed;
/// `None`: hyper's.
pub(super) fn scan(headers: &[httparse::Header<'_>]) -> Option<Scan> {
    let mut scan = Scan::default();
    let mut codings = 0;
    for h in headers {
        let name = h.name.as_bytes();
        // Lengths first: most names are none of these, and are passed over by one compare.
        match name.len() {
            2 if name.eq_ignore_ascii_case(b"te") => {
                scan.trailers = tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if scan.expect || !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return None;
                }
                scan.expect = true;
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => return None,
            10 if name.eq_ignore_ascii_case(b"connection")
                && tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close")) =>
            {
                scan.close = true;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // One length, digits only: `+4`, `4, 4` and a second line are hyper's to refuse.
                if scan.length.is_some() {
                    return None;
                }
                scan.length = Some(length(h.value)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                codings += 1;
                scan.chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if !scan.chunked || codings > 1 {
                    return None;
                }
            }
            _ => {}
        }
    }
    let body = scan.chunked || scan.length.is_some_and(|n| n > 0);
    // A length beside chunked is a smuggling attempt; an `Expect` without a body, an oddity.
    if (scan.chunked && scan.length.is_some()) || (scan.expect && !body) {
        return None;
    }
    Some(scan)
}

/// A `Content-Length` value: decimal digits, no sign, no list, within 2^63.
fn length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}
