//! The persisted Raft log and vote: openraft's `RaftLogStorage` and `RaftLogReader` for
//! [`TypeConfig`].
//!
//! Under the metadata directory:
//!
//! - `raft-log`: append-only frames, each `[len: u32 LE][crc32: u32 LE][JSON entry]`. Frames are
//!   fsynced before openraft is told an append is durable. On open every frame is checked (length,
//!   CRC, decodable, consecutive index); the first damage ends the log and the torn tail is cut
//!   off, as the partition log's recovery does. An append that was acknowledged was fsynced, so
//!   normally only unacknowledged entries can be torn. If the damage lies at or below the
//!   persisted committed index, it is not a torn append but lost committed data: the store
//!   refuses to open ([`StoreError::CommittedEntriesDamaged`]) rather than truncate it.
//! - `vote.json`, `committed.json`, `purged.json`: small values replaced atomically.
//!
//! Every write (append, vote, committed, truncate, purge) runs on tokio's blocking pool, since
//! each ends in an fsync that must not stall the async workers carrying heartbeats.
//!
//! Purging a prefix first records the new purge point, then rewrites `raft-log` without the
//! prefix (tmp + fsync + rename), so a crash in between leaves extra entries that the next open
//! skips, never a hole. Entries stay in memory too: the metadata log is small and is purged after
//! each snapshot. This module knows files and openraft's storage API, not the state machine, the
//! network or the broker.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use tracing::warn;

use super::TypeConfig;
use super::fs::{StoreError, io_err, read_json, sync_dir, write_atomic, write_json};

/// Name of the append-only log file.
pub const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";
/// Length and CRC, both little-endian `u32`.
const FRAME_HEADER: usize = 8;

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// One entry as held in memory, with where its frame starts in `raft-log`.
#[derive(Debug, Clone)]
struct Stored {
    /// Byte position of the frame, so truncation is one `set_len`.
    position: u64,
    entry: Entry<TypeConfig>,
}

/// Everything behind the lock: the open file and its in-memory mirror.
#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    /// Bytes of intact frames; the next append goes here.
    len: u64,
    /// Entries by index, all consecutive, all after `last_purged`.
    entries: BTreeMap<u64, Stored>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// The Raft log and vote of one node, persisted under a directory.
///
/// Cloning is cheap and shares the store: openraft's log readers are clones.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

impl LogStore {
    /// Opens (creating if needed) the store in `dir`, recovering the log: a torn or corrupt tail
    /// is truncated.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the directory or a file cannot be read or written, or a small file does
    /// not decode.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let last_purged: Option<LogId<NodeId>> = read_json(&dir.join(PURGED_FILE))?.flatten();
        let vote = read_json(&dir.join(VOTE_FILE))?;
        let committed = read_json(&dir.join(COMMITTED_FILE))?.flatten();
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&dir)?;
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let after = last_purged.map_or(0, |l| l.index + 1);
        let (entries, len) = scan(&path, &bytes, after);
        check_committed_survive(
            &path,
            &entries,
            len,
            committed.as_ref(),
            last_purged.as_ref(),
        )?;
        if len < bytes.len() as u64 {
            warn!(path = %path.display(), from = len, to = bytes.len(), "truncating torn metadata log tail");
            file.set_len(len).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        // Frames before the first kept entry are purged ones a crash left behind: finish the
        // purge now, or the next append would leave a gap after them.
        let first_kept = entries.first_key_value().map_or(len, |(_, s)| s.position);
        let mut inner = Inner {
            dir,
            file,
            len,
            entries,
            last_purged,
            vote,
            committed,
        };
        if first_kept > 0 {
            inner.rewrite()?;
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the in-memory mirror no worse than the file.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the store's state on tokio's blocking pool. Every write here ends in an
    /// fsync (milliseconds on a slow disk), which must not stall the async workers that also
    /// carry Raft heartbeats and elections.
    async fn blocking<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> T + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&mut store.lock()))
            .await
            .expect("metadata log I/O does not panic")
    }
}

/// Encodes one entry as a frame.
fn frame(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let body = serde_json::to_vec(entry)?;
    let len = u32::try_from(body.len()).map_err(serde::ser::Error::custom)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Refuses a recovery that would end the log below the committed index (see the module docs).
/// Entries at or below the purge point live in the snapshot and need not be in the log.
fn check_committed_survive(
    path: &Path,
    entries: &BTreeMap<u64, Stored>,
    intact_len: u64,
    committed: Option<&LogId<NodeId>>,
    last_purged: Option<&LogId<NodeId>>,
) -> Result<(), StoreError> {
    let Some(committed) = committed else {
        return Ok(());
    };
    let last = entries
        .last_key_value()
        .map(|(i, _)| *i)
        .or(last_purged.map(|l| l.index));
    if last.is_some_and(|l| l >= committed.index) {
        return Ok(());
    }
    Err(StoreError::CommittedEntriesDamaged {
        path: path.to_owned(),
        position: intact_len,
        last,
        committed: committed.index,
    })
}

/// Decodes frames from the start of `bytes` until the first damage; returns the entries with
/// index `>= after` and the length of the intact prefix.
fn scan(path: &Path, bytes: &[u8], after: u64) -> (BTreeMap<u64, Stored>, u64) {
    let mut entries = BTreeMap::new();
    let mut pos = 0usize;
    let mut prev: Option<u64> = None;
    while let Some(header) = bytes.get(pos..pos + FRAME_HEADER) {
        let (len_bytes, crc_bytes) = header.split_at(4);
        let len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(crc_bytes.try_into().unwrap_or_default());
        let Some(body) = bytes.get(pos + FRAME_HEADER..pos + FRAME_HEADER + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            warn!(path = %path.display(), position = pos, "metadata log frame fails its CRC");
            break;
        }
        let entry: Entry<TypeConfig> = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => {
                warn!(path = %path.display(), position = pos, error = %e, "undecodable metadata log frame");
                break;
            }
        };
        let index = entry.log_id.index;
        if prev.is_some_and(|p| p + 1 != index) {
            warn!(path = %path.display(), position = pos, index, "metadata log index not consecutive");
            break;
        }
        prev = Some(index);
        if index >= after {
            let position = pos as u64;
            entries.insert(index, Stored { position, entry });
        }
        pos += FRAME_HEADER + len;
    }
    (entries, pos as u64)
}

impl Inner {
    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> Result<(), StoreError> {
        let path = self.log_path();
        let mut buf = Vec::new();
        let mut stored = Vec::with_capacity(entries.len());
        for entry in entries {
            let position = self.len + buf.len() as u64;
            frame(&entry, &mut buf).map_err(|source| StoreError::Codec {
                path: path.clone(),
                source,
            })?;
            stored.push(Stored { position, entry });
        }
        let written = self
            .file
            .write_all_at(&buf, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Best effort: cut whatever part of the batch reached the file.
            let _ = self.file.set_len(self.len);
            return Err(io_err(&path)(e));
        }
        self.len += buf.len() as u64;
        for s in stored {
            self.entries.insert(s.entry.log_id.index, s);
        }
        Ok(())
    }

    fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        let Some(position) = self.entries.range(index..).next().map(|(_, s)| s.position) else {
            return Ok(());
        };
        let path = self.log_path();
        self.file.set_len(position).map_err(io_err(&path))?;
        self.file.sync_all().map_err(io_err(&path))?;
        self.len = position;
        self.entries.split_off(&index);
        Ok(())
    }

    fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        write_json(&self.dir.join(PURGED_FILE), &Some(log_id))?;
        self.last_purged = Some(log_id);
        self.entries = self.entries.split_off(&(log_id.index + 1));
        self.rewrite()
    }

    /// Replaces `raft-log` atomically with the frames of the entries held in memory.
    fn rewrite(&mut self) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let path = self.log_path();
        let mut positions = Vec::with_capacity(self.entries.len());
        for (&index, s) in &self.entries {
            positions.push((index, buf.len() as u64));
            frame(&s.entry, &mut buf).map_err(|source| StoreError::Codec {
                path: path.clone(),
                source,
            })?;
        }
        write_atomic(&path, &buf)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.len = buf.len() as u64;
        for (index, position) in positions {
            if let Some(s) = self.entries.get_mut(&index) {
                s.position = position;
            }
        }
        Ok(())
    }
}

fn range_entries<RB: RangeBounds<u64>>(inner: &Inner, range: RB) -> Vec<Entry<TypeConfig>> {
    let start = match range.start_bound() {
        Bound::Included(&s) => Bound::Included(s),
        Bound::Excluded(&s) => Bound::Excluded(s),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Bound::Included(e),
        Bound::Excluded(&e) => Bound::Excluded(e),
        Bound::Unbounded => Bound::Unbounded,
    };
    inner
        .entries
        .range((start, end))
        .map(|(_, s)| s.entry.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(range_entries(&self.lock(), range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.lock();
        let last_purged_log_id = inner.last_purged;
        let last_log_id = inner
            .entries
            .last_key_value()
            .map(|(_, s)| s.entry.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let vote = *vote;
        self.blocking(move |inner| {
            write_json(&inner.dir.join(VOTE_FILE), &vote)?;
            inner.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e: StoreError| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.blocking(move |inner| {
            write_json(&inner.dir.join(COMMITTED_FILE), &committed)?;
            inner.committed = committed;
            Ok(())
        })
        .await
        .map_err(|e: StoreError| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let result = self.blocking(move |inner| inner.append(entries)).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.blocking(move |inner| inner.truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.blocking(move |inner| inner.purge(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests;
