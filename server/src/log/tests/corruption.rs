//! Damage on disk, then reopen: the log must hold every intact batch before the damage and
//! nothing after it, accept appends at the right offset, and a second reopen must change nothing.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const BATCHES: u8 = 24;

/// A log of `BATCHES` one-record batches of equal size over several segments; returns what it
/// holds and the size of one batch. `clean` closes it, otherwise it is dropped (a crash). It
/// fsyncs every append, so its active segment is preallocated (zeros after the data).
fn build(dir: &Path, clean: bool) -> (Vec<(i64, Vec<u8>)>, usize) {
    let config = LogConfig {
        fsync: FsyncPolicy::Always,
        ..small_config()
    };
    let log = Log::open(dir, config).unwrap();
    let mut len = 0;
    for i in 0..BATCHES {
        let b = sized_batch(1, 150, i, i64::from(i) * 10);
        len = b.len();
        log.append(b, 0).unwrap();
    }
    assert!(log.segment_count() >= 3);
    let content = read_all(&log);
    if clean {
        log.close().unwrap();
    }
    (content, len)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// Where the batches of a segment file end: an active segment's file goes on with zeros
/// written ahead of the data (preallocation) until it is sealed or closed.
fn data_end(bytes: &[u8]) -> usize {
    let mut end = 0;
    while let Ok(h) = cairn_batch::peek_header(&bytes[end..]) {
        if h.total_len() == 0 || end + h.total_len() > bytes.len() {
            break;
        }
        end += h.total_len();
    }
    end
}

/// Reopens twice, checking the log holds exactly `expected`, then that appends continue.
fn assert_recovers_to(dir: &Path, expected: &[(i64, Vec<u8>)]) {
    let end = expected.last().map_or(0, |(o, _)| o + 1);
    let log = Log::open(dir, small_config()).unwrap();
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.log_end_offset(), end);
    drop(log);
    let log = Log::open(dir, small_config()).unwrap();
    assert_eq!(read_all(&log), expected, "recovery is idempotent");
    let info = log.append(batch(&[b"after"], 1_000), 1).unwrap();
    assert_eq!(info.base_offset, end);
    drop(log);
    let log = Log::open(dir, small_config()).unwrap();
    let mut with_new = expected.to_vec();
    with_new.push((end, b"after".to_vec()));
    assert_eq!(read_all(&log), with_new);
}

#[test]
fn a_flipped_byte_in_the_last_batch_is_cut_off() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (content, len) = build(dir.path(), clean);
        let active = files(dir.path(), "log").pop().unwrap();
        let mut bytes = fs::read(&active).unwrap();
        let at = data_end(&bytes) - len + 80;
        bytes[at] ^= 0x5a;
        fs::write(&active, bytes).unwrap();
        assert_recovers_to(dir.path(), &content[..content.len() - 1]);
    }
}

#[test]
fn a_torn_last_batch_is_cut_off() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (content, len) = build(dir.path(), clean);
        let active = files(dir.path(), "log").pop().unwrap();
        let size = data_end(&fs::read(&active).unwrap()) as u64;
        let file = fs::OpenOptions::new().write(true).open(&active).unwrap();
        file.set_len(size - (len as u64) / 2).unwrap();
        assert_recovers_to(dir.path(), &content[..content.len() - 1]);
    }
}

#[test]
fn garbage_after_the_last_batch_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (content, _) = build(dir.path(), false);
    let active = files(dir.path(), "log").pop().unwrap();
    let mut bytes = fs::read(&active).unwrap();
    bytes.extend_from_slice(&[0xab; 100]);
    fs::write(&active, bytes).unwrap();
    assert_recovers_to(dir.path(), &content);
}

#[test]
fn deleted_indexes_are_rebuilt() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (content, _) = build(dir.path(), clean);
        for path in files(dir.path(), "index")
            .into_iter()
            .chain(files(dir.path(), "timeindex"))
        {
            fs::remove_file(path).unwrap();
        }
        assert_recovers_to(dir.path(), &content);
        assert_eq!(
            files(dir.path(), "index").len(),
            files(dir.path(), "log").len()
        );
        let log = Log::open(dir.path(), small_config()).unwrap();
        assert_eq!(log.offset_for_timestamp(95).unwrap(), Some(10));
    }
}

/// Overwrites every index of `ext` with plausible-looking garbage.
fn garble(dir: &Path, ext: &str) {
    for path in files(dir, ext) {
        let len = fs::metadata(&path).unwrap().len() as usize;
        let junk: Vec<u8> = (0..len.max(8)).map(|i| (i * 37 % 251) as u8).collect();
        fs::write(&path, junk).unwrap();
    }
}

#[test]
fn a_garbled_index_is_rebuilt() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (content, _) = build(dir.path(), clean);
        garble(dir.path(), "index");
        assert_recovers_to(dir.path(), &content);
        let log = Log::open(dir.path(), small_config()).unwrap();
        for (offset, value) in &content {
            let r = log.read(*offset, 1, None).unwrap();
            assert_eq!(decode(&r.records), vec![(*offset, value.clone())]);
        }
    }
}

#[test]
fn a_garbled_time_index_is_rebuilt() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (content, _) = build(dir.path(), clean);
        garble(dir.path(), "timeindex");
        assert_recovers_to(dir.path(), &content);
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..i64::from(BATCHES) {
            assert_eq!(log.offset_for_timestamp(i * 10).unwrap(), Some(i));
            assert_eq!(log.offset_for_timestamp(i * 10 - 5).unwrap(), Some(i));
        }
    }
}

#[test]
fn an_index_entry_past_the_log_end_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (content, _) = build(dir.path(), true);
    let first = files(dir.path(), "index").remove(0);
    let mut bytes = fs::read(&first).unwrap();
    assert!(
        bytes.len() >= 8,
        "the first sealed segment has index entries"
    );
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&first, bytes).unwrap();
    assert_recovers_to(dir.path(), &content);
}

#[test]
fn damage_in_an_unsynced_sealed_segment_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let (content, len) = build(dir.path(), false);
    // Without a recovery point every segment is scanned, as after a crash before any sync.
    fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let logs = files(dir.path(), "log");
    let second = &logs[1];
    let base: i64 = second
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = fs::read(second).unwrap();
    bytes[len + 70] ^= 0x01; // inside the segment's second batch
    fs::write(second, bytes).unwrap();
    let keep = (base + 1) as usize;
    assert_recovers_to(dir.path(), &content[..keep]);
    assert_eq!(
        files(dir.path(), "log").len(),
        2,
        "later segments are deleted"
    );
}

#[test]
fn a_gap_between_segments_is_reported_not_guessed() {
    for keep_recovery_point in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), true);
        if !keep_recovery_point {
            fs::remove_file(dir.path().join("recovery-point")).unwrap();
        }
        let logs = files(dir.path(), "log");
        fs::remove_file(&logs[1]).unwrap();
        assert!(matches!(
            Log::open(dir.path(), small_config()),
            Err(LogError::Corrupt { .. })
        ));
    }
}

#[test]
fn zeros_written_ahead_end_the_data_cleanly() {
    // A crash leaves the active segment's preallocated zeros; a clean close trims them.
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (content, _) = build(dir.path(), clean);
        let active = files(dir.path(), "log").pop().unwrap();
        let bytes = fs::read(&active).unwrap();
        let end = data_end(&bytes);
        if clean {
            assert_eq!(bytes.len(), end, "a closed log has no zero tail");
        } else {
            assert!(bytes.len() > end, "an open segment is preallocated");
            assert!(bytes[end..].iter().all(|&b| b == 0));
        }
        assert_recovers_to(dir.path(), &content);
    }
    // A sealed segment whose trim was lost in a crash (zeros after its data): its data and
    // every later segment are kept.
    let dir = tempfile::tempdir().unwrap();
    let (content, _) = build(dir.path(), true);
    let first = files(dir.path(), "log").remove(0);
    let mut bytes = fs::read(&first).unwrap();
    bytes.extend_from_slice(&[0; 700]);
    fs::write(&first, bytes).unwrap();
    fs::remove_file(dir.path().join("recovery-point")).unwrap();
    assert_recovers_to(dir.path(), &content);
}
