//! The chunked transfer coding (RFC 9112 §7.1), decoded from a connection's read buffer a frame
//! at a time — an upstream's response body on the direct path, a client's request body in our
//! own HTTP/1 server: chunk sizes with `httparse`, extensions ignored, trailers passed on as a
//! trailers frame. An error says what was wrong; each side answers it its own way.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A chunk-size line (with extensions) or the trailer section may not be longer.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What one step of the chunked decoder gives.
#[derive(Debug)]
pub enum Step {
    /// Needs more bytes in the buffer.
    More,
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (after the last chunk and any trailers).
    End,
}

impl Chunked {
    /// Decodes what `buf` holds, as far as one frame.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err("chunk size line too long")
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::More),
                    Err(_) => return Err("bad chunk size"),
                },
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    *self = match left - n as u64 {
                        0 => Chunked::DataEnd,
                        rest => Chunked::Data(rest),
                    };
                    return Ok(Step::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk not followed by CRLF");
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Chunked::Done;
                        return Ok(Step::End);
                    }
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(buf, &mut headers) {
                        Ok(httparse::Status::Complete((used, parsed))) => {
                            let mut map = HeaderMap::with_capacity(parsed.len());
                            for h in parsed {
                                let name = HeaderName::from_bytes(h.name.as_bytes())
                                    .map_err(|_| "bad trailer name")?;
                                let value = HeaderValue::from_bytes(h.value)
                                    .map_err(|_| "bad trailer value")?;
                                map.append(name, value);
                            }
                            buf.advance(used);
                            *self = Chunked::Done;
                            return Ok(Step::Trailers(map));
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                            return Err("trailers too large")
                        }
                        Ok(httparse::Status::Partial) => return Ok(Step::More),
                        Err(_) => return Err("bad trailers"),
                    }
                }
                Chunked::Done => return Ok(Step::End),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let wire = b"5;ext=1\r\nhello\r\nA\r\n, chunked!\r\n0\r\nx-sum: 42\r\n\r\n";
        for split in 0..wire.len() {
            let mut dec = Chunked::Size;
            let mut buf = BytesMut::from(&wire[..split]);
            let (mut body, mut trailers, mut ended) = (Vec::new(), None, false);
            let mut rest = &wire[split..];
            loop {
                match dec.step(&mut buf).unwrap() {
                    Step::Data(d) => body.extend_from_slice(&d),
                    Step::Trailers(t) => trailers = Some(t),
                    Step::End => {
                        ended = true;
                        break;
                    }
                    Step::More if rest.is_empty() => break,
                    Step::More => {
                        buf.extend_from_slice(&rest[..1]);
                        rest = &rest[1..];
                    }
                }
            }
            assert!(ended, "split at {split}");
            assert_eq!(body, b"hello, chunked!", "split at {split}");
            assert_eq!(trailers.unwrap()["x-sum"], "42");
        }
        let mut dec = Chunked::Size;
        assert!(dec.step(&mut BytesMut::from(&b"zz\r\n"[..])).is_err());
        let (mut dec, mut buf) = (Chunked::Size, BytesMut::from(&b"2\r\nabXY"[..]));
        assert!(matches!(dec.step(&mut buf), Ok(Step::Data(d)) if d == "ab"));
        assert!(dec.step(&mut buf).is_err(), "data must end in CRLF");
    }
}
