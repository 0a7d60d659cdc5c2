//! HTTP rules shared by every path — our HTTP/1 server, hyper's servers and clients, the
//! direct path — so that one rule has one spelling: the hop-by-hop fields, the forwarded ones,
//! a head's fields read where they came, answers the proxy makes itself, read buffers.
//!
//! Nothing here knows of cohorts, the config or routing: it imports nothing else of the crate
//! (tests/it/architecture.rs holds it to that).

pub mod body;
pub mod bufpool;
pub mod canned;
pub mod chunked;
pub mod fed;
pub mod fields;
pub mod headers;
pub mod hop;
pub mod ip_text;
pub mod lines;

/// Compares a secret given with the one expected through their digests, so neither the
/// content nor the length of the secret leaks through timing.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_eq(b"s3cret", b"s3cret"));
        assert!(!secret_eq(b"s3cre", b"s3cret"));
        assert!(!secret_eq(b"", b"s3cret"));
        assert!(!secret_eq(b"s3creT", b"s3cret"));
    }
}
