//! The latency histogram layout shared by the window and the judge: log-linear buckets over
//! microseconds, 8 per power of two, so any value read back as its bucket's upper edge is at
//! most 12.5 % above the truth. Bucket 0..8 hold 0..8 µs exactly; the last bucket holds
//! everything from about 67 s up.
//!
//! Pure integer arithmetic: finding a bucket is a leading-zeros count and two shifts.

use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// The highest power of two with its own buckets: 2^25 µs ≈ 33.5 s .. 67 s.
const MAX_OCTAVE: u32 = 25;
pub const BUCKETS: usize = (SUB + (MAX_OCTAVE as u64 - SUB_BITS as u64 + 1) * SUB) as usize;

/// The bucket that holds `micros`.
pub fn bucket_of_micros(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros();
    if octave > MAX_OCTAVE {
        return BUCKETS - 1;
    }
    let sub = (micros >> (octave - SUB_BITS)) & (SUB - 1);
    (SUB + (octave - SUB_BITS) as u64 * SUB + sub) as usize
}

pub fn bucket_of(latency: Duration) -> usize {
    bucket_of_micros(latency.as_micros().min(u64::MAX as u128) as u64)
}

/// The exclusive upper edge of bucket `i`, in microseconds: values in bucket `i` are below it,
/// values in bucket `i + 1` at or above it. The last bucket's edge is `u64::MAX`.
pub fn upper_edge_micros(i: usize) -> u64 {
    if i >= BUCKETS - 1 {
        return u64::MAX;
    }
    let i = i as u64;
    if i < SUB {
        return i + 1;
    }
    let octave = (i - SUB) / SUB + SUB_BITS as u64;
    let sub = (i - SUB) % SUB;
    (SUB + sub + 1) << (octave - SUB_BITS as u64)
}

/// The first bucket boundary at or above `d`, as (bucket index whose lower edge it is, edge).
/// Requests in that bucket or above are "at least `d`, rounded up to a boundary".
pub fn boundary_at_or_above(d: Duration) -> (usize, u64) {
    let micros = d.as_micros().min(u64::MAX as u128) as u64;
    let b = bucket_of_micros(micros);
    let lower = if b == 0 { 0 } else { upper_edge_micros(b - 1) };
    if lower == micros {
        (b, micros)
    } else {
        (b + 1, upper_edge_micros(b))
    }
}

/// The nearest-rank quantile `q` of `counts`, read as its bucket's upper edge (seconds).
/// `None` when the histogram is empty.
pub fn quantile_seconds(counts: &[u64], q: f64) -> Option<f64> {
    quantile_bucket(counts, q).map(edge_seconds)
}

/// The bucket holding the nearest-rank quantile `q`: the ceil(q·n)-th smallest value.
pub fn quantile_bucket(counts: &[u64], q: f64) -> Option<usize> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(i);
        }
    }
    Some(counts.len() - 1)
}

/// A bucket's upper edge in seconds; the last bucket reports its lower edge (no finite upper).
pub fn edge_seconds(b: usize) -> f64 {
    let e = if b >= BUCKETS - 1 {
        upper_edge_micros(BUCKETS - 2)
    } else {
        upper_edge_micros(b)
    };
    e as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lies_below_its_upper_edge_and_at_or_above_the_previous() {
        for micros in (0..100_000u64).chain((0..2000).map(|i| i * 40_000 + 7)) {
            let b = bucket_of_micros(micros);
            assert!(micros < upper_edge_micros(b), "{micros} in {b}");
            if b > 0 {
                assert!(micros >= upper_edge_micros(b - 1), "{micros} in {b}");
            }
        }
    }

    #[test]
    fn relative_error_is_bounded() {
        for micros in 8..10_000_000u64 {
            if micros % 997 != 0 {
                continue;
            }
            let edge = upper_edge_micros(bucket_of_micros(micros));
            assert!(
                (edge as f64) <= micros as f64 * 1.125 + 1.0,
                "{micros} -> {edge}"
            );
        }
    }

    #[test]
    fn edges_increase_and_the_last_bucket_catches_everything() {
        for i in 1..BUCKETS {
            assert!(upper_edge_micros(i) > upper_edge_micros(i - 1));
        }
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        assert_eq!(BUCKETS, 192);
    }

    #[test]
    fn boundaries_round_up() {
        assert_eq!(boundary_at_or_above(Duration::from_micros(2)), (2, 2));
        let (b, e) = boundary_at_or_above(Duration::from_secs(2));
        assert!(e >= 2_000_000 && e as f64 <= 2_000_000.0 * 1.125);
        assert_eq!(upper_edge_micros(b - 1), e);
        let (b, e) = boundary_at_or_above(Duration::from_micros(1024));
        assert_eq!((upper_edge_micros(b - 1), e), (1024, 1024));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut counts = vec![0u64; BUCKETS];
        assert_eq!(quantile_bucket(&counts, 0.99), None);
        counts[10] = 99;
        counts[50] = 1;
        assert_eq!(quantile_bucket(&counts, 0.99), Some(10));
        assert_eq!(quantile_bucket(&counts, 0.995), Some(50));
        assert_eq!(quantile_bucket(&counts, 0.5), Some(10));
        assert_eq!(
            quantile_seconds(&counts, 1.0),
            Some(upper_edge_micros(50) as f64 / 1e6)
        );
    }
}
