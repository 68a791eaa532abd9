//! Table tests of the producer state, and its persistence against a real log.

use bytes::Bytes;
use cairn_batch::{BatchBuilder, BatchHeader, Record};

use super::snapshot::{decode, encode, parse_snapshot_name, snapshot_name};
use super::*;
use crate::log::{Log, LogConfig};

const PID: i64 = 7;

/// A header of `count` records from producer `pid` at `epoch`, first sequence `seq`, at `base`.
fn header(pid: i64, epoch: i16, seq: i32, count: i32, base: i64) -> BatchHeader {
    let mut h = cairn_batch::peek_header(&batch(pid, epoch, seq, count)).expect("a valid batch");
    h.base_offset = base;
    h
}

fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
    let mut b = BatchBuilder::new().producer(pid, epoch, seq);
    for i in 0..count {
        b.push(&Record {
            timestamp: 1_700_000_000_000 + i64::from(i),
            key: None,
            value: Bytes::from(format!("v{seq}-{i}")),
            headers: vec![],
        });
    }
    b.finish()
}

/// A state where producer `PID` (epoch 0) appended batches of 2 records, sequences 0..2n,
/// at offsets 0..2n.
fn with_batches(n: i32) -> ProducerStates {
    let mut s = ProducerStates::new(0);
    for i in 0..n {
        let h = header(PID, 0, 2 * i, 2, i64::from(2 * i));
        assert_eq!(s.check(&h), Ok(Verdict::Append), "batch {i}");
        s.record(&h);
    }
    s
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(next_seq(0), 1);
    assert_eq!(next_seq(i32::MAX - 1), i32::MAX);
    assert_eq!(next_seq(i32::MAX), 0);
    assert_eq!(last_seq(0, 0), 0);
    assert_eq!(last_seq(5, 4), 9);
    assert_eq!(last_seq(i32::MAX, 0), i32::MAX);
    assert_eq!(last_seq(i32::MAX, 1), 0);
    assert_eq!(last_seq(i32::MAX - 1, 3), 1);
}

#[test]
fn each_of_the_last_five_batches_is_a_duplicate_with_its_first_offsets() {
    let s = with_batches(8);
    // Batches 3..8 are remembered; 0..3 are not.
    for i in 3..8 {
        let h = header(PID, 0, 2 * i, 2, 99);
        assert_eq!(
            s.check(&h),
            Ok(Verdict::Duplicate {
                base_offset: i64::from(2 * i),
                last_offset: i64::from(2 * i + 1),
            }),
            "batch {i}"
        );
    }
    for i in 0..3 {
        let h = header(PID, 0, 2 * i, 2, 99);
        assert_eq!(
            s.check(&h),
            Err(SequenceError::OutOfOrder {
                producer_id: PID,
                epoch: 0,
                expected: 16,
                got: 2 * i,
            }),
            "batch {i} is older than the remembered ones"
        );
    }
}

#[test]
fn the_table() {
    let s = with_batches(3); // last sequence 5, epoch 0
    let cases: &[(&str, BatchHeader, Result<Verdict, SequenceError>)] = &[
        (
            "next in sequence",
            header(PID, 0, 6, 3, 6),
            Ok(Verdict::Append),
        ),
        (
            "a gap",
            header(PID, 0, 7, 1, 6),
            Err(SequenceError::OutOfOrder {
                producer_id: PID,
                epoch: 0,
                expected: 6,
                got: 7,
            }),
        ),
        (
            "overlapping but not equal to a remembered batch",
            header(PID, 0, 4, 1, 6),
            Err(SequenceError::OutOfOrder {
                producer_id: PID,
                epoch: 0,
                expected: 6,
                got: 4,
            }),
        ),
        (
            "an older epoch",
            header(PID, -1, 6, 1, 6),
            Err(SequenceError::InvalidEpoch {
                producer_id: PID,
                epoch: -1,
                current: 0,
            }),
        ),
        (
            "a new epoch at sequence 0",
            header(PID, 1, 0, 1, 6),
            Ok(Verdict::Append),
        ),
        (
            "a new epoch not at sequence 0",
            header(PID, 1, 6, 1, 6),
            Err(SequenceError::OutOfOrder {
                producer_id: PID,
                epoch: 1,
                expected: 0,
                got: 6,
            }),
        ),
        (
            "an unknown producer at 0",
            header(8, 0, 0, 4, 6),
            Ok(Verdict::Append),
        ),
        (
            "an unknown producer not at 0",
            header(8, 0, 3, 1, 6),
            Err(SequenceError::UnknownProducer {
                producer_id: 8,
                sequence: 3,
            }),
        ),
        (
            "no producer id",
            header(-1, -1, -1, 1, 6),
            Ok(Verdict::Append),
        ),
    ];
    for (name, h, want) in cases {
        assert_eq!(&s.check(h), want, "{name}");
    }
}

#[test]
fn a_new_epoch_forgets_the_old_batches() {
    let mut s = with_batches(2);
    let h = header(PID, 1, 0, 2, 4);
    s.record(&h);
    assert_eq!(s.get(PID).map(|e| e.batches.len()), Some(1));
    // The old epoch's batch at sequence 0 is now fenced, not a duplicate.
    assert!(matches!(
        s.check(&header(PID, 0, 0, 2, 6)),
        Err(SequenceError::InvalidEpoch { .. })
    ));
    assert_eq!(
        s.check(&header(PID, 1, 0, 2, 6)),
        Ok(Verdict::Duplicate {
            base_offset: 4,
            last_offset: 5
        })
    );
}

#[test]
fn sequences_continue_across_the_wrap() {
    let mut s = ProducerStates::new(0);
    s.record(&header(PID, 0, i32::MAX - 2, 5, 0)); // MAX-2 ..= 1
    assert_eq!(s.get(PID).and_then(ProducerEntry::last_seq), Some(1));
    assert_eq!(s.check(&header(PID, 0, 2, 1, 5)), Ok(Verdict::Append));
    assert_eq!(
        s.check(&header(PID, 0, i32::MAX - 2, 5, 5)),
        Ok(Verdict::Duplicate {
            base_offset: 0,
            last_offset: 4
        })
    );
    assert!(s.check(&header(PID, 0, 0, 1, 5)).is_err());
}

#[test]
fn followers_record_without_checking() {
    // A follower takes the leader's batches as they come, even ones its own check would refuse
    // (a sequence it never saw the start of), and then judges the next one as the leader did.
    let mut s = ProducerStates::new(100);
    s.record(&header(PID, 3, 40, 2, 100));
    s.record(&header(-1, -1, -1, 1, 102));
    s.record(&header(PID, 3, 42, 1, 103));
    assert_eq!(s.end_offset(), 104);
    assert_eq!(s.check(&header(PID, 3, 43, 1, 104)), Ok(Verdict::Append));
    assert_eq!(
        s.check(&header(PID, 3, 40, 2, 104)),
        Ok(Verdict::Duplicate {
            base_offset: 100,
            last_offset: 101
        })
    );
    // A batch already recorded is not recorded twice (replay after a snapshot).
    s.record(&header(PID, 3, 42, 1, 103));
    assert_eq!(s.get(PID).map(|e| e.batches.len()), Some(2));
}

#[test]
fn expiry_forgets_producers_without_batches_in_the_log() {
    let mut s = ProducerStates::new(0);
    s.record(&header(1, 0, 0, 2, 0));
    s.record(&header(2, 0, 0, 2, 2));
    s.record(&header(1, 0, 2, 2, 4));
    assert_eq!(s.expire_before(4), 1);
    assert!(s.get(2).is_none());
    assert!(s.get(1).is_some());
    assert_eq!(s.expire_before(4), 0);
}

#[test]
fn snapshots_round_trip_and_refuse_damage() {
    let mut s = with_batches(7);
    s.record(&header(9, 2, 0, 1, 14));
    let bytes = encode(&s);
    assert_eq!(decode(&bytes), Some(s.clone()));
    assert_eq!(
        decode(&encode(&ProducerStates::new(42))),
        Some(ProducerStates::new(42))
    );
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert_eq!(decode(&bad), None, "a flipped bit at {i}");
    }
    assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    assert_eq!(decode(&[]), None);
    assert_eq!(snapshot_name(42), "00000000000000000042.snapshot");
    assert_eq!(parse_snapshot_name(&snapshot_name(42)), Some(42));
    assert_eq!(parse_snapshot_name("00000000000000000042.log"), None);
    assert_eq!(parse_snapshot_name("42.snapshot"), None);
}

// ---- against a real log ----

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        ..LogConfig::default()
    }
}

/// Appends like the leader does: check and record under the log's lock, snapshot after a roll.
fn leader_append(log: &Log, m: &ProducerStateManager, b: Bytes) -> Result<(i64, i64), Refusal> {
    let r = log
        .append_with(b, 0, |h| m.admit(h), |h| m.record(std::slice::from_ref(h)))
        .expect("the log appends");
    m.snapshot_if_rolled(log);
    r.map(|i| (i.base_offset, i.last_offset))
        .or_else(|refusal| match refusal {
            Refusal::Duplicate {
                base_offset,
                last_offset,
            } => Ok((base_offset, last_offset)),
            other => Err(other),
        })
}

fn snapshots(dir: &std::path::Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| parse_snapshot_name(e.unwrap().file_name().to_str()?))
        .collect();
    v.sort();
    v
}

#[test]
fn restart_replays_across_a_segment_roll() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(600)).unwrap();
    let m = ProducerStateManager::open(&log).unwrap();
    let mut offsets = Vec::new();
    for i in 0..20 {
        offsets.push(leader_append(&log, &m, batch(PID, 0, 3 * i, 3)).unwrap());
    }
    assert!(log.segment_count() > 2, "the log rolled");
    assert!(!snapshots(dir.path()).is_empty(), "a roll wrote a snapshot");
    // A retry of the last batch, and a gap, before and after a restart without a clean close.
    assert_eq!(
        leader_append(&log, &m, batch(PID, 0, 57, 3)),
        Ok(offsets[19])
    );
    let before = m.current();
    drop(m);
    drop(log);
    let log = Log::open(dir.path(), config(600)).unwrap();
    let m = ProducerStateManager::open(&log).unwrap();
    assert_eq!(
        m.current(),
        before,
        "snapshot + replay gives the same state"
    );
    for i in 15..20 {
        assert_eq!(
            leader_append(&log, &m, batch(PID, 0, 3 * i, 3)),
            Ok(offsets[i as usize])
        );
    }
    assert!(matches!(
        leader_append(&log, &m, batch(PID, 0, 61, 3)),
        Err(Refusal::Sequence(SequenceError::OutOfOrder {
            expected: 60,
            ..
        }))
    ));
    assert_eq!(
        log.log_end_offset(),
        60,
        "duplicates and refusals wrote nothing"
    );
    // And from the log alone, with every snapshot gone.
    for s in snapshots(dir.path()) {
        std::fs::remove_file(dir.path().join(snapshot_name(s))).unwrap();
    }
    let again = ProducerStateManager::open(&log).unwrap();
    assert_eq!(again.current(), before);
}

#[test]
fn truncation_forgets_the_batches_cut_away() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(600)).unwrap();
    let m = ProducerStateManager::open(&log).unwrap();
    for i in 0..20 {
        leader_append(&log, &m, batch(PID, 0, 3 * i, 3)).unwrap();
    }
    m.snapshot_now(&log);
    assert_eq!(snapshots(dir.path()).last(), Some(&60));
    // Cut back to offset 30: sequences 30.. are gone, the snapshot at 60 with them.
    log.truncate_to(30).unwrap();
    m.rebuild(&log).unwrap();
    assert!(snapshots(dir.path()).iter().all(|&s| s <= 30));
    assert_eq!(m.current().end_offset(), 30);
    assert_eq!(
        m.current().get(PID).and_then(ProducerEntry::last_seq),
        Some(29)
    );
    // Sequence 30 is new again, not a duplicate; 27 still is.
    assert_eq!(leader_append(&log, &m, batch(PID, 0, 27, 3)), Ok((27, 29)));
    assert_eq!(leader_append(&log, &m, batch(PID, 0, 30, 3)), Ok((30, 32)));
    // An emptied log knows no producer.
    log.reset_to(100).unwrap();
    m.reset(100).unwrap();
    assert!(snapshots(dir.path()).is_empty());
    assert_eq!(
        leader_append(&log, &m, batch(PID, 0, 33, 3)),
        Err(Refusal::Sequence(SequenceError::UnknownProducer {
            producer_id: PID,
            sequence: 33
        }))
    );
}

#[test]
fn followers_build_the_same_state_from_replicated_batches() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = Log::open(leader_dir.path(), config(600)).unwrap();
    let follower = Log::open(follower_dir.path(), config(600)).unwrap();
    let lm = ProducerStateManager::open(&leader).unwrap();
    let fm = ProducerStateManager::open(&follower).unwrap();
    for i in 0..12 {
        leader_append(&leader, &lm, batch(PID, 0, 2 * i, 2)).unwrap();
        leader_append(&leader, &lm, batch(PID + 1, 4, i, 1)).unwrap();
    }
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let read = leader.read(offset, 1 << 20, None).unwrap();
        follower
            .append_replicated_with(read.records, |hs| fm.record(hs))
            .unwrap();
        fm.snapshot_if_rolled(&follower);
        offset = read.next_offset;
    }
    assert_eq!(fm.current(), lm.current());
    // The follower, become leader, spots a retry of the old leader's last batch.
    assert_eq!(
        leader_append(&follower, &fm, batch(PID, 0, 22, 2)),
        leader_append(&leader, &lm, batch(PID, 0, 22, 2))
    );
}
