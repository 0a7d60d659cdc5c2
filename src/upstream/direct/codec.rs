//! HTTP/1.1 on the wire towards an upstream: the request head we write, the response head we
//! parse (with `httparse`, sharing the read buffer's bytes rather than copying them), and how
//! the body that follows is framed (RFC 9112 §6.3; the chunked decoder is `chunked.rs`).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// As many response headers as hyper's client takes by default.
const MAX_HEADERS: usize = 100;
/// A response head larger than this is refused (hyper's client bound its buffer alike).
pub const MAX_HEAD: usize = 64 * 1024;

/// The upstream broke HTTP/1.1: answered as a protocol failure (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upstream sent an invalid response: {0}")]
pub struct Invalid(pub &'static str);

/// How the body after a response head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes; the connection cannot be reused.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// Empty when the head is kept `raw`.
    pub headers: HeaderMap,
    /// The head as it came (status line and header lines), when asked for `raw`: our own
    /// HTTP/1 server writes its lines on without a header map in between.
    pub raw: Option<Bytes>,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// Writes `METHOD target HTTP/1.1`, the headers as they are, and `Host` when the request came
/// without one (HTTP/1.0, or HTTP/2 without `:authority`). `Expect` is not passed on: the body
/// (if any) is streamed as it comes, so no upstream is asked for a `100 Continue`; `chunked`
/// adds the framing of a body sent without a length.
pub fn write_head(
    out: &mut Vec<u8>,
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    authority: &str,
    chunked: bool,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    for (name, value) in headers {
        if name == http::header::EXPECT {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses one response head off the front of `buf`. `Ok(None)`: more bytes are needed.
/// Interim (1xx) heads are consumed and skipped: the caller never sees them. `raw`: the
/// headers are checked and read for framing but not put in a map (`Head::raw`).
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    raw: bool,
) -> Result<Option<Head>, Invalid> {
    loop {
        // Where each header's name and value sit in the buffer, so the values can share it:
        // only for a map (a raw head is written on as it came); no room zeroed per response.
        let mut spans = Vec::new();
        let mut framing = Fields::default();
        let (len, status) = {
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                buf,
                &mut headers,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                    return Err(Invalid("head too large"))
                }
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(Invalid("head too large"))
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(Invalid("too many headers")),
                Err(_) => return Err(Invalid("malformed head")),
            };
            let version = res.version.unwrap_or(1);
            // HTTP/1.0 closes unless it says otherwise.
            framing.close = version == 0;
            for h in res.headers.iter() {
                framing.read(h.name.as_bytes(), h.value, version)?;
            }
            if !raw {
                let base = buf.as_ptr() as usize;
                spans.reserve_exact(res.headers.len());
                for h in res.headers.iter() {
                    // Within the head, which is at most MAX_HEAD long: u32 is plenty.
                    let n = (h.name.as_ptr() as usize - base) as u32;
                    let v = (h.value.as_ptr() as usize - base) as u32;
                    spans.push((n, n + h.name.len() as u32, v, v + h.value.len() as u32));
                }
            }
            (len, res.code.unwrap_or(0))
        };
        let status = StatusCode::from_u16(status).map_err(|_| Invalid("bad status"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                // Only a request that asked for an upgrade may get one; those go through hyper.
                return Err(Invalid("unrequested 101"));
            }
            buf.advance(len);
            continue;
        }
        let bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(spans.len());
        for &(n0, n1, v0, v1) in &spans {
            let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
            let name = HeaderName::from_bytes(&bytes[n0..n1]).map_err(|_| Invalid("bad name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(v0..v1))
                .map_err(|_| Invalid("bad value"))?;
            headers.append(name, value);
        }
        let Fields {
            mut close,
            length,
            transfer,
        } = framing;
        let framing = if head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if let Some(chunked) = transfer {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which must then go, and
            // such a message may have been smuggled: the connection is not reused.
            if length.is_some() {
                headers.remove(CONTENT_LENGTH);
                close = true;
            }
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        return Ok(Some(Head {
            status,
            headers,
            raw: raw.then_some(bytes),
            framing,
            keep_alive: !close && framing != Framing::Close,
        }));
    }
}

/// What a response head's fields say about its framing and the connection.
#[derive(Default)]
struct Fields {
    close: bool,
    length: Option<u64>,
    /// Whether the last transfer coding is chunked, when there is one.
    transfer: Option<bool>,
}

impl Fields {
    fn read(&mut self, name: &[u8], value: &[u8], version: u8) -> Result<(), Invalid> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value).ok_or(Invalid("bad content-length"))?;
            if self.length.is_some_and(|l| l != n) {
                return Err(Invalid("conflicting content-length"));
            }
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            self.transfer = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            let tokens = || value.split(|&b| b == b',').map(trim);
            if tokens().any(|t| t.eq_ignore_ascii_case(b"close")) {
                self.close = true;
            }
            if version == 0 && tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive")) {
                self.close = false;
            }
        }
        Ok(())
    }
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// `Content-Length`: digits, or a list of equal values (`5, 5`) as some servers send.
fn content_length(v: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in v.split(|&b| b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], head_request: bool) -> Result<Option<Head>, Invalid> {
        parse_head(&mut BytesMut::from(raw), head_request, false)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty, "HEAD has no body");
        let h = head(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(!h.headers.contains_key(CONTENT_LENGTH), "TE overrides CL");
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let h = head(
            b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn interim_heads_are_skipped_and_bad_ones_refused() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"[..],
        );
        let h = parse_head(&mut buf, false, false).unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert!(buf.is_empty());
        assert!(head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false
        )
        .is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).is_err());
        assert!(head(b"THIS IS NOT HTTP\r\n\r\n", false).is_err());
        assert!(head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none());
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert!(
            head(&big, false).is_err(),
            "a head past the limit is refused"
        );
    }
}
