//! Memory-mapped index files of fixed-size entries, and the offset index built on them.
//!
//! An [`IndexFile`] is generic over its entry type and over its mapping: `MmapMut` while its
//! segment is active (preallocated to `max_index_bytes`, appended in place), `Mmap` once sealed
//! (trimmed to its used length, read-only). The compiler therefore refuses a write to a sealed
//! index. The offset index maps a batch's base offset, relative to the segment, to the batch's
//! byte position in the `.log` file; it is sparse (one entry per `index_interval_bytes`), so a
//! lookup gives a place to start scanning, never an exact answer. This module knows nothing of
//! batches or segments.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};

/// A fixed-size, big-endian index entry.
pub(crate) trait Entry: Copy + Debug {
    /// Encoded size in bytes.
    const LEN: usize;
    /// Decodes from exactly `LEN` bytes.
    fn decode(b: &[u8]) -> Self;
    /// Encodes into exactly `LEN` bytes.
    fn encode(&self, b: &mut [u8]);
}

/// Size of an [`OffsetEntry`] on disk.
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;

/// Offset index entry: the batch with base offset `base + rel` starts at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Batch base offset relative to the segment's base offset.
    pub(crate) rel: u32,
    /// Byte position of the batch in the segment's `.log` file.
    pub(crate) position: u32,
}

impl Entry for OffsetEntry {
    const LEN: usize = OFFSET_ENTRY_LEN;
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel: u32::from_be_bytes(b[0..4].try_into().expect("entry is 8 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("entry is 8 bytes")),
        }
    }
    fn encode(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.rel.to_be_bytes());
        b[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
}

/// An index file of `E` entries mapped as `M` (`MmapMut` while active, `Mmap` when sealed).
#[derive(Debug)]
pub(crate) struct IndexFile<E, M> {
    /// Where the file lives, for errors and deletion.
    path: PathBuf,
    /// The open file, shared with the group-commit flusher so it can be fsynced without a lock.
    file: Arc<File>,
    /// The mapping; its length is the file's length.
    map: M,
    /// Entries in use; the rest of an active mapping is preallocated zeros.
    entries: usize,
    _entry: PhantomData<E>,
}

/// The index of an active segment: writable, preallocated.
pub(crate) type ActiveIndex<E> = IndexFile<E, MmapMut>;
/// The index of a sealed segment: read-only, exactly as long as its entries.
pub(crate) type SealedIndex<E> = IndexFile<E, Mmap>;

impl<E: Entry, M: Deref<Target = [u8]>> IndexFile<E, M> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Entry `i`; `i < len()`.
    pub(crate) fn entry(&self, i: usize) -> E {
        E::decode(&self.map[i * E::LEN..(i + 1) * E::LEN])
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// The last entry for which `before` holds, given that it holds for a prefix of the
    /// entries (binary search).
    pub(crate) fn last_where(&self, before: impl Fn(&E) -> bool) -> Option<E> {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(&self.entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// Every entry, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = E> + '_ {
        (0..self.entries).map(|i| self.entry(i))
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for fsync.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }
}

impl<E: Entry> IndexFile<E, MmapMut> {
    /// Creates (or empties) the index at `path`, preallocated to `max_bytes` rounded down to a
    /// whole entry, with no entries. Callers rebuild the entries from the log.
    pub(crate) fn create(path: &Path, max_bytes: u32) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let capacity = max_bytes as usize / E::LEN;
        file.set_len((capacity * E::LEN) as u64)?;
        // SAFETY: the file belongs to this partition directory, which only this process writes,
        // and its length is fixed while mapped (it is only resized in `seal`, after unmapping).
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(IndexFile {
            path: path.to_owned(),
            file: Arc::new(file),
            map,
            entries: 0,
            _entry: PhantomData,
        })
    }

    /// How many entries fit.
    pub(crate) fn capacity(&self) -> usize {
        self.map.len() / E::LEN
    }

    /// How many more entries fit.
    pub(crate) fn remaining(&self) -> usize {
        self.capacity() - self.entries
    }

    /// Appends an entry. The caller rolls the segment before the index is full.
    pub(crate) fn push(&mut self, entry: E) {
        assert!(
            self.remaining() > 0,
            "segments roll before an index fills up"
        );
        let at = self.entries * E::LEN;
        entry.encode(&mut self.map[at..at + E::LEN]);
        self.entries += 1;
    }

    /// Keeps only the first `entries` entries.
    pub(crate) fn truncate(&mut self, entries: usize) {
        self.entries = self.entries.min(entries);
    }

    /// Trims the file to its entries and remaps it read-only.
    pub(crate) fn seal(self) -> io::Result<SealedIndex<E>> {
        let IndexFile {
            path,
            file,
            map,
            entries,
            ..
        } = self;
        drop(map);
        file.set_len((entries * E::LEN) as u64)?;
        // SAFETY: as in `create`; a sealed index is never written or resized again.
        let map = unsafe { Mmap::map(&*file)? };
        Ok(IndexFile {
            path,
            file,
            map,
            entries,
            _entry: PhantomData,
        })
    }
}

impl<E: Entry> IndexFile<E, Mmap> {
    /// Maps an existing sealed index read-only. Returns `Ok(None)` if the file is missing, and
    /// an index whose [`trailing_bytes`](Self::trailing_bytes) are non-zero if its length is not
    /// a whole number of entries (the caller decides to rebuild).
    pub(crate) fn open(path: &Path) -> io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // SAFETY: as in `create`; sealed indexes are never written or resized while mapped.
        let map = unsafe { Mmap::map(&file)? };
        let entries = map.len() / E::LEN;
        Ok(Some(IndexFile {
            path: path.to_owned(),
            file: Arc::new(file),
            map,
            entries,
            _entry: PhantomData,
        }))
    }

    /// Bytes past the last whole entry; non-zero means the file is damaged.
    pub(crate) fn trailing_bytes(&self) -> usize {
        self.map.len() % E::LEN
    }
}

impl<M: Deref<Target = [u8]>> IndexFile<OffsetEntry, M> {
    /// The entry nearest below or at relative offset `rel`: where to start scanning for it.
    pub(crate) fn lookup(&self, rel: u32) -> Option<OffsetEntry> {
        self.last_where(|e| e.rel <= rel)
    }

    /// Checks that the entries could describe a log of `log_len` bytes holding relative offsets
    /// below `rel_end`: strictly increasing, in bounds, a whole number of entries.
    pub(crate) fn check(&self, log_len: u64, rel_end: u64) -> Result<(), &'static str> {
        let mut prev: Option<OffsetEntry> = None;
        for e in self.iter() {
            if u64::from(e.position) >= log_len || u64::from(e.rel) >= rel_end {
                return Err("offset index entry points past the end of the segment");
            }
            if let Some(p) = prev
                && (e.rel <= p.rel || e.position <= p.position)
            {
                return Err("offset index entries are not increasing");
            }
            prev = Some(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> ActiveIndex<OffsetEntry> {
        let mut index = ActiveIndex::create(&dir.join("x.index"), 80).unwrap();
        for (rel, position) in [(10, 100), (20, 200), (30, 300)] {
            index.push(OffsetEntry { rel, position });
        }
        index
    }

    #[test]
    fn lookup_exact_between_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let at = |rel| index.lookup(rel).map(|e| (e.rel, e.position));
        assert_eq!(at(20), Some((20, 200)), "exact");
        assert_eq!(at(25), Some((20, 200)), "between entries");
        assert_eq!(at(9), None, "before the first entry: scan from position 0");
        assert_eq!(at(10), Some((10, 100)));
        assert_eq!(at(u32::MAX), Some((30, 300)), "after the last entry");
    }

    #[test]
    fn capacity_push_truncate_and_seal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = sample(dir.path());
        assert_eq!(index.capacity(), 10);
        assert_eq!(index.remaining(), 7);
        index.truncate(2);
        assert_eq!(
            index.last(),
            Some(OffsetEntry {
                rel: 20,
                position: 200
            })
        );
        let sealed = index.seal().unwrap();
        assert_eq!(std::fs::metadata(sealed.path()).unwrap().len(), 16);
        let reopened = SealedIndex::<OffsetEntry>::open(sealed.path())
            .unwrap()
            .unwrap();
        assert_eq!(
            reopened.iter().collect::<Vec<_>>(),
            sealed.iter().collect::<Vec<_>>()
        );
        assert_eq!(reopened.trailing_bytes(), 0);
        assert_eq!(reopened.lookup(25).map(|e| e.position), Some(200));
        assert!(
            SealedIndex::<OffsetEntry>::open(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn check_rejects_disorder_and_out_of_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        assert_eq!(index.check(301, 31), Ok(()));
        assert!(index.check(300, 31).is_err(), "position past the log");
        assert!(index.check(301, 30).is_err(), "offset past the segment");
        let mut bad = ActiveIndex::create(&dir.path().join("y.index"), 80).unwrap();
        bad.push(OffsetEntry {
            rel: 5,
            position: 50,
        });
        bad.push(OffsetEntry {
            rel: 5,
            position: 60,
        });
        assert!(bad.check(1000, 1000).is_err());
    }
}
