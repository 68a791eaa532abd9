//! One topic partition hosted on this broker: its log, and a watch channel that wakes
//! long-polling fetches and subscriptions when the log grows.
//!
//! The log is synchronous (it knows nothing of tokio). Appends run on the blocking pool, since any
//! of them may wait for an fsync (policy `always`, or a segment roll); reads run inline: they copy
//! from the page cache at most once and never fsync.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::log::{AppendInfo, Log, ReadResult};
use crate::topic::{TopicConfig, TopicName};

use super::NodeError;

/// A partition of a topic, open on this broker.
#[derive(Debug)]
pub struct Partition {
    /// The topic it belongs to.
    pub topic: TopicName,
    /// Its index in the topic.
    pub index: u32,
    /// The id of the topic it belongs to (a re-created topic of the same name has another).
    pub topic_id: String,
    /// Its directory, `<data-dir>/<topic>-<index>`.
    pub dir: PathBuf,
    /// The resolved topic config the log was opened with.
    pub config: TopicConfig,
    log: Arc<Log>,
    /// Whether this broker leads the partition, as the metadata last said.
    leader: AtomicBool,
    /// The partition's leader epoch from the metadata; stamped on every appended batch.
    leader_epoch: AtomicI32,
    /// The high watermark: the offset the next record will get. Readers only see below it.
    /// With one replica it is the log end offset.
    high_watermark: watch::Sender<i64>,
}

impl Partition {
    /// Opens (and recovers) the partition's log.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] if the log cannot be opened.
    pub fn open(
        topic: TopicName,
        index: u32,
        topic_id: String,
        dir: PathBuf,
        config: TopicConfig,
    ) -> Result<Self, NodeError> {
        let log = Log::open(&dir, config.log_config()).map_err(|source| NodeError::Log {
            topic: topic.to_string(),
            partition: index,
            source,
        })?;
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        Ok(Self {
            topic,
            index,
            topic_id,
            dir,
            config,
            log: Arc::new(log),
            leader: AtomicBool::new(false),
            leader_epoch: AtomicI32::new(0),
            high_watermark,
        })
    }

    fn log_error(&self, source: crate::log::LogError) -> NodeError {
        NodeError::Log {
            topic: self.topic.to_string(),
            partition: self.index,
            source,
        }
    }

    /// Appends one producer batch, returning once the fsync policy is satisfied.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] with the log's reason (invalid batch, too large, failed storage).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that a cancelled call may still have appended the batch;
    /// the caller then simply never learns the offset (as with a lost acks=1 response).
    pub async fn append(&self, batch: Bytes) -> Result<AppendInfo, NodeError> {
        // Always off the async threads: besides an fsync-always append, any append may roll the
        // segment, and the roll fsyncs the sealed segment (up to a gigabyte of dirty pages).
        // One thread hop per batch is small beside writing the batch.
        let log = Arc::clone(&self.log);
        let epoch = self.leader_epoch();
        let info = tokio::task::spawn_blocking(move || log.append(batch, epoch))
            .await
            .expect("log append does not panic")
            .map_err(|e| self.log_error(e))?;
        // Concurrent appends can finish in any order; the watermark only moves forward.
        self.high_watermark.send_if_modified(|hw| {
            let advanced = info.log_end_offset > *hw;
            if advanced {
                *hw = info.log_end_offset;
            }
            advanced
        });
        Ok(info)
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (at least one batch), never past the
    /// high watermark. If there is nothing at `offset` yet, waits up to `max_wait` for records.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] with [`LogError::OffsetOutOfRange`](crate::log::LogError) for an
    /// offset outside the log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<ReadResult, NodeError> {
        let mut hw = self.high_watermark.subscribe();
        if offset >= *hw.borrow_and_update() && !max_wait.is_zero() {
            let _ = tokio::time::timeout(max_wait, hw.wait_for(|&h| h > offset)).await;
        }
        self.read_now(offset, max_bytes)
    }

    /// Reads without waiting.
    ///
    /// # Errors
    ///
    /// As [`Partition::read`].
    pub fn read_now(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, NodeError> {
        let hw = *self.high_watermark.borrow();
        self.log
            .read(offset, max_bytes, Some(hw))
            .map_err(|e| self.log_error(e))
    }

    /// A receiver that changes whenever the high watermark advances.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// The offset the next record will get; consumers read below it.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// The leader epoch stamped on appends.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Records the partition's leadership as the metadata now says.
    pub fn set_leadership(&self, leader: bool, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
        let was = self.leader.swap(leader, Ordering::AcqRel);
        if was != leader {
            tracing::info!(
                topic = %self.topic,
                partition = self.index,
                epoch,
                "{}",
                if leader { "now leading" } else { "no longer leading" }
            );
        }
    }

    /// The first offset whose timestamp is at or after `ts_ms`, or the high watermark if none.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] on a storage error.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<i64, NodeError> {
        let found = self
            .log
            .offset_for_timestamp(ts_ms)
            .map_err(|e| self.log_error(e))?;
        let hw = self.high_watermark();
        Ok(found.map_or(hw, |o| o.min(hw)))
    }

    /// Deletes sealed segments past retention; returns how many went.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] on a storage error.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, NodeError> {
        self.log
            .apply_retention(now_ms)
            .map_err(|e| self.log_error(e))
    }

    /// Lets the log fsync if its interval policy says it is time.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] if the fsync failed (the log is then failed for good).
    pub fn flush_if_due(&self) -> Result<(), NodeError> {
        self.log.flush_if_due().map_err(|e| self.log_error(e))
    }

    /// Flushes everything written so far.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] if the fsync failed.
    pub fn flush(&self) -> Result<(), NodeError> {
        self.log.flush().map_err(|e| self.log_error(e))
    }
}
