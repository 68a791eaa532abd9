//! Walking one segment for a fetch or a timestamp lookup.
//!
//! The indexes are sparse, so every lookup is: ask the index where to start, then walk batch
//! headers forward. A fetch then returns whole batches as one `Bytes` (a map slice for a sealed
//! segment, one positional read for the active one): nothing is decoded or copied per record.
//! This module works on any [`SegmentView`] and knows nothing of locking or of other segments.

use bytes::Bytes;
use cairn_batch::{BatchHeader, HEADER_LEN};

use super::error::{LogError, Result};
use super::segment::SegmentView;

/// Finds the batch holding `offset` (the first batch whose last offset is at or past it).
/// Returns its position and header, or `None` if `offset` is past the segment.
pub(crate) fn find_batch(seg: &dyn SegmentView, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
    let base = seg.base_offset();
    let rel = u32::try_from(offset.saturating_sub(base)).unwrap_or(u32::MAX);
    let (mut position, mut expected) = match seg.index_lookup(rel) {
        Some(e) => (u64::from(e.position), base + i64::from(e.rel)),
        None => (0, base),
    };
    while position < seg.size() {
        let header = seg.read_header(position)?;
        if header.base_offset != expected {
            return Err(LogError::Corrupt {
                path: seg.path().to_owned(),
                position,
                reason: format!(
                    "expected a batch at offset {expected}, found {}",
                    header.base_offset
                ),
            });
        }
        if header.last_offset() >= offset {
            return Ok(Some((position, header)));
        }
        expected = header.next_offset();
        position += header.total_len() as u64;
    }
    Ok(None)
}

/// Whole batches starting with the one holding `offset`: at most `max_bytes` of them, but always
/// the first; only batches that end below `upper`. Returns the bytes and the offset after them.
/// `offset` must be in `[base, next)` of the segment.
pub(crate) fn read(
    seg: &dyn SegmentView,
    offset: i64,
    max_bytes: usize,
    upper: i64,
) -> Result<(Bytes, i64)> {
    let Some((start, first)) = find_batch(seg, offset)? else {
        return Ok((Bytes::new(), offset));
    };
    if first.last_offset() >= upper {
        return Ok((Bytes::new(), offset));
    }
    let available = (seg.size() - start) as usize;
    let want = max_bytes.max(first.total_len()).min(available);
    let buf = seg.read_bytes(start, want)?;
    let mut taken = first.total_len();
    let mut next = first.next_offset();
    while taken + HEADER_LEN <= buf.len() {
        let Ok(header) = cairn_batch::peek_header(&buf[taken..]) else {
            return Err(LogError::Corrupt {
                path: seg.path().to_owned(),
                position: start + taken as u64,
                reason: "unreadable batch header in a fetch".into(),
            });
        };
        if header.last_offset() >= upper || taken + header.total_len() > buf.len() {
            break;
        }
        taken += header.total_len();
        next = header.next_offset();
    }
    Ok((buf.slice(..taken), next))
}

/// Offset of the first record in the segment whose timestamp is at least `ts`, if any (Kafka's
/// ListOffsets by time). The time index names where to start walking headers; the first batch
/// whose `max_timestamp >= ts` holds the answer, and only that batch is read and decoded.
pub(crate) fn find_timestamp(seg: &dyn SegmentView, ts: i64) -> Result<Option<i64>> {
    let mut position = match seg.time_lookup(ts) {
        Some(e) => match find_batch(seg, seg.base_offset() + i64::from(e.rel))? {
            Some((position, _)) => position,
            None => return Ok(None),
        },
        None => 0,
    };
    while position < seg.size() {
        let header = seg.read_header(position)?;
        if header.max_timestamp >= ts {
            return first_record_at(seg, position, &header, ts).map(Some);
        }
        position += header.total_len() as u64;
    }
    Ok(None)
}

/// Offset of the first record at or after `ts` in the batch at `position`, whose header says
/// some record reaches `ts`. Records are not ordered by time, so the first in offset order wins.
fn first_record_at(
    seg: &dyn SegmentView,
    position: u64,
    header: &BatchHeader,
    ts: i64,
) -> Result<i64> {
    let corrupt = |reason: String| LogError::Corrupt {
        path: seg.path().to_owned(),
        position,
        reason,
    };
    let available = seg.size().saturating_sub(position) as usize;
    if header.total_len() > available {
        return Err(corrupt("batch runs past the end of the segment".into()));
    }
    let batch = seg.read_bytes(position, header.total_len())?;
    for record in cairn_batch::records(&batch) {
        let (offset, record) = record
            .map_err(|e| corrupt(format!("undecodable record in a timestamp lookup: {e}")))?;
        if record.timestamp >= ts {
            return Ok(offset);
        }
    }
    Err(corrupt(format!(
        "batch header says max_timestamp {} but no record reaches {ts}",
        header.max_timestamp
    )))
}
