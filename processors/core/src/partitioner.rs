//! The canonical partition of a user id: Kafka's default partitioner for keyed messages.
//!
//! murmur2 of the UTF-8 key with the sign bit cleared, modulo the partition count, as
//! Kafka's Java client and librdkafka's `murmur2_random` compute it.

const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;

/// Kafka's murmur2 hash of `key` with its sign bit cleared (Java's `toPositive`).
pub fn murmur2(key: &[u8]) -> u32 {
    let length = key.len();
    let mut h = SEED ^ length as u32;
    let whole = length & !3;
    for chunk in key[..whole].chunks_exact(4) {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = &key[whole..];
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h & 0x7fff_ffff
}

/// The partition of `partitions` whose worker owns `user_id`'s state.
pub fn canonical_partition(user_id: &str, partitions: u32) -> u32 {
    murmur2(user_id.as_bytes()) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2`: `Utils.murmur2` of each key, a signed Java int.
    const KAFKA_VECTORS: [(&str, i32); 6] = [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        ("abc", 479_470_107),
    ];

    #[test]
    fn murmur2_is_kafkas() {
        for (key, java) in KAFKA_VECTORS {
            assert_eq!(
                murmur2(key.as_bytes()),
                (java as u32) & 0x7fff_ffff,
                "{key}"
            );
        }
    }

    #[test]
    fn partitions_stay_in_range_and_spread() {
        let mut counts = [0u32; 8];
        for index in 0..8_000 {
            counts[canonical_partition(&format!("user-{index}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&count| count > 800), "{counts:?}");
        assert_eq!(canonical_partition("", 3), murmur2(b"") % 3);
    }
}
