//! Cairn's record batch format: the one place where batches are encoded and validated.
//!
//! The broker stores a producer's batch exactly as it arrived and serves it back as it is
//! stored (DESIGN.md §3, zero-copy). Both ends must therefore agree on one byte layout, which is
//! why this crate is shared by the broker (`cairn-server`) and the client (`cairn-client`) and
//! depends on neither.
//!
//! # Layout
//!
//! The layout is Kafka's record batch v2, big-endian, so the reasoning behind each field carries
//! over from KIP-98 (idempotence) and KIP-101 (leader epochs):
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset         assigned by the leader on append
//!      8     4  batch_length        bytes after this field (total length - 12)
//!     12     4  leader_epoch        stamped by the leader on append
//!     16     1  magic               always 2
//!     17     4  crc                 CRC-32 (IEEE, crc32fast) of bytes [21, end)
//!     21     2  attributes          reserved, 0
//!     23     4  last_offset_delta   record_count - 1
//!     27     8  first_timestamp     ms since the epoch
//!     35     8  max_timestamp
//!     43     8  producer_id         -1 without idempotence
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     …  records
//! ```
//!
//! Because the CRC covers only the bytes after the CRC field, the broker can stamp the base offset
//! and leader epoch without recomputing it ([`stamp`]).
//!
//! Each record is: length (varint), attributes (i8), timestamp delta (varlong), offset delta
//! (varint), key length (varint, -1 = none) and key, value length (varint) and value, header
//! count (varint) and headers (key length + UTF-8 key, value length + value). Varints use zigzag
//! encoding as in protobuf's `sint`.
//!
//! # Hostile input
//!
//! [`validate`] never allocates on the strength of a length it read: every length is checked
//! against the bytes actually present before anything is sliced.

use bytes::Bytes;

mod builder;
mod read;
mod varint;

pub use builder::{BatchBuilder, encode};
pub use read::{Batches, Records, batches, records};

use varint::Cursor;

/// Size of the fixed batch header, in bytes.
pub const HEADER_LEN: usize = 61;
/// Bytes before the part that `batch_length` counts: base offset (8) and batch length (4).
pub const LENGTH_PREFIX: usize = 12;
/// The only batch format version Cairn writes and accepts.
pub const MAGIC: i8 = 2;
/// `producer_id` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// `leader_epoch` of a batch that no leader has stamped yet.
pub const NO_LEADER_EPOCH: i32 = -1;

pub(crate) const CRC_OFFSET: usize = 17;
pub(crate) const CRC_START: usize = 21;
const EPOCH_OFFSET: usize = 12;

/// Why a batch (or a buffer of batches) was refused. Every variant says what was wrong with
/// enough detail for an operator to find the bad bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the format needs at this point.
    #[error("batch truncated: needs {needed} bytes, {available} present")]
    Truncated { needed: usize, available: usize },
    /// `batch_length` is impossible (smaller than a header) or disagrees with the buffer.
    #[error("batch length field says {claimed} bytes, but {reason}")]
    BadLength { claimed: i64, reason: &'static str },
    /// The batch is larger than the configured limit.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The magic byte is not [`MAGIC`].
    #[error("unsupported batch magic {0} (expected {MAGIC})")]
    BadMagic(i8),
    /// The stored CRC does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// `record_count` is not positive or disagrees with `last_offset_delta`.
    #[error("bad record count {count} (last offset delta {last_offset_delta})")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
    /// A record inside the batch is malformed.
    #[error("bad record #{index}: {reason}")]
    BadRecord { index: usize, reason: &'static str },
    /// A header key is not UTF-8.
    #[error("header key of record #{index} is not UTF-8")]
    BadHeaderKey { index: usize },
}

/// The fixed header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; assigned by the leader.
    pub base_offset: i64,
    /// Bytes after the base offset and this field ([`LENGTH_PREFIX`]).
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch; [`NO_LEADER_EPOCH`] before that.
    pub leader_epoch: i32,
    /// Format version, always [`MAGIC`].
    pub magic: i8,
    /// CRC-32 of everything after the CRC field.
    pub crc: u32,
    /// Reserved flags (compression, transactions); 0 today.
    pub attributes: i16,
    /// Offset delta of the last record: `record_count - 1`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record, ms since the epoch.
    pub first_timestamp: i64,
    /// Largest timestamp of any record in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Idempotent producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record for this producer and partition.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Length of the whole batch in bytes, header included.
    pub fn total_len(&self) -> usize {
        LENGTH_PREFIX + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset just past the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
}

/// One record, as a producer gives it and a consumer receives it. Key, value and header values
/// are `Bytes`, so decoding a stored batch slices it rather than copying.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key; records with equal keys go to the same partition.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Ordered headers; keys may repeat.
    pub headers: Vec<(String, Bytes)>,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("caller checked length"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("caller checked length"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("caller checked length"))
}

/// Decodes the header of the batch at the start of `buf` without checking the CRC or records.
///
/// Checks that `buf` holds a whole header, that the magic is right and that `batch_length` is at
/// least a header's worth. It does not require `buf` to hold the whole batch: use
/// [`BatchHeader::total_len`] to find its end.
///
/// # Errors
///
/// [`BatchError::Truncated`], [`BatchError::BadMagic`] or [`BatchError::BadLength`].
pub fn peek_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    let header = BatchHeader {
        base_offset: be_i64(buf, 0),
        batch_length: be_i32(buf, 8),
        leader_epoch: be_i32(buf, 12),
        magic: buf[16] as i8,
        crc: u32::from_be_bytes(buf[17..21].try_into().expect("length checked")),
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        first_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        record_count: be_i32(buf, 57),
    };
    if header.magic != MAGIC {
        return Err(BatchError::BadMagic(header.magic));
    }
    if (header.batch_length as i64) < (HEADER_LEN - LENGTH_PREFIX) as i64 {
        return Err(BatchError::BadLength {
            claimed: header.batch_length as i64,
            reason: "that is shorter than a batch header",
        });
    }
    Ok(header)
}

/// Checks the CRC of one whole batch (`buf` is exactly the batch).
///
/// # Errors
///
/// [`BatchError::Truncated`] if `buf` is shorter than a header, [`BatchError::CrcMismatch`].
pub fn check_crc(buf: &[u8]) -> Result<(), BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    let stored = u32::from_be_bytes(
        buf[CRC_OFFSET..CRC_START]
            .try_into()
            .expect("length checked"),
    );
    let computed = crc32fast::hash(&buf[CRC_START..]);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// Fully validates one batch that occupies exactly `buf`: header, length, size limit, CRC,
/// record count, and a walk over every record checking that the records fill the batch exactly.
/// The walk allocates nothing.
///
/// # Errors
///
/// Any [`BatchError`]; the first problem found.
pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    if buf.len() > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: buf.len(),
            max: max_batch_bytes,
        });
    }
    let header = peek_header(buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchError::BadLength {
            claimed: header.batch_length as i64,
            reason: "that disagrees with the bytes received",
        });
    }
    check_crc(buf)?;
    if header.record_count <= 0 || header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::BadRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    // Each record takes at least 7 bytes; a count that cannot fit is refused before the walk.
    if header.record_count as usize > (buf.len() - HEADER_LEN) / 7 {
        return Err(BatchError::BadRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let mut cursor = Cursor::new(&buf[HEADER_LEN..]);
    for index in 0..header.record_count as usize {
        let record = read_record_span(&mut cursor, index)?;
        walk_record(record, index, i64::from(header.last_offset_delta))?;
    }
    if !cursor.is_empty() {
        return Err(BatchError::BadLength {
            claimed: header.batch_length as i64,
            reason: "bytes remain after the last record",
        });
    }
    Ok(header)
}

/// Overwrites the base offset and leader epoch of the batch at the start of `buf`. Both fields
/// lie before the CRC's range, so the CRC stays valid.
///
/// # Panics
///
/// If `buf` is shorter than a header: callers validate first.
pub fn stamp(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(buf.len() >= HEADER_LEN, "stamp needs a validated batch");
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[EPOCH_OFFSET..EPOCH_OFFSET + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// A copy of the batch `buf` (exactly one batch) carrying new idempotent-producer fields, with
/// its CRC recomputed (the fields lie inside the CRC's range). For a producer re-sending a batch
/// the broker refused unwritten, under a new producer id.
///
/// # Panics
///
/// If `buf` is shorter than a header: callers pass batches they encoded.
pub fn with_producer(
    buf: &[u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Bytes {
    assert!(buf.len() >= HEADER_LEN, "with_producer needs a whole batch");
    let mut out = buf.to_vec();
    out[43..51].copy_from_slice(&producer_id.to_be_bytes());
    out[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    out[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32fast::hash(&out[CRC_START..]);
    out[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// Splits one record's bytes off the cursor.
pub(crate) fn read_record_span<'a>(
    cursor: &mut Cursor<'a>,
    index: usize,
) -> Result<&'a [u8], BatchError> {
    let bad = |reason| BatchError::BadRecord { index, reason };
    let len = cursor.varint().ok_or(bad("unreadable length"))?;
    if len < 0 {
        return Err(bad("negative length"));
    }
    cursor
        .take(len as usize)
        .ok_or(bad("length runs past the batch"))
}

/// Checks one record's inner structure without allocating.
pub(crate) fn walk_record(
    record: &[u8],
    index: usize,
    last_offset_delta: i64,
) -> Result<(), BatchError> {
    let bad = |reason| BatchError::BadRecord { index, reason };
    let mut c = Cursor::new(record);
    c.take(1).ok_or(bad("missing attributes"))?;
    c.varint().ok_or(bad("bad timestamp delta"))?;
    let offset_delta = c.varint().ok_or(bad("bad offset delta"))?;
    if offset_delta != index as i64 || offset_delta > last_offset_delta {
        return Err(bad("offset delta out of sequence"));
    }
    let key_len = c.varint().ok_or(bad("bad key length"))?;
    if key_len >= 0 {
        c.take(key_len as usize)
            .ok_or(bad("key runs past the record"))?;
    } else if key_len != -1 {
        return Err(bad("negative key length"));
    }
    let value_len = c.varint().ok_or(bad("bad value length"))?;
    if value_len < 0 {
        return Err(bad("negative value length"));
    }
    c.take(value_len as usize)
        .ok_or(bad("value runs past the record"))?;
    let header_count = c.varint().ok_or(bad("bad header count"))?;
    if header_count < 0 || header_count as usize > c.remaining() / 2 {
        return Err(bad("impossible header count"));
    }
    for _ in 0..header_count {
        let key_len = c.varint().ok_or(bad("bad header key length"))?;
        if key_len < 0 {
            return Err(bad("negative header key length"));
        }
        let key = c
            .take(key_len as usize)
            .ok_or(bad("header key runs past the record"))?;
        if std::str::from_utf8(key).is_err() {
            return Err(BatchError::BadHeaderKey { index });
        }
        let value_len = c.varint().ok_or(bad("bad header value length"))?;
        if value_len < 0 {
            return Err(bad("negative header value length"));
        }
        c.take(value_len as usize)
            .ok_or(bad("header value runs past the record"))?;
    }
    if !c.is_empty() {
        return Err(bad("bytes remain after the headers"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
