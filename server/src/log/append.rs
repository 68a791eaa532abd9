//! The append paths: a leader's producer batch and a follower's replicated batches.
//!
//! Validation (cairn-batch: length, CRC, records) runs before the lock is taken; under the lock
//! only the roll decision, one write and the index updates happen; durability is waited for
//! after the lock is released (see `group_commit`). This module adds methods to `Log` and knows
//! nothing the rest of `log` does not.

use std::convert::Infallible;

use bytes::Bytes;
use cairn_batch::{BatchError, BatchHeader};

use super::error::{LogError, Result};
use super::{AppendInfo, FsyncPolicy, Log, State};

impl Log {
    /// Validates a producer's batch, gives it the next offsets and `leader_epoch`, and appends
    /// the producer's bytes as they are (one vectored write). With [`FsyncPolicy::Always`] it
    /// returns only once the batch is durable.
    ///
    /// # Errors
    ///
    /// [`LogError::BatchTooLarge`] or [`LogError::InvalidBatch`] (nothing written);
    /// [`LogError::Failed`]; [`LogError::TruncatedBeforeDurable`].
    pub fn append(&self, batch: Bytes, leader_epoch: i32) -> Result<AppendInfo> {
        self.append_with(batch, leader_epoch, |_| Ok::<(), Infallible>(()), |_| {})
            .map(|r| r.unwrap_or_else(|never| match never {}))
    }

    /// [`append`](Self::append) with a caller's check and bookkeeping run under the log's write
    /// lock, so that both are atomic with the write with respect to every other append of this
    /// log (the partition's idempotent-producer check uses it). `admit` sees the header as it
    /// will be stored (base offset and epoch stamped) before anything is written; its refusal
    /// comes back as `Ok(Err(refusal))` with nothing written. `appended` runs once the batch is
    /// written. Neither runs while an fsync is waited for.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    pub fn append_with<R>(
        &self,
        batch: Bytes,
        leader_epoch: i32,
        admit: impl FnOnce(&BatchHeader) -> std::result::Result<(), R>,
        appended: impl FnOnce(&BatchHeader),
    ) -> Result<std::result::Result<AppendInfo, R>> {
        let max = self.config.max_batch_bytes;
        if batch.len() > max {
            return Err(LogError::BatchTooLarge {
                size: batch.len(),
                max,
            });
        }
        let mut header = cairn_batch::validate(&batch, max)?;
        let (info, generation, rolled) = {
            let mut state = self.write_state();
            self.check_failed()?;
            header.base_offset = state.end();
            header.leader_epoch = leader_epoch;
            if let Err(refusal) = admit(&header) {
                return Ok(Err(refusal));
            }
            let rolled = self.roll_if_needed(&mut state, batch.len() as u64, 1)?;
            if let Err(e) = state.active.append_stamped(batch, &header) {
                return Err(self.fail(e));
            }
            appended(&header);
            (info_of(&[header]), self.commit.generation(), rolled)
        };
        self.after_append(info, generation, rolled).map(Ok)
    }

    /// Appends batches a leader already stamped (a follower's fetch result): several may be
    /// concatenated. Each is fully validated; they must continue the log exactly.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append), and [`LogError::NonContiguous`] if the first batch does not
    /// start at the log end or the batches skip offsets. Nothing is written on a refusal.
    pub fn append_replicated(&self, batches: Bytes) -> Result<AppendInfo> {
        self.append_replicated_with(batches, |_| {})
    }

    /// [`append_replicated`](Self::append_replicated), running `appended` with the batches'
    /// headers once they are written, still under the log's write lock (so the caller's
    /// bookkeeping follows the log's order).
    ///
    /// # Errors
    ///
    /// As [`append_replicated`](Self::append_replicated).
    pub fn append_replicated_with(
        &self,
        batches: Bytes,
        appended: impl FnOnce(&[BatchHeader]),
    ) -> Result<AppendInfo> {
        let headers = self.validate_chunk(&batches)?;
        let Some(first) = headers.first() else {
            let end = self.log_end_offset();
            return Ok(AppendInfo {
                base_offset: end,
                last_offset: end - 1,
                max_timestamp: -1,
                log_end_offset: end,
            });
        };
        let (generation, rolled) = {
            let mut state = self.write_state();
            self.check_failed()?;
            if first.base_offset != state.end() {
                return Err(LogError::NonContiguous {
                    expected: state.end(),
                    got: first.base_offset,
                });
            }
            let rolled = self.write_chunks(&mut state, &batches, &headers)?;
            appended(&headers);
            (self.commit.generation(), rolled)
        };
        self.after_append(info_of(&headers), generation, rolled)
    }

    /// Writes validated `headers`/`bytes` in as few writes as segment boundaries allow.
    /// Returns the base offset of the last segment rolled to, if any.
    fn write_chunks(
        &self,
        state: &mut State,
        bytes: &[u8],
        headers: &[BatchHeader],
    ) -> Result<Option<i64>> {
        let (mut rolled, mut i, mut position) = (None, 0, 0);
        while i < headers.len() {
            let first_len = headers[i].total_len() as u64;
            rolled = self.roll_if_needed(state, first_len, 1)?.or(rolled);
            let (mut j, mut len) = (i + 1, first_len);
            while j < headers.len()
                && state.active.can_take(
                    len + headers[j].total_len() as u64,
                    j - i + 1,
                    &self.config,
                )
            {
                len += headers[j].total_len() as u64;
                j += 1;
            }
            let chunk = &bytes[position..position + len as usize];
            if let Err(e) = state.active.append_chunk(chunk, &headers[i..j]) {
                return Err(self.fail(e));
            }
            (i, position) = (j, position + len as usize);
        }
        Ok(rolled)
    }

    /// Splits and fully validates concatenated batches, checking they are contiguous.
    fn validate_chunk(&self, buf: &[u8]) -> Result<Vec<BatchHeader>> {
        let max = self.config.max_batch_bytes;
        let mut headers: Vec<BatchHeader> = Vec::new();
        let mut position = 0;
        while position < buf.len() {
            let rest = &buf[position..];
            let len = cairn_batch::peek_header(rest)?.total_len();
            if len > max {
                return Err(LogError::BatchTooLarge { size: len, max });
            }
            if len > rest.len() {
                let available = rest.len();
                return Err(BatchError::Truncated {
                    needed: len,
                    available,
                }
                .into());
            }
            let header = cairn_batch::validate(&rest[..len], max)?;
            if let Some(prev) = headers.last()
                && header.base_offset != prev.next_offset()
            {
                return Err(LogError::NonContiguous {
                    expected: prev.next_offset(),
                    got: header.base_offset,
                });
            }
            headers.push(header);
            position += len;
        }
        Ok(headers)
    }

    /// Durability work after an append has released the lock.
    fn after_append(
        &self,
        info: AppendInfo,
        generation: u64,
        rolled: Option<i64>,
    ) -> Result<AppendInfo> {
        if self.config.fsync == FsyncPolicy::Always {
            self.commit
                .wait_durable(info.log_end_offset, generation, || self.sync_now())
                .map_err(|e| self.commit_error(e, info.base_offset))?;
        } else if rolled.is_some() {
            self.force_flush()?;
        }
        Ok(info)
    }
}

/// Summarises appended batches (non-empty, in order).
fn info_of(headers: &[BatchHeader]) -> AppendInfo {
    let first = headers.first().expect("at least one batch was appended");
    let last = headers.last().expect("at least one batch was appended");
    AppendInfo {
        base_offset: first.base_offset,
        last_offset: last.last_offset(),
        max_timestamp: headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1),
        log_end_offset: last.next_offset(),
    }
}
