//! Producer-state snapshots (Kafka's `.snapshot` files) and rebuilding the state on open.
//!
//! A snapshot `<offset>.snapshot` (offset zero-padded to 20 digits, like segments) holds the
//! state of every batch below `offset`. The partition writes one when its log rolls a segment
//! and when it is flushed at shutdown; the newest [`SNAPSHOTS_KEPT`] are kept. On open (and
//! after a truncation) the state is the newest readable snapshot at or below the log end, plus
//! the batch headers after it, read back from the log: at most about one segment. Snapshots
//! above the log end (their batches were truncated away, or lost with a torn tail) are deleted.
//! A damaged snapshot is deleted and the next older one tried; with none the whole log is read.
//!
//! Format, big-endian:
//!
//! ```text
//! magic "CPS1" | end_offset i64 | producer count u32
//!   per producer: producer_id i64 | epoch i16 | batch count u8
//!     per batch: first_seq i32 | last_seq i32 | first_offset i64 | last_offset i64 | max_timestamp i64
//! crc32 (IEEE) of everything before it, u32
//! ```
//!
//! Written to `<name>.tmp`, fsynced and renamed, so a snapshot is whole or absent (the log's
//! recovery removes a leftover `.tmp`).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::log::{Log, LogError};

use super::{BATCHES_KEPT, BatchMeta, ProducerEntry, ProducerStates};

/// File name suffix of a snapshot (the log's recovery leaves these files alone).
pub(crate) const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Snapshots kept; older ones are deleted when a new one is written.
const SNAPSHOTS_KEPT: usize = 3;
const MAGIC: &[u8; 4] = b"CPS1";
/// Bytes read from the log at a time while replaying batch headers.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// `<offset:020>.snapshot`.
pub(crate) fn snapshot_name(offset: i64) -> String {
    format!("{offset:020}{SNAPSHOT_SUFFIX}")
}

/// The offset of a snapshot file name built by [`snapshot_name`].
pub(crate) fn parse_snapshot_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes a state.
pub(crate) fn encode(state: &ProducerStates) -> Vec<u8> {
    let mut buf = Vec::with_capacity(20 + state.len() * (11 + BATCHES_KEPT * 32));
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&state.end_offset.to_be_bytes());
    let count = u32::try_from(state.len()).expect("fewer than 2^32 producers");
    buf.extend_from_slice(&count.to_be_bytes());
    let mut producers: Vec<_> = state.iter().collect();
    producers.sort_by_key(|(id, _)| *id);
    for (id, e) in producers {
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&e.epoch.to_be_bytes());
        buf.push(u8::try_from(e.batches.len()).expect("at most BATCHES_KEPT batches"));
        for b in &e.batches {
            buf.extend_from_slice(&b.first_seq.to_be_bytes());
            buf.extend_from_slice(&b.last_seq.to_be_bytes());
            buf.extend_from_slice(&b.first_offset.to_be_bytes());
            buf.extend_from_slice(&b.last_offset.to_be_bytes());
            buf.extend_from_slice(&b.max_timestamp.to_be_bytes());
        }
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    buf
}

/// Decodes a snapshot; `None` if it is damaged in any way.
pub(crate) fn decode(buf: &[u8]) -> Option<ProducerStates> {
    let (body, crc) = buf.split_at_checked(buf.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader(body);
    if r.take(4)? != MAGIC {
        return None;
    }
    let mut state = ProducerStates::new(r.i64()?);
    for _ in 0..r.u32()? {
        let id = r.i64()?;
        let epoch = i16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let n = usize::from(r.take(1)?[0]);
        if n > BATCHES_KEPT {
            return None;
        }
        let mut batches = VecDeque::with_capacity(BATCHES_KEPT);
        for _ in 0..n {
            batches.push_back(BatchMeta {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
                max_timestamp: r.i64()?,
            });
        }
        state.insert(id, ProducerEntry { epoch, batches });
    }
    r.0.is_empty().then_some(state)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The snapshots in `dir`, oldest first.
fn list(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(offset) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            found.push((offset, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Writes `state` as `<end_offset>.snapshot` in `dir` (whole or not at all) and deletes all
/// but the newest [`SNAPSHOTS_KEPT`].
///
/// # Errors
///
/// The file-system error; the state itself is unaffected.
pub(crate) fn write_snapshot(dir: &Path, state: &ProducerStates) -> Result<(), LogError> {
    let path = dir.join(snapshot_name(state.end_offset()));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(state.end_offset())));
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&encode(state))?;
        f.sync_data()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(LogError::io("cannot write producer snapshot", &path))?;
    let all = list(dir).map_err(LogError::io("cannot list", dir))?;
    for (_, old) in all.iter().rev().skip(SNAPSHOTS_KEPT) {
        fs::remove_file(old).map_err(LogError::io("cannot remove", old))?;
    }
    Ok(())
}

/// Deletes the snapshots above `offset` (their batches are gone from the log).
///
/// # Errors
///
/// The file-system error.
pub(crate) fn delete_snapshots_above(dir: &Path, offset: i64) -> Result<(), LogError> {
    for (o, path) in list(dir).map_err(LogError::io("cannot list", dir))? {
        if o > offset {
            fs::remove_file(&path).map_err(LogError::io("cannot remove", &path))?;
        }
    }
    Ok(())
}

/// Rebuilds the producer state of `log` (in `dir`): the newest readable snapshot at or below
/// the log end, then the headers of the batches after it; producers with no batch left in the
/// log are expired. Deletes snapshots above the log end and damaged ones.
///
/// # Errors
///
/// A file-system error, or the log's read error.
pub(crate) fn open(dir: &Path, log: &Log) -> Result<ProducerStates, LogError> {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    delete_snapshots_above(dir, end)?;
    let mut state = None;
    for (_, path) in list(dir)
        .map_err(LogError::io("cannot list", dir))?
        .iter()
        .rev()
    {
        match fs::read(path).ok().as_deref().and_then(decode) {
            Some(s) => {
                state = Some(s);
                break;
            }
            None => {
                tracing::warn!(path = %path.display(), "removing a damaged producer snapshot");
                fs::remove_file(path).map_err(LogError::io("cannot remove", path))?;
            }
        }
    }
    let mut state = state.unwrap_or_else(|| ProducerStates::new(start));
    // Retention may have deleted the batches right after the snapshot.
    state.end_offset = state.end_offset.max(start);
    let mut offset = state.end_offset;
    while offset < end {
        let read = log.read(offset, REPLAY_READ_BYTES, None)?;
        if read.records.is_empty() {
            break;
        }
        for batch in cairn_batch::batches(&read.records).flatten() {
            if let Ok(h) = cairn_batch::peek_header(&batch) {
                state.record(&h);
            }
        }
        offset = read.next_offset;
    }
    state.expire_before(start);
    Ok(state)
}
