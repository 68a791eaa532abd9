//! A rough, ignored-by-default check of the append path's cost against a raw `write()` of the
//! same bytes (the criterion benches in `benches/` are the real measurement). Run with
//! `cargo test --release -p cairn-server --test log_throughput -- --ignored --nocapture`.

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use cairn_batch::{BatchBuilder, Record};
use cairn_server::log::{Log, LogConfig};

fn batch(records: usize, value_len: usize) -> Bytes {
    let mut builder = BatchBuilder::new();
    for _ in 0..records {
        builder.push(&Record {
            timestamp: 1,
            key: None,
            value: Bytes::from(vec![7u8; value_len]),
            headers: Vec::new(),
        });
    }
    builder.finish()
}

#[test]
#[ignore = "timing; run explicitly in release mode"]
fn append_costs_little_more_than_write() {
    for (records, value_len) in [(100, 1000), (10, 100)] {
        measure(batch(records, value_len));
    }
}

fn measure(batch: Bytes) {
    let total = 256 << 20;
    let count = total / batch.len();
    let dir = tempfile::tempdir().unwrap();

    let mut file = std::fs::File::create(dir.path().join("raw")).unwrap();
    let start = Instant::now();
    for _ in 0..count {
        file.write_all(&batch).unwrap();
    }
    let raw = start.elapsed();
    drop(file);
    std::fs::remove_file(dir.path().join("raw")).unwrap();

    let log = Log::open(dir.path().join("log"), LogConfig::default()).unwrap();
    let start = Instant::now();
    for _ in 0..count {
        log.append(batch.clone(), 0).unwrap();
    }
    let append = start.elapsed();

    let mib = (count * batch.len()) as f64 / (1 << 20) as f64;
    let ratio = raw.as_secs_f64() / append.as_secs_f64();
    println!(
        "{} B batches: raw write {:.0} MiB/s, Log::append {:.0} MiB/s, ratio {ratio:.2}",
        batch.len(),
        mib / raw.as_secs_f64(),
        mib / append.as_secs_f64()
    );
}
