//! Any bytes as a client's chunked request body (our own HTTP/1 server decodes it with the same
//! decoder as an upstream's answers), fed whole and in pieces of a fuzzed size: never a panic,
//! never more data out than bytes in, and where both feedings reach the body's end they agree
//! on every byte and trailer — how the bytes were split across reads changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;

use canary_proxy::http::chunked::{Chunked, Step};

#[derive(Debug, PartialEq)]
enum End {
    Whole,
    Invalid,
    Short,
}

fn decode(wire: &[u8], piece: usize) -> (Vec<u8>, Vec<String>, End) {
    let (mut dec, mut buf) = (Chunked::Size, bytes::BytesMut::new());
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    let mut rest = wire;
    loop {
        match dec.step(&mut buf) {
            Ok(Step::Data(d)) => data.extend_from_slice(&d),
            Ok(Step::Trailers(t)) => {
                trailers.extend(t.iter().map(|(n, v)| format!("{n}: {v:?}")));
            }
            Ok(Step::End) => return (data, trailers, End::Whole),
            Err(_) => return (data, trailers, End::Invalid),
            Ok(Step::More) if rest.is_empty() => return (data, trailers, End::Short),
            Ok(Step::More) => {
                let n = piece.min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let whole = decode(wire, wire.len().max(1));
    let pieces = decode(wire, first as usize % 16 + 1);
    for (out, _, _) in [&whole, &pieces] {
        assert!(out.len() <= wire.len(), "more data out than bytes in");
    }
    if whole.2 == End::Whole && pieces.2 == End::Whole {
        assert_eq!(whole, pieces, "the split changed the body");
    }
});
