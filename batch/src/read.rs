//! Decoding: zero-copy iteration over the records of a batch ([`records`]) and over the batches
//! of a fetched buffer ([`batches`]). Malformed input comes out as an error, never a panic.

use bytes::{Buf, Bytes};

use crate::varint::Cursor;
use crate::{
    BatchError, BatchHeader, HEADER_LEN, Record, peek_header, read_record_span, walk_record,
};

/// Iterates over the records of one batch, yielding each record's absolute offset and the record
/// itself. Keys, values and header values are slices of `batch`: nothing is copied.
///
/// The batch should have passed [`validate`](crate::validate); if it did not, malformed records come out as one
/// error (after which the iterator ends), never as a panic.
pub fn records(batch: &Bytes) -> Records {
    let header = peek_header(batch).and_then(|h| {
        if h.total_len() > batch.len() {
            Err(BatchError::Truncated {
                needed: h.total_len(),
                available: batch.len(),
            })
        } else {
            Ok(h)
        }
    });
    match header {
        Ok(h) => Records {
            body: batch.slice(HEADER_LEN..h.total_len()),
            index: 0,
            header: Some(h),
            pending: None,
        },
        Err(e) => Records {
            body: Bytes::new(),
            index: 0,
            header: None,
            pending: Some(e),
        },
    }
}

/// Iterator returned by [`records`].
#[derive(Debug)]
pub struct Records {
    /// The records not yet yielded.
    body: Bytes,
    /// Index of the next record within the batch.
    index: usize,
    /// `None` once the batch is exhausted or broken.
    header: Option<BatchHeader>,
    /// An error to report on the next call, then stop.
    pending: Option<BatchError>,
}

impl Records {
    fn decode_next(&mut self, header: BatchHeader) -> Result<(i64, Record), BatchError> {
        let index = self.index;
        let bad = |reason| BatchError::BadRecord { index, reason };
        let mut outer = Cursor::new(&self.body);
        let span = read_record_span(&mut outer, index)?;
        let start = self.body.len() - outer.remaining() - span.len();
        let record = self.body.slice(start..start + span.len());
        self.body.advance(start + span.len());
        walk_record(&record, index, i64::from(header.last_offset_delta))?;

        // The walk proved the structure, so the reads below cannot fail.
        let mut c = Cursor::new(&record);
        c.take(1).ok_or(bad("missing attributes"))?;
        let ts_delta = c.varint().ok_or(bad("bad timestamp delta"))?;
        let offset_delta = c.varint().ok_or(bad("bad offset delta"))?;
        let key = match c.varint().ok_or(bad("bad key length"))? {
            -1 => None,
            n => Some(slice_of(&record, &mut c, n as usize)),
        };
        let value_len = c.varint().ok_or(bad("bad value length"))?;
        let value = slice_of(&record, &mut c, value_len as usize);
        let header_count = c.varint().ok_or(bad("bad header count"))?;
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key_len = c.varint().ok_or(bad("bad header key length"))? as usize;
            let key = c.take(key_len).ok_or(bad("header key runs past"))?;
            let key = std::str::from_utf8(key)
                .map_err(|_| BatchError::BadHeaderKey { index })?
                .to_owned();
            let value_len = c.varint().ok_or(bad("bad header value length"))? as usize;
            headers.push((key, slice_of(&record, &mut c, value_len)));
        }
        Ok((
            header.base_offset + offset_delta,
            Record {
                timestamp: header.first_timestamp.wrapping_add(ts_delta),
                key,
                value,
                headers,
            },
        ))
    }
}

/// Takes `len` bytes from the cursor over `whole` and returns them as a slice of `whole`.
fn slice_of(whole: &Bytes, c: &mut Cursor<'_>, len: usize) -> Bytes {
    let start = c.position();
    c.take(len).expect("record structure was validated");
    whole.slice(start..start + len)
}

impl Iterator for Records {
    type Item = Result<(i64, Record), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        let header = self.header?;
        if self.index >= header.record_count.max(0) as usize {
            self.header = None;
            return None;
        }
        let item = self.decode_next(header);
        self.index += 1;
        if item.is_err() {
            self.header = None;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.header.map_or(0, |h| {
            (h.record_count.max(0) as usize).saturating_sub(self.index)
        });
        (0, Some(left + usize::from(self.pending.is_some())))
    }
}

/// Iterates over the batches concatenated in `buf` (as a fetch returns them), yielding each
/// batch as a zero-copy slice. Checks each header and that the batch is whole, not the CRC.
pub fn batches(buf: &Bytes) -> Batches {
    Batches {
        buf: buf.clone(),
        failed: false,
    }
}

/// Iterator returned by [`batches`].
#[derive(Debug)]
pub struct Batches {
    buf: Bytes,
    failed: bool,
}

impl Iterator for Batches {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        let result = peek_header(&self.buf).and_then(|h| {
            if h.total_len() > self.buf.len() {
                Err(BatchError::Truncated {
                    needed: h.total_len(),
                    available: self.buf.len(),
                })
            } else {
                Ok(self.buf.split_to(h.total_len()))
            }
        });
        self.failed = result.is_err();
        Some(result)
    }
}
