//! Crash recovery: turn whatever is in a partition directory into a consistent log.
//!
//! Segments wholly below the recovery point were fsynced when they were sealed, so they are
//! trusted once their indexes pass a cheap sanity check (an index that fails it, or is missing,
//! is rebuilt from the log). Every other segment, always including the last, is scanned batch by
//! batch (length, CRC, record structure, contiguous offsets) and its indexes rebuilt from the
//! scan. The first damage found ends the log: the torn or corrupt tail is truncated and any later
//! segment deleted, so the log holds every intact batch before the damage and nothing after it.
//! Running recovery again finds nothing to do. The recovery point itself lives in a small
//! checksummed file, written here and read here. This module knows segments and files, not
//! locks, fsync policy or the public `Log` API.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use tracing::{info, warn};

use super::config::LogConfig;
use super::error::{LogError, Result};
use super::file_name::{FileKind, parse_file_name, segment_path};
use super::index::{OffsetEntry, SealedIndex};
use super::segment::{ActiveSegment, SealedSegment, SegmentView, remove_segment_files};
use super::time_index::TimeEntry;

/// Files other layers keep in a partition directory (the replica's topic id, its leader-epoch
/// checkpoint); recovery leaves them alone without a warning.
pub const SIDE_FILES: &[&str] = &["partition.json", "leader-epoch-checkpoint"];
/// Files named `*<this>` are the node's too (producer-state snapshots, `<offset>.snapshot`).
pub const SIDE_FILE_SUFFIX: &str = ".snapshot";

/// Name of the recovery-point file: 8-byte big-endian offset, then its CRC-32.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";

/// How an fsync is performed (injectable, so tests can fail it).
pub(crate) type SyncFn = dyn Fn(&File) -> io::Result<()> + Send + Sync;

/// A recovered partition.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) sealed: Vec<SealedSegment>,
    pub(crate) active: ActiveSegment,
    /// Files of sealed segments that were scanned (they may have been read from the page cache
    /// of a process that died before fsyncing them): the first flush makes them durable.
    pub(crate) unsynced: Vec<Arc<File>>,
}

/// Recovers the partition in `dir` (which exists) given its recovery point.
pub(crate) fn recover(dir: &Path, config: &LogConfig, recovery_point: i64) -> Result<Recovered> {
    let bases = list_segments(dir)?;
    let mut sealed = Vec::new();
    let mut unsynced = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        if let Some(next) = next_base
            && next <= recovery_point
            && let Some(segment) = open_trusted(dir, base, next, config)?
        {
            sealed.push(segment);
            continue;
        }
        let (active, damaged) = recover_segment(dir, base, config)?;
        let Some(next) = next_base else {
            return Ok(Recovered {
                sealed,
                active,
                unsynced,
            });
        };
        if damaged {
            for &later in &bases[i + 1..] {
                warn!(dir = %dir.display(), base_offset = later, "deleting segment after damage");
                remove_segment_files(dir, later)?;
            }
            return Ok(Recovered {
                sealed,
                active,
                unsynced,
            });
        }
        if active.next_offset() != next {
            return Err(LogError::Corrupt {
                path: active.path().to_owned(),
                position: active.size(),
                reason: format!(
                    "segment ends at offset {} but the next segment starts at {next}",
                    active.next_offset()
                ),
            });
        }
        let segment = active.seal()?;
        unsynced.extend(segment.files());
        sealed.push(segment);
    }
    let active = ActiveSegment::open(dir, 0, config)?;
    Ok(Recovered {
        sealed,
        active,
        unsynced,
    })
}

/// Scans segment `base` batch by batch, rebuilding its indexes and truncating the file at the
/// first damage. Returns the segment, open for appending, and whether damage was cut off.
pub(crate) fn recover_segment(
    dir: &Path,
    base: i64,
    config: &LogConfig,
) -> Result<(ActiveSegment, bool)> {
    let mut segment = ActiveSegment::open(dir, base, config)?;
    let damaged = reindex(&mut segment)?;
    Ok((segment, damaged))
}

/// Re-reads an active segment's file from the start (the segment must be freshly opened or
/// [`reset`](ActiveSegment::reset)), indexing every intact batch and truncating the file at the
/// first damage. Returns whether there was damage.
pub(crate) fn reindex(segment: &mut ActiveSegment) -> Result<bool> {
    // SAFETY: the file is only modified by this process, and not while this map lives.
    let map = unsafe { Mmap::map(&**segment.log_file()) }
        .map_err(LogError::io("cannot map segment", segment.path()))?;
    let mut position = 0usize;
    let damage = loop {
        if position > i32::MAX as usize {
            break Some("segment is larger than i32::MAX bytes".to_owned());
        }
        match check_batch(&map[position..], segment.next_offset()) {
            Ok(None) => break None,
            Ok(Some(header)) => {
                segment.note_batch(&header, position as u64);
                position += header.total_len();
            }
            Err(reason) => break Some(reason),
        }
    };
    let file_len = map.len();
    // Zeros written ahead of the data (an active segment preallocates) end it cleanly.
    let zero_tail = damage.is_some() && map[position..].iter().all(|&b| b == 0);
    drop(map);
    if zero_tail {
        segment.truncate_file(position as u64)?;
        return Ok(false);
    }
    if let Some(reason) = &damage {
        warn!(
            path = %segment.path().display(),
            position,
            dropped_bytes = file_len - position,
            reason = %reason,
            "truncating damaged log tail"
        );
        segment.truncate_file(position as u64)?;
    }
    Ok(damage.is_some())
}

/// Checks the batch at the start of `rest`, which must have base offset `expected`.
/// `Ok(None)` at the end of the data; `Err(reason)` if the batch is torn or corrupt.
fn check_batch(rest: &[u8], expected: i64) -> Result<Option<cairn_batch::BatchHeader>, String> {
    if rest.is_empty() {
        return Ok(None);
    }
    let header = cairn_batch::peek_header(rest).map_err(|e| format!("bad header: {e}"))?;
    let len = header.total_len();
    if len > rest.len() {
        return Err(format!(
            "torn batch: {len} bytes needed, {} present",
            rest.len()
        ));
    }
    cairn_batch::validate(&rest[..len], usize::MAX).map_err(|e| format!("bad batch: {e}"))?;
    if header.base_offset != expected {
        return Err(format!(
            "batch has base offset {}, expected {expected}",
            header.base_offset
        ));
    }
    Ok(Some(header))
}

/// Opens segment `base`, whose successor starts at `next`, as sealed without scanning it, if
/// its indexes look right. `None` means: rebuild them by scanning.
fn open_trusted(
    dir: &Path,
    base: i64,
    next: i64,
    config: &LogConfig,
) -> Result<Option<SealedSegment>> {
    let log_path = segment_path(dir, base, FileKind::Log);
    let index_path = segment_path(dir, base, FileKind::Index);
    let time_path = segment_path(dir, base, FileKind::TimeIndex);
    let size = fs::metadata(&log_path)
        .map_err(LogError::io("cannot stat segment", &log_path))?
        .len();
    let index = SealedIndex::<OffsetEntry>::open(&index_path)
        .map_err(LogError::io("cannot open index", &index_path))?;
    let time_index = SealedIndex::<TimeEntry>::open(&time_path)
        .map_err(LogError::io("cannot open time index", &time_path))?;
    let (Some(index), Some(time_index)) = (index, time_index) else {
        warn!(path = %log_path.display(), "index missing: rebuilding");
        return Ok(None);
    };
    let span = (next - base) as u64;
    let verdict = if size == 0 || index.trailing_bytes() != 0 || time_index.trailing_bytes() != 0 {
        Err("index or log has an impossible length")
    } else if index.len() == 0 && size > u64::from(config.index_interval_bytes) * 2 {
        Err("offset index is empty")
    } else if time_index.len() == 0 {
        Err("time index is empty")
    } else {
        index.check(size, span).and(time_index.check(span))
    };
    if let Err(reason) = verdict {
        warn!(path = %log_path.display(), reason, "index inconsistent: rebuilding");
        return Ok(None);
    }
    let last = index.last();
    let segment = SealedSegment::from_parts(log_path, base, next, index, time_index)?;
    if !tail_reaches(&segment, last, next) {
        warn!(path = %segment.path().display(), "segment does not end where its successor starts: scanning");
        return Ok(None);
    }
    Ok(Some(segment))
}

/// Walks the headers from the last index entry to the end of the file (at most about
/// `index_interval_bytes`): true if they are contiguous, start where the entry says, and end
/// exactly at offset `next` and at the end of the file.
fn tail_reaches(segment: &SealedSegment, last: Option<OffsetEntry>, next: i64) -> bool {
    let base = segment.base_offset();
    let (mut position, mut expected) = last.map_or((0, base), |e| {
        (u64::from(e.position), base + i64::from(e.rel))
    });
    while position < segment.size() {
        match segment.read_header(position) {
            Ok(h) if h.base_offset == expected => {
                expected = h.next_offset();
                position += h.total_len() as u64;
            }
            _ => return false,
        }
    }
    expected == next
}

/// Base offsets of the segments in `dir`, in order. Removes leftovers: indexes without a log
/// and temporary files of interrupted rewrites. Foreign files are reported and left alone.
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut logs = BTreeSet::new();
    let mut others: BTreeMap<i64, Vec<std::path::PathBuf>> = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(LogError::io("cannot list partition", dir))?;
    for entry in entries {
        let entry = entry.map_err(LogError::io("cannot list partition", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            warn!(path = %path.display(), "ignoring file with a non-UTF-8 name");
            continue;
        };
        match parse_file_name(name) {
            Some((base, FileKind::Log)) => {
                logs.insert(base);
            }
            Some((base, _)) => others.entry(base).or_default().push(path),
            None if name.ends_with(".tmp") => {
                info!(path = %path.display(), "removing leftover temporary file");
                fs::remove_file(&path).map_err(LogError::io("cannot remove", &path))?;
            }
            None if name == RECOVERY_POINT_FILE
                || SIDE_FILES.contains(&name)
                || name.ends_with(SIDE_FILE_SUFFIX) => {}
            None => warn!(path = %path.display(), "ignoring unexpected file in partition"),
        }
    }
    for (base, paths) in others {
        if !logs.contains(&base) {
            for path in paths {
                info!(path = %path.display(), "removing index without a log");
                fs::remove_file(&path).map_err(LogError::io("cannot remove", &path))?;
            }
        }
    }
    Ok(logs.into_iter().collect())
}

/// Reads the recovery point; a missing or damaged file yields 0 (scan everything).
pub(crate) fn read_recovery_point(dir: &Path) -> i64 {
    let path = dir.join(RECOVERY_POINT_FILE);
    match fs::read(&path) {
        Ok(b) if b.len() == 12 && crc32fast::hash(&b[..8]).to_be_bytes() == b[8..12] => {
            i64::from_be_bytes(b[..8].try_into().expect("length checked")).max(0)
        }
        Ok(_) => {
            warn!(path = %path.display(), "damaged recovery point: scanning every segment");
            0
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "unreadable recovery point: scanning every segment");
            0
        }
    }
}

/// Durably replaces the recovery point with `offset` (write, fsync, rename, fsync the dir).
pub(crate) fn write_recovery_point(dir: &Path, offset: i64, sync: &SyncFn) -> io::Result<()> {
    let path = dir.join(RECOVERY_POINT_FILE);
    let tmp = dir.join(format!("{RECOVERY_POINT_FILE}.tmp"));
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..8]);
    bytes[8..].copy_from_slice(&crc.to_be_bytes());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(&bytes)?;
    sync(&file)?;
    fs::rename(&tmp, &path)?;
    sync(&File::open(dir)?)
}
