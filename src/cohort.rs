//! The spec's cohort formula, exactly: `SHA-256(salt + ":" + identity)`, the first eight bytes
//! big-endian, modulo one million, against `round(percent * 10_000)`.
//!
//! Pure and allocation-free: the salted prefix is hashed once per routing table and cloned per
//! request. Knows nothing of requests or pools.

use sha2::{Digest, Sha256};

/// Parts per million: the unit of buckets and thresholds.
pub const PPM: u64 = 1_000_000;

/// Which deployment a request is routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cohort {
    Stable,
    Canary,
}

impl Cohort {
    pub const ALL: [Cohort; 2] = [Cohort::Stable, Cohort::Canary];

    pub fn as_str(self) -> &'static str {
        match self {
            Cohort::Stable => "stable",
            Cohort::Canary => "canary",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Cohort::Stable => 0,
            Cohort::Canary => 1,
        }
    }
}

impl std::fmt::Display for Cohort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of hashing one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// `u64::from_be_bytes(digest[0..8])`: also the identity's key in the judge's error sets.
    pub digest: u64,
    /// `digest % 1_000_000`.
    pub bucket: u64,
}

/// SHA-256 with the salt already absorbed.
#[derive(Clone)]
pub struct CohortHasher {
    salted: Sha256,
}

impl CohortHasher {
    pub fn new(salt: &str) -> Self {
        let mut salted = Sha256::new();
        salted.update(salt.as_bytes());
        salted.update(b":");
        CohortHasher { salted }
    }

    pub fn place(&self, identity: &[u8]) -> Placement {
        let mut h = self.salted.clone();
        h.update(identity);
        let out = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        let digest = u64::from_be_bytes(first);
        Placement {
            digest,
            bucket: digest % PPM,
        }
    }
}

/// `round(percent * 10_000)` with `f64::round`, as the spec says; `percent` is validated to
/// 0..=100 by the config, so the result is at most one million.
pub fn threshold_ppm(percent: f64) -> u64 {
    (percent * 10_000.0).round() as u64
}

/// Canary when the bucket lies below the threshold.
pub fn assign(bucket: u64, threshold_ppm: u64) -> Cohort {
    if bucket < threshold_ppm {
        Cohort::Canary
    } else {
        Cohort::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(salt: &str, identity: &str, expected_bucket: u64) {
        let p = CohortHasher::new(salt).place(identity.as_bytes());
        assert_eq!(
            p.bucket, expected_bucket,
            "salt {salt:?} identity {identity:?}"
        );
        assert_eq!(p.bucket, p.digest % PPM);
    }

    /// Golden values computed outside Rust:
    /// `python3 -c 'import hashlib;print(int.from_bytes(hashlib.sha256(b":user-1").digest()[:8],"big")%10**6)'`
    #[test]
    fn golden_buckets() {
        check("", "user-1", GOLDEN_EMPTY_SALT_USER1);
        check("spring", "user-1", GOLDEN_SPRING_USER1);
        check("", "203.0.113.7", GOLDEN_EMPTY_SALT_IP);
    }

    const GOLDEN_EMPTY_SALT_USER1: u64 = 300_821;
    const GOLDEN_SPRING_USER1: u64 = 989_760;
    const GOLDEN_EMPTY_SALT_IP: u64 = 637_277;

    #[test]
    fn thresholds_round_half_away_from_zero() {
        assert_eq!(threshold_ppm(5.0), 50_000);
        assert_eq!(threshold_ppm(0.0001), 1);
        assert_eq!(threshold_ppm(0.00005), 1);
        assert_eq!(threshold_ppm(0.00004), 0);
        assert_eq!(threshold_ppm(100.0), PPM);
        assert_eq!(threshold_ppm(33.33335), 333_334);
    }

    #[test]
    fn assignment_edges() {
        assert_eq!(assign(0, 0), Cohort::Stable);
        assert_eq!(assign(0, 1), Cohort::Canary);
        assert_eq!(assign(PPM - 1, PPM), Cohort::Canary);
        assert_eq!(assign(49_999, 50_000), Cohort::Canary);
        assert_eq!(assign(50_000, 50_000), Cohort::Stable);
    }
}
