//! The partition log's one error type. Each variant tells the caller what to do; none drops its
//! cause. This module knows nothing of gRPC: `service/` maps these to status codes.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_batch::BatchError;

/// Everything that can go wrong in a [`Log`](super::Log).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The offset lies outside the log. A consumer should reset to `start` or `end`.
    #[error("offset {offset} is out of range: the log holds offsets [{start}, {end})")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },

    /// On-disk data contradicts itself in a way recovery cannot repair without guessing (for
    /// example a gap between segments). An operator must look at `path`.
    #[error("corrupt log file {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    /// The batch is larger than `LogConfig::max_batch_bytes`. The producer must split it.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },

    /// The batch failed validation (length, magic, CRC, records). Nothing was written.
    #[error("invalid batch")]
    InvalidBatch(#[from] BatchError),

    /// A replicated batch does not continue the log. The follower must truncate or refetch.
    #[error("non-contiguous append: the log expects base offset {expected}, the batch has {got}")]
    NonContiguous { expected: i64, got: i64 },

    /// The configuration is unusable; nothing was opened.
    #[error("invalid log configuration: {reason}")]
    InvalidConfig { reason: &'static str },

    /// A file-system call failed.
    #[error("{context} {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An fsync (or a write rollback) failed earlier, so the log can no longer say what is on
    /// disk. Every later write is refused; the broker must take the partition offline and
    /// recover it by reopening (DESIGN.md §3: an fsync error is never retried).
    #[error("the log in {dir} has failed and accepts no more writes")]
    Failed {
        dir: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// The log was truncated (leadership changed) after this append was written but before it
    /// became durable, so it is not acknowledged. The producer should retry against the leader.
    #[error("the append at offset {base_offset} was truncated before it became durable")]
    TruncatedBeforeDurable { base_offset: i64 },
}

impl LogError {
    /// Wraps an `io::Error` with what was being done and to which file.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io {
            context,
            path,
            source,
        }
    }
}

/// Result alias for the log module.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
