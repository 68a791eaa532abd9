//! The partition log: one directory of segments holding one partition's batches.
//!
//! This module owns storage: appending producers' and leaders' batches as they came, reading
//! them back as zero-copy `Bytes`, rolling, retention, truncation, durability and crash recovery.
//! It must not know gRPC, protobuf, Raft, topics or replication policy: callers pass offsets,
//! epochs and bytes (DESIGN.md §1, §3).
//!
//! # Layout
//!
//! - `append`: the leader's and the follower's append paths.
//! - `config`: `LogConfig` and `FsyncPolicy`.
//! - `error`: `LogError`.
//! - `file_name`: `{base_offset:020}.log|.index|.timeindex`, built and parsed together.
//! - `index`, `time_index`: memory-mapped sparse indexes, writable while active, read-only sealed.
//! - `segment`: `ActiveSegment` (appended) and `SealedSegment` (mapped, immutable).
//! - `read`: walking a segment for a fetch or a timestamp.
//! - `recovery`: scanning, truncating torn tails, rebuilding indexes, the recovery point.
//! - `group_commit`: one fsync for many appenders; fsync failure is fatal.
//! - `truncate`: cutting the log back (follower truncation).
//!
//! # Durability and recovery
//!
//! Under every [`FsyncPolicy`] a rolled segment's files are fsynced once, soon after the roll
//! (by the appender that rolled, outside the lock), and then the *recovery point* (a small
//! checksummed file) moves up to the new active segment. On open, segments wholly below the
//! recovery point are trusted after a cheap index check; every other segment, and always the
//! active one, is scanned batch by batch with full CRC and record checks, even after a clean
//! shutdown: DESIGN.md §9.4 (no bytes failing their CRC are ever served) is worth one sequential
//! read of at most `segment_bytes`. `close` fsyncs everything and records the log end as the
//! recovery point.
//!
//! # Concurrency
//!
//! A `RwLock` guards the segments. Appends hold it for writing only for the `write` of the
//! batch and the index updates; reads hold it for reading while they slice a map or do one
//! positional read. fsyncs never run under it (see `group_commit`), so reads never wait for one.

mod append;
mod config;
mod error;
mod file_name;
mod group_commit;
mod index;
mod read;
mod recovery;
mod segment;
mod time_index;
mod truncate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

pub use config::{FsyncPolicy, LogConfig};
pub use error::LogError;

use error::Result;
use group_commit::{CommitError, GroupCommit};
use recovery::SyncFn;
use segment::{ActiveSegment, SealedSegment, SegmentView, remove_segment_files};

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Largest record timestamp appended (ms).
    pub max_timestamp: i64,
    /// The log end offset after the append (`last_offset + 1`).
    pub log_end_offset: i64,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, concatenated as stored; empty if there was nothing to return.
    pub records: Bytes,
    /// Offset to read next: one past the last batch returned (the requested offset if none).
    pub next_offset: i64,
    /// First offset in the log.
    pub log_start_offset: i64,
    /// Offset the next append will get.
    pub log_end_offset: i64,
}

/// One partition's log. `Send + Sync`: share it as `Arc<Log>`; every method takes `&self` except
/// `close`. Methods block (file I/O, fsync): async callers use `spawn_blocking`.
///
/// Dropping a `Log` without [`close`](Log::close) is a crash as far as the files are concerned:
/// nothing more is fsynced, and the next `open` recovers.
pub struct Log {
    /// The partition directory.
    dir: PathBuf,
    config: LogConfig,
    /// The segments.
    state: RwLock<State>,
    /// Durability: durable offset, the flusher role, the sticky failure.
    commit: GroupCommit,
    /// What the next flush must sync besides the active log; the recovery point.
    pending: Mutex<Pending>,
    /// How a file is fsynced; injectable so tests can make it fail.
    sync: Box<SyncFn>,
}

/// The segments, oldest first. Sealed segments are contiguous and end where the active begins.
struct State {
    sealed: BTreeMap<i64, SealedSegment>,
    active: ActiveSegment,
}

/// Durability bookkeeping outside the segments' lock, so a flusher can take it cheaply.
struct Pending {
    /// Files of sealed segments not yet fsynced.
    files: Vec<Arc<File>>,
    /// Segment files were created or removed since the directory was last fsynced.
    dir: bool,
    /// Once `files` are synced, every segment below this offset is durable.
    sealed_up_to: i64,
    /// The recovery point last written: segments wholly below it are trusted on open.
    recovery_point: i64,
}

impl State {
    fn start(&self) -> i64 {
        self.sealed
            .first_key_value()
            .map_or(self.active.base_offset(), |(base, _)| *base)
    }

    fn end(&self) -> i64 {
        self.active.next_offset()
    }

    fn size_bytes(&self) -> u64 {
        self.sealed.values().map(|s| s.size()).sum::<u64>() + self.active.size()
    }

    /// The segment holding `offset`, which lies in `[start, end)`.
    fn segment_for(&self, offset: i64) -> Result<&dyn SegmentView> {
        if offset >= self.active.base_offset() {
            return Ok(&self.active);
        }
        match self.sealed.range(..=offset).next_back() {
            Some((_, s)) if offset < s.next_offset() => Ok(s),
            _ => Err(LogError::Corrupt {
                path: self.active.path().to_owned(),
                position: 0,
                reason: format!("no segment holds offset {offset}"),
            }),
        }
    }
}

impl Log {
    /// Opens the partition log in `dir`, creating the directory if needed, and recovers it
    /// (see `recovery`).
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`], [`LogError::Io`], or [`LogError::Corrupt`] if the segments
    /// contradict each other in a way recovery will not guess about.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        Self::open_with_sync(dir.as_ref(), config, Box::new(|f: &File| f.sync_data()))
    }

    /// [`open`](Self::open) with an injected fsync.
    pub(crate) fn open_with_sync(dir: &Path, config: LogConfig, sync: Box<SyncFn>) -> Result<Log> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(LogError::io("cannot create partition", dir))?;
        let recovery_point = recovery::read_recovery_point(dir);
        let recovered = recovery::recover(dir, &config, recovery_point)?;
        let state = State {
            sealed: recovered
                .sealed
                .into_iter()
                .map(|s| (s.base_offset(), s))
                .collect(),
            active: recovered.active,
        };
        // Batches appended from now on may land below a recovery point left above the active
        // segment (by a clean close, or before damage was cut off): pull it down first.
        let active_base = state.active.base_offset();
        if recovery_point > active_base {
            recovery::write_recovery_point(dir, active_base, &*sync)
                .map_err(LogError::io("cannot write recovery point", dir))?;
        }
        let recovery_point = recovery_point.min(active_base);
        let pending = Pending {
            files: recovered.unsynced,
            dir: true,
            sealed_up_to: active_base,
            recovery_point,
        };
        Ok(Log {
            dir: dir.to_owned(),
            commit: GroupCommit::new(recovery_point),
            config,
            state: RwLock::new(state),
            pending: Mutex::new(pending),
            sync,
        })
    }

    /// Whole batches starting with the one holding `offset`: at least one if any lies below
    /// the bound, then more while they fit in `max_bytes`; none reaching `max_offset`
    /// (exclusive; the high watermark, or `None` for the log end). Reads one segment at most.
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] unless `start <= offset <= end` (`offset == end` gives an
    /// empty result); [`LogError::Io`]; [`LogError::Corrupt`] if an index misleads.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: Option<i64>,
    ) -> Result<ReadResult> {
        let state = self.read_state();
        let (start, end) = (state.start(), state.end());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        let upper = max_offset.map_or(end, |m| m.min(end));
        let (records, next_offset) = if offset >= upper {
            (Bytes::new(), offset)
        } else {
            read::read(state.segment_for(offset)?, offset, max_bytes, upper)?
        };
        Ok(ReadResult {
            records,
            next_offset,
            log_start_offset: start,
            log_end_offset: end,
        })
    }

    /// Offset of the first record whose timestamp is at least `ts_ms` (Kafka's ListOffsets by
    /// time), or `None` if every record is older. Costs the time index lookup, a walk of batch
    /// headers from there, and the decoding of the one batch that holds the answer.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`]; [`LogError::Corrupt`] if an index misleads.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<i64>> {
        let state = self.read_state();
        let sealed = state.sealed.values().map(|s| s as &dyn SegmentView);
        for segment in sealed.chain([&state.active as &dyn SegmentView]) {
            if segment.max_timestamp().is_some_and(|m| m >= ts_ms)
                && let Some(offset) = read::find_timestamp(segment, ts_ms)?
            {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// First offset in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.read_state().start()
    }

    /// Offset the next append will get.
    pub fn log_end_offset(&self) -> i64 {
        self.read_state().end()
    }

    /// Base offset of the active segment: it changes when the log rolls.
    pub fn active_base_offset(&self) -> i64 {
        self.read_state().active.base_offset()
    }

    /// Every offset below this is on stable storage.
    pub fn durable_offset(&self) -> i64 {
        self.commit.durable()
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.read_state().size_bytes()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.read_state().sealed.len() + 1
    }

    /// Flush rounds so far. Each round fsyncs every file it needs once; with group commit many
    /// appends share a round.
    pub fn fsync_count(&self) -> u64 {
        self.commit.rounds()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the oldest sealed segments while their newest timestamp is more than
    /// `retention_ms` before `now_ms`, or while the log would still hold `retention_bytes`
    /// without them. Never deletes the active segment. Returns how many were deleted.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] if a file cannot be deleted (the segment is already gone from the log).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let mut state = self.write_state();
        let retention_ms = self
            .config
            .retention_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
        let mut total = state.size_bytes();
        let mut deleted = 0;
        while let Some((&base, segment)) = state.sealed.first_key_value() {
            let expired =
                retention_ms.is_some_and(|ms| now_ms.saturating_sub(segment.max_timestamp()) > ms);
            let oversized = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - segment.size() >= limit);
            if !expired && !oversized {
                break;
            }
            total -= segment.size();
            state.sealed.remove(&base);
            self.pending_lock().dir = true;
            remove_segment_files(&self.dir, base)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes the sealed segments that lie wholly below `offset` (Kafka's log start offset
    /// moving up, as `DeleteRecords` or a follower following its leader does). The log start
    /// becomes the base of the first segment kept, at most `offset`. Never deletes the active
    /// segment. Returns how many were deleted.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] if a file cannot be deleted (the segment is already gone from the log).
    pub fn delete_segments_below(&self, offset: i64) -> Result<usize> {
        let mut state = self.write_state();
        let mut deleted = 0;
        while let Some((&base, segment)) = state.sealed.first_key_value() {
            if segment.next_offset() > offset {
                break;
            }
            state.sealed.remove(&base);
            self.pending_lock().dir = true;
            remove_segment_files(&self.dir, base)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Seals the active segment now (if it holds anything) and starts a new one.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`], [`LogError::Failed`].
    pub fn roll(&self) -> Result<()> {
        let rolled = {
            let mut state = self.write_state();
            self.check_failed()?;
            self.roll_locked(&mut state)?
        };
        if rolled.is_some() {
            self.force_flush()?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    ///
    /// # Errors
    ///
    /// [`LogError::Failed`] if this or an earlier fsync failed.
    pub fn flush(&self) -> Result<()> {
        self.force_flush()
    }

    /// For [`FsyncPolicy::Interval`]: flushes if the interval has passed since the last flush
    /// and something is not yet durable. The broker calls this on a timer ticking more often
    /// than the interval. A no-op under the other policies.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    pub fn flush_if_due(&self) -> Result<()> {
        let FsyncPolicy::Interval(interval) = self.config.fsync else {
            return Ok(());
        };
        let dirty = self.durable_offset() < self.log_end_offset();
        if dirty && self.commit.due(interval) {
            self.force_flush()?;
        }
        Ok(())
    }

    /// Flushes, then records the log end as the recovery point (a clean shutdown).
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush), or [`LogError::Io`] writing the recovery point.
    pub fn close(self) -> Result<()> {
        self.write_state().active.trim()?;
        self.force_flush()?;
        let end = self.log_end_offset();
        recovery::write_recovery_point(&self.dir, end, &self.sync)
            .map_err(LogError::io("cannot write recovery point", &self.dir))
    }

    /// Rolls if the active segment cannot take `bytes` more in `batches` batches or is too old.
    fn roll_if_needed(&self, state: &mut State, bytes: u64, batches: usize) -> Result<Option<i64>> {
        if state.active.should_roll(bytes, batches, &self.config) {
            self.roll_locked(state)
        } else {
            Ok(None)
        }
    }

    /// Seals the active segment (unless empty) and starts a new one at the log end, whose base
    /// offset is returned. The sealed files join the next flush.
    fn roll_locked(&self, state: &mut State) -> Result<Option<i64>> {
        if state.active.is_empty() {
            return Ok(None);
        }
        let base = state.end();
        let fresh = ActiveSegment::create(&self.dir, base, &self.config)?;
        let old = std::mem::replace(&mut state.active, fresh);
        let sealed = old.seal().map_err(|e| self.fail(io::Error::other(e)))?;
        let mut pending = self.pending_lock();
        pending.files.extend(sealed.files());
        pending.dir = true;
        pending.sealed_up_to = base;
        state.sealed.insert(sealed.base_offset(), sealed);
        Ok(Some(base))
    }

    /// One flush round, run by the flusher outside the segments' lock: fsyncs sealed files not
    /// yet synced, the directory if it changed, the active log; then advances the recovery
    /// point. Returns the offset now durable.
    fn sync_now(&self) -> io::Result<i64> {
        let (target, active, files, dir, sealed_up_to) = {
            let state = self.read_state();
            let mut pending = self.pending_lock();
            let files = std::mem::take(&mut pending.files);
            let dir = std::mem::take(&mut pending.dir);
            (
                state.end(),
                state.active.log_file().clone(),
                files,
                dir,
                pending.sealed_up_to,
            )
        };
        for file in &files {
            (self.sync)(file)?;
        }
        if dir {
            (self.sync)(&File::open(&self.dir)?)?;
        }
        (self.sync)(&active)?;
        // Only the flusher (or a truncation, which excludes it) moves the recovery point, so
        // it can be written without holding the lock that rolls need.
        if sealed_up_to > self.pending_lock().recovery_point {
            recovery::write_recovery_point(&self.dir, sealed_up_to, &self.sync)?;
            self.pending_lock().recovery_point = sealed_up_to;
        }
        Ok(target)
    }

    fn force_flush(&self) -> Result<()> {
        self.commit
            .force(|| self.sync_now())
            .map_err(|e| self.commit_error(e, self.log_end_offset()))
    }

    fn commit_error(&self, error: CommitError, base_offset: i64) -> LogError {
        match error {
            CommitError::Failed(source) => LogError::Failed {
                dir: self.dir.clone(),
                source,
            },
            CommitError::Truncated => LogError::TruncatedBeforeDurable { base_offset },
        }
    }

    /// Marks the log failed for good and returns the error to report.
    fn fail(&self, error: io::Error) -> LogError {
        tracing::error!(dir = %self.dir.display(), error = %error, "partition log failed");
        LogError::Failed {
            dir: self.dir.clone(),
            source: self.commit.fail(error),
        }
    }

    fn check_failed(&self) -> Result<()> {
        match self.commit.failure() {
            Some(source) => Err(LogError::Failed {
                dir: self.dir.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("segment state is only mutated by non-panicking code")
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .expect("segment state is only mutated by non-panicking code")
    }

    fn pending_lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .expect("pending-sync state is only mutated by non-panicking code")
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
