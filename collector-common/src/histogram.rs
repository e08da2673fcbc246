//! Log2 latency buckets, computed in the kernel and converted to seconds by the agent.
//!
//! Bucket `b` counts durations `d` (in ns) with `d <= 2^(b + MIN_SHIFT)` and greater than the
//! previous bound, i.e. Prometheus' `le` semantics, so the agent can expose the buckets as they
//! are. The first bound is 256 ns, the last finite one 2^34 ns (~17.2 s); the final bucket is
//! `+Inf`.

/// log2 of the first bucket's upper bound in nanoseconds.
pub const MIN_SHIFT: u32 = 8;
/// log2 of the last finite bucket's upper bound in nanoseconds.
pub const MAX_SHIFT: u32 = 34;
/// Finite buckets plus the `+Inf` bucket.
pub const BUCKETS: usize = (MAX_SHIFT - MIN_SHIFT + 2) as usize;

/// The bucket a duration of `ns` nanoseconds falls into. Always inlined: the kernel programs
/// call it on their hot path, where a BPF-to-BPF call would cost more than the body.
#[allow(clippy::inline_always)]
#[inline(always)]
pub fn bucket_of(ns: u64) -> usize {
    if ns <= 1 << MIN_SHIFT {
        return 0;
    }
    // Smallest b with ns <= 2^(b + MIN_SHIFT): floor(log2(ns - 1)) + 1 - MIN_SHIFT.
    let b = (log2(ns - 1) + 1 - MIN_SHIFT) as usize;
    if b > BUCKETS - 1 { BUCKETS - 1 } else { b }
}

/// Upper bound of bucket `b` in nanoseconds; `None` for the `+Inf` bucket.
pub fn upper_bound_ns(b: usize) -> Option<u64> {
    if b + 1 >= BUCKETS {
        None
    } else {
        Some(1u64 << (b as u32 + MIN_SHIFT))
    }
}

/// floor(log2(v)) for v > 0, by binary search: a handful of branches the BPF verifier accepts
/// without loops (and without relying on how the BPF backend lowers `leading_zeros`).
#[allow(clippy::inline_always)] // as bucket_of, whose body it is part of
#[inline(always)]
fn log2(mut v: u64) -> u32 {
    let mut r = 0;
    let mut shift = 32;
    while shift > 0 {
        if v >= 1 << shift {
            v >>= shift;
            r += shift;
        }
        shift >>= 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_like_prometheus_le() {
        let cases: &[(u64, usize)] = &[
            (0, 0),
            (1, 0),
            (256, 0),
            (257, 1),
            (512, 1),
            (513, 2),
            (1_000, 2), // <= 1024 ns
            (1_025, 3),
            (50_000_000, 18), // 50 ms: 2^25 < 5e7 <= 2^26
            (1 << 34, BUCKETS - 2),
            ((1 << 34) + 1, BUCKETS - 1),
            (u64::MAX, BUCKETS - 1),
        ];
        for &(ns, want) in cases {
            assert_eq!(bucket_of(ns), want, "bucket_of({ns})");
        }
    }

    #[test]
    fn every_duration_is_at_most_its_bucket_bound_and_above_the_previous() {
        for shift in 0..64u32 {
            for ns in [(1u64 << shift).saturating_sub(1), 1u64 << shift, (1u64 << shift) + 1] {
                let b = bucket_of(ns);
                if let Some(upper) = upper_bound_ns(b) {
                    assert!(ns <= upper, "{ns} above bound {upper} of bucket {b}");
                }
                if b > 0 {
                    assert!(ns > upper_bound_ns(b - 1).unwrap(), "{ns} belongs below bucket {b}");
                }
            }
        }
    }

    #[test]
    fn buckets_reach_at_least_16_seconds() {
        assert!(upper_bound_ns(BUCKETS - 2).unwrap() >= 16_000_000_000);
        assert_eq!(upper_bound_ns(BUCKETS - 1), None);
        assert!(upper_bound_ns(0).unwrap() <= 1_000);
    }
}
