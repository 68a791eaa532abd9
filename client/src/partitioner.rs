//! Choosing a partition for a record: a plain synchronous state machine, so it is tested with
//! tables and no broker.
//!
//! Keyed records use Kafka's default: `murmur2(key) & 0x7fffffff % partitions` with Kafka's seed,
//! so a key lands on the same partition as it would from a Java producer (rdkafka's CRC32
//! default is a known trap here). Keyless records follow [`Partitioning`].

use std::collections::HashMap;

/// How the producer spreads records without a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioning {
    /// Stay on one partition until a batch for it is sealed or
    /// [`ProducerConfig::sticky_bytes`](crate::ProducerConfig::sticky_bytes) of records went to
    /// it, then move to the next (Kafka's KIP-480 and KIP-794): fuller batches, fewer requests,
    /// and load still spread within a few batches. The default.
    #[default]
    Sticky,
    /// Each keyless record goes to the next partition in turn.
    RoundRobin,
}

/// Kafka's partition for `key` among `partitions` (which must be positive).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (kafka_murmur2(key) as u32 & 0x7fff_ffff) % partitions
}

/// Kafka's `Utils.murmur2`: MurmurHash2 with seed `0x9747b28c`, as a signed 32-bit value.
pub fn kafka_murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32
}

/// Partition choice for keyless records, per topic.
#[derive(Debug)]
pub(crate) struct Partitioner {
    strategy: Partitioning,
    /// Sticky only: bytes of keyless records after which the partition changes.
    sticky_bytes: usize,
    /// Topic → where keyless records go next.
    cursors: HashMap<String, Cursor>,
}

/// One topic's keyless cursor.
#[derive(Debug, Default)]
struct Cursor {
    /// The partition keyless records go to next (reduced modulo the count when used).
    next: u32,
    /// Bytes of keyless records sent to `next` since it was chosen (sticky only).
    bytes: usize,
}

impl Partitioner {
    pub(crate) fn new(strategy: Partitioning, sticky_bytes: usize) -> Self {
        Self {
            strategy,
            sticky_bytes: sticky_bytes.max(1),
            cursors: HashMap::new(),
        }
    }

    /// The partition for a record of `topic` with `key` and about `size` bytes, among
    /// `partitions` (positive).
    pub(crate) fn partition(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        partitions: u32,
        size: usize,
    ) -> u32 {
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        let cursor = match self.cursors.get_mut(topic) {
            Some(c) => c,
            None => self.cursors.entry(topic.to_owned()).or_default(),
        };
        let chosen = cursor.next % partitions;
        match self.strategy {
            Partitioning::RoundRobin => cursor.next = (chosen + 1) % partitions,
            Partitioning::Sticky => {
                cursor.bytes += size;
                if cursor.bytes >= self.sticky_bytes {
                    cursor.next = (chosen + 1) % partitions;
                    cursor.bytes = 0;
                }
            }
        }
        chosen
    }

    /// Tells the sticky partitioner that a batch of `topic`/`partition` was sealed, so keyless
    /// records move on to the next partition.
    pub(crate) fn batch_sealed(&mut self, topic: &str, partition: u32, partitions: u32) {
        if self.strategy != Partitioning::Sticky {
            return;
        }
        if let Some(cursor) = self.cursors.get_mut(topic)
            && cursor.next % partitions == partition
        {
            cursor.next = (partition + 1) % partitions;
            cursor.bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&str, i32)] = &[
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
        for (key, expected) in cases {
            assert_eq!(kafka_murmur2(key.as_bytes()), *expected, "key {key:?}");
        }
    }

    #[test]
    fn keyed_partition_is_positive_murmur_mod_n() {
        // -973932308 & 0x7fffffff = 1173551340; 1173551340 % 10 = 0, % 7 = 1173551340 % 7.
        assert_eq!(partition_for_key(b"21", 10), 1_173_551_340 % 10);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        let mut p = Partitioner::new(Partitioning::Sticky, usize::MAX);
        for _ in 0..3 {
            assert_eq!(p.partition("t", Some(b"21"), 7, 10), 1_173_551_340 % 7);
        }
    }

    #[test]
    fn round_robin_cycles_per_topic() {
        let mut p = Partitioner::new(Partitioning::RoundRobin, usize::MAX);
        let a: Vec<u32> = (0..7).map(|_| p.partition("a", None, 3, 10)).collect();
        assert_eq!(a, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(
            p.partition("b", None, 3, 10),
            0,
            "topics have their own cursor"
        );
        p.batch_sealed("a", 1, 3);
        assert_eq!(
            p.partition("a", None, 3, 10),
            1,
            "sealing does not move round-robin"
        );
    }

    #[test]
    fn sticky_stays_until_its_batch_is_sealed() {
        let mut p = Partitioner::new(Partitioning::Sticky, usize::MAX);
        assert_eq!(p.partition("t", None, 3, 10), 0);
        assert_eq!(p.partition("t", None, 3, 10), 0);
        p.batch_sealed("t", 2, 3); // another partition's batch: no move
        assert_eq!(p.partition("t", None, 3, 10), 0);
        p.batch_sealed("t", 0, 3);
        assert_eq!(p.partition("t", None, 3, 10), 1);
        p.batch_sealed("t", 1, 3);
        p.batch_sealed("t", 2, 3);
        assert_eq!(p.partition("t", None, 3, 10), 0, "wraps around");
        // Keyed records are unaffected by the sticky cursor.
        assert_eq!(p.partition("t", Some(b"21"), 3, 10), 1_173_551_340 % 3);
    }

    #[test]
    fn sticky_moves_on_after_its_byte_budget() {
        // 16 KiB budget, 1 KiB records: 16 records per partition, then the next.
        let mut p = Partitioner::new(Partitioning::Sticky, 16 << 10);
        let chosen: Vec<u32> = (0..6 * 16)
            .map(|_| p.partition("t", None, 6, 1 << 10))
            .collect();
        for (i, part) in chosen.iter().enumerate() {
            assert_eq!(*part, (i / 16) as u32, "record {i}");
        }
        assert_eq!(p.partition("t", None, 6, 1 << 10), 0, "wraps around");
        // A seal restarts the budget on the next partition.
        p.batch_sealed("t", 0, 6);
        let next: Vec<u32> = (0..16)
            .map(|_| p.partition("t", None, 6, 1 << 10))
            .collect();
        assert_eq!(next, vec![1; 16]);
    }

    #[test]
    fn sticky_survives_partition_count_changes() {
        let mut p = Partitioner::new(Partitioning::Sticky, usize::MAX);
        p.batch_sealed("t", 0, 4);
        assert_eq!(p.partition("t", None, 4, 10), 0);
        p.batch_sealed("t", 0, 4);
        p.batch_sealed("t", 1, 4);
        p.batch_sealed("t", 2, 4);
        assert_eq!(p.partition("t", None, 4, 10), 3);
        assert_eq!(
            p.partition("t", None, 2, 10),
            1,
            "cursor is reduced modulo the new count"
        );
    }
}
