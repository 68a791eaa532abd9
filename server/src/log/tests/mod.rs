//! Tests of the whole `Log`: unit tests of its API here, the model-based property test in
//! `model`, damage and recovery in `corruption`, group commit and fsync failure in `durability`.

mod corruption;
mod durability;
mod model;
mod time;

use std::path::Path;

use bytes::Bytes;
use cairn_batch::{BatchBuilder, Record};

use super::*;

/// A batch of one record per value, all with timestamp `ts`.
pub(super) fn batch(values: &[&[u8]], ts: i64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(&Record {
            timestamp: ts,
            key: None,
            value: Bytes::copy_from_slice(value),
            headers: Vec::new(),
        });
    }
    builder.finish()
}

/// A batch of `n` records of `size` bytes each, values derived from `seed`.
pub(super) fn sized_batch(n: usize, size: usize, seed: u8, ts: i64) -> Bytes {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| vec![seed.wrapping_add(i as u8); size])
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    batch(&refs, ts)
}

/// Small segments and indexes so that rolls and index entries happen in small tests.
pub(super) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: None,
        index_interval_bytes: 100,
        max_index_bytes: 240,
        retention_ms: None,
        retention_bytes: None,
        fsync: FsyncPolicy::Never,
        max_batch_bytes: 64 * 1024,
    }
}

/// Every record in `records` (concatenated batches): offset and value. Checks every CRC.
pub(super) fn decode(records: &Bytes) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for batch in cairn_batch::batches(records) {
        let batch = batch.expect("whole batches");
        cairn_batch::validate(&batch, usize::MAX).expect("served batches are intact");
        for record in cairn_batch::records(&batch) {
            let (offset, record) = record.expect("valid record");
            out.push((offset, record.value.to_vec()));
        }
    }
    out
}

/// Reads the whole log from its start, batch by batch.
pub(super) fn read_all(log: &Log) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let result = log.read(offset, 1 << 20, None).expect("read in range");
        if result.records.is_empty() {
            assert_eq!(offset, result.log_end_offset, "empty only at the end");
            return out;
        }
        out.extend(decode(&result.records));
        offset = result.next_offset;
    }
}

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config).expect("open")
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[test]
fn append_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let a = log.append(batch(&[b"a", b"b"], 10), 3).unwrap();
    assert_eq!(
        a,
        AppendInfo {
            base_offset: 0,
            last_offset: 1,
            max_timestamp: 10,
            log_end_offset: 2
        }
    );
    let b = log.append(batch(&[b"c"], 20), 3).unwrap();
    assert_eq!((b.base_offset, b.log_end_offset), (2, 3));

    let result = log.read(0, 1 << 20, None).unwrap();
    assert_eq!(result.next_offset, 3);
    assert_eq!((result.log_start_offset, result.log_end_offset), (0, 3));
    let first = cairn_batch::batches(&result.records)
        .next()
        .unwrap()
        .unwrap();
    let header = cairn_batch::peek_header(&first).unwrap();
    assert_eq!((header.base_offset, header.leader_epoch), (0, 3), "stamped");
    assert_eq!(
        decode(&result.records),
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
    );
    // An offset inside a batch returns the whole batch.
    assert_eq!(decode(&log.read(1, 1, None).unwrap().records)[0].0, 0);
}

#[test]
fn reads_respect_max_bytes_and_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let one = sized_batch(2, 50, 0, 1);
    for _ in 0..5 {
        log.append(one.clone(), 0).unwrap();
    }
    let len = one.len();
    let r = log.read(0, len * 2 + len / 2, None).unwrap();
    assert_eq!(
        (r.records.len(), r.next_offset),
        (2 * len, 4),
        "whole batches only"
    );
    let r = log.read(0, 1, None).unwrap();
    assert_eq!(
        (r.records.len(), r.next_offset),
        (len, 2),
        "at least one batch"
    );
    let r = log.read(0, 1 << 20, Some(5)).unwrap();
    assert_eq!(
        r.next_offset, 4,
        "the batch holding offset 5 reaches the bound"
    );
    let r = log.read(4, 1 << 20, Some(5)).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.next_offset, 4);
    let r = log.read(10, 1 << 20, None).unwrap();
    assert!(r.records.is_empty(), "the log end reads empty");
    assert_eq!((r.next_offset, r.log_end_offset), (10, 10));
}

#[test]
fn out_of_range_offsets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    log.append(batch(&[b"x"], 1), 0).unwrap();
    for offset in [-1, 2, i64::MAX] {
        match log.read(offset, 100, None) {
            Err(LogError::OffsetOutOfRange {
                start: 0, end: 1, ..
            }) => {}
            other => panic!("offset {offset}: {other:?}"),
        }
    }
}

#[test]
fn invalid_batches_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let mut bad = batch(&[b"x"], 1).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(
        log.append(Bytes::from(bad), 0),
        Err(LogError::InvalidBatch(_))
    ));
    let big = sized_batch(1, 70 * 1024, 0, 1);
    assert!(matches!(
        log.append(big, 0),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
}

#[test]
fn segments_roll_at_size_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let mut expected = Vec::new();
    for i in 0..40u8 {
        log.append(sized_batch(1, 100, i, i64::from(i)), 0).unwrap();
        expected.push((i64::from(i), vec![i; 100]));
    }
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= 1024, "{} is {len} bytes", path.display());
        }
    }
    assert_eq!(read_all(&log), expected);
    for (offset, value) in &expected {
        let r = log.read(*offset, 1, None).unwrap();
        assert_eq!(decode(&r.records), vec![(*offset, value.clone())]);
    }
}

#[test]
fn an_oversized_batch_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    log.append(sized_batch(1, 10, 0, 0), 0).unwrap();
    log.append(sized_batch(1, 4000, 1, 0), 0).unwrap();
    log.append(sized_batch(1, 10, 2, 0), 0).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log).len(), 3);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: Some(0),
        ..small_config()
    };
    let log = open(dir.path(), config);
    for _ in 0..3 {
        log.append(batch(&[b"x"], 0), 0).unwrap();
    }
    assert_eq!(
        log.segment_count(),
        3,
        "each append finds the segment too old"
    );
}

#[test]
fn roll_is_a_no_op_on_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    log.roll().unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(batch(&[b"x"], 0), 0).unwrap();
    log.roll().unwrap();
    log.roll().unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log), vec![(0, b"x".to_vec())]);
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    // Timestamps 0, 10, 20, ... with one out-of-order batch; several segments.
    for i in 0..30i64 {
        let ts = if i == 15 { 5 } else { i * 10 };
        log.append(sized_batch(1, 60, i as u8, ts), 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(-5).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1).unwrap(), Some(1));
    assert_eq!(log.offset_for_timestamp(100).unwrap(), Some(10));
    assert_eq!(log.offset_for_timestamp(101).unwrap(), Some(11));
    assert_eq!(log.offset_for_timestamp(290).unwrap(), Some(29));
    assert_eq!(log.offset_for_timestamp(291).unwrap(), None);
}

#[test]
fn retention_deletes_old_and_excess_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(1_000),
        ..small_config()
    };
    let log = open(dir.path(), config);
    for i in 0..20i64 {
        log.append(sized_batch(1, 200, i as u8, i * 100), 0)
            .unwrap();
    }
    let segments = log.segment_count();
    assert!(segments >= 4);
    assert_eq!(log.apply_retention(0).unwrap(), 0, "nothing is old yet");
    let deleted = log.apply_retention(1_000 + 1_000).unwrap();
    assert!(deleted > 0);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        log.read(0, 1, None),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log).first().unwrap().0, start);
    let sealed = log.segment_count() - 1;
    assert_eq!(log.apply_retention(i64::MAX).unwrap(), sealed);
    assert_eq!(log.segment_count(), 1, "the active segment stays");
    assert_eq!(log.log_end_offset(), 20);
}

#[test]
fn deleting_below_an_offset_keeps_the_segment_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    for i in 0..20i64 {
        log.append(sized_batch(1, 200, i as u8, i * 100), 0)
            .unwrap();
    }
    assert!(log.segment_count() >= 4);
    assert_eq!(log.delete_segments_below(0).unwrap(), 0);
    let deleted = log.delete_segments_below(9).unwrap();
    assert!(deleted > 0);
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 9, "start {start}");
    assert_eq!(read_all(&log).first().unwrap().0, start);
    assert_eq!(read_all(&log).len() as i64, 20 - start);
    // Reopening finds the same start; past the end only sealed segments go.
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), start);
    log.delete_segments_below(i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1, "the active segment stays");
    assert_eq!(log.log_end_offset(), 20);
}

#[test]
fn size_retention_keeps_at_least_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(2_000),
        ..small_config()
    };
    let log = open(dir.path(), config);
    for i in 0..30i64 {
        log.append(sized_batch(1, 200, i as u8, 0), 0).unwrap();
    }
    assert!(log.apply_retention(0).unwrap() > 0);
    assert!(log.size_bytes() >= 2_000);
    assert!(
        log.size_bytes() < 2_000 + 1_024,
        "within one segment of the limit"
    );
}

#[test]
fn truncate_drops_whole_batches_and_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    for i in 0..20u8 {
        log.append(sized_batch(2, 100, i, 0), 0).unwrap();
    }
    let segments = log.segment_count();
    log.truncate_to(41).unwrap();
    assert_eq!(log.log_end_offset(), 40, "no-op at or past the end");
    log.truncate_to(13).unwrap();
    assert_eq!(
        log.log_end_offset(),
        12,
        "offset 13 is inside batch 12..=13"
    );
    assert!(log.segment_count() < segments);
    assert_eq!(read_all(&log).len(), 12);
    let info = log.append(batch(&[b"new"], 0), 1).unwrap();
    assert_eq!(info.base_offset, 12);
    assert_eq!(read_all(&log).last().unwrap(), &(12, b"new".to_vec()));
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(read_all(&log).is_empty());
}

#[test]
fn replicated_appends_must_be_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"), small_config());
    for i in 0..12u8 {
        leader
            .append(sized_batch(2, 90, i, i64::from(i)), 7)
            .unwrap();
    }
    let follower = open(&dir.path().join("follower"), small_config());
    let fetched = leader.read(0, 1 << 20, None).unwrap();
    let info = follower.append_replicated(fetched.records.clone()).unwrap();
    assert_eq!(info.base_offset, 0);
    assert_eq!(info.log_end_offset, fetched.next_offset);
    assert!(matches!(
        follower.append_replicated(fetched.records.clone()),
        Err(LogError::NonContiguous { expected, got: 0 }) if expected == fetched.next_offset
    ));
    let mut offset = fetched.next_offset;
    while offset < leader.log_end_offset() {
        let more = leader.read(offset, 300, None).unwrap();
        follower.append_replicated(more.records).unwrap();
        offset = more.next_offset;
    }
    assert_eq!(read_all(&follower), read_all(&leader));
    assert!(follower.segment_count() > 1);
    // Leader epochs are kept as the leader stamped them.
    let r = follower.read(0, 1, None).unwrap();
    assert_eq!(
        cairn_batch::peek_header(&r.records).unwrap().leader_epoch,
        7
    );
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    for i in 0..25u8 {
        log.append(sized_batch(1, 120, i, i64::from(i)), 0).unwrap();
    }
    let before = read_all(&log);
    let segments = log.segment_count();
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(read_all(&log), before);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.offset_for_timestamp(20).unwrap(), Some(20));
    assert_eq!(log.append(batch(&[b"z"], 0), 0).unwrap().base_offset, 25);
}

#[test]
fn foreign_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    std::fs::write(dir.path().join("garbage.log"), b"hello").unwrap();
    std::fs::write(dir.path().join("00000000000000000099.index"), b"orphan").unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 0);
    assert!(!dir.path().join("00000000000000000099.index").exists());
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    assert!(matches!(
        Log::open(dir.path(), config),
        Err(LogError::InvalidConfig { .. })
    ));
}

#[test]
fn sealed_reads_are_slices_of_one_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    for i in 0..20u8 {
        log.append(sized_batch(1, 100, i, 0), 0).unwrap();
    }
    let a = log.read(0, 1 << 20, None).unwrap().records;
    let b = log.read(0, 1 << 20, None).unwrap().records;
    assert_eq!(
        a.as_ptr(),
        b.as_ptr(),
        "no copy: both point into the segment's map"
    );
}

#[test]
fn readers_keep_their_bytes_across_truncation_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(1),
        ..small_config()
    };
    let log = open(dir.path(), config);
    for i in 0..20u8 {
        log.append(sized_batch(1, 100, i, 0), 0).unwrap();
    }
    let held = log.read(0, 1 << 20, None).unwrap().records;
    let before = decode(&held);
    assert!(before.len() > 1);
    // Cuts inside the first (sealed, mapped) segment: it is rewritten, not shortened in place.
    log.truncate_to(1).unwrap();
    assert_eq!(
        decode(&held),
        before,
        "the held slice still reads the old bytes"
    );
    assert_eq!(read_all(&log), vec![(0, vec![0u8; 100])]);
    for i in 1..20u8 {
        log.append(sized_batch(1, 100, i + 100, 0), 0).unwrap();
    }
    let held = log.read(0, 1 << 20, None).unwrap().records;
    let before = decode(&held);
    assert!(log.apply_retention(i64::MAX).unwrap() > 0);
    assert_eq!(
        decode(&held),
        before,
        "deleted segments stay readable to holders"
    );
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 20);
}

#[test]
fn reset_to_restarts_the_log_empty_at_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    for i in 0..20u8 {
        log.append(sized_batch(1, 100, i, 0), 0).unwrap();
    }
    log.reset_to(1_000).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (1_000, 1_000)
    );
    assert_eq!(log.segment_count(), 1);
    assert!(matches!(
        log.read(5, 100, None),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.append(batch(&[b"x"], 0), 0).unwrap().base_offset, 1_000);
    log.reset_to(3).unwrap();
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 3));
    assert_eq!(log.append(batch(&[b"y"], 0), 0).unwrap().base_offset, 3);
    assert_eq!(read_all(&log), vec![(3, b"y".to_vec())]);
}
