//! Unit and property tests of the batch format.

use super::*;
use proptest::prelude::*;

fn rec(ts: i64, key: Option<&str>, value: &str, headers: &[(&str, &str)]) -> Record {
    Record {
        timestamp: ts,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
    }
}

fn sample() -> Vec<Record> {
    vec![
        rec(1_700_000_000_000, Some("k1"), "hello", &[("h", "v")]),
        rec(1_700_000_000_005, None, "", &[]),
        rec(
            1_699_999_999_000,
            Some(""),
            "world",
            &[("a", ""), ("a", "x")],
        ),
    ]
}

#[test]
fn round_trip_keeps_every_field() {
    let records = sample();
    let batch = encode(&records);
    let header = validate(&batch, usize::MAX).unwrap();
    assert_eq!(header.record_count, 3);
    assert_eq!(header.last_offset_delta, 2);
    assert_eq!(header.first_timestamp, 1_700_000_000_000);
    assert_eq!(header.max_timestamp, 1_700_000_000_005);
    assert_eq!(header.total_len(), batch.len());
    let decoded: Vec<_> = records_of(&batch);
    assert_eq!(
        decoded.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(
        decoded.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        records
    );
}

fn records_of(batch: &Bytes) -> Vec<(i64, Record)> {
    records(batch).collect::<Result<_, _>>().unwrap()
}

#[test]
fn stamping_keeps_the_crc_valid_and_shifts_offsets() {
    let mut batch = encode(&sample()).to_vec();
    stamp(&mut batch, 42, 7);
    let header = validate(&batch, usize::MAX).unwrap();
    assert_eq!((header.base_offset, header.leader_epoch), (42, 7));
    let offsets: Vec<_> = records_of(&Bytes::from(batch))
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(offsets, [42, 43, 44]);
}

#[test]
fn with_producer_rewrites_the_fields_and_the_crc() {
    let mut b = BatchBuilder::new().producer(9, 3, 100);
    for r in sample() {
        b.push(&r);
    }
    let original = b.finish();
    let moved = with_producer(&original, 11, 0, 0);
    let h = validate(&moved, usize::MAX).unwrap();
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (11, 0, 0)
    );
    assert_eq!(records_of(&moved), records_of(&original));
    assert_eq!(moved[HEADER_LEN..], original[HEADER_LEN..]);
}

#[test]
fn producer_fields_are_carried() {
    let mut b = BatchBuilder::new().producer(9, 3, 100);
    b.push(&rec(1, None, "x", &[]));
    let h = validate(&b.finish(), usize::MAX).unwrap();
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (9, 3, 100)
    );
}

#[test]
fn size_predicts_the_encoded_length() {
    let mut b = BatchBuilder::new();
    for r in sample() {
        let before = b.size();
        let predicted = b.record_size(&r);
        b.push(&r);
        assert_eq!(b.size() - before, predicted);
    }
    let size = b.size();
    assert_eq!(b.finish().len(), size);
}

#[test]
fn every_flipped_byte_after_the_length_is_caught() {
    let batch = encode(&sample());
    // Flipping any byte covered by the CRC must fail validation.
    for i in CRC_START..batch.len() {
        let mut bad = batch.to_vec();
        bad[i] ^= 0x01;
        assert!(
            validate(&bad, usize::MAX).is_err(),
            "flip at {i} went unnoticed"
        );
    }
    // And flipping a CRC byte too.
    let mut bad = batch.to_vec();
    bad[CRC_OFFSET] ^= 0x80;
    assert!(matches!(
        validate(&bad, usize::MAX),
        Err(BatchError::CrcMismatch { .. })
    ));
}

#[test]
fn truncated_input_is_rejected_at_every_length() {
    let batch = encode(&sample());
    for len in 0..batch.len() {
        assert!(validate(&batch[..len], usize::MAX).is_err(), "len {len}");
    }
}

#[test]
fn size_limit_is_enforced_before_parsing() {
    let batch = encode(&sample());
    assert_eq!(
        validate(&batch, batch.len() - 1),
        Err(BatchError::TooLarge {
            size: batch.len(),
            max: batch.len() - 1
        })
    );
}

/// Rewrites the header field at `at` and fixes the CRC, so that only the field's meaning is wrong.
fn with_field(batch: &Bytes, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = crc32fast::hash(&b[CRC_START..]);
    b[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn absurd_lengths_and_counts_are_rejected() {
    let batch = encode(&sample());
    // A batch length claiming 2 GiB.
    let huge = with_field(&batch, 8, &i32::MAX.to_be_bytes());
    assert!(matches!(
        validate(&huge, usize::MAX),
        Err(BatchError::BadLength { .. })
    ));
    // A negative batch length.
    let neg = with_field(&batch, 8, &(-5i32).to_be_bytes());
    assert!(matches!(
        peek_header(&neg),
        Err(BatchError::BadLength { .. })
    ));
    // A record count of a billion (with a consistent delta) must not be walked or allocated.
    let mut many = with_field(&batch, 57, &1_000_000_000i32.to_be_bytes());
    many = with_field(&Bytes::from(many), 23, &999_999_999i32.to_be_bytes());
    assert!(matches!(
        validate(&many, usize::MAX),
        Err(BatchError::BadRecordCount { .. })
    ));
    // Zero and negative counts.
    for count in [0i32, -1] {
        let b = with_field(&batch, 57, &count.to_be_bytes());
        assert!(matches!(
            validate(&b, usize::MAX),
            Err(BatchError::BadRecordCount { .. })
        ));
    }
    // Count disagreeing with the offset delta.
    let b = with_field(&batch, 57, &2i32.to_be_bytes());
    assert!(matches!(
        validate(&b, usize::MAX),
        Err(BatchError::BadRecordCount { .. })
    ));
    // Wrong magic.
    let b = with_field(&batch, 16, &[1]);
    assert_eq!(validate(&b, usize::MAX), Err(BatchError::BadMagic(1)));
}

#[test]
fn a_record_claiming_a_huge_value_is_rejected_without_allocating() {
    // One record whose value length varint claims 2^40 bytes.
    let mut body = Vec::new();
    let mut rec = Vec::new();
    rec.push(0u8); // attributes
    varint::put_varint(&mut rec, 0); // ts delta
    varint::put_varint(&mut rec, 0); // offset delta
    varint::put_varint(&mut rec, -1); // no key
    varint::put_varint(&mut rec, 1 << 40); // value length
    varint::put_varint(&mut body, rec.len() as i64);
    body.extend_from_slice(&rec);
    let template = encode(&[rec_one()]);
    let mut b = template[..HEADER_LEN].to_vec();
    b.extend_from_slice(&body);
    let len = (b.len() - LENGTH_PREFIX) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&b[CRC_START..]);
    b[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        validate(&b, usize::MAX),
        Err(BatchError::BadRecord { index: 0, .. })
    ));
    // The decoder reports it too, rather than panicking.
    let mut it = records(&Bytes::from(b));
    assert!(matches!(it.next(), Some(Err(BatchError::BadRecord { .. }))));
    assert!(it.next().is_none());
}

fn rec_one() -> Record {
    rec(5, None, "v", &[])
}

#[test]
fn batches_splits_concatenated_batches_and_stops_at_a_torn_one() {
    let a = encode(&sample());
    let b = encode(&[rec_one()]);
    let mut joined = a.to_vec();
    joined.extend_from_slice(&b);
    joined.extend_from_slice(&a[..30]);
    let parts: Vec<_> = batches(&Bytes::from(joined)).collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].as_ref().unwrap(), &a);
    assert_eq!(parts[1].as_ref().unwrap(), &b);
    assert!(matches!(parts[2], Err(BatchError::Truncated { .. })));
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        0i64..2_000_000_000_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(
            ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..20)),
            0..4,
        ),
    )
        .prop_map(|(timestamp, key, value, headers)| Record {
            timestamp,
            key: key.map(Bytes::from),
            value: Bytes::from(value),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v)))
                .collect(),
        })
}

proptest! {
    #[test]
    fn any_records_round_trip(records in proptest::collection::vec(arb_record(), 1..20)) {
        let batch = encode(&records);
        let header = validate(&batch, usize::MAX).unwrap();
        prop_assert_eq!(header.record_count as usize, records.len());
        let decoded: Vec<Record> = records_of(&batch).into_iter().map(|(_, r)| r).collect();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = validate(&bytes, usize::MAX);
        let buf = Bytes::from(bytes);
        for r in records(&buf) { let _ = r; }
        for b in batches(&buf) { let _ = b; }
    }
}
