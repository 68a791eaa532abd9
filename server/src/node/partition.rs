//! One topic partition hosted on this broker: its log, its leader-epoch cache, its replica set
//! (as leader) and two watch channels: the log end offset (wakes followers' long-polls) and the
//! high watermark (wakes consumers' long-polls and acks=all producers).
//!
//! The log is synchronous (it knows nothing of tokio). Appends run on the blocking pool, since any
//! of them may wait for an fsync (policy `always`, or a segment roll); reads run inline: they copy
//! from the page cache at most once and never fsync.
//!
//! The high watermark starts at the log start when the partition opens (what was committed
//! before is not known until the ISR reports in) and only moves forward, except that a follower
//! truncating its log lowers it to the new end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::log::{AppendInfo, Log, ReadResult};
use crate::metadata::BrokerId;
use crate::replication::LeaderEpochCache;
use crate::topic::{TopicConfig, TopicName};

use super::NodeError;
use super::producers::{ProducerStateManager, Refusal};
use super::replica::ReplicaSet;

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
    /// The high watermark: every in-sync replica has the records below it. Consumers only see
    /// below it; an acks=all produce is answered once it passes the batch.
    high_watermark: watch::Sender<i64>,
    /// The log end offset: the offset the next record will get.
    log_end: watch::Sender<i64>,
    /// Which leader epoch started at which offset (KIP-101).
    epochs: Mutex<LeaderEpochCache>,
    /// The replica set and followers' progress, as leader.
    replicas: Mutex<ReplicaSet>,
    /// Smallest ISR that accepts an acks=all produce.
    min_insync_replicas: u32,
    /// Idempotent producers' sequences (checked and recorded under the log's write lock).
    producers: Arc<ProducerStateManager>,
}

/// Locks a mutex, taking over a poisoned one (its data is still consistent: every critical
/// section here finishes its updates before anything that could panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        replication_factor: usize,
    ) -> Result<Self, NodeError> {
        let log_error = |source| NodeError::Log {
            topic: topic.to_string(),
            partition: index,
            source,
        };
        let log = Log::open(&dir, config.log_config()).map_err(log_error)?;
        let epochs = open_epochs(&dir, &log).map_err(log_error)?;
        let producers = ProducerStateManager::open(&log).map_err(log_error)?;
        let (high_watermark, _) = watch::channel(log.log_start_offset());
        let (log_end, _) = watch::channel(log.log_end_offset());
        let min_insync_replicas = config
            .min_insync_replicas
            .unwrap_or_else(|| default_min_insync(replication_factor));
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
            log_end,
            epochs: Mutex::new(epochs),
            replicas: Mutex::new(ReplicaSet::default()),
            min_insync_replicas,
            producers: Arc::new(producers),
        })
    }

    fn log_error(&self, source: crate::log::LogError) -> NodeError {
        NodeError::Log {
            topic: self.topic.to_string(),
            partition: self.index,
            source,
        }
    }

    /// Appends one producer batch, returning once the fsync policy is satisfied. A batch of an
    /// idempotent producer is checked against the producer's sequence first, atomically with the
    /// write (see `producers`): a retry of one of its last batches is not written again and
    /// answers with the offsets it was first written at.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] with the log's reason (invalid batch, too large, failed storage);
    /// [`NodeError::Producer`] for a sequence or epoch the producer state refuses.
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
        let producers = Arc::clone(&self.producers);
        let epoch = self.leader_epoch();
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = log.append_with(
                batch,
                epoch,
                |h| producers.admit(h),
                |h| producers.record(std::slice::from_ref(h)),
            );
            producers.snapshot_if_rolled(&log);
            outcome
        })
        .await
        .expect("log append does not panic")
        .map_err(|e| self.log_error(e))?;
        let info = match outcome {
            Ok(info) => info,
            Err(Refusal::Duplicate {
                base_offset,
                last_offset,
            }) => {
                return Ok(AppendInfo {
                    base_offset,
                    last_offset,
                    max_timestamp: -1,
                    log_end_offset: self.log.log_end_offset(),
                });
            }
            Err(Refusal::Sequence(source)) => {
                return Err(NodeError::Producer {
                    topic: self.topic.to_string(),
                    partition: self.index,
                    source,
                });
            }
        };
        self.log_end_advanced(info.log_end_offset);
        self.advance_high_watermark();
        Ok(info)
    }

    /// Concurrent appends can finish in any order; the log end watch only moves forward.
    fn log_end_advanced(&self, log_end_offset: i64) {
        self.log_end.send_if_modified(|end| {
            let advanced = log_end_offset > *end;
            if advanced {
                *end = log_end_offset;
            }
            advanced
        });
    }

    /// Moves the high watermark forward to `candidate` (never back).
    fn raise_high_watermark(&self, candidate: i64) {
        self.high_watermark.send_if_modified(|hw| {
            let advanced = candidate > *hw;
            if advanced {
                *hw = candidate;
            }
            advanced
        });
    }

    /// As leader: raises the high watermark to what the ISR allows.
    fn advance_high_watermark(&self) {
        if !self.is_leader() {
            return;
        }
        let candidate = lock(&self.replicas).high_watermark(self.log.log_end_offset());
        self.raise_high_watermark(candidate);
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

    /// Takes the partition's state from the metadata: leader or follower at `epoch`, with
    /// these replicas and ISR. Becoming leader records the new epoch in the epoch cache at the
    /// log end and restarts the followers' progress.
    pub fn set_leadership(
        &self,
        me: BrokerId,
        leader: bool,
        epoch: i32,
        replicas: &[BrokerId],
        isr: &[BrokerId],
    ) {
        let was_leader = self.leader.load(Ordering::Acquire);
        let old_epoch = self.leader_epoch();
        if leader && (!was_leader || epoch != old_epoch) {
            let leo = self.log.log_end_offset();
            if let Err(e) = lock(&self.epochs).assign(epoch, leo) {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "could not record the leader epoch");
            }
            lock(&self.replicas).become_leader(me, replicas, isr, leo, super::now_ms());
        } else {
            lock(&self.replicas).set_membership(me, replicas, isr);
        }
        self.leader_epoch.store(epoch, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
        if leader != was_leader || epoch != old_epoch {
            tracing::info!(
                topic = %self.topic,
                partition = self.index,
                epoch,
                "{}",
                if leader { "leading" } else { "following" }
            );
        }
        if leader {
            self.advance_high_watermark();
        }
    }

    /// Refuses an acks=all produce while the ISR is smaller than `min_insync_replicas`.
    ///
    /// # Errors
    ///
    /// [`NodeError::NotEnoughReplicas`].
    pub fn check_min_isr(&self) -> Result<(), NodeError> {
        let isr = lock(&self.replicas).isr().len();
        let min = self.min_insync_replicas as usize;
        if isr < min {
            return Err(NodeError::NotEnoughReplicas {
                topic: self.topic.to_string(),
                partition: self.index,
                isr,
                min,
            });
        }
        Ok(())
    }

    /// Whether, as leader, this broker heard from at least `min_insync_replicas` of its ISR
    /// (itself included) within `window`: if not, it is cut off from its followers (or they
    /// are gone) and an acks=all write would only wait for its timeout. A caller that must
    /// answer promptly (the group coordinator) refuses instead.
    pub fn isr_reachable(&self, window: Duration) -> bool {
        let since = crate::node::now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        lock(&self.replicas).isr_heard_since(since, self.min_insync_replicas as usize)
    }

    /// Waits until the high watermark passes `last_offset` (every in-sync replica has the
    /// batch), at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`NodeError::NotLeader`] if this broker stopped leading (or the epoch changed) first: the
    /// batch may be lost and is not acknowledged; [`NodeError::ReplicationTimeout`] after
    /// `timeout`.
    pub async fn wait_replicated(
        &self,
        last_offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let mut hw = self.high_watermark.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.is_leader() || self.leader_epoch() != epoch {
                return Err(NodeError::NotLeader {
                    topic: self.topic.to_string(),
                    partition: self.index,
                    leader: None,
                    appended: Some(last_offset),
                });
            }
            if *hw.borrow_and_update() > last_offset {
                return Ok(());
            }
            // Leadership changes do not touch the watermark: look again at least every 100 ms.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            if tokio::time::timeout_at(wake, hw.changed()).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Err(NodeError::ReplicationTimeout {
                    topic: self.topic.to_string(),
                    partition: self.index,
                    offset: last_offset,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
    }

    /// As leader, serves a follower's fetch: records its progress (which may raise the high
    /// watermark), then returns batches from `fetch_offset`, waiting up to `max_wait` for some.
    /// Returns the read, the high watermark, and an ISR to propose to the controller, if any.
    ///
    /// # Errors
    ///
    /// [`NodeError::NotLeader`], [`NodeError::FencedLeaderEpoch`] /
    /// [`NodeError::UnknownLeaderEpoch`] when the epochs disagree, [`NodeError::NotAReplica`],
    /// or the log's error (offset out of range).
    pub async fn serve_follower(
        &self,
        replica: BrokerId,
        epoch: i32,
        fetch_offset: i64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<(ReadResult, i64, Option<Vec<BrokerId>>), NodeError> {
        self.check_epoch(epoch)?;
        if !lock(&self.replicas).is_replica(replica) {
            return Err(NodeError::NotAReplica {
                topic: self.topic.to_string(),
                partition: self.index,
                broker: replica,
            });
        }
        let leo = self.log.log_end_offset();
        if fetch_offset > leo || fetch_offset < self.log.log_start_offset() {
            // Let the log explain the range.
            self.log
                .read(fetch_offset, 1, None)
                .map_err(|e| self.log_error(e))?;
        }
        let now = super::now_ms();
        let proposal = {
            let mut replicas = lock(&self.replicas);
            replicas.record_fetch(replica, fetch_offset, leo, now);
            let candidate = replicas.high_watermark(leo);
            self.raise_high_watermark(candidate);
            replicas.expand_proposal(replica, self.high_watermark())
        };
        let mut end = self.log_end.subscribe();
        if fetch_offset >= *end.borrow_and_update() && !max_wait.is_zero() && proposal.is_none() {
            let _ = tokio::time::timeout(max_wait, end.wait_for(|&e| e > fetch_offset)).await;
        }
        let read = self
            .log
            .read(fetch_offset, max_bytes, None)
            .map_err(|e| self.log_error(e))?;
        Ok((read, self.high_watermark(), proposal))
    }

    /// As leader, an ISR without the followers that lag more than `lag_max_ms` or have not
    /// fetched for `silence_max_ms`, if any does and no change is pending.
    pub fn isr_proposal(&self, lag_max_ms: i64, silence_max_ms: i64) -> Option<Vec<BrokerId>> {
        if !self.is_leader() {
            return None;
        }
        lock(&self.replicas).shrink_proposal(super::now_ms(), lag_max_ms, silence_max_ms)
    }

    /// Forgets an ISR proposal that failed, so it can be made again.
    pub fn isr_proposal_failed(&self) {
        lock(&self.replicas).proposal_failed();
    }

    /// Refuses a request made at another leader epoch than this leader's.
    fn check_epoch(&self, epoch: i32) -> Result<(), NodeError> {
        let mine = self.leader_epoch();
        if !self.is_leader() {
            return Err(NodeError::NotLeader {
                topic: self.topic.to_string(),
                partition: self.index,
                leader: None,
                appended: None,
            });
        }
        let (topic, partition) = (self.topic.to_string(), self.index);
        match epoch.cmp(&mine) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(NodeError::FencedLeaderEpoch {
                topic,
                partition,
                given: epoch,
                current: mine,
            }),
            std::cmp::Ordering::Less => Err(NodeError::UnknownLeaderEpoch {
                topic,
                partition,
                given: epoch,
                current: mine,
            }),
        }
    }

    /// As leader, the end offset of `epoch` in this log (Kafka's OffsetsForLeaderEpoch):
    /// `None` if the log has no epoch at or below it.
    ///
    /// # Errors
    ///
    /// As for [`Partition::serve_follower`]'s epoch check.
    pub fn epoch_end_offset(
        &self,
        current_epoch: i32,
        epoch: i32,
    ) -> Result<Option<(i32, i64)>, NodeError> {
        self.check_epoch(current_epoch)?;
        Ok(lock(&self.epochs).end_offset_for(epoch, self.log.log_end_offset()))
    }

    /// The latest epoch in this replica's log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        lock(&self.epochs).latest_epoch()
    }

    /// A snapshot of the epoch cache (for the follower's truncation decision).
    pub fn epoch_cache(&self) -> LeaderEpochCache {
        lock(&self.epochs).clone()
    }

    /// As follower, appends batches fetched from the leader (offsets and epochs already
    /// stamped), records new epochs, and takes the leader's high watermark (capped at the log
    /// end).
    ///
    /// # Errors
    ///
    /// The log's refusal (non-contiguous, corrupt: nothing written).
    pub async fn append_replicated(
        &self,
        batches: Bytes,
        leader_high_watermark: i64,
    ) -> Result<i64, NodeError> {
        if !batches.is_empty() {
            let log = Arc::clone(&self.log);
            let producers = Arc::clone(&self.producers);
            let (info, epoch_starts) = tokio::task::spawn_blocking(move || {
                // Where each run of one epoch starts, from the headers the log already parsed
                // (usually one entry per fetch).
                let mut epoch_starts: Vec<(i32, i64)> = Vec::new();
                let info = log.append_replicated_with(batches, |hs| {
                    producers.record(hs);
                    for h in hs {
                        if epoch_starts
                            .last()
                            .is_none_or(|&(e, _)| e != h.leader_epoch)
                        {
                            epoch_starts.push((h.leader_epoch, h.base_offset));
                        }
                    }
                });
                producers.snapshot_if_rolled(&log);
                info.map(|i| (i, epoch_starts))
            })
            .await
            .expect("log append does not panic")
            .map_err(|e| self.log_error(e))?;
            {
                let mut epochs = lock(&self.epochs);
                for (epoch, base) in epoch_starts {
                    if epochs.latest_epoch().is_none_or(|l| epoch > l)
                        && let Err(e) = epochs.assign(epoch, base)
                    {
                        tracing::error!(topic = %self.topic, partition = self.index, error = %e, "could not record a leader epoch");
                    }
                }
            }
            self.log_end_advanced(info.log_end_offset);
        }
        let leo = self.log.log_end_offset();
        self.raise_high_watermark(leader_high_watermark.min(leo));
        Ok(leo)
    }

    /// As follower, drops everything from `offset` on (by leader epoch, never below what the
    /// leader has), and lowers the high watermark if it was above the new end.
    ///
    /// # Errors
    ///
    /// The log's error.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, NodeError> {
        let log = Arc::clone(&self.log);
        let producers = Arc::clone(&self.producers);
        tokio::task::spawn_blocking(move || {
            log.truncate_to(offset)?;
            // The producer state must forget the batches cut away.
            producers.rebuild(&log)
        })
        .await
        .expect("log truncation does not panic")
        .map_err(|e| self.log_error(e))?;
        let leo = self.log.log_end_offset();
        lock(&self.epochs).truncate_from_end(leo);
        self.log_end.send_replace(leo);
        self.high_watermark.send_if_modified(|hw| {
            let lower = *hw > leo;
            if lower {
                *hw = leo;
            }
            lower
        });
        Ok(leo)
    }

    /// As follower, empties the log and restarts it at `offset` (the leader's log starts past
    /// all of this one).
    ///
    /// # Errors
    ///
    /// The log's error.
    pub async fn reset_to(&self, offset: i64) -> Result<(), NodeError> {
        let log = Arc::clone(&self.log);
        let producers = Arc::clone(&self.producers);
        tokio::task::spawn_blocking(move || {
            log.reset_to(offset)?;
            producers.reset(offset)
        })
        .await
        .expect("log reset does not panic")
        .map_err(|e| self.log_error(e))?;
        // An empty log has no epochs.
        lock(&self.epochs).truncate_from_end(i64::MIN);
        self.log_end.send_replace(offset);
        self.high_watermark.send_replace(offset);
        Ok(())
    }

    /// The log end offset.
    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// The smallest ISR that accepts an acks=all produce.
    pub fn min_insync_replicas(&self) -> u32 {
        self.min_insync_replicas
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
        let deleted = self
            .log
            .apply_retention(now_ms)
            .map_err(|e| self.log_error(e))?;
        if deleted > 0 {
            lock(&self.epochs).truncate_from_start(self.log.log_start_offset());
            self.producers.expire_before(self.log.log_start_offset());
        }
        Ok(deleted)
    }

    /// Deletes the segments wholly below `offset` (a coordinator that rewrote everything
    /// live above it, or a follower following its leader's log start); returns how many went.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] on a storage error.
    pub fn delete_segments_below(&self, offset: i64) -> Result<usize, NodeError> {
        let deleted = self
            .log
            .delete_segments_below(offset)
            .map_err(|e| self.log_error(e))?;
        if deleted > 0 {
            lock(&self.epochs).truncate_from_start(self.log.log_start_offset());
            self.producers.expire_before(self.log.log_start_offset());
        }
        Ok(deleted)
    }

    /// Seals the active segment and starts a new one at the log end.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] on a storage error.
    pub fn roll(&self) -> Result<(), NodeError> {
        self.log.roll().map_err(|e| self.log_error(e))
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
        self.log.flush().map_err(|e| self.log_error(e))?;
        // Saves the next open a replay of the active segment's batch headers.
        self.producers.snapshot_now(&self.log);
        Ok(())
    }
}

/// Opens the partition's leader-epoch cache and repairs it against the log: a crash between a
/// log truncation and the checkpoint write leaves entries past the log end, retention leaves
/// entries before its start. A missing (with records in the log) or unreadable checkpoint is
/// rebuilt from the batch headers, reading the log once.
fn open_epochs(dir: &std::path::Path, log: &Log) -> Result<LeaderEpochCache, crate::log::LogError> {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let cache = match LeaderEpochCache::open(dir) {
        Ok(c) if c.latest_epoch().is_some() || start == end => Some(c),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "rebuilding the leader-epoch checkpoint from the log");
            None
        }
    };
    let mut cache = match cache {
        Some(c) => c,
        None => {
            let mut batches = Vec::new();
            let mut offset = start;
            while offset < end {
                let read = log.read(offset, 1 << 20, None)?;
                if read.records.is_empty() {
                    break;
                }
                for batch in cairn_batch::batches(&read.records).flatten() {
                    if let Ok(h) = cairn_batch::peek_header(&batch) {
                        batches.push((h.leader_epoch, h.base_offset));
                    }
                }
                offset = read.next_offset;
            }
            LeaderEpochCache::rebuild(dir, batches).map_err(|e| crate::log::LogError::Io {
                context: "writing the leader-epoch checkpoint in",
                path: dir.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?
        }
    };
    cache.truncate_from_end(end);
    cache.truncate_from_start(start);
    Ok(cache)
}

/// The default `min_insync_replicas`: tolerate one replica down for acks=all (2 with 3 or more
/// replicas, 1 with one or two).
pub fn default_min_insync(replication_factor: usize) -> u32 {
    let rf = u32::try_from(replication_factor).unwrap_or(u32::MAX);
    rf.saturating_sub(1).clamp(1, 2)
}
