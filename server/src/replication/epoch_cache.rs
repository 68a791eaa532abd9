//! The leader-epoch cache of one partition replica: which leader epoch began at which offset
//! (Kafka's `LeaderEpochFileCache` and its `leader-epoch-checkpoint` file).
//!
//! A leader records its epoch at its log end when it starts leading; a follower records the
//! epoch of every batch it appends whose epoch is new. The cache then answers the question that
//! makes truncation safe (KIP-101): "where does epoch `e` end in your log?"
//!
//! The entries are strictly increasing in epoch and in start offset; every change is written to
//! `<partition-dir>/leader-epoch-checkpoint` atomically (tmp + fsync + rename + directory
//! fsync). A new epoch becomes visible only once written (a failed write changes nothing); a
//! truncation follows a log that already changed, so it applies in memory even if the write
//! fails. The file is Kafka's text format: a version line (`0`), an entry count, then one
//! `<epoch> <start offset>` line per entry.
//!
//! This module knows nothing of the log: the caller keeps the two in step (see
//! [`LeaderEpochCache::truncate_from_end`]) and rebuilds the cache from the log's batches when
//! the file is damaged ([`LeaderEpochCache::rebuild`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The checkpoint's file name inside the partition directory.
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// The only checkpoint format version (Kafka's, too).
const VERSION: u32 = 0;

/// One leader epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch (never negative).
    pub epoch: i32,
    /// The offset of the first batch of this epoch; the epoch ends where the next entry starts,
    /// or at the log end for the latest entry.
    pub start_offset: i64,
}

/// What went wrong with a leader-epoch cache.
#[derive(Debug, thiserror::Error)]
pub enum EpochCacheError {
    /// A file-system call failed while opening, rebuilding or assigning; the cache in memory is
    /// unchanged. Check the disk and the directory's permissions.
    #[error("leader-epoch checkpoint I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The checkpoint does not parse or its entries are not strictly increasing. Rebuild the
    /// cache from the log's batches with [`LeaderEpochCache::rebuild`].
    #[error("corrupt leader-epoch checkpoint {path} at line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A negative epoch or start offset was given (a batch without a leader epoch, or a caller
    /// bug); nothing changed.
    #[error("invalid leader-epoch entry: epoch {epoch}, start offset {start_offset}")]
    InvalidEntry { epoch: i32, start_offset: i64 },
}

/// The leader epochs of one partition replica and where each began.
///
/// A clone is *detached*: it holds the same entries in memory only and never writes the
/// checkpoint, so that two copies never write the same file (a snapshot for
/// [`truncation_offset`](super::truncation_offset), taken without holding a lock).
#[derive(Debug)]
pub struct LeaderEpochCache {
    /// The checkpoint file; `None` for a cache that lives in memory only (tests, simulations).
    path: Option<PathBuf>,
    /// Strictly increasing in both `epoch` and `start_offset`.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Opens the cache of the partition in `dir`. A missing checkpoint is an empty cache (a new
    /// replica, or one from before leader epochs were recorded: rebuild it from the log then).
    ///
    /// # Errors
    ///
    /// [`EpochCacheError::Corrupt`] naming the file if it does not parse or its entries are not
    /// strictly increasing; [`EpochCacheError::Io`] if it cannot be read.
    pub fn open(dir: &Path) -> Result<Self, EpochCacheError> {
        let path = dir.join(CHECKPOINT_FILE);
        let entries = match fs::read_to_string(&path) {
            Ok(text) => parse(&path, &text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(EpochCacheError::Io { path, source }),
        };
        Ok(Self {
            path: Some(path),
            entries,
        })
    }

    /// An empty cache that is never written to disk.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            entries: Vec::new(),
        }
    }

    /// Rebuilds the cache of the partition in `dir` from its log, replacing any checkpoint:
    /// `batches` yields each batch's `(leader epoch, base offset)` in log order. What
    /// [`assign`](Self::assign) would ignore is ignored here too.
    ///
    /// # Errors
    ///
    /// [`EpochCacheError::InvalidEntry`] for a negative epoch or offset;
    /// [`EpochCacheError::Io`] if the checkpoint cannot be written.
    pub fn rebuild(
        dir: &Path,
        batches: impl IntoIterator<Item = (i32, i64)>,
    ) -> Result<Self, EpochCacheError> {
        let mut cache = Self::in_memory();
        for (epoch, base_offset) in batches {
            cache.assign(epoch, base_offset)?;
        }
        let path = dir.join(CHECKPOINT_FILE);
        write_checkpoint(&path, &cache.entries)?;
        cache.path = Some(path);
        Ok(cache)
    }

    /// Records that `epoch` starts at `start_offset`: a leader calls this with its log end when
    /// it starts leading, a follower for each appended batch whose epoch is new.
    ///
    /// An epoch equal to the latest changes nothing. An epoch below the latest, or an offset
    /// below the latest entry's start, is ignored with a warning (the log is the truth; a
    /// caller that kept the cache in step with it never gets here). A new epoch starting at the
    /// latest entry's own start offset replaces that entry: no record was written in it, and
    /// start offsets stay strictly increasing (as Kafka does).
    ///
    /// # Errors
    ///
    /// [`EpochCacheError::InvalidEntry`] for a negative epoch or offset;
    /// [`EpochCacheError::Io`] if the checkpoint cannot be written (nothing changed then).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), EpochCacheError> {
        if epoch < 0 || start_offset < 0 {
            return Err(EpochCacheError::InvalidEntry {
                epoch,
                start_offset,
            });
        }
        let entry = EpochEntry {
            epoch,
            start_offset,
        };
        let mut entries = self.entries.clone();
        match entries.last().copied() {
            Some(last) if epoch == last.epoch => return Ok(()),
            Some(last) if epoch < last.epoch || start_offset < last.start_offset => {
                tracing::warn!(
                    epoch,
                    start_offset,
                    latest_epoch = last.epoch,
                    latest_start = last.start_offset,
                    "ignoring a leader-epoch assignment that would go backwards"
                );
                return Ok(());
            }
            Some(last) if start_offset == last.start_offset => {
                *entries.last_mut().expect("the match saw a last entry") = entry;
            }
            _ => entries.push(entry),
        }
        self.replace(entries)
    }

    /// The latest (current) epoch, if any was recorded.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The latest entry: a leader's current epoch and the offset it started leading at (what
    /// [`expand`](super::expand) calls the leader epoch start offset).
    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Kafka's `endOffsetFor`, the answer to a follower's OffsetsForLeaderEpoch: the largest
    /// epoch at or below `requested_epoch` and the offset where it ends in this log (the start
    /// of the next epoch, or `log_end_offset` for the latest). `None` (Kafka's undefined) when
    /// `requested_epoch` is below every epoch here, or the cache is empty.
    ///
    /// A request above the latest epoch gets `(latest, log_end_offset)`, where Kafka answers
    /// undefined: the latest epoch *is* the largest one at or below it, and it ends at the log
    /// end. Only a leader behind the follower's epochs sees that, and the fetch protocol must
    /// fence it by its current leader epoch before it answers anything.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        // Entries with an epoch at or below the request come first.
        let above = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let floor = self.entries[..above].last()?;
        let end = self
            .entries
            .get(above)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((floor.epoch, end))
    }

    /// After the log was truncated to `end_offset`: drops every entry starting at or after it.
    /// Truncate the log first, then the cache, with the log's new end (`Log::truncate_to` may
    /// stop below the offset asked, at a batch boundary): a crash in between leaves entries
    /// past the log end in the file, which the caller removes after opening by calling this
    /// with the log end again.
    ///
    /// The log has already changed, so the cache in memory always follows it; if the
    /// checkpoint cannot be written the error is logged and the file is stale until the next
    /// write or open (harmless for the same reason as a crash in between).
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if keep == self.entries.len() {
            return;
        }
        let entries = self.entries[..keep].to_vec();
        self.follow_the_log(entries);
    }

    /// After retention moved the log start to `start_offset`: drops the entries wholly below it
    /// and moves the start of the entry covering it up to `start_offset` (Kafka's
    /// `truncateFromStart`). Entries starting above it are untouched. A failed write is logged
    /// and the cache in memory changes anyway, as in
    /// [`truncate_from_end`](Self::truncate_from_end); the stale file only holds epochs below
    /// the log start.
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if covering == 0 {
            return;
        }
        let mut entries = self.entries[covering - 1..].to_vec();
        if covering == 1 && entries[0].start_offset == start_offset {
            return;
        }
        entries[0].start_offset = start_offset;
        self.follow_the_log(entries);
    }

    /// Takes `entries`, which describe a log that already changed; persists them if it can.
    fn follow_the_log(&mut self, entries: Vec<EpochEntry>) {
        if let Some(path) = &self.path
            && let Err(e) = write_checkpoint(path, &entries)
        {
            tracing::error!(error = %e, "could not write the leader-epoch checkpoint");
        }
        self.entries = entries;
    }

    /// Persists `entries` (if this cache has a file), then makes them current.
    fn replace(&mut self, entries: Vec<EpochEntry>) -> Result<(), EpochCacheError> {
        if let Some(path) = &self.path {
            write_checkpoint(path, &entries)?;
        }
        self.entries = entries;
        Ok(())
    }
}

impl Clone for LeaderEpochCache {
    fn clone(&self) -> Self {
        Self {
            path: None,
            entries: self.entries.clone(),
        }
    }
}

/// Renders entries in Kafka's checkpoint text format.
fn render(entries: &[EpochEntry]) -> String {
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    for e in entries {
        text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    text
}

/// Parses Kafka's checkpoint text format, strictly: any deviation is `Corrupt`.
fn parse(path: &Path, text: &str) -> Result<Vec<EpochEntry>, EpochCacheError> {
    let corrupt = |line: usize, reason: String| EpochCacheError::Corrupt {
        path: path.to_owned(),
        line,
        reason,
    };
    let Some(body) = text.strip_suffix('\n') else {
        return Err(corrupt(0, "the file does not end with a newline".into()));
    };
    let mut lines = body.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    let mut next_line = |what: &str| {
        lines
            .next()
            .ok_or_else(|| corrupt(0, format!("the file ends before its {what}")))
    };
    let (n, version) = next_line("version")?;
    if version != VERSION.to_string() {
        return Err(corrupt(n, format!("unknown version {version:?}")));
    }
    let (n, count) = next_line("entry count")?;
    let count: usize = count
        .parse()
        .map_err(|_| corrupt(n, format!("bad entry count {count:?}")))?;
    let mut entries: Vec<EpochEntry> = Vec::new();
    for _ in 0..count {
        let (n, line) = next_line("last entry")?;
        let entry = parse_entry(line).ok_or_else(|| corrupt(n, format!("bad entry {line:?}")))?;
        if let Some(prev) = entries.last()
            && (entry.epoch <= prev.epoch || entry.start_offset <= prev.start_offset)
        {
            return Err(corrupt(
                n,
                format!("entry {line:?} does not follow {prev:?}"),
            ));
        }
        entries.push(entry);
    }
    if let Ok((n, _)) = next_line("end") {
        return Err(corrupt(n, format!("more lines than the {count} entries")));
    }
    Ok(entries)
}

/// One `<epoch> <start offset>` line, both non-negative.
fn parse_entry(line: &str) -> Option<EpochEntry> {
    let (epoch, start) = line.split_once(' ')?;
    let (epoch, start_offset): (i32, i64) = (epoch.parse().ok()?, start.parse().ok()?);
    (epoch >= 0 && start_offset >= 0).then_some(EpochEntry {
        epoch,
        start_offset,
    })
}

/// Replaces the checkpoint at `path` atomically: a crash leaves the old or the new content.
fn write_checkpoint(path: &Path, entries: &[EpochEntry]) -> Result<(), EpochCacheError> {
    let tmp = path.with_extension("tmp");
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| EpochCacheError::Io { path, source }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(render(entries).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
