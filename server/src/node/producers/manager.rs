//! [`ProducerStateManager`]: one partition's [`ProducerStates`] with its snapshots, as the
//! partition uses them.
//!
//! Atomicity: the leader's check and its record of an appended batch run inside the log's
//! write lock (`Log::append_with`), so two concurrent appends of the same batch (a retry racing
//! its original on another stream) are decided one after the other, and the second sees the
//! first as a duplicate. The fsync a produce may wait for happens after the lock is released,
//! so idempotent appends still share group commits. Lock order: the log's lock, then `state`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use cairn_batch::BatchHeader;

use crate::log::{Log, LogError};

use super::snapshot::{self, delete_snapshots_above, write_snapshot};
use super::{ProducerStates, SequenceError, Verdict};

/// Why the leader does not append a producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A retry of a batch already in the log, at these offsets: answer with them.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// The sequence or epoch is wrong: refuse.
    Sequence(SequenceError),
}

/// One partition's producer state and its snapshots.
#[derive(Debug)]
pub struct ProducerStateManager {
    /// The partition directory, where snapshots live.
    dir: PathBuf,
    state: Mutex<ProducerStates>,
    /// The offset of the last snapshot written, and the active segment it was written for.
    /// Held while a snapshot is written, so two writers never race.
    snapshot: Mutex<(i64, i64)>,
}

impl ProducerStateManager {
    /// Rebuilds the state of `log` from its snapshots and batch headers.
    ///
    /// # Errors
    ///
    /// As `snapshot::open`.
    pub fn open(log: &Log) -> Result<Self, LogError> {
        let state = snapshot::open(log.dir(), log)?;
        Ok(Self {
            dir: log.dir().to_owned(),
            snapshot: Mutex::new((state.end_offset(), log.active_base_offset())),
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> MutexGuard<'_, ProducerStates> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the current state.
    pub fn current(&self) -> ProducerStates {
        self.state().clone()
    }

    /// The leader's check, for `Log::append_with`'s `admit`.
    ///
    /// # Errors
    ///
    /// [`Refusal`]: do not write the batch.
    pub fn admit(&self, h: &BatchHeader) -> Result<(), Refusal> {
        match self.state().check(h) {
            Ok(Verdict::Append) => Ok(()),
            Ok(Verdict::Duplicate {
                base_offset,
                last_offset,
            }) => Err(Refusal::Duplicate {
                base_offset,
                last_offset,
            }),
            Err(e) => Err(Refusal::Sequence(e)),
        }
    }

    /// Records written batches (leader or follower), for the log's `appended`.
    pub fn record(&self, headers: &[BatchHeader]) {
        let mut state = self.state();
        for h in headers {
            state.record(h);
        }
    }

    /// After an append: writes a snapshot if the log rolled since the last one (Kafka takes one
    /// at every roll), so a restart replays at most about one segment. A failure is logged and
    /// left for the next roll: the snapshot only saves work.
    pub fn snapshot_if_rolled(&self, log: &Log) {
        let Ok(mut last) = self.snapshot.try_lock() else {
            return; // another appender is writing one
        };
        let active = log.active_base_offset();
        if active > last.1 {
            self.write(&mut last, active);
        }
    }

    /// Writes a snapshot if anything was recorded since the last one (at shutdown).
    pub fn snapshot_now(&self, log: &Log) {
        let mut last = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if self.state().end_offset() != last.0 {
            self.write(&mut last, log.active_base_offset());
        }
    }

    fn write(&self, last: &mut (i64, i64), active: i64) {
        let state = self.current();
        match write_snapshot(&self.dir, &state) {
            Ok(()) => *last = (state.end_offset(), active),
            Err(e) => tracing::warn!(error = %e, "could not write a producer snapshot"),
        }
    }

    /// After the log was truncated: drops snapshots past its end and rebuilds the state.
    ///
    /// # Errors
    ///
    /// As `snapshot::open`; the state is then left as it was.
    pub fn rebuild(&self, log: &Log) -> Result<(), LogError> {
        let mut last = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        let rebuilt = snapshot::open(&self.dir, log)?;
        *last = (rebuilt.end_offset(), log.active_base_offset());
        *self.state() = rebuilt;
        Ok(())
    }

    /// After the log was emptied to restart at `offset`: no producer is known any more.
    ///
    /// # Errors
    ///
    /// Deleting the snapshots failed; the state is emptied anyway.
    pub fn reset(&self, offset: i64) -> Result<(), LogError> {
        let mut last = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        *self.state() = ProducerStates::new(offset);
        *last = (offset, offset);
        delete_snapshots_above(&self.dir, i64::MIN)
    }

    /// After retention moved the log start: forgets producers with no batch left.
    pub fn expire_before(&self, log_start: i64) {
        let expired = self.state().expire_before(log_start);
        if expired > 0 {
            tracing::debug!(dir = %self.dir.display(), expired, "expired idempotent producers");
        }
    }
}
