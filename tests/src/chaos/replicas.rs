//! Reads a stopped broker's segment files, for the replica-divergence check: each partition's
//! `<data-dir>/<topic>-<p>/*.log` files in offset order (their names are zero-padded base
//! offsets), cut into batches with `cairn-batch`'s header parser. A file ends at its first
//! bytes that are not a whole batch: a preallocated zero tail or a torn write.
//!
//! Also the deleted-segment canary's damage: [`truncate_first_segment`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::history::{BatchSummary, Replicas};

/// The batches of `topic`-`partition` in the data directory `data_dir`; `None` if this broker
/// holds no replica of it.
///
/// # Errors
///
/// If a segment file cannot be read.
pub fn replica_batches(
    data_dir: &Path,
    topic: &str,
    partition: u32,
) -> Result<Option<Vec<BatchSummary>>> {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for path in segment_files(&dir)? {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        out.extend(scan(&bytes).0);
    }
    Ok(Some(out))
}

/// The `.log` files of a partition directory, in offset order.
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    // Zero-padded names sort in offset order.
    files.sort();
    Ok(files)
}

/// The whole batches at the start of `bytes`, and the length they take.
fn scan(bytes: &[u8]) -> (Vec<BatchSummary>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(rest) = bytes.get(pos..) {
        let Ok(header) = cairn_batch::peek_header(rest) else {
            break;
        };
        if header.batch_length <= 0 || header.total_len() > rest.len() {
            break;
        }
        out.push(BatchSummary {
            base: header.base_offset,
            last: header.last_offset(),
            crc: header.crc,
        });
        pos += header.total_len();
    }
    (out, pos)
}

/// Every broker's batches of every partition of `topic`.
///
/// # Errors
///
/// If a segment file cannot be read.
pub fn all_replicas(
    data_dirs: &[(u32, PathBuf)],
    topic: &str,
    partitions: u32,
) -> Result<Replicas> {
    let mut out = Replicas::new();
    for p in 0..partitions {
        for (id, dir) in data_dirs {
            if let Some(batches) = replica_batches(dir, topic, p)? {
                out.entry(p).or_default().insert(*id, batches);
            }
        }
    }
    Ok(out)
}

/// Cuts the first segment file of `topic`-`partition` in `data_dir` to half its length (the
/// deleted-segment canary); returns the file and its new length.
///
/// # Errors
///
/// If the replica has no segment file or it cannot be truncated.
pub fn truncate_first_segment(
    data_dir: &Path,
    topic: &str,
    partition: u32,
) -> Result<(PathBuf, u64)> {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let path = segment_files(&dir)?
        .into_iter()
        .next()
        .with_context(|| format!("no segment file in {}", dir.display()))?;
    let bytes = std::fs::read(&path)?;
    let len = scan(&bytes).1 as u64 / 2;
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len(len)?;
    file.sync_all()?;
    Ok((path, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stop_at_a_zero_tail_and_at_a_torn_batch() {
        let one = cairn_batch::encode(&[cairn_batch::Record {
            value: bytes::Bytes::from_static(b"v"),
            ..Default::default()
        }]);
        let mut file = one.to_vec();
        file.extend_from_slice(&one);
        file.extend_from_slice(&[0; 100]);
        assert_eq!(scan(&file), (scan(&one).0.repeat(2), 2 * one.len()));
        file.truncate(one.len() + one.len() / 2);
        assert_eq!(scan(&file).1, one.len());
    }
}
