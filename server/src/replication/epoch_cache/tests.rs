//! Table tests of the leader-epoch cache, and its checkpoint file.

use std::fs;

use super::*;

/// Builds a cache from `(epoch, start)` pairs through `assign`.
fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
    let mut c = LeaderEpochCache::in_memory();
    for &(epoch, start) in entries {
        c.assign(epoch, start).expect("valid test entry");
    }
    c
}

/// `(epoch, start offset)` pairs, as table rows hold them.
type Entries<'a> = &'a [(i32, i64)];

/// `end_offset_for`'s answer: `(epoch, end offset)`, or undefined.
type Answer = Option<(i32, i64)>;

fn pairs(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
    c.entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

#[test]
fn assign_keeps_entries_strictly_increasing() {
    #[rustfmt::skip]
    let table: &[(&str, Entries, Entries)] = &[
        ("first entry",                   &[(0, 0)],                 &[(0, 0)]),
        ("new epochs append",             &[(0, 0), (1, 5), (3, 9)], &[(0, 0), (1, 5), (3, 9)]),
        ("same epoch again is a no-op",   &[(0, 0), (0, 7)],         &[(0, 0)]),
        ("lower epoch is ignored",        &[(2, 0), (1, 5)],         &[(2, 0)]),
        ("lower offset is ignored",       &[(0, 0), (1, 5), (2, 4)], &[(0, 0), (1, 5)]),
        ("empty epoch is replaced",       &[(0, 0), (1, 5), (2, 5)], &[(0, 0), (2, 5)]),
        ("cache may start past zero",     &[(4, 100), (5, 120)],     &[(4, 100), (5, 120)]),
    ];
    for (name, assigns, want) in table {
        assert_eq!(pairs(&cache(assigns)), *want, "{name}");
    }
}

#[test]
fn assign_refuses_negative_values_and_changes_nothing() {
    let mut c = cache(&[(0, 0)]);
    for (epoch, start) in [(-1, 10), (1, -1)] {
        let err = c.assign(epoch, start).unwrap_err();
        assert!(
            matches!(err, EpochCacheError::InvalidEntry { .. }),
            "{err:?}"
        );
    }
    assert_eq!(pairs(&c), [(0, 0)]);
}

#[test]
fn latest_epoch_and_entry() {
    let c = cache(&[]);
    assert_eq!((c.latest_epoch(), c.latest_entry()), (None, None));
    let c = cache(&[(1, 0), (4, 30)]);
    assert_eq!(c.latest_epoch(), Some(4));
    assert_eq!(
        c.latest_entry(),
        Some(EpochEntry {
            epoch: 4,
            start_offset: 30
        })
    );
}

#[test]
fn end_offset_for_follows_kafka() {
    let c = cache(&[(1, 0), (3, 10), (4, 25)]);
    let leo = 40;
    #[rustfmt::skip]
    let table: &[(&str, i32, Answer)] = &[
        ("latest epoch ends at the log end",      4, Some((4, 40))),
        ("an older epoch ends at the next start", 3, Some((3, 25))),
        ("the first epoch",                       1, Some((1, 10))),
        ("a gap: largest epoch at or below",      2, Some((1, 10))),
        ("below the first epoch: undefined",      0, None),
        ("undefined epoch (-1): undefined",      -1, None),
        ("above the latest: latest, log end",     9, Some((4, 40))),
    ];
    for (name, requested, want) in table {
        assert_eq!(c.end_offset_for(*requested, leo), *want, "{name}");
    }
    assert_eq!(cache(&[]).end_offset_for(0, 0), None, "empty cache");
}

#[test]
fn truncate_from_end_drops_entries_at_or_past_the_end() {
    let start: &[(i32, i64)] = &[(1, 0), (3, 10), (4, 25)];
    #[rustfmt::skip]
    let table: &[(&str, i64, Entries)] = &[
        ("past the end: no-op",          50, &[(1, 0), (3, 10), (4, 25)]),
        ("inside the latest epoch",      30, &[(1, 0), (3, 10), (4, 25)]),
        ("at the latest epoch's start",  25, &[(1, 0), (3, 10)]),
        ("inside an older epoch",        12, &[(1, 0), (3, 10)]),
        ("at an older epoch's start",    10, &[(1, 0)]),
        ("to zero",                       0, &[]),
    ];
    for (name, end, want) in table {
        let mut c = cache(start);
        c.truncate_from_end(*end);
        assert_eq!(pairs(&c), *want, "{name}");
    }
}

#[test]
fn truncate_from_start_moves_the_covering_entry_up() {
    let start: &[(i32, i64)] = &[(1, 0), (3, 10), (4, 25)];
    #[rustfmt::skip]
    let table: &[(&str, i64, Entries)] = &[
        ("at the first start: no-op",   0, &[(1, 0), (3, 10), (4, 25)]),
        ("inside the first epoch",      5, &[(1, 5), (3, 10), (4, 25)]),
        ("at the second epoch's start", 10, &[(3, 10), (4, 25)]),
        ("inside the second epoch",     12, &[(3, 12), (4, 25)]),
        ("inside the latest epoch",     30, &[(4, 30)]),
        ("past the log end",            90, &[(4, 90)]),
    ];
    for (name, log_start, want) in table {
        let mut c = cache(start);
        c.truncate_from_start(*log_start);
        assert_eq!(pairs(&c), *want, "{name}");
    }
    let mut c = cache(&[(4, 100)]);
    c.truncate_from_start(50);
    assert_eq!(pairs(&c), [(4, 100)], "below the first entry: no-op");
}

#[test]
fn checkpoint_round_trips_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LeaderEpochCache::open(dir.path()).unwrap();
    assert!(c.entries().is_empty(), "a missing file is an empty cache");

    let reopened = |want: &[(i32, i64)]| {
        let c = LeaderEpochCache::open(dir.path()).unwrap();
        assert_eq!(pairs(&c), want);
    };
    c.assign(0, 0).unwrap();
    c.assign(2, 10).unwrap();
    c.assign(5, 30).unwrap();
    reopened(&[(0, 0), (2, 10), (5, 30)]);
    c.truncate_from_end(30);
    reopened(&[(0, 0), (2, 10)]);
    c.truncate_from_start(12);
    reopened(&[(2, 12)]);
    c.truncate_from_end(0);
    reopened(&[]);

    let text = fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(text, "0\n0\n", "Kafka's format, empty");
    assert!(
        !dir.path().join("leader-epoch-checkpoint.tmp").exists(),
        "no temporary file is left behind"
    );
}

#[test]
fn checkpoint_uses_kafkas_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LeaderEpochCache::open(dir.path()).unwrap();
    c.assign(3, 0).unwrap();
    c.assign(7, 1234).unwrap();
    let text = fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(text, "0\n2\n3 0\n7 1234\n");
}

#[test]
fn a_garbled_checkpoint_is_an_error_naming_the_file() {
    #[rustfmt::skip]
    let table: &[(&str, &str)] = &[
        ("empty file",            ""),
        ("no final newline",      "0\n1\n0 0"),
        ("unknown version",       "1\n1\n0 0\n"),
        ("count not a number",    "0\nx\n0 0\n"),
        ("fewer entries",         "0\n2\n0 0\n"),
        ("more entries",          "0\n1\n0 0\n1 5\n"),
        ("entry not two numbers", "0\n1\n0\n"),
        ("entry with a tab",      "0\n1\n0\t0\n"),
        ("negative offset",       "0\n1\n0 -1\n"),
        ("epoch not increasing",  "0\n2\n3 0\n3 5\n"),
        ("offset not increasing", "0\n2\n3 5\n4 5\n"),
        ("binary garbage",        "\0\u{1}\u{2}\n"),
    ];
    for (name, text) in table {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        fs::write(&path, text).unwrap();
        let err = LeaderEpochCache::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, EpochCacheError::Corrupt { path: p, .. } if *p == path),
            "{name}: {err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{name}: the message names the file: {err}"
        );
    }
}

#[test]
fn a_leftover_temporary_file_is_ignored_and_replaced() {
    // A crash between writing the temporary file and the rename leaves it behind; the
    // checkpoint itself still holds the previous content.
    let dir = tempfile::tempdir().unwrap();
    let mut c = LeaderEpochCache::open(dir.path()).unwrap();
    c.assign(1, 0).unwrap();
    let tmp = dir.path().join("leader-epoch-checkpoint.tmp");
    fs::write(&tmp, "0\n1\n9 9").unwrap();

    let mut c = LeaderEpochCache::open(dir.path()).unwrap();
    assert_eq!(pairs(&c), [(1, 0)]);
    c.assign(2, 4).unwrap();
    assert!(!tmp.exists());
    let c = LeaderEpochCache::open(dir.path()).unwrap();
    assert_eq!(pairs(&c), [(1, 0), (2, 4)]);
}

#[test]
fn a_failed_write_refuses_a_new_epoch_but_truncations_follow_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join("t-0");
    fs::create_dir(&partition).unwrap();
    let mut c = LeaderEpochCache::open(&partition).unwrap();
    c.assign(1, 0).unwrap();
    c.assign(2, 10).unwrap();
    c.assign(3, 20).unwrap();
    fs::remove_dir_all(&partition).unwrap();

    let err = c.assign(4, 30).unwrap_err();
    assert!(matches!(err, EpochCacheError::Io { .. }), "{err:?}");
    assert_eq!(pairs(&c), [(1, 0), (2, 10), (3, 20)], "nothing assigned");

    // The log was already cut: the cache follows it even though the file cannot be written.
    c.truncate_from_end(20);
    c.truncate_from_start(5);
    assert_eq!(pairs(&c), [(1, 5), (2, 10)]);
}

#[test]
fn a_clone_is_detached_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LeaderEpochCache::open(dir.path()).unwrap();
    c.assign(1, 0).unwrap();
    let mut snapshot = c.clone();
    snapshot.assign(2, 10).unwrap();
    snapshot.truncate_from_end(0);
    assert_eq!(pairs(&c), [(1, 0)]);
    let reopened = LeaderEpochCache::open(dir.path()).unwrap();
    assert_eq!(pairs(&reopened), [(1, 0)], "the clone wrote nothing");
}

#[test]
fn no_change_writes_nothing() {
    // Unchanged operations must not touch the file: removing the directory makes any write fail.
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join("t-0");
    fs::create_dir(&partition).unwrap();
    let mut c = LeaderEpochCache::open(&partition).unwrap();
    c.assign(1, 0).unwrap();
    c.assign(2, 10).unwrap();
    fs::remove_dir_all(&partition).unwrap();

    c.assign(2, 15).unwrap();
    c.assign(1, 20).unwrap();
    c.truncate_from_end(11);
    c.truncate_from_start(0);
    assert_eq!(pairs(&c), [(1, 0), (2, 10)]);
}

#[test]
fn rebuild_from_the_logs_batches_replaces_a_garbled_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(CHECKPOINT_FILE), "garbage").unwrap();
    assert!(LeaderEpochCache::open(dir.path()).is_err());

    // (epoch, base offset) of each batch, in log order.
    let batches = [(0, 0), (0, 3), (2, 7), (2, 9), (5, 12)];
    let c = LeaderEpochCache::rebuild(dir.path(), batches).unwrap();
    assert_eq!(pairs(&c), [(0, 0), (2, 7), (5, 12)]);
    let c = LeaderEpochCache::open(dir.path()).unwrap();
    assert_eq!(pairs(&c), [(0, 0), (2, 7), (5, 12)]);
}
