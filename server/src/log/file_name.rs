//! Segment file names: built and parsed side by side, so the two can never disagree.
//!
//! A segment is named by its base offset, zero-padded to 20 digits as Kafka does
//! (`00000000000000000042.log`), so that a plain directory listing sorts segments in offset
//! order. This module owns the naming scheme and nothing else: it knows no file contents.

use std::path::{Path, PathBuf};

/// Width of the zero-padded base offset in a segment file name (enough for any `i64`).
const OFFSET_WIDTH: usize = 20;

/// The kinds of file a segment is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FileKind {
    /// The batches themselves.
    Log,
    /// Sparse relative offset → file position index.
    Index,
    /// Sparse timestamp → relative offset index.
    TimeIndex,
}

impl FileKind {
    /// Every kind, in the order a segment's files are deleted: the log first, so that a crash
    /// half-way leaves orphan indexes (which recovery removes), never a log without its indexes
    /// being taken for a whole segment with stale ones.
    pub(crate) const ALL: [FileKind; 3] = [FileKind::Log, FileKind::Index, FileKind::TimeIndex];

    fn suffix(self) -> &'static str {
        match self {
            FileKind::Log => "log",
            FileKind::Index => "index",
            FileKind::TimeIndex => "timeindex",
        }
    }
}

/// The file name of segment `base_offset`'s file of kind `kind`, e.g. `00000000000000000042.log`.
pub(crate) fn file_name(base_offset: i64, kind: FileKind) -> String {
    debug_assert!(base_offset >= 0, "offsets are never negative");
    format!("{base_offset:0OFFSET_WIDTH$}.{}", kind.suffix())
}

/// The path of segment `base_offset`'s file of kind `kind` inside `dir`.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, kind: FileKind) -> PathBuf {
    dir.join(file_name(base_offset, kind))
}

/// Parses a file name built by [`file_name`]. Anything else (other files, temporary files, names
/// with the wrong width, signs or non-digits, offsets that overflow) yields `None`.
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, FileKind)> {
    let (stem, suffix) = name.split_once('.')?;
    let kind = FileKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
    if stem.len() != OFFSET_WIDTH || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base_offset = stem.parse::<i64>().ok()?;
    Some((base_offset, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zero_padded_to_twenty_digits() {
        assert_eq!(file_name(0, FileKind::Log), "00000000000000000000.log");
        assert_eq!(file_name(42, FileKind::Index), "00000000000000000042.index");
        assert_eq!(
            file_name(i64::MAX, FileKind::TimeIndex),
            "09223372036854775807.timeindex"
        );
        assert_eq!(
            segment_path(Path::new("/d"), 5, FileKind::Log),
            Path::new("/d/00000000000000000005.log")
        );
    }

    #[test]
    fn built_names_parse_back() {
        for offset in [0, 1, 4096, 1 << 40, i64::MAX] {
            for kind in FileKind::ALL {
                assert_eq!(
                    parse_file_name(&file_name(offset, kind)),
                    Some((offset, kind))
                );
            }
        }
    }

    #[test]
    fn foreign_names_are_rejected() {
        for name in [
            "",
            ".log",
            "00000000000000000000",
            "00000000000000000000.",
            "00000000000000000000.txt",
            "00000000000000000000.log.tmp",
            "0000000000000000000.log",
            "000000000000000000000.log",
            "-0000000000000000001.log",
            "+0000000000000000001.log",
            "0000000000000000000a.log",
            "99999999999999999999.log",
            "recovery-point",
            "00000000000000000000.LOG",
        ] {
            assert_eq!(parse_file_name(name), None, "{name:?} must be rejected");
        }
    }
}
