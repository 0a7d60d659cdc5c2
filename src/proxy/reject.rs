//! Requests refused before routing, as NGINX would refuse them: an oversized target (414) or
//! head (431), a missing, doubled or contradicted `Host` (400), and request framing we will not
//! re-frame (400 / 501). These never count against a cohort.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Request, StatusCode, Version};

use crate::config::Limits;
use crate::http::fields::{text, Fields};

/// (reason label, status, one-line body).
pub type Rejection = (&'static str, StatusCode, &'static str);

fn reject(reason: &'static str, status: StatusCode, msg: &'static str) -> Result<(), Rejection> {
    Err((reason, status, msg))
}

/// The size of the request head as it came: request line and header lines.
pub fn head_bytes<B>(req: &Request<B>, fields: Fields<'_>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    fields.size() + line
}

/// `fields`: the request's own (its map, or its head as it came).
pub fn check<B>(req: &Request<B>, fields: Fields<'_>, limits: &Limits) -> Result<(), Rejection> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return reject(
            "uri_too_long",
            StatusCode::URI_TOO_LONG,
            "uri too long: the request target is over the limit\n",
        );
    }
    if head_bytes(req, fields) > limits.max_header_bytes {
        return reject(
            "headers_too_large",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header fields too large\n",
        );
    }

    let mut hosts = fields.all(&HOST);
    let host = hosts.next();
    if hosts.next().is_some() {
        return reject(
            "bad_request",
            StatusCode::BAD_REQUEST,
            "bad request: more than one Host header\n",
        );
    }
    match (host, req.uri().authority()) {
        (None, None) if req.version() != Version::HTTP_10 => {
            return reject(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "bad request: missing Host header\n",
            );
        }
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            return reject(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "bad request: the Host header and the request target disagree\n",
            );
        }
        (Some(h), _)
            if h.is_empty()
                || h.iter()
                    .any(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'@') =>
        {
            return reject(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "bad request: invalid Host header\n",
            );
        }
        _ => {}
    }

    // Framing: the body is re-framed towards the upstream, so the only transfer coding we take
    // is one `chunked`; anything else would change meaning if dropped.
    let mut codings = 0;
    let mut chunked = 0;
    for v in fields.all(&TRANSFER_ENCODING) {
        let Some(text) = text(v) else {
            return reject(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "bad request: invalid Transfer-Encoding\n",
            );
        };
        for c in text.split(',').map(str::trim) {
            codings += 1;
            if c.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else if c.is_empty() {
                return reject(
                    "bad_request",
                    StatusCode::BAD_REQUEST,
                    "bad request: invalid Transfer-Encoding\n",
                );
            }
        }
    }
    if codings > 0 {
        if fields.get(&CONTENT_LENGTH).is_some() {
            return reject(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "bad request: both Content-Length and Transfer-Encoding\n",
            );
        }
        if chunked > 1 {
            return reject(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "bad request: chunked applied more than once\n",
            );
        }
        if codings > chunked {
            return reject(
                "unsupported_coding",
                StatusCode::NOT_IMPLEMENTED,
                "not implemented: transfer codings other than chunked\n",
            );
        }
    }
    let mut lengths = fields.all(&CONTENT_LENGTH);
    if let Some(first) = lengths.next() {
        if lengths.any(|v| v != first)
            || text(first)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_none()
        {
            return reject(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "bad request: invalid or conflicting Content-Length\n",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 10,
            max_header_bytes: 1024,
            max_uri_bytes: 256,
        }
    }

    fn check_one(build: http::request::Builder, expected: Option<u16>) {
        let req = build.body(()).unwrap();
        let got = check(&req, Fields::Map(req.headers()), &limits())
            .err()
            .map(|(_, s, _)| s.as_u16());
        assert_eq!(got, expected, "{req:?}");
        // The same fields as a head as it came are judged alike.
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for (k, v) in req.headers() {
            head.extend_from_slice(k.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let spans = crate::http::fields::index(&head).unwrap();
        let raw = Fields::AsCame {
            head: &head,
            spans: &spans,
        };
        let got = check(&req, raw, &limits())
            .err()
            .map(|(_, s, _)| s.as_u16());
        assert_eq!(got, expected, "as it came: {req:?}");
    }

    #[test]
    fn refusals() {
        let ok = || Request::get("/").header("host", "a.example");
        check_one(ok(), None);
        check_one(
            Request::get(format!("/{}", "x".repeat(300))).header("host", "a"),
            Some(414),
        );
        check_one(ok().header("x-big", "y".repeat(1100)), Some(431));
        // 414 is checked first.
        check_one(
            Request::get(format!("/{}", "x".repeat(300))).header("x-big", "y".repeat(1100)),
            Some(414),
        );
        check_one(Request::get("/"), Some(400));
        check_one(Request::get("/").version(Version::HTTP_10), None);
        check_one(ok().header("host", "b.example"), Some(400));
        check_one(
            Request::get("http://b.example/").header("host", "a.example"),
            Some(400),
        );
        check_one(
            Request::get("http://a.example/").header("host", "A.example"),
            None,
        );
        check_one(
            Request::get("http://a.example/").version(Version::HTTP_2),
            None,
        );
        check_one(Request::get("/").version(Version::HTTP_2), Some(400));
        check_one(ok().header("transfer-encoding", "chunked"), None);
        check_one(ok().header("transfer-encoding", "CHUNKED"), None);
        check_one(
            ok().header("transfer-encoding", "chunked, chunked"),
            Some(400),
        );
        check_one(ok().header("transfer-encoding", "gzip, chunked"), Some(501));
        check_one(
            ok().header("transfer-encoding", "chunked")
                .header("content-length", "5"),
            Some(400),
        );
        check_one(
            ok().header("content-length", "5")
                .header("content-length", "6"),
            Some(400),
        );
        check_one(
            ok().header("content-length", "5")
                .header("content-length", "5"),
            None,
        );
        check_one(ok().header("content-length", "-1"), Some(400));
    }
}
