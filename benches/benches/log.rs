//! Partition-log benchmarks, each beside its physical baseline measured in the same run:
//!
//! - `append`: 100 records of 1 KiB per batch into a log with fsync `never`, against plain
//!   `write()` calls of the same bytes to a file.
//! - `read`: sequential 1 MiB reads of a whole log, against plain positional reads of the same
//!   file. Both read one byte per 64-byte cache line of what they got, as a consumer sending the
//!   bytes on would, so memory-mapped reads (zero-copy) pay for bringing the data in just as
//!   copying reads pay for their copy.
//! - `fsync_always_8_appenders`: 8 threads appending one 1 KiB record per batch with fsync
//!   `always` (group commit), against 8 threads that each write and fsync per append.
//!
//! Run: `cargo bench -p cairn-benches --bench log`. Figures go in BENCHMARKS.md.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_batch::Record;
use cairn_server::log::{FsyncPolicy, Log, LogConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 100;
const READ_CHUNK: usize = 1 << 20;
const READ_LOG_BYTES: usize = 256 << 20;
const APPENDERS: usize = 8;

fn batch(records: usize) -> Bytes {
    let value = Bytes::from(vec![b'x'; RECORD_BYTES]);
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: value.clone(),
            headers: vec![],
        })
        .collect();
    cairn_batch::encode(&records)
}

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        segment_bytes: 1 << 30,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let batch = batch(RECORDS_PER_BATCH);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));

    group.bench_function("raw_write", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut f = File::create(dir.path().join("raw")).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                f.write_all(&batch).unwrap();
            }
            start.elapsed()
        })
    });
    group.bench_function("log_fsync_never", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config(FsyncPolicy::Never)).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                log.append(batch.clone(), 0).unwrap();
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// Reads one byte per cache line, so that neither read strategy skips the memory traffic.
fn touch(bytes: &[u8]) -> u8 {
    bytes.iter().step_by(64).fold(0, |a, b| a ^ b)
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            segment_bytes: 64 << 20,
            ..config(FsyncPolicy::Never)
        },
    )
    .unwrap();
    let batch = batch(RECORDS_PER_BATCH);
    while (log.size_bytes() as usize) < READ_LOG_BYTES {
        log.append(batch.clone(), 0).unwrap();
    }
    log.flush().unwrap();
    let end = log.log_end_offset();
    // The raw baseline reads the same number of bytes from one file of the same size.
    let raw_path = dir.path().join("raw");
    {
        let mut f = File::create(&raw_path).unwrap();
        let mut written = 0;
        while written < log.size_bytes() as usize {
            f.write_all(&batch).unwrap();
            written += batch.len();
        }
        f.sync_all().unwrap();
    }
    let total = log.size_bytes();

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(total));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("raw_pread", |b| {
        let f = File::open(&raw_path).unwrap();
        let mut buf = vec![0u8; READ_CHUNK];
        b.iter(|| {
            let mut pos = 0u64;
            let mut acc = 0u8;
            loop {
                let n = f.read_at(&mut buf, pos).unwrap();
                if n == 0 {
                    break acc;
                }
                acc ^= touch(&buf[..n]);
                pos += n as u64;
            }
        })
    });
    group.bench_function("log_read", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut acc = 0u8;
            while offset < end {
                let r = log.read(offset, READ_CHUNK, None).unwrap();
                acc ^= touch(&r.records);
                offset = r.next_offset;
            }
            acc
        })
    });
    group.finish();
}

/// Runs `per_thread` appends on each of [`APPENDERS`] threads and returns the wall time.
fn concurrent(per_thread: u64, append: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(APPENDERS + 1);
    std::thread::scope(|s| {
        for _ in 0..APPENDERS {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per_thread {
                    append();
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Scope end joins every thread.
        start
    })
    .elapsed()
}

fn fsync_per_append(path: &Path, batch: &Bytes, per_thread: u64) -> Duration {
    let f = Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap(),
    );
    concurrent(per_thread, || {
        let mut f = f.lock().unwrap();
        f.write_all(batch).unwrap();
        f.sync_data().unwrap();
    })
}

fn group_commit(c: &mut Criterion) {
    let batch = batch(1);
    let mut group = c.benchmark_group("fsync_always_8_appenders");
    group.throughput(Throughput::Elements(APPENDERS as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("raw_fsync_per_append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            fsync_per_append(&dir.path().join("raw"), &batch, iters)
        })
    });
    group.bench_function("log_group_commit", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = Arc::new(Log::open(dir.path(), config(FsyncPolicy::Always)).unwrap());
            let elapsed = concurrent(iters, || {
                log.append(batch.clone(), 0).unwrap();
            });
            let appends = iters * APPENDERS as u64;
            assert!(
                log.fsync_count() < appends || appends <= 1,
                "group commit shared no fsync"
            );
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, append, read, group_commit);
criterion_main!(benches);
