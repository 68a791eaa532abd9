//! The checker's own tests ("tests for tests"): synthetic histories, each holding one anomaly,
//! must be reported as exactly that anomaly; a clean history must report none.

use super::availability::{check_availability, outages};
use super::checker::{Anomalies, check_safety};
use super::history::{BatchSummary, FaultRecord, History, MetaSample, Op, OpType, SECOND};

/// A history builder: writer 1 on partition 0 unless told otherwise.
#[derive(Default)]
struct H(History);

impl H {
    fn op(mut self, t_s: f64, kind: OpType, p: u32, value: u64, offset: Option<i64>) -> Self {
        self.0.ops.push(Op {
            t_ns: (t_s * SECOND as f64) as u64,
            process: 1,
            kind,
            partition: p,
            value,
            offset,
            err: None,
        });
        self
    }

    /// An invoke at `t_s` and an ok at `t_s + 0.01` for `value` at `offset`.
    fn acked(self, t_s: f64, p: u32, value: u64, offset: i64) -> Self {
        self.op(t_s, OpType::Invoke, p, value, None).op(
            t_s + 0.01,
            OpType::Ok,
            p,
            value,
            Some(offset),
        )
    }

    fn read(mut self, p: u32, records: &[(i64, u64)]) -> Self {
        self.0.final_reads.insert(p, records.to_vec());
        let hw = records.iter().map(|(o, _)| o + 1).max().unwrap_or(0);
        self.0.final_hw.insert(p, hw);
        self
    }

    fn hw(mut self, p: u32, hw: i64) -> Self {
        self.0.final_hw.insert(p, hw);
        self
    }

    fn anomalies(&self) -> Anomalies {
        check_safety(&self.0).anomalies
    }
}

/// Three values acked at offsets 0..3 of partition 0 and read back there.
fn clean() -> H {
    H::default()
        .acked(0.0, 0, 10, 0)
        .acked(0.1, 0, 11, 1)
        .acked(0.2, 0, 12, 2)
        .read(0, &[(0, 10), (1, 11), (2, 12)])
}

#[test]
fn a_clean_history_has_no_anomaly() {
    assert_eq!(clean().anomalies(), Anomalies::default());
    assert_eq!(check_safety(&clean().0).ops.acked, 3);
}

#[test]
fn an_acked_value_missing_from_the_final_read_is_lost() {
    let h = clean().read(0, &[(0, 10), (1, 11)]);
    let a = h.anomalies();
    assert_eq!(a.lost, 1);
    assert_eq!(a.total(), 1, "{a:?}");
    assert_eq!(check_safety(&h.0).examples.lost, vec![(0, 2, 12)]);
}

#[test]
fn a_value_read_twice_is_a_duplicate() {
    let a = clean()
        .read(0, &[(0, 10), (1, 11), (2, 12), (3, 11)])
        .anomalies();
    assert_eq!(a.duplicated, 1);
    assert_eq!(a.total(), 1, "{a:?}");
}

#[test]
fn two_values_at_one_offset_are_inconsistent() {
    // 13 was acked at offset 2, where the log holds 12.
    let a = clean().acked(0.3, 0, 13, 2).anomalies();
    assert_eq!(a.inconsistent_offsets, 1);
    assert_eq!(a.lost, 1, "13 is not in the final read either");
    assert_eq!(a.nonmonotonic_sends, 1, "offset 2 acked after 2");
}

#[test]
fn a_value_read_at_another_offset_than_acked_is_a_wrong_offset() {
    let a = clean()
        .acked(0.3, 0, 13, 7)
        .read(0, &[(0, 10), (1, 11), (2, 12), (3, 13)])
        .anomalies();
    assert_eq!(a.wrong_offset, 1);
    // Offset 7 holds 13 (the ack) while nothing was read there: no second value.
    assert_eq!(a.inconsistent_offsets, 0);
    assert_eq!(a.total(), 1, "{a:?}");
}

#[test]
fn offsets_missing_below_the_high_watermark_are_gaps() {
    let a = clean()
        .read(0, &[(0, 10), (1, 11), (2, 12)])
        .hw(0, 5)
        .anomalies();
    assert_eq!(a.gaps, 2);
    assert_eq!(a.total(), 2, "{a:?}");
}

#[test]
fn a_failed_send_that_is_visible_is_an_aborted_read() {
    let a = clean()
        .op(0.3, OpType::Invoke, 0, 13, None)
        .op(0.4, OpType::Fail, 0, 13, None)
        .read(0, &[(0, 10), (1, 11), (2, 12), (3, 13)])
        .anomalies();
    assert_eq!(a.aborted_reads, 1);
    assert_eq!(a.total(), 1, "{a:?}");
}

#[test]
fn an_indeterminate_send_may_or_may_not_be_visible() {
    let h = clean()
        .op(0.3, OpType::Invoke, 0, 13, None)
        .op(0.4, OpType::Info, 0, 13, None)
        .read(0, &[(0, 10), (1, 11), (2, 12), (3, 13)]);
    assert_eq!(h.anomalies(), Anomalies::default());
    assert_eq!(check_safety(&h.0).ops.indeterminate_visible, 1);
}

#[test]
fn offsets_going_backwards_for_one_writer_are_nonmonotonic() {
    let a = H::default()
        .acked(0.0, 0, 10, 1)
        .acked(0.1, 0, 11, 0)
        .read(0, &[(0, 11), (1, 10)])
        .anomalies();
    assert_eq!(a.nonmonotonic_sends, 1);
    assert_eq!(a.total(), 1, "{a:?}");
}

fn batch(base: i64, last: i64, crc: u32) -> BatchSummary {
    BatchSummary { base, last, crc }
}

fn with_replicas(replicas: &[(u32, Vec<BatchSummary>)]) -> H {
    let mut h = clean();
    h.0.replicas.insert(0, replicas.iter().cloned().collect());
    h
}

#[test]
fn identical_replicas_do_not_diverge() {
    let same = vec![batch(0, 1, 7), batch(2, 2, 8)];
    let h = with_replicas(&[(1, same.clone()), (2, same.clone()), (3, same)]);
    assert_eq!(h.anomalies(), Anomalies::default());
}

#[test]
fn a_replica_with_other_bytes_or_missing_batches_diverges() {
    let same = vec![batch(0, 1, 7), batch(2, 2, 8)];
    let other_crc = vec![batch(0, 1, 7), batch(2, 2, 9)];
    let short = vec![batch(0, 1, 7)];
    let h = with_replicas(&[(1, same.clone()), (2, other_crc), (3, same.clone())]);
    assert_eq!(h.anomalies().replica_divergence, 1);
    let h = with_replicas(&[(1, same.clone()), (2, same), (3, short)]);
    assert_eq!(h.anomalies().replica_divergence, 1);
    // Batches past the high watermark (3) do not count.
    let longer = vec![batch(0, 1, 7), batch(2, 2, 8), batch(3, 3, 1)];
    let also = vec![batch(0, 1, 7), batch(2, 2, 8)];
    assert_eq!(
        with_replicas(&[(1, longer), (2, also)]).anomalies().total(),
        0
    );
}

#[test]
fn a_send_outstanding_without_acks_for_a_second_is_an_outage() {
    let h = H::default()
        .acked(0.0, 0, 10, 0)
        .op(1.0, OpType::Invoke, 0, 11, None)
        .op(4.5, OpType::Ok, 0, 11, Some(1))
        .acked(4.6, 0, 12, 2)
        .op(5.0, OpType::Invoke, 0, 13, None)
        .op(5.5, OpType::Info, 0, 13, None);
    let o = outages(&h.0);
    assert_eq!(o.len(), 1, "{o:?}");
    assert!((o[0].start_s - 1.0).abs() < 1e-6 && (o[0].seconds - 3.5).abs() < 1e-6);
}

#[test]
fn recovery_fences_and_elections_are_measured_against_faults() {
    let mut h = H::default()
        .acked(0.0, 0, 10, 0)
        .op(1.0, OpType::Invoke, 0, 11, None)
        .op(6.0, OpType::Ok, 0, 11, Some(1))
        .acked(30.0, 0, 12, 2);
    h.0.faults.push(FaultRecord {
        index: 0,
        kind: "kill".into(),
        targets: vec![2],
        chosen_as: "leader of p0".into(),
        start_ns: SECOND,
        heal_ns: Some(3 * SECOND),
    });
    let sample = |t: u64, fenced: Vec<u32>, leader: u32, epoch: i32| MetaSample {
        t_ns: t * SECOND,
        controller: 1,
        fenced,
        partitions: vec![super::history::PartitionView {
            leader,
            epoch,
            isr: vec![leader],
        }],
    };
    h.0.meta = vec![
        sample(0, vec![], 2, 1),
        sample(2, vec![2], 1, 2), // explained: broker 2 was killed
        sample(4, vec![], 1, 2),
        sample(40, vec![3], 3, 3), // spurious fence and election: no fault near
    ];
    h.0.end_ns = 31 * SECOND;
    let a = check_availability(&h.0, 3 * SECOND);
    assert_eq!((a.fence_events, a.spurious_fences), (2, 1));
    assert_eq!((a.leader_changes, a.spurious_elections), (2, 1));
    assert_eq!(a.faults, 1);
    let r = &a.recoveries[0];
    assert!((r.from_start_s - 5.0).abs() < 1e-6, "{r:?}");
    assert!((r.after_heal_s - 3.0).abs() < 1e-6, "{r:?}");
}
