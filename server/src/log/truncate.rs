//! Cutting the log back: a follower drops what a new leader does not have (DESIGN.md §5).
//!
//! Truncation removes whole batches from the end, newest files first, so that a crash half-way
//! leaves a shorter but consistent log. A sealed segment that must lose its tail is never
//! shortened in place (readers may hold slices of its map, and a shortened mapped file faults):
//! its surviving prefix is written to a new file that is fsynced and renamed over it, and the
//! old mapping lives on until its last reader lets go. This module adds one method to `Log`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;

use super::error::{LogError, Result};
use super::file_name::{FileKind, segment_path};
use super::segment::{ActiveSegment, SealedSegment, SegmentView, remove_segment_files};
use super::{Log, State, read, recovery};

impl Log {
    /// Drops every batch holding an offset at or after `offset`; if `offset` falls inside a
    /// batch, that whole batch goes too (so the log end may end up below `offset`). Later
    /// segments are deleted. `offset >= log end` is a no-op. Appends waiting for durability
    /// that this removes get [`LogError::TruncatedBeforeDurable`].
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] if `offset` is below the log start (nothing changes);
    /// [`LogError::Failed`] if a file operation fails half-way (reopen to recover).
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        self.commit.exclusive(|| {
            let mut state = self.write_state();
            self.check_failed()?;
            let (start, end) = (state.start(), state.end());
            if offset >= end {
                return Ok(());
            }
            if offset < start {
                return Err(LogError::OffsetOutOfRange { offset, start, end });
            }
            let segment = state.segment_for(offset)?;
            let base = segment.base_offset();
            let Some((position, batch)) = read::find_batch(segment, offset)? else {
                return Err(LogError::Corrupt {
                    path: segment.path().to_owned(),
                    position: segment.size(),
                    reason: format!("offset {offset} is below the log end but in no batch"),
                });
            };
            let new_end = batch.base_offset;
            self.commit.truncated(new_end);
            tracing::info!(dir = %self.dir.display(), from = end, to = new_end, "truncating log");
            self.cut(&mut state, base, new_end, position)
                .map_err(|e| self.fail(std::io::Error::other(e)))?;
            let active_base = state.active.base_offset();
            drop(state);
            self.lower_recovery_point(active_base)
        })
    }

    /// Deletes every segment and restarts the log, empty, at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): what a follower does when the leader's log starts past
    /// everything the follower has, e.g. after retention on the leader. `offset` may lie
    /// anywhere, above or below the current range.
    ///
    /// # Errors
    ///
    /// [`LogError::Failed`] if a file operation fails half-way (reopen to recover); an
    /// [`LogError::OffsetOutOfRange`] for a negative `offset`.
    pub fn reset_to(&self, offset: i64) -> Result<()> {
        self.commit.exclusive(|| {
            let mut state = self.write_state();
            self.check_failed()?;
            if offset < 0 {
                let (start, end) = (state.start(), state.end());
                return Err(LogError::OffsetOutOfRange { offset, start, end });
            }
            self.commit.truncated(offset);
            tracing::info!(dir = %self.dir.display(), offset, "restarting log empty");
            let restart = |state: &mut State| -> Result<()> {
                remove_segment_files(&self.dir, state.active.base_offset())?;
                while let Some((base, _)) = state.sealed.pop_last() {
                    remove_segment_files(&self.dir, base)?;
                }
                self.pending_lock().dir = true;
                state.active = ActiveSegment::create(&self.dir, offset, &self.config)?;
                Ok(())
            };
            restart(&mut state).map_err(|e| self.fail(std::io::Error::other(e)))?;
            drop(state);
            self.lower_recovery_point(offset)
        })
    }

    /// Makes `new_end` the log end; the batch at `position` in segment `base` starts there.
    fn cut(&self, state: &mut State, base: i64, new_end: i64, position: u64) -> Result<()> {
        if base == state.active.base_offset() {
            state.active.truncate_file(position)?;
            state.active.reset();
            recovery::reindex(&mut state.active)?;
            return Ok(());
        }
        remove_segment_files(&self.dir, state.active.base_offset())?;
        let doomed: Vec<i64> = state.sealed.range(new_end..).map(|(b, _)| *b).collect();
        for b in doomed.into_iter().rev() {
            state.sealed.remove(&b);
            remove_segment_files(&self.dir, b)?;
        }
        self.pending_lock().dir = true;
        state.active = match state.sealed.remove(&base) {
            Some(segment) => {
                self.rewrite_prefix(&segment, position)?;
                drop(segment);
                recovery::recover_segment(&self.dir, base, &self.config)?.0
            }
            None => ActiveSegment::create(&self.dir, new_end, &self.config)?,
        };
        Ok(())
    }

    /// Durably replaces `segment`'s log file with its first `len` bytes, via a new file.
    fn rewrite_prefix(&self, segment: &SealedSegment, len: u64) -> Result<()> {
        let path = segment_path(&self.dir, segment.base_offset(), FileKind::Log);
        let tmp = path.with_extension("log.tmp");
        let prefix = segment.read_bytes(0, len as usize)?;
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(&prefix)?;
            (self.sync)(&file)?;
            fs::rename(&tmp, &path)?;
            (self.sync)(&File::open(&self.dir)?)
        };
        write().map_err(LogError::io("cannot rewrite truncated segment", &path))
    }

    /// After a truncation, segments at or past the new active segment must be rescanned on
    /// open: the recovery point may not stay above it. Runs in the flusher role (no flush can
    /// move the recovery point meanwhile) but outside the segments' lock, so reads do not wait
    /// for its fsyncs.
    fn lower_recovery_point(&self, active_base: i64) -> Result<()> {
        let mut pending = self.pending_lock();
        pending.sealed_up_to = pending.sealed_up_to.min(active_base);
        if pending.recovery_point > active_base {
            recovery::write_recovery_point(&self.dir, active_base, &self.sync)
                .map_err(|e| self.fail(e))?;
            pending.recovery_point = active_base;
        }
        Ok(())
    }
}
