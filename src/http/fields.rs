//! A request's fields as the pipeline reads them: from a header map (hyper's servers) or from
//! the head as our HTTP/1 server read it, without a map ever being built (`h1::request`). The
//! checks, the client IP and the identity read through this, so both kinds of request are
//! judged by one rule (the tests hold the two readings equal).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ValueIter};

/// Where a field sits in its head: name start and end, value start and end (`httparse` has
/// checked both and trimmed the value's blanks).
pub type Span = (u32, u32, u32, u32);

/// A request head as our HTTP/1 server read it: the bytes, and where each field sits.
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    pub bytes: &'a Bytes,
    pub spans: &'a [Span],
}

/// Where a request's fields are.
#[derive(Clone, Copy)]
pub enum Fields<'a> {
    Map(&'a HeaderMap),
    AsCame { head: &'a [u8], spans: &'a [Span] },
}

impl<'a> Fields<'a> {
    pub fn as_came(head: RequestHead<'a>) -> Fields<'a> {
        Fields::AsCame {
            head: head.bytes,
            spans: head.spans,
        }
    }

    /// Every value of `name`, in order (from either end).
    pub fn all(self, name: &'a HeaderName) -> Values<'a> {
        match self {
            Fields::Map(map) => Values::Map(map.get_all(name).iter()),
            Fields::AsCame { head, spans } => Values::AsCame {
                spans: spans.iter(),
                head,
                name: name.as_str().as_bytes(),
            },
        }
    }

    /// The first value of `name`.
    pub fn get(self, name: &'a HeaderName) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// The fields' size as the head-size limit counts it: name, value and four bytes a field.
    pub fn size(self) -> usize {
        match self {
            Fields::Map(map) => map
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum(),
            Fields::AsCame { spans, .. } => spans
                .iter()
                .map(|&(n0, n1, v0, v1)| (n1 - n0 + v1 - v0) as usize + 4)
                .sum(),
        }
    }
}

/// A value as text, when it is visible ASCII (as `HeaderValue::to_str` takes it).
pub fn text(value: &[u8]) -> Option<&str> {
    let visible = value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// A header map of a head as it came, for a path that needs one (hyper's clients).
pub fn to_map(head: &[u8], spans: &[Span]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(spans.len() + 6);
    for &(n0, n1, v0, v1) in spans {
        let (name, value) = (
            &head[n0 as usize..n1 as usize],
            &head[v0 as usize..v1 as usize],
        );
        // `httparse` has checked both; a field that still fails is left out, not guessed at.
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

/// Where the fields of a whole head sit (`None`: not a complete request head). For heads not
/// read by our server (tests, benches).
pub fn index(head: &[u8]) -> Option<Vec<Span>> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    if !req.parse(head).ok()?.is_complete() {
        return None;
    }
    let base = head.as_ptr() as usize;
    Some(
        req.headers
            .iter()
            .map(|h| {
                let n = (h.name.as_ptr() as usize - base) as u32;
                let v = (h.value.as_ptr() as usize - base) as u32;
                (n, n + h.name.len() as u32, v, v + h.value.len() as u32)
            })
            .collect(),
    )
}

/// The values of one field name (`Fields::all`).
pub enum Values<'a> {
    Map(ValueIter<'a, HeaderValue>),
    AsCame {
        spans: std::slice::Iter<'a, Span>,
        head: &'a [u8],
        name: &'a [u8],
    },
}

/// The value of the field at `span` when its name is `name` (any case; lengths first).
fn value_of<'a>(head: &'a [u8], span: &Span, name: &[u8]) -> Option<&'a [u8]> {
    let &(n0, n1, v0, v1) = span;
    ((n1 - n0) as usize == name.len() && head[n0 as usize..n1 as usize].eq_ignore_ascii_case(name))
        .then(|| &head[v0 as usize..v1 as usize])
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(values) => values.next().map(HeaderValue::as_bytes),
            Values::AsCame { spans, head, name } => spans.find_map(|s| value_of(head, s, name)),
        }
    }
}

impl<'a> DoubleEndedIterator for Values<'a> {
    fn next_back(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(values) => values.next_back().map(HeaderValue::as_bytes),
            Values::AsCame { spans, head, name } => {
                spans.rev().find_map(|s| value_of(head, s, name))
            }
        }
    }
}
