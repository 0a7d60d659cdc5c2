//! An answer the proxy makes itself is a value: a status, a one-line text, and whether the
//! connection closes after it. Its `Content-Length` is always its text's length, computed here
//! and nowhere else, whether it is written as bytes before any server exists for the connection
//! (the 503 over the cap, the 408 for a head that never arrived) or handed to a server.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canned {
    pub status: StatusCode,
    /// One line, ending in a newline.
    pub text: &'static str,
    /// The connection closes after this answer (`connection: close`).
    pub close: bool,
}

impl Canned {
    /// An answer after which the connection may serve more requests.
    pub const fn keep(status: StatusCode, text: &'static str) -> Canned {
        Canned {
            status,
            text,
            close: false,
        }
    }

    /// An answer after which the connection closes.
    pub const fn closing(status: StatusCode, text: &'static str) -> Canned {
        Canned {
            status,
            text,
            close: true,
        }
    }

    /// The whole HTTP/1.1 answer as it goes on the wire.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.text.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: ");
        out.extend_from_slice(TEXT_PLAIN.as_bytes());
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(self.text.len().to_string().as_bytes());
        if self.close {
            out.extend_from_slice(b"\r\nconnection: close");
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    /// The answer as a response for a server to write (it frames the body by the body's own
    /// length).
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        let mut resp = Response::new(B::from(Bytes::from_static(self.text.as_bytes())));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a wire answer: its status, its `Content-Length`, and the body that follows.
    fn parse(wire: &[u8]) -> (u16, usize, Vec<u8>, bool) {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(at) = resp.parse(wire).unwrap() else {
            panic!("a whole head");
        };
        let field = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let length = field("content-length").unwrap().parse().unwrap();
        let close = field("connection").as_deref() == Some("close");
        (resp.code.unwrap(), length, wire[at..].to_vec(), close)
    }

    #[test]
    fn the_length_on_the_wire_is_the_texts_whatever_the_text() {
        for text in [
            "",
            "x\n",
            "request timeout: the request head did not arrive whole\n",
        ] {
            for canned in [
                Canned::keep(StatusCode::BAD_GATEWAY, text),
                Canned::closing(StatusCode::REQUEST_TIMEOUT, text),
            ] {
                let (status, length, body, close) = parse(&canned.wire());
                assert_eq!(status, canned.status.as_u16());
                assert_eq!(length, text.len(), "{text:?}");
                assert_eq!(body, text.as_bytes());
                assert_eq!(close, canned.close);
            }
        }
    }

    #[test]
    fn a_response_carries_the_text_and_says_close_only_when_it_closes() {
        let resp: Response<Bytes> = Canned::closing(StatusCode::BAD_REQUEST, "no\n").response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.body().as_ref(), b"no\n");
        assert_eq!(resp.headers()[CONNECTION], "close");
        let resp: Response<Bytes> = Canned::keep(StatusCode::BAD_GATEWAY, "no\n").response();
        assert!(!resp.headers().contains_key(CONNECTION));
    }
}
