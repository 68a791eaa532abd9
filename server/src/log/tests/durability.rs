//! Group commit and fsync failure, through the injectable sync function.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::*;

fn always() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        ..small_config()
    }
}

#[test]
fn concurrent_appends_share_fsyncs_and_return_only_when_durable() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicU64::new(0));
    let counter = syncs.clone();
    let sync = Box::new(move |f: &File| {
        counter.fetch_add(1, Ordering::Relaxed);
        // A slow disk makes appenders pile up behind a flush, as they do in production.
        std::thread::sleep(Duration::from_millis(1));
        f.sync_data()
    });
    let log = Arc::new(Log::open_with_sync(dir.path(), always(), sync).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut infos = Vec::new();
                for i in 0..PER_THREAD {
                    let info = log
                        .append(sized_batch(1, 20, (t * 50 + i) as u8, 0), 0)
                        .unwrap();
                    // The durable offset only moves to what the log end was when a flush
                    // *started*, once that flush's fsyncs returned: so this proves an fsync
                    // that began after the append's write covered it.
                    let durable = log.durable_offset();
                    assert!(
                        durable >= info.log_end_offset,
                        "append of {} returned with durable offset {durable}",
                        info.base_offset
                    );
                    infos.push(info.base_offset);
                }
                infos
            })
        })
        .collect();
    let mut offsets: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    offsets.sort_unstable();
    let appends = THREADS * PER_THREAD;
    assert_eq!(
        offsets,
        (0..appends as i64).collect::<Vec<_>>(),
        "dense, each once"
    );
    let rounds = log.fsync_count();
    assert!(
        rounds < appends as u64,
        "{rounds} flush rounds for {appends} appends: no group commit"
    );
    assert!(syncs.load(Ordering::Relaxed) >= rounds);
}

#[test]
fn an_fsync_failure_fails_the_log_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let (flag, counter) = (failing.clone(), calls.clone());
    let sync = Box::new(move |f: &File| {
        counter.fetch_add(1, Ordering::SeqCst);
        if flag.load(Ordering::SeqCst) {
            Err(io::Error::other("injected EIO"))
        } else {
            f.sync_data()
        }
    });
    let log = Log::open_with_sync(dir.path(), always(), sync).unwrap();
    log.append(batch(&[b"durable"], 0), 0).unwrap();
    failing.store(true, Ordering::SeqCst);
    let err = log.append(batch(&[b"lost"], 0), 0).unwrap_err();
    let LogError::Failed { source, .. } = &err else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!(source.to_string(), "injected EIO", "the cause is kept");
    let calls_after_failure = calls.load(Ordering::SeqCst);
    failing.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(batch(&[b"x"], 0), 0),
        Err(LogError::Failed { .. })
    ));
    assert!(matches!(log.flush(), Err(LogError::Failed { .. })));
    assert!(matches!(log.roll(), Err(LogError::Failed { .. })));
    assert!(matches!(log.truncate_to(0), Err(LogError::Failed { .. })));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        calls_after_failure,
        "a failed fsync is never retried"
    );
    assert_eq!(
        log.durable_offset(),
        1,
        "the failed append was never durable"
    );
    // Reads still serve what is there.
    assert_eq!(read_all(&log)[0], (0, b"durable".to_vec()));
    drop(log);
    // Reopening recovers whatever reached the file.
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log)[0], (0, b"durable".to_vec()));
}

#[test]
fn interval_policy_flushes_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    log.append(batch(&[b"x"], 0), 0).unwrap();
    let rounds = log.fsync_count();
    std::thread::sleep(Duration::from_millis(10));
    log.flush_if_due().unwrap();
    assert_eq!(log.fsync_count(), rounds + 1);
    assert_eq!(log.durable_offset(), 1);
    log.flush_if_due().unwrap();
    assert_eq!(log.fsync_count(), rounds + 1, "nothing new: no fsync");
}

#[test]
fn never_policy_does_not_fsync_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for _ in 0..10 {
        log.append(batch(&[b"x"], 0), 0).unwrap();
    }
    assert_eq!(log.fsync_count(), 0);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 10);
}
