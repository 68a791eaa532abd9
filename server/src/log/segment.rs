//! Segments: one `.log` file of whole batches plus its offset and time indexes.
//!
//! [`ActiveSegment`] is the one segment a partition appends to: its log file is written with
//! ordinary `write`s (`O_APPEND`) and read with positional reads, its indexes are writable maps.
//! [`SealedSegment`] is immutable: its log file is mapped read-only and served as `Bytes` slices
//! of the map (zero-copy), its indexes are trimmed and read-only. Sealing consumes the active
//! segment, so nothing can append to a sealed one. Reads go through [`SegmentView`], which both
//! implement. This module knows batch headers (to walk a segment) but not the partition: rolling,
//! retention and locking belong to the [`Log`](super::Log).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use bytes::Bytes;
use cairn_batch::{BatchHeader, HEADER_LEN};
use memmap2::Mmap;

use super::config::LogConfig;
use super::error::{LogError, Result};
use super::file_name::{FileKind, segment_path};
use super::index::{ActiveIndex, OffsetEntry, SealedIndex};
use super::time_index::TimeEntry;

/// How far ahead of the data an active segment's file is filled with zeros.
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    /// Offset of the first batch; the file name.
    base_offset: i64,
    /// Offset the next batch will get.
    next_offset: i64,
    /// Path of the `.log` file.
    path: PathBuf,
    /// The `.log` file, opened read + write (appends write at `size`); shared with the
    /// group-commit flusher.
    file: Arc<File>,
    /// Bytes of whole batches in the file.
    size: u64,
    /// The file's length: the batches, then zeros written ahead of them (see `preallocate`).
    allocated: u64,
    /// Sparse offset index, rebuilt from the log whenever the segment is (re)opened.
    index: ActiveIndex<OffsetEntry>,
    /// Sparse time index, likewise.
    time_index: ActiveIndex<TimeEntry>,
    /// Bytes appended since the last index entry; an entry is due past `index_interval_bytes`.
    bytes_since_entry: u64,
    /// From the config, so `note_batch` needs no config.
    index_interval_bytes: u64,
    /// How far ahead of the data to write zeros: [`PREALLOCATE_BYTES`] with fsync `always`
    /// (where every append waits for an fsync), else 0 (zeros would only double the writes),
    /// and never past the segment's size.
    preallocate_bytes: u64,
    /// From the config: preallocation stops at the segment's size.
    segment_bytes: u64,
    /// Largest batch timestamp so far and the relative offset of the batch that reached it.
    max_timestamp: Option<TimeEntry>,
    /// When the segment became active, for `segment_ms`.
    created: Instant,
}

impl ActiveSegment {
    /// Opens segment `base_offset` in `dir` for appending, creating an empty `.log` if there is
    /// none, with fresh, empty indexes. The caller feeds existing batches to
    /// [`note_batch`](Self::note_batch) (recovery) or starts appending (a new segment).
    pub(crate) fn open(dir: &Path, base_offset: i64, config: &LogConfig) -> Result<Self> {
        let path = segment_path(dir, base_offset, FileKind::Log);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LogError::io("cannot open segment", &path))?;
        let index_path = segment_path(dir, base_offset, FileKind::Index);
        let index = ActiveIndex::create(&index_path, config.max_index_bytes)
            .map_err(LogError::io("cannot create index", &index_path))?;
        let time_path = segment_path(dir, base_offset, FileKind::TimeIndex);
        let time_index = ActiveIndex::create(&time_path, config.max_index_bytes)
            .map_err(LogError::io("cannot create time index", &time_path))?;
        let allocated = file
            .metadata()
            .map_err(LogError::io("cannot read segment size", &path))?
            .len();
        Ok(ActiveSegment {
            base_offset,
            next_offset: base_offset,
            path,
            file: Arc::new(file),
            size: 0,
            allocated,
            index,
            time_index,
            bytes_since_entry: 0,
            index_interval_bytes: u64::from(config.index_interval_bytes),
            preallocate_bytes: if config.fsync == super::config::FsyncPolicy::Always {
                PREALLOCATE_BYTES
            } else {
                0
            },
            segment_bytes: config.segment_bytes,
            max_timestamp: None,
            created: Instant::now(),
        })
    }

    /// Creates segment `base_offset` in `dir`, empty: a file of that name left over from an
    /// earlier life of the partition is emptied.
    pub(crate) fn create(dir: &Path, base_offset: i64, config: &LogConfig) -> Result<Self> {
        let mut segment = Self::open(dir, base_offset, config)?;
        segment.truncate_file(0)?;
        Ok(segment)
    }

    /// Forgets every batch (the file is untouched) so that recovery can re-index the file.
    pub(crate) fn reset(&mut self) {
        self.next_offset = self.base_offset;
        self.size = 0;
        self.index.truncate(0);
        self.time_index.truncate(0);
        self.bytes_since_entry = 0;
        self.max_timestamp = None;
    }

    /// Offset the next batch will get.
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// True if the segment holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The `.log` file, for fsync.
    pub(crate) fn log_file(&self) -> &Arc<File> {
        &self.file
    }

    /// True if `bytes` more bytes in `batches` more batches fit without passing `segment_bytes`
    /// or filling an index (one time-index slot stays free for the entry written on seal).
    pub(crate) fn can_take(&self, bytes: u64, batches: usize, config: &LogConfig) -> bool {
        self.size + bytes <= config.segment_bytes
            && self.index.remaining() >= batches
            && self.time_index.remaining() > batches
    }

    /// True if the segment must roll before taking `bytes` in `batches` batches: it is full or
    /// too old. An empty segment never rolls, so an oversized batch still finds a home.
    pub(crate) fn should_roll(&self, bytes: u64, batches: usize, config: &LogConfig) -> bool {
        let too_old = config
            .segment_ms
            .is_some_and(|ms| self.created.elapsed().as_millis() >= u128::from(ms));
        !self.is_empty() && (too_old || !self.can_take(bytes, batches, config))
    }

    /// Appends one validated batch with its base offset and leader epoch replaced by those in
    /// `header` (the batch's header as stamped), and indexes it. The producer's bytes are
    /// written as they are, never copied: stamped in place when the caller's buffer is not
    /// shared (one `write`), otherwise as a 16-byte stamped prefix plus the rest (one `writev`).
    ///
    /// On error the file may hold part of the batch: the caller must fail the log.
    pub(crate) fn append_stamped(&mut self, batch: Bytes, header: &BatchHeader) -> io::Result<()> {
        match batch.try_into_mut() {
            Ok(mut owned) => {
                cairn_batch::stamp(&mut owned, header.base_offset, header.leader_epoch);
                self.preallocate(owned.len() as u64)?;
                self.file.write_all_at(&owned, self.size)?;
            }
            Err(shared) => {
                let mut prefix = [0u8; 16];
                prefix[0..8].copy_from_slice(&header.base_offset.to_be_bytes());
                prefix[8..12].copy_from_slice(&shared[8..12]);
                prefix[12..16].copy_from_slice(&header.leader_epoch.to_be_bytes());
                self.preallocate(shared.len() as u64)?;
                let mut bufs = [IoSlice::new(&prefix), IoSlice::new(&shared[16..])];
                write_all_vectored_at(&self.file, &mut bufs, self.size)?;
            }
        }
        self.note_batch(header, self.size);
        Ok(())
    }

    /// Appends already-stamped, validated, contiguous batches (`headers` describe `chunk` in
    /// order) in one write, and indexes them.
    ///
    /// On error the file may hold part of the chunk: the caller must fail the log.
    pub(crate) fn append_chunk(&mut self, chunk: &[u8], headers: &[BatchHeader]) -> io::Result<()> {
        self.preallocate(chunk.len() as u64)?;
        self.file.write_all_at(chunk, self.size)?;
        for h in headers {
            self.note_batch(h, self.size);
        }
        Ok(())
    }

    /// Makes sure the file already has `bytes` past the end of the data, writing zeros
    /// `preallocate_bytes` at a time (fsync `always` only). Appends then overwrite blocks that exist instead of
    /// growing the file, so an `fdatasync` need not commit a new file size (on ext4 a size
    /// change costs a journal commit, and concurrent appends slowed every group-commit fsync).
    /// Recovery reads a zero tail as the end of the data; sealing and closing trim it.
    fn preallocate(&mut self, bytes: u64) -> io::Result<()> {
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        let need = self.size + bytes;
        if need <= self.allocated {
            return Ok(());
        }
        if self.preallocate_bytes == 0 {
            // Appends grow the file themselves.
            self.allocated = need;
            return Ok(());
        }
        let target = need.max((self.allocated + self.preallocate_bytes).min(self.segment_bytes));
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        self.allocated = target;
        Ok(())
    }

    /// Accounts for the batch `header` that now sits at `position` (the end of the segment):
    /// advances the end, and adds index entries when one is due (Kafka's rule: the offset entry
    /// names this batch, the time entry the largest timestamp so far, this batch included).
    pub(crate) fn note_batch(&mut self, header: &BatchHeader, position: u64) {
        debug_assert_eq!(position, self.size, "batches are noted in file order");
        debug_assert_eq!(
            header.base_offset, self.next_offset,
            "batches are contiguous"
        );
        let rel = self.relative(header.base_offset);
        if self
            .max_timestamp
            .is_none_or(|m| header.max_timestamp > m.timestamp)
        {
            self.max_timestamp = Some(TimeEntry {
                timestamp: header.max_timestamp,
                rel,
            });
        }
        // A full index just stays sparser (entries are only hints); this happens only when
        // recovery re-indexes a segment written under a larger `max_index_bytes`.
        if self.bytes_since_entry >= self.index_interval_bytes && self.index.remaining() > 0 {
            let position = u32::try_from(position).expect("segments stay below i32::MAX bytes");
            self.index.push(OffsetEntry { rel, position });
            if self.time_index.remaining() > 1 {
                self.push_time_entry();
            }
            self.bytes_since_entry = 0;
        }
        let len = header.total_len() as u64;
        self.bytes_since_entry += len;
        self.size += len;
        self.next_offset = header.next_offset();
    }

    /// Appends the largest timestamp so far to the time index unless it is already there.
    fn push_time_entry(&mut self) {
        if let Some(max) = self.max_timestamp
            && self
                .time_index
                .max_timestamp()
                .is_none_or(|t| max.timestamp > t)
        {
            self.time_index.push(max);
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset - self.base_offset).expect("a segment holds fewer than 2^32 offsets")
    }

    /// Drops every byte at and after `len` (a batch boundary) from the file. The indexes are
    /// left stale: the caller reopens the segment to rebuild them.
    pub(crate) fn truncate_file(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(LogError::io("cannot truncate segment", &self.path))?;
        self.allocated = len;
        Ok(())
    }

    /// Cuts the zeros written ahead of the data, so the file holds exactly its batches.
    pub(crate) fn trim(&mut self) -> Result<()> {
        if self.allocated > self.size {
            self.truncate_file(self.size)?;
        }
        Ok(())
    }

    /// Seals the segment: records its largest timestamp in the time index, trims both indexes
    /// and maps the log read-only. Files are not fsynced here (see `Log::sync_now`).
    pub(crate) fn seal(mut self) -> Result<SealedSegment> {
        self.trim()?;
        if self.time_index.remaining() > 0 {
            self.push_time_entry();
        }
        let index_path = self.index.path().to_owned();
        let index = self
            .index
            .seal()
            .map_err(LogError::io("cannot seal index", index_path))?;
        let time_path = self.time_index.path().to_owned();
        let time_index = self
            .time_index
            .seal()
            .map_err(LogError::io("cannot seal time index", time_path))?;
        SealedSegment::from_parts(
            self.path,
            self.base_offset,
            self.next_offset,
            index,
            time_index,
        )
    }
}

/// An immutable segment.
#[derive(Debug)]
pub(crate) struct SealedSegment {
    base_offset: i64,
    /// One past the last offset: the next segment's base offset.
    next_offset: i64,
    path: PathBuf,
    /// The whole `.log` file, mapped read-only; reads are slices of it.
    data: Bytes,
    index: SealedIndex<OffsetEntry>,
    time_index: SealedIndex<TimeEntry>,
    /// Largest batch timestamp, or the file's modification time if no batch had one: what time
    /// retention compares (Kafka's rule).
    max_timestamp: i64,
    /// The open `.log` file, for fsync.
    file: Arc<File>,
}

impl SealedSegment {
    /// Assembles a sealed segment from its files, mapping the log read-only.
    pub(crate) fn from_parts(
        path: PathBuf,
        base_offset: i64,
        next_offset: i64,
        index: SealedIndex<OffsetEntry>,
        time_index: SealedIndex<TimeEntry>,
    ) -> Result<SealedSegment> {
        let file = File::open(&path).map_err(LogError::io("cannot open segment", &path))?;
        // SAFETY: sealed segment files are never written or shortened again while mapped: a
        // truncation into a sealed segment writes a new file and renames it over this one, and
        // retention unlinks; both leave this mapping's inode intact.
        let map = unsafe { Mmap::map(&file) }.map_err(LogError::io("cannot map segment", &path))?;
        let max_timestamp = match time_index.max_timestamp() {
            Some(ts) => ts,
            None => modified_ms(&file).map_err(LogError::io("cannot stat segment", &path))?,
        };
        Ok(SealedSegment {
            base_offset,
            next_offset,
            path,
            data: Bytes::from_owner(map),
            index,
            time_index,
            max_timestamp,
            file: Arc::new(file),
        })
    }

    /// Largest timestamp, for retention.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The files to fsync once after sealing: log and both indexes.
    pub(crate) fn files(&self) -> [Arc<File>; 3] {
        [
            self.file.clone(),
            self.index.file().clone(),
            self.time_index.file().clone(),
        ]
    }
}

/// Deletes segment `base_offset`'s files, log first (see [`FileKind::ALL`]). Missing files are
/// not an error: deletion may be resuming after a crash.
pub(crate) fn remove_segment_files(dir: &Path, base_offset: i64) -> Result<()> {
    for kind in FileKind::ALL {
        let path = segment_path(dir, base_offset, kind);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(LogError::io("cannot delete segment file", path)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

fn modified_ms(file: &File) -> io::Result<i64> {
    let modified = file.metadata()?.modified()?;
    let ms = modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Writes all of `bufs` at `offset` with `pwritev`, resuming after short writes.
fn write_all_vectored_at(
    file: &File,
    mut bufs: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    while !bufs.is_empty() {
        let count = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        let at = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std guarantees it on Unix), the
        // slices outlive the call, and the descriptor is open for the file's lifetime.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                count,
                at,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut bufs, n);
                offset += n as u64;
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// What reads need from a segment, active or sealed.
pub(crate) trait SegmentView {
    /// Offset of the first batch.
    fn base_offset(&self) -> i64;
    /// One past the last offset.
    fn next_offset(&self) -> i64;
    /// Bytes of whole batches.
    fn size(&self) -> u64;
    /// The `.log` file's path, for errors.
    fn path(&self) -> &Path;
    /// Largest batch timestamp, if known.
    fn max_timestamp(&self) -> Option<i64>;
    /// The offset-index entry at or below relative offset `rel`.
    fn index_lookup(&self, rel: u32) -> Option<OffsetEntry>;
    /// The last time-index entry older than `ts`.
    fn time_lookup(&self, ts: i64) -> Option<TimeEntry>;
    /// `len` bytes at `position` (within `size`): a map slice or one positional read.
    fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes>;
    /// The header of the batch at `position`.
    fn read_header(&self, position: u64) -> Result<BatchHeader>;
}

impl SegmentView for ActiveSegment {
    fn base_offset(&self) -> i64 {
        self.base_offset
    }
    fn next_offset(&self) -> i64 {
        self.next_offset
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp.map(|m| m.timestamp)
    }
    fn index_lookup(&self, rel: u32) -> Option<OffsetEntry> {
        self.index.lookup(rel)
    }
    fn time_lookup(&self, ts: i64) -> Option<TimeEntry> {
        self.time_index.lookup(ts)
    }
    fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(LogError::io("cannot read segment", &self.path))?;
        Ok(Bytes::from(buf))
    }
    fn read_header(&self, position: u64) -> Result<BatchHeader> {
        let mut buf = [0u8; HEADER_LEN];
        let len = HEADER_LEN.min(self.size.saturating_sub(position) as usize);
        self.file
            .read_exact_at(&mut buf[..len], position)
            .map_err(LogError::io("cannot read segment", &self.path))?;
        checked_header(self, &buf[..len], position)
    }
}

impl SegmentView for SealedSegment {
    fn base_offset(&self) -> i64 {
        self.base_offset
    }
    fn next_offset(&self) -> i64 {
        self.next_offset
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn max_timestamp(&self) -> Option<i64> {
        Some(self.max_timestamp)
    }
    fn index_lookup(&self, rel: u32) -> Option<OffsetEntry> {
        self.index.lookup(rel)
    }
    fn time_lookup(&self, ts: i64) -> Option<TimeEntry> {
        self.time_index.lookup(ts)
    }
    fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes> {
        let start = position as usize;
        Ok(self.data.slice(start..start + len))
    }
    fn read_header(&self, position: u64) -> Result<BatchHeader> {
        let start = (position as usize).min(self.data.len());
        checked_header(self, &self.data[start..], position)
    }
}

/// Decodes the header at `position` and checks that its batch lies inside the segment.
fn checked_header(seg: &dyn SegmentView, buf: &[u8], position: u64) -> Result<BatchHeader> {
    let corrupt = |reason: String| LogError::Corrupt {
        path: seg.path().to_owned(),
        position,
        reason,
    };
    let header = cairn_batch::peek_header(buf).map_err(|e| corrupt(e.to_string()))?;
    if position + header.total_len() as u64 > seg.size() {
        return Err(corrupt("batch runs past the end of the segment".into()));
    }
    Ok(header)
}
