//! The time index: timestamp → relative offset, for `offset_for_timestamp` and time retention.
//!
//! An entry `(timestamp, rel)` says: the largest batch timestamp seen in the segment up to and
//! including the batch with base offset `base + rel` is `timestamp`, and that batch is the one
//! that first reached it. Entries are appended (at most one per `index_interval_bytes`, like the
//! offset index) only when the largest timestamp grows, so both columns strictly increase. When
//! a segment is sealed a final entry records its largest timestamp, which is what time retention
//! reads. Storage and mapping come from [`IndexFile`]; this module knows nothing of batches.

use std::ops::Deref;

use super::index::{Entry, IndexFile};

/// Size of a [`TimeEntry`] on disk.
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// Time index entry: batches up to `base + rel` have timestamps at most `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Largest batch `max_timestamp` so far in the segment, ms.
    pub(crate) timestamp: i64,
    /// Relative base offset of the batch that first reached `timestamp`.
    pub(crate) rel: u32,
}

impl Entry for TimeEntry {
    const LEN: usize = TIME_ENTRY_LEN;
    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[0..8].try_into().expect("entry is 12 bytes")),
            rel: u32::from_be_bytes(b[8..12].try_into().expect("entry is 12 bytes")),
        }
    }
    fn encode(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&self.rel.to_be_bytes());
    }
}

impl<M: Deref<Target = [u8]>> IndexFile<TimeEntry, M> {
    /// Where to start scanning for the first batch whose `max_timestamp >= ts`: the last entry
    /// with a smaller timestamp (every batch up to it is older than `ts`), or `None` to scan
    /// from the start of the segment.
    pub(crate) fn lookup(&self, ts: i64) -> Option<TimeEntry> {
        self.last_where(|e| e.timestamp < ts)
    }

    /// The largest timestamp recorded, if any.
    pub(crate) fn max_timestamp(&self) -> Option<i64> {
        self.last().map(|e| e.timestamp)
    }

    /// Checks that both columns strictly increase and offsets stay below `rel_end`.
    pub(crate) fn check(&self, rel_end: u64) -> Result<(), &'static str> {
        let mut prev: Option<TimeEntry> = None;
        for e in self.iter() {
            if u64::from(e.rel) >= rel_end {
                return Err("time index entry points past the end of the segment");
            }
            if let Some(p) = prev
                && (e.rel <= p.rel || e.timestamp <= p.timestamp)
            {
                return Err("time index entries are not increasing");
            }
            prev = Some(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::{ActiveIndex, SealedIndex};
    use super::*;

    fn sample(dir: &std::path::Path) -> ActiveIndex<TimeEntry> {
        let mut index = ActiveIndex::create(&dir.join("x.timeindex"), 120).unwrap();
        for (timestamp, rel) in [(1_000, 0), (2_000, 7), (3_000, 9)] {
            index.push(TimeEntry { timestamp, rel });
        }
        index
    }

    #[test]
    fn lookup_exact_between_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let at = |ts| index.lookup(ts).map(|e| e.rel);
        assert_eq!(
            at(2_000),
            Some(0),
            "exact: the batch at rel 7 may be the answer"
        );
        assert_eq!(at(2_500), Some(7), "between entries");
        assert_eq!(at(1_000), None, "at the first entry: scan from the start");
        assert_eq!(at(5), None, "before the first entry");
        assert_eq!(
            at(9_999),
            Some(9),
            "after the last: scan from the last entry"
        );
        assert_eq!(index.max_timestamp(), Some(3_000));
    }

    #[test]
    fn seal_and_reopen_keep_entries() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = sample(dir.path()).seal().unwrap();
        let reopened = SealedIndex::<TimeEntry>::open(sealed.path())
            .unwrap()
            .unwrap();
        assert_eq!(reopened.len(), 3);
        assert_eq!(reopened.trailing_bytes(), 0);
        assert_eq!(reopened.lookup(2_500).map(|e| e.rel), Some(7));
        assert_eq!(reopened.check(10), Ok(()));
        assert!(reopened.check(9).is_err());
    }

    #[test]
    fn check_rejects_non_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = sample(dir.path());
        index.push(TimeEntry {
            timestamp: 2_999,
            rel: 12,
        });
        assert!(index.check(100).is_err());
    }
}
