//! One partition's open batch: records are encoded into it as they are sent and it is sealed
//! when the next record would push it past `batch_bytes`, or when `linger` has passed since its
//! first record. Synchronous: the producer's dispatcher drives it and tests drive it with no
//! broker.

use std::time::{Duration, Instant};

use cairn_batch::{BatchBuilder, Record};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::error::Result;
use crate::producer::RecordMetadata;

/// Initial buffer of a new batch: small batches do not pay for a whole `batch_bytes`.
const INITIAL_CAPACITY: usize = 16 << 10;

/// What the producer owes one record once its batch is answered.
#[derive(Debug)]
pub(crate) struct Ack {
    /// Where the record's outcome goes.
    pub tx: oneshot::Sender<Result<RecordMetadata>>,
    /// The record's timestamp, echoed in its [`RecordMetadata`].
    pub timestamp: i64,
    /// The record's share of the producer's buffer, given back when the record is answered.
    pub _permit: Option<OwnedSemaphorePermit>,
}

/// A sealed batch, ready to send: its records, encoded but without the header (the sender
/// sets the idempotent producer's id and sequence when it first sends the batch, then
/// finishes it), and one [`Ack`] per record, in order.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub builder: BatchBuilder,
    pub acks: Vec<Ack>,
}

/// The open batch of one partition.
#[derive(Debug)]
pub(crate) struct Accumulator {
    batch_bytes: usize,
    builder: BatchBuilder,
    acks: Vec<Ack>,
    /// When the open batch got its first record; `None` while empty.
    opened: Option<Instant>,
}

impl Accumulator {
    pub(crate) fn new(batch_bytes: usize) -> Self {
        Self {
            batch_bytes,
            builder: Self::builder(batch_bytes),
            acks: Vec::new(),
            opened: None,
        }
    }

    fn builder(batch_bytes: usize) -> BatchBuilder {
        BatchBuilder::with_capacity(batch_bytes.min(INITIAL_CAPACITY))
    }

    /// Adds a record. Returns the batches this sealed: the open one if the record did not fit
    /// in it, and the record's own batch if the record alone fills `batch_bytes` (a record
    /// larger than `batch_bytes` travels alone; the broker decides whether it is too large).
    pub(crate) fn append(&mut self, record: &Record, ack: Ack, now: Instant) -> Vec<Sealed> {
        let mut sealed = Vec::new();
        if !self.builder.is_empty()
            && self.builder.size() + self.builder.record_size(record) > self.batch_bytes
        {
            sealed.extend(self.seal());
        }
        self.builder.push(record);
        self.acks.push(ack);
        self.opened.get_or_insert(now);
        if self.builder.size() >= self.batch_bytes {
            sealed.extend(self.seal());
        }
        sealed
    }

    /// When the open batch must be sent, if it has any record.
    pub(crate) fn deadline(&self, linger: Duration) -> Option<Instant> {
        self.opened.map(|t| t + linger)
    }

    /// Seals the open batch, if it has any record.
    pub(crate) fn seal(&mut self) -> Option<Sealed> {
        if self.builder.is_empty() {
            return None;
        }
        let builder = std::mem::replace(&mut self.builder, Self::builder(self.batch_bytes));
        self.opened = None;
        Some(Sealed {
            builder,
            acks: std::mem::take(&mut self.acks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(value_len: usize) -> Record {
        Record {
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from(vec![7u8; value_len]),
            headers: vec![],
        }
    }

    fn ack() -> Ack {
        Ack {
            tx: oneshot::channel().0,
            timestamp: 0,
            _permit: None,
        }
    }

    #[test]
    fn batches_never_exceed_batch_bytes() {
        let limit = 1000;
        let mut acc = Accumulator::new(limit);
        let now = Instant::now();
        let mut sealed = Vec::new();
        for _ in 0..100 {
            sealed.extend(acc.append(&record(90), ack(), now));
        }
        sealed.extend(acc.seal());
        assert!(sealed.len() > 5);
        let mut total = 0;
        let sealed: Vec<(Bytes, usize)> = sealed
            .into_iter()
            .map(|s| (s.builder.finish(), s.acks.len()))
            .collect();
        for (bytes, acks) in &sealed {
            assert!(bytes.len() <= limit, "batch of {} bytes", bytes.len());
            let decoded: Vec<_> = cairn_batch::records(bytes).collect();
            assert_eq!(decoded.len(), *acks);
            assert!(decoded.iter().all(|r| r.is_ok()));
            total += acks;
        }
        assert_eq!(total, 100);
        // Every batch but the last was full: one more record would not have fitted.
        for (bytes, _) in &sealed[..sealed.len() - 1] {
            assert!(bytes.len() + 100 > limit);
        }
    }

    #[test]
    fn an_oversized_record_travels_alone() {
        let mut acc = Accumulator::new(500);
        let now = Instant::now();
        assert!(acc.append(&record(10), ack(), now).is_empty());
        let sealed = acc.append(&record(2000), ack(), now);
        assert_eq!(sealed.len(), 2, "the open batch, then the big record's own");
        assert_eq!(sealed[0].acks.len(), 1);
        assert_eq!(sealed[1].acks.len(), 1);
        assert!(acc.seal().is_none());
        assert_eq!(acc.deadline(Duration::from_millis(5)), None);
    }

    #[test]
    fn linger_deadline_starts_with_the_first_record() {
        let mut acc = Accumulator::new(1 << 20);
        let t0 = Instant::now();
        let linger = Duration::from_millis(5);
        assert_eq!(acc.deadline(linger), None);
        let _ = acc.append(&record(10), ack(), t0);
        let _ = acc.append(&record(10), ack(), t0 + Duration::from_millis(3));
        assert_eq!(acc.deadline(linger), Some(t0 + linger));
        let s = acc.seal().expect("two records");
        assert_eq!(s.acks.len(), 2);
        assert_eq!(acc.deadline(linger), None);
    }
}
