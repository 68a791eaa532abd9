//! Encoding: [`BatchBuilder`] writes records into one buffer and the header last, once the CRC
//! is known.

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::{put_varint, varint_len};
use crate::{
    CRC_OFFSET, CRC_START, HEADER_LEN, LENGTH_PREFIX, MAGIC, NO_LEADER_EPOCH, NO_PRODUCER_ID,
    Record,
};

/// Builds one batch from records, for producers. The result has base offset 0 and no leader
/// epoch; the broker stamps both.
///
/// Records are encoded straight into one growing buffer; the header is written last, once the
/// CRC is known.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch without a producer id.
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// An empty batch whose buffer starts with `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(HEADER_LEN));
        buf.put_bytes(0, HEADER_LEN);
        Self {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the idempotent producer fields in place.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch would take if finished now.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Bytes a record would add to the batch, so that a producer can decide to start a new
    /// batch before pushing.
    pub fn record_size(&self, record: &Record) -> usize {
        let body = self.record_body_len(record);
        varint_len(body as i64) + body
    }

    fn record_body_len(&self, r: &Record) -> usize {
        let ts_delta = if self.count == 0 {
            0
        } else {
            r.timestamp.wrapping_sub(self.first_timestamp)
        };
        let key_len = r
            .key
            .as_ref()
            .map_or(varint_len(-1), |k| varint_len(k.len() as i64) + k.len());
        let headers: usize = r
            .headers
            .iter()
            .map(|(k, v)| {
                varint_len(k.len() as i64) + k.len() + varint_len(v.len() as i64) + v.len()
            })
            .sum();
        1 + varint_len(ts_delta)
            + varint_len(i64::from(self.count))
            + key_len
            + varint_len(r.value.len() as i64)
            + r.value.len()
            + varint_len(r.headers.len() as i64)
            + headers
    }

    /// Appends a record.
    pub fn push(&mut self, record: &Record) {
        if self.count == 0 {
            self.first_timestamp = record.timestamp;
        }
        let body = self.record_body_len(record);
        self.buf.reserve(varint_len(body as i64) + body);
        put_varint(&mut self.buf, body as i64);
        self.buf.put_i8(0);
        put_varint(
            &mut self.buf,
            record.timestamp.wrapping_sub(self.first_timestamp),
        );
        put_varint(&mut self.buf, i64::from(self.count));
        match &record.key {
            Some(k) => {
                put_varint(&mut self.buf, k.len() as i64);
                self.buf.put_slice(k);
            }
            None => put_varint(&mut self.buf, -1),
        }
        put_varint(&mut self.buf, record.value.len() as i64);
        self.buf.put_slice(&record.value);
        put_varint(&mut self.buf, record.headers.len() as i64);
        for (k, v) in &record.headers {
            put_varint(&mut self.buf, k.len() as i64);
            self.buf.put_slice(k.as_bytes());
            put_varint(&mut self.buf, v.len() as i64);
            self.buf.put_slice(v);
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.count += 1;
    }

    /// Writes the header and CRC and returns the encoded batch.
    ///
    /// # Panics
    ///
    /// If no record was pushed: an empty batch is not a batch.
    pub fn finish(mut self) -> Bytes {
        assert!(self.count > 0, "a batch needs at least one record");
        let total = self.buf.len();
        let h = &mut self.buf[..HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&((total - LENGTH_PREFIX) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&NO_LEADER_EPOCH.to_be_bytes());
        h[16] = MAGIC as u8;
        h[21..23].copy_from_slice(&0i16.to_be_bytes());
        h[23..27].copy_from_slice(&(self.count - 1).to_be_bytes());
        h[27..35].copy_from_slice(&self.first_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        h[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        h[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32fast::hash(&self.buf[CRC_START..]);
        self.buf[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
        self.buf.freeze()
    }
}

/// Encodes `records` as one batch. Shorthand for a [`BatchBuilder`].
///
/// # Panics
///
/// If `records` is empty.
pub fn encode(records: &[Record]) -> Bytes {
    let mut b = BatchBuilder::with_capacity(
        HEADER_LEN + records.iter().map(|r| r.value.len() + 16).sum::<usize>(),
    );
    for r in records {
        b.push(r);
    }
    b.finish()
}
