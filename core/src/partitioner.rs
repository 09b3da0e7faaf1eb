//! Which partition a stream lands in: `murmur2(id bytes) mod N`, exactly as Kafka's Java
//! client partitions a keyed record, so SQL backends, the Kafka backend and plain Kafka
//! producers all agree.

use crate::ids::Partition;

/// Kafka's 32-bit murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
///
/// ```
/// assert_eq!(keel::partitioner::murmur2(b"foobar"), -790_332_482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "Kafka hashes the length as a 32-bit int"
    )]
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&first) = rest.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    #[expect(
        clippy::cast_possible_wrap,
        reason = "Kafka's murmur2 returns a signed int"
    )]
    let signed = h as i32;
    signed
}

/// The partition of a key among `partitions`: `toPositive(murmur2(key)) % partitions`.
///
/// `partitions` must be at least 1; 0 is treated as 1.
///
/// ```
/// use keel::{Partition, partitioner::partition_for};
/// assert_eq!(partition_for(b"account-1", 6), Partition(2));
/// ```
pub fn partition_for(key: &[u8], partitions: u32) -> Partition {
    #[expect(clippy::cast_sign_loss, reason = "masked to a positive value first")]
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    Partition(positive % partitions.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from Kafka 4.1.1's `Utils.murmur2` (CONFORMANCE.md, case 16).
    const CASES: &[(&str, i32, u32, u32)] = &[
        ("", 275_646_681, 3, 1),
        ("a", -1_563_381_124, 4, 4),
        ("21", -973_932_308, 0, 4),
        ("foobar", -790_332_482, 0, 6),
        ("account-1", 1_835_529_620, 2, 4),
        ("acc-42", -745_712_515, 1, 5),
        ("0192f0c4-7a1e-7c3b-9d2e-5f6a7b8c9d0e", 1_935_792_929, 5, 1),
        ("héllo", 614_509_002, 0, 2),
    ];

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        for &(key, hash, of6, of8) in CASES {
            assert_eq!(murmur2(key.as_bytes()), hash, "murmur2({key:?})");
            assert_eq!(
                partition_for(key.as_bytes(), 6),
                Partition(of6),
                "{key:?} of 6"
            );
            assert_eq!(
                partition_for(key.as_bytes(), 8),
                Partition(of8),
                "{key:?} of 8"
            );
        }
    }
}
