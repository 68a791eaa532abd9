//! Model-based property test (sled's and redpanda's idea): random operations run against the
//! real log and against a plain in-memory model, which must agree after every step.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch with these value sizes; the clock moves `ts_step` ms first.
    Append {
        sizes: Vec<usize>,
        ts_step: i64,
    },
    /// Append several leader-stamped batches at once, as a follower does.
    Replicate {
        batches: Vec<Vec<usize>>,
        ts_step: i64,
    },
    /// Read at `start + pick % (len + 3) - 1` (so sometimes out of range).
    Read {
        pick: u16,
        max_bytes: usize,
    },
    Roll,
    /// Truncate at `start + pick % (len + 2)`, or below the start if `below`.
    Truncate {
        pick: u16,
        below: bool,
    },
    /// Apply retention with this `retention_bytes`.
    RetainBytes(u64),
    /// Apply retention with this `retention_ms`, at the model's current clock.
    RetainMs(u64),
    /// Close (clean) or drop (crash) and reopen.
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(0usize..120, 1..5), 0i64..50)
            .prop_map(|(sizes, ts_step)| Op::Append { sizes, ts_step }),
        2 => (prop::collection::vec(prop::collection::vec(0usize..100, 1..4), 1..5), 0i64..50)
            .prop_map(|(batches, ts_step)| Op::Replicate { batches, ts_step }),
        4 => (any::<u16>(), 1usize..800).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Roll),
        1 => (any::<u16>(), prop::bool::weighted(0.1))
            .prop_map(|(pick, below)| Op::Truncate { pick, below }),
        1 => (0u64..3000).prop_map(Op::RetainBytes),
        1 => (0u64..300).prop_map(Op::RetainMs),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// One batch as the model sees it.
#[derive(Debug, Clone)]
struct ModelBatch {
    base: i64,
    values: Vec<Vec<u8>>,
    timestamp: i64,
}

impl ModelBatch {
    fn next(&self) -> i64 {
        self.base + self.values.len() as i64
    }
}

/// The log as a list of batches (everything from the log start) plus the offset of its end.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    /// Log start when `batches` is empty, else `batches[0].base`.
    start: i64,
    end: i64,
    clock: i64,
}

/// A batch of records of these sizes for the model's next offsets, and its values.
fn model_batch(model: &Model, sizes: &[usize]) -> (Bytes, Vec<Vec<u8>>) {
    let values: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![(model.end as usize + i) as u8; n])
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    (batch(&refs, model.clock), values)
}

impl Model {
    fn push(&mut self, values: Vec<Vec<u8>>) {
        let base = self.end;
        self.end += values.len() as i64;
        self.batches.push(ModelBatch {
            base,
            values,
            timestamp: self.clock,
        });
    }

    fn records(&self) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        for b in &self.batches {
            for (i, v) in b.values.iter().enumerate() {
                out.push((b.base + i as i64, v.clone()));
            }
        }
        out
    }

    fn batch_index(&self, offset: i64) -> usize {
        self.batches
            .iter()
            .position(|b| b.next() > offset)
            .expect("offset below the end")
    }

    /// Drops batches below `new_start`, which must be a batch boundary.
    fn advance_start(&mut self, new_start: i64) {
        assert!(new_start >= self.start, "the log start never moves back");
        self.batches.retain(|b| b.base >= new_start);
        if let Some(first) = self.batches.first() {
            assert_eq!(first.base, new_start, "retention stops at a batch boundary");
        } else {
            assert_eq!(new_start, self.end);
        }
        self.start = new_start;
    }
}

fn base_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 64,
        max_index_bytes: 96,
        ..small_config()
    }
}

fn reopen_with(log: Log, config: LogConfig, clean: bool, dir: &std::path::Path) -> Log {
    if clean {
        log.close().unwrap();
    } else {
        drop(log);
    }
    Log::open(dir, config).unwrap()
}

fn check_read(log: &Log, model: &Model, offset: i64, max_bytes: usize) {
    let result = log.read(offset, max_bytes, None);
    if offset < model.start || offset > model.end {
        assert!(
            matches!(result, Err(LogError::OffsetOutOfRange { .. })),
            "read at {offset} outside [{}, {}]: {result:?}",
            model.start,
            model.end
        );
        return;
    }
    let result = result.unwrap();
    assert_eq!(
        (result.log_start_offset, result.log_end_offset),
        (model.start, model.end)
    );
    if offset == model.end {
        assert!(result.records.is_empty());
        return;
    }
    let got = decode(&result.records);
    let first = &model.batches[model.batch_index(offset)];
    assert_eq!(
        got.first().map(|r| r.0),
        Some(first.base),
        "starts with the batch holding {offset}"
    );
    let expected: Vec<_> = model
        .records()
        .into_iter()
        .skip_while(|(o, _)| *o < first.base)
        .take(got.len())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(result.next_offset, got.last().unwrap().0 + 1);
    let whole_batch_end = model.batches.iter().any(|b| b.next() == result.next_offset);
    assert!(whole_batch_end, "reads return whole batches");
    let batches = cairn_batch::batches(&result.records).count();
    assert!(
        batches == 1 || result.records.len() <= max_bytes,
        "max_bytes honoured"
    );
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), base_config()).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append { sizes, ts_step } => {
                model.clock += ts_step;
                let (encoded, values) = model_batch(&model, &sizes);
                let info = log.append(encoded, 0).unwrap();
                assert_eq!(info.base_offset, model.end);
                model.push(values);
                assert_eq!(info.log_end_offset, model.end);
            }
            Op::Replicate { batches, ts_step } => {
                model.clock += ts_step;
                let first = model.end;
                let mut chunk = Vec::new();
                for sizes in &batches {
                    let (encoded, values) = model_batch(&model, sizes);
                    let mut stamped = encoded.to_vec();
                    cairn_batch::stamp(&mut stamped, model.end, 4);
                    chunk.extend_from_slice(&stamped);
                    model.push(values);
                }
                let info = log.append_replicated(Bytes::from(chunk)).unwrap();
                assert_eq!((info.base_offset, info.log_end_offset), (first, model.end));
            }
            Op::Read { pick, max_bytes } => {
                let span = (model.end - model.start) as u64 + 3;
                let offset = model.start + (u64::from(pick) % span) as i64 - 1;
                check_read(&log, &model, offset, max_bytes);
            }
            Op::Roll => log.roll().unwrap(),
            Op::Truncate { pick, below } => {
                if below {
                    if model.start > 0 {
                        let result = log.truncate_to(model.start - 1);
                        assert!(matches!(result, Err(LogError::OffsetOutOfRange { .. })));
                    }
                    continue;
                }
                let span = (model.end - model.start) as u64 + 2;
                let offset = model.start + (u64::from(pick) % span) as i64;
                log.truncate_to(offset).unwrap();
                if offset < model.end {
                    let i = model.batch_index(offset);
                    model.end = model.batches[i].base;
                    model.batches.truncate(i);
                }
            }
            Op::RetainBytes(limit) => {
                let config = LogConfig {
                    retention_bytes: Some(limit),
                    ..base_config()
                };
                let retaining = reopen_with(log, config, true, dir.path());
                let before = retaining.size_bytes();
                let deleted = retaining.apply_retention(0).unwrap();
                if deleted > 0 {
                    assert!(retaining.size_bytes() >= limit, "keeps at least the limit");
                } else {
                    assert_eq!(retaining.size_bytes(), before);
                }
                model.advance_start(retaining.log_start_offset());
                log = reopen_with(retaining, base_config(), true, dir.path());
            }
            Op::RetainMs(ms) => {
                let config = LogConfig {
                    retention_ms: Some(ms),
                    ..base_config()
                };
                let retaining = reopen_with(log, config, false, dir.path());
                retaining.apply_retention(model.clock).unwrap();
                let new_start = retaining.log_start_offset();
                for b in model.batches.iter().filter(|b| b.base < new_start) {
                    assert!(model.clock - b.timestamp > ms as i64, "deleted too young");
                }
                model.advance_start(new_start);
                log = reopen_with(retaining, base_config(), false, dir.path());
            }
            Op::Reopen { clean } => {
                log = reopen_with(log, base_config(), clean, dir.path());
                assert_eq!(read_all(&log), model.records());
            }
        }
        assert_eq!(log.log_end_offset(), model.end);
        assert_eq!(log.log_start_offset(), model.start);
    }
    assert_eq!(read_all(&log), model.records());
    log = reopen_with(log, base_config(), false, dir.path());
    assert_eq!(read_all(&log), model.records());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
