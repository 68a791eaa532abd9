//! Idempotent producers' state of one partition (Kafka's `ProducerStateManager`): for every
//! producer id with a batch in the log, its epoch and its last [`BATCHES_KEPT`] batches
//! (sequence range and offsets). The leader checks each producer batch against it before the
//! append ([`ProducerStates::check`]): the next sequence is appended, a retry of one of the last
//! batches is answered with the offsets it was first written at, anything else is refused.
//! Leader and followers record every appended batch ([`ProducerStates::record`]), so a new
//! leader after a failover knows every producer's last sequences.
//!
//! This file is the pure core (no I/O, table-tested in `tests`). `snapshot` persists it as
//! `<offset>.snapshot` files in the partition directory and rebuilds it on open and after a
//! truncation from the newest snapshot at or below the log end plus the batch headers after it.
//! `manager` is what the partition holds: the state behind a mutex, taken inside the log's write
//! lock, and when to snapshot.
//!
//! Expiry: a producer is forgotten once the log no longer holds any of its batches (retention
//! deleted them, [`ProducerStates::expire_before`]); its next batch must then start again at
//! sequence 0 (the client gets `UNKNOWN_PRODUCER_ID` otherwise and starts over with a new id).
//! Kafka keeps such producers for `transactional.id.expiration.ms` (7 days) instead; tying the
//! state to the log keeps it bounded by the log and the same on every replica.

mod manager;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use cairn_batch::{BatchHeader, NO_PRODUCER_ID};

pub use manager::{ProducerStateManager, Refusal};

/// How many of a producer's last batches are remembered for duplicate detection: a client keeps
/// at most this many batches in flight per partition (Kafka's `max.in.flight` ≤ 5 rule).
pub const BATCHES_KEPT: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record (wrapped past `i32::MAX` to 0 as in Kafka).
    pub last_seq: i32,
    /// Offset of its first record.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its largest record timestamp (ms).
    pub max_timestamp: i64,
}

/// What the partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's epoch; an older one is fenced.
    pub epoch: i16,
    /// Its last batches at `epoch`, oldest first, at most [`BATCHES_KEPT`].
    pub batches: VecDeque<BatchMeta>,
}

impl ProducerEntry {
    /// The sequence of the last record appended at the current epoch.
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// The offset of the last record appended.
    fn last_offset(&self) -> Option<i64> {
        self.batches.back().map(|b| b.last_offset)
    }
}

/// What the leader does with a producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it (also every batch without a producer id).
    Append,
    /// A retry of a batch already in the log: do not append; answer with its offsets.
    Duplicate {
        /// Where the batch was first written.
        base_offset: i64,
        /// Its last record's offset.
        last_offset: i64,
    },
}

/// Why the leader refuses a producer batch. Nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch does not continue the producer's sequence and is not a retry of one of its
    /// last batches: an earlier batch is missing (a gap), or it is older than those remembered.
    /// A client retrying in order resends the missing batch first.
    #[error(
        "out-of-order sequence from producer {producer_id} (epoch {epoch}): expected sequence \
         {expected}, got {got}; nothing was written"
    )]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        got: i32,
    },
    /// The producer epoch is older than the one this partition has seen: a newer instance of
    /// the producer fenced this one.
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// The partition has no state for this producer (never seen, or expired with its batches)
    /// and the batch does not start at sequence 0: the producer must start over.
    #[error(
        "unknown producer id {producer_id} for a batch at sequence {sequence}; a new producer \
         starts at sequence 0"
    )]
    UnknownProducer { producer_id: i64, sequence: i32 },
}

/// The idempotent producers of one partition, as of the batches below [`end_offset`](Self::end_offset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Every batch below this offset has been recorded, none at or above it.
    end_offset: i64,
}

/// The sequence after `seq`, wrapping from `i32::MAX` to 0 (Kafka).
pub fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The sequence of a batch's last record: `base + last_offset_delta`, wrapping past `i32::MAX`.
pub fn last_seq(base_sequence: i32, last_offset_delta: i32) -> i32 {
    // Both are non-negative for a valid idempotent batch; wrapping arithmetic modulo 2^31.
    let sum = i64::from(base_sequence) + i64::from(last_offset_delta.max(0));
    i32::try_from(sum % (i64::from(i32::MAX) + 1)).expect("reduced modulo 2^31")
}

impl ProducerStates {
    /// Empty state for a log whose batches start at `end_offset`.
    pub fn new(end_offset: i64) -> Self {
        Self {
            producers: HashMap::new(),
            end_offset,
        }
    }

    /// Every batch below this offset is reflected in the state.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// The producer's state, if the partition has any.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The producers, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// As leader, decides about a batch before it is appended (Kafka's `ProducerAppendInfo`
    /// checks). Batches without a producer id are always appended.
    ///
    /// # Errors
    ///
    /// [`SequenceError`]: the batch must not be written.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict, SequenceError> {
        if h.producer_id == NO_PRODUCER_ID || h.producer_id < 0 {
            return Ok(Verdict::Append);
        }
        let (id, epoch, seq) = (h.producer_id, h.producer_epoch, h.base_sequence);
        let Some(entry) = self.producers.get(&id) else {
            return if seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::UnknownProducer {
                    producer_id: id,
                    sequence: seq,
                })
            };
        };
        let out_of_order = |expected| SequenceError::OutOfOrder {
            producer_id: id,
            epoch,
            expected,
            got: seq,
        };
        match epoch.cmp(&entry.epoch) {
            std::cmp::Ordering::Less => Err(SequenceError::InvalidEpoch {
                producer_id: id,
                epoch,
                current: entry.epoch,
            }),
            std::cmp::Ordering::Greater if seq == 0 => Ok(Verdict::Append),
            std::cmp::Ordering::Greater => Err(out_of_order(0)),
            std::cmp::Ordering::Equal => {
                let last = last_seq(seq, h.last_offset_delta);
                if let Some(b) = entry
                    .batches
                    .iter()
                    .find(|b| b.first_seq == seq && b.last_seq == last)
                {
                    return Ok(Verdict::Duplicate {
                        base_offset: b.first_offset,
                        last_offset: b.last_offset,
                    });
                }
                let expected = entry.last_seq().map_or(0, next_seq);
                if seq == expected {
                    Ok(Verdict::Append)
                } else {
                    Err(out_of_order(expected))
                }
            }
        }
    }

    /// Records an appended batch (offsets stamped), on the leader after its write and on a
    /// follower for every replicated batch. Never refuses: the log is the truth.
    /// A batch below [`end_offset`](Self::end_offset) is already recorded and is skipped.
    pub fn record(&mut self, h: &BatchHeader) {
        if h.base_offset < self.end_offset {
            return;
        }
        self.end_offset = h.next_offset();
        if h.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_KEPT),
            });
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h.base_sequence, h.last_offset_delta),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        });
    }

    /// Forgets producers none of whose batches is at or after `log_start` any more (retention
    /// deleted them). Returns how many went.
    pub fn expire_before(&mut self, log_start: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| e.last_offset().is_some_and(|o| o >= log_start));
        before - self.producers.len()
    }

    /// Restores a producer (from a snapshot).
    fn insert(&mut self, producer_id: i64, entry: ProducerEntry) {
        self.producers.insert(producer_id, entry);
    }
}
