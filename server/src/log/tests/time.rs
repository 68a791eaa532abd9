//! Timestamp lookups answer the exact record, as Kafka's ListOffsets does: inside a batch of
//! many records, across batches and across segments.

use bytes::Bytes;
use cairn_batch::{BatchBuilder, Record};

use super::{open, small_config};

/// One batch whose records carry the timestamps `stamps`, in offset order.
fn stamped(stamps: &[i64]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for (i, ts) in stamps.iter().enumerate() {
        builder.push(&Record {
            timestamp: *ts,
            key: None,
            value: Bytes::from(vec![i as u8; 8]),
            headers: Vec::new(),
        });
    }
    builder.finish()
}

#[test]
fn timestamp_lookup_lands_on_the_record_inside_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let base = 1_700_000_000_000i64;
    let stamps: Vec<i64> = (0..30).map(|i| base + i * 1000).collect();
    log.append(stamped(&stamps), 0).unwrap();
    assert_eq!(log.offset_for_timestamp(base).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(base + 15_000).unwrap(), Some(15));
    assert_eq!(log.offset_for_timestamp(base + 15_001).unwrap(), Some(16));
    assert_eq!(log.offset_for_timestamp(base + 29_000).unwrap(), Some(29));
    assert_eq!(log.offset_for_timestamp(base + 29_001).unwrap(), None);
}

#[test]
fn timestamp_lookup_takes_the_first_record_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    // Producer clocks need not agree: 50 comes before 30 in offset order.
    log.append(stamped(&[10, 20, 50, 30, 40]), 0).unwrap();
    assert_eq!(log.offset_for_timestamp(25).unwrap(), Some(2));
    assert_eq!(log.offset_for_timestamp(45).unwrap(), Some(2));
    assert_eq!(log.offset_for_timestamp(20).unwrap(), Some(1));
}

#[test]
fn timestamp_lookup_is_exact_across_batches_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    // 40 batches of 5 records, timestamps 0, 1, 2, ... in offset order; 1 KiB segments.
    for b in 0..40i64 {
        let stamps: Vec<i64> = (0..5).map(|i| b * 5 + i).collect();
        log.append(stamped(&stamps), 0).unwrap();
    }
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    for ts in 0..200i64 {
        assert_eq!(log.offset_for_timestamp(ts).unwrap(), Some(ts), "ts {ts}");
    }
    assert_eq!(log.offset_for_timestamp(200).unwrap(), None);
    // The answer survives a reopen (sealed segments read through their map).
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.offset_for_timestamp(123).unwrap(), Some(123));
}
