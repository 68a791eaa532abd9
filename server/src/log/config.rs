//! Per-partition log configuration. Every field documents its default and why; `validate`
//! refuses combinations the log cannot honour. Knows nothing of TOML or topics: the broker maps
//! its topic config onto this.

use std::time::Duration;

use super::error::{LogError, Result};
use super::index::OFFSET_ENTRY_LEN;
use super::time_index::TIME_ENTRY_LEN;

/// When appended bytes are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `append` returns only once the batch is durable. Concurrent appenders share one fsync
    /// (group commit), so the cost is one fsync per burst, not per append.
    Always,
    /// Durable within about this long: the broker calls [`Log::flush_if_due`](super::Log::flush_if_due)
    /// on a timer (more often than the interval) and the log fsyncs when the interval has passed.
    Interval(Duration),
    /// Never fsync on the append path: like Kafka's default, durability comes from replication.
    /// Sealed segments are still fsynced when they roll, and `flush`/`close` fsync everything.
    Never,
}

/// How one partition's log is laid out and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls before an append that would take it past this size (unless the segment
    /// is empty, so an oversized batch still fits somewhere).
    ///
    /// Default: 1 GiB, Kafka's `segment.bytes`: few enough files, and retention frees space in
    /// reasonable steps. Maximum: `i32::MAX` (index positions are 32-bit).
    pub segment_bytes: u64,
    /// A non-empty segment rolls once it has been active this long (ms), so time retention can
    /// delete old data even on a quiet partition. The age counts from when this process opened
    /// or created the segment (a restart starts it again). `None` disables time-based rolling.
    ///
    /// Default: 7 days, Kafka's `segment.ms`.
    pub segment_ms: Option<u64>,
    /// One offset-index entry (and at most one time-index entry) per this many bytes of batches.
    /// Smaller means faster lookups and bigger indexes.
    ///
    /// Default: 4096, Kafka's `index.interval.bytes`: a lookup scans at most ~4 KiB of headers.
    pub index_interval_bytes: u32,
    /// Size each index file is preallocated to while its segment is active; a segment whose
    /// index fills up rolls early. Sealed indexes are trimmed to their used length.
    ///
    /// Default: 10 MiB, Kafka's `segment.index.bytes`: room for a 1 GiB segment at the default
    /// interval many times over. Minimum: two time-index entries.
    pub max_index_bytes: u32,
    /// Sealed segments whose newest timestamp is older than this (ms) are deleted by
    /// [`Log::apply_retention`](super::Log::apply_retention). `None` keeps data forever.
    ///
    /// Default: 7 days, Kafka's `retention.ms`.
    pub retention_ms: Option<u64>,
    /// Oldest sealed segments are deleted while the log would still hold at least this many
    /// bytes without them (Kafka's rule: the log may exceed the limit by up to one segment).
    /// `None` means no size limit.
    ///
    /// Default: `None`, Kafka's `retention.bytes = -1`.
    pub retention_bytes: Option<u64>,
    /// When appends are made durable.
    ///
    /// Default: [`FsyncPolicy::Never`], as Kafka: acks=all replication is the durability story,
    /// and an fsync per append would cap throughput at the disk's flush rate.
    pub fsync: FsyncPolicy,
    /// Largest batch accepted, header included.
    ///
    /// Default: 1 MiB of records plus one batch header, Kafka's `max.message.bytes` (1 MiB).
    pub max_batch_bytes: usize,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            index_interval_bytes: 4096,
            max_index_bytes: 10 << 20,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            fsync: FsyncPolicy::Never,
            max_batch_bytes: (1 << 20) + cairn_batch::HEADER_LEN,
        }
    }
}

impl LogConfig {
    /// Refuses configurations the log cannot honour.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason| Err(LogError::InvalidConfig { reason });
        if self.segment_bytes == 0 || self.segment_bytes > i32::MAX as u64 {
            return invalid("segment_bytes must be in 1..=i32::MAX");
        }
        if self.max_batch_bytes < cairn_batch::HEADER_LEN
            || self.max_batch_bytes > i32::MAX as usize
        {
            return invalid("max_batch_bytes must be in HEADER_LEN..=i32::MAX");
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes must be positive");
        }
        if (self.max_index_bytes as usize) < 2 * TIME_ENTRY_LEN.max(OFFSET_ENTRY_LEN) {
            return invalid("max_index_bytes must hold at least two index entries");
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && d.is_zero()
        {
            return invalid("an fsync interval must be positive (use Always)");
        }
        Ok(())
    }
}
