//! File helpers shared by the metadata log store and state machine: the store's error type,
//! atomic small-file writes (tmp + fsync + rename + directory fsync) and JSON reads.
//!
//! Knows paths and bytes, not Raft: callers turn a [`StoreError`] into openraft's
//! `StorageError` at the trait boundary, choosing the subject and verb.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What went wrong under the metadata directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed; check the disk and the directory's permissions.
    #[error("metadata store I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A value could not be (de)serialised: a small file or snapshot is damaged (repair or
    /// remove it by hand) or a value does not encode.
    #[error("metadata store could not encode or decode {path}: {source}")]
    Codec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Recovery would have to drop log entries up to `committed`, which this node acknowledged
    /// and the cluster committed. Truncating them silently could let this node vote for a
    /// leader that lacks them, so the store refuses to open: restore the directory from a
    /// backup, or remove it so the node rejoins from a snapshot.
    #[error(
        "metadata log {path} is damaged at byte {position}: it ends at index {last:?} but index \
         {committed} was committed; refusing to drop committed entries"
    )]
    CommittedEntriesDamaged {
        path: PathBuf,
        position: u64,
        last: Option<u64>,
        committed: u64,
    },
}

/// Shorthand for attaching a path to an [`io::Error`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Fsyncs a directory so that creations and renames inside it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Replaces `path` with `bytes` atomically: a crash leaves either the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Serialises `value` as JSON and writes it with [`write_atomic`].
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Codec {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// Reads a JSON file written by [`write_json`]; `None` if it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Codec {
            path: path.to_owned(),
            source,
        })
}
