//! Table tests of the ISR decisions, and a small timeline of one follower leaving and
//! re-entering.

use super::*;
use crate::replication::hw::{advance, high_watermark};

/// Table cells: an ISR, and the followers' states.
type Isr<'a> = &'a [BrokerId];
type States<'a> = &'a [FollowerState];
/// An expansion row: name, ISR, followers, high watermark, epoch start, expected ISR.
type ExpandRow<'a> = (&'a str, Isr<'a>, States<'a>, i64, i64, Option<Isr<'a>>);

const LAG_MAX: i64 = 10_000;
const NOW: i64 = 100_000;

/// A follower with log end `leo`, last caught up `ago` ms before [`NOW`].
fn follower(id: BrokerId, leo: i64, ago: i64) -> FollowerState {
    FollowerState {
        id,
        log_end_offset: leo,
        last_caught_up_ms: NOW - ago,
    }
}

#[test]
fn shrink_drops_lagging_followers_only() {
    let fresh = |id| follower(id, 50, 0);
    let stale = |id| follower(id, 50, LAG_MAX + 1);
    #[rustfmt::skip]
    let table: &[(&str, Isr, States, Option<Isr>)] = &[
        ("all caught up",                &[1, 2, 3], &[fresh(2), fresh(3)],            None),
        ("lagging follower leaves",      &[1, 2, 3], &[fresh(2), stale(3)],            Some(&[1, 2])),
        ("exactly lag_max is kept",      &[1, 2],    &[follower(2, 50, LAG_MAX)],       None),
        ("every follower lags",          &[1, 2, 3], &[stale(2), stale(3)],            Some(&[1])),
        ("never drops the leader",       &[1, 2],    &[stale(1), fresh(2)],            None),
        ("leader alone stays",           &[1],       &[],                              None),
        ("member without state leaves",  &[1, 2, 3], &[fresh(2)],                      Some(&[1, 2])),
        ("order is kept",                &[3, 1, 2], &[fresh(2), stale(3)],            Some(&[1, 2])),
        ("leader not first keeps place", &[2, 1, 3], &[fresh(2), stale(3)],            Some(&[2, 1])),
        ("lag outside the ISR ignored",  &[1, 2],    &[fresh(2), stale(3)],            None),
        ("never caught up (time 0)",     &[1, 2],    &[follower(2, 50, NOW)],           Some(&[1])),
    ];
    for (name, isr, followers, want) in table {
        let got = shrink(isr, 1, followers, NOW, LAG_MAX);
        assert_eq!(got.as_deref(), *want, "{name}");
    }
}

#[test]
fn expand_adds_followers_at_the_watermark_and_the_epoch_start() {
    let at = |id, leo| follower(id, leo, 0);
    #[rustfmt::skip]
    let table: &[ExpandRow] = &[
        ("caught-up follower re-enters",   &[1, 2], &[at(2, 10), at(3, 10)], 10, 5,  Some(&[1, 2, 3])),
        ("past the watermark re-enters",   &[1, 2], &[at(2, 10), at(3, 12)], 10, 5,  Some(&[1, 2, 3])),
        ("below the watermark stays out",  &[1, 2], &[at(2, 10), at(3, 9)],  10, 5,  None),
        ("below the epoch start stays out",&[1],    &[at(3, 10)],            8,  12, None),
        ("at both bounds re-enters",       &[1],    &[at(3, 12)],            8,  12, Some(&[1, 3])),
        ("unknown log end stays out",      &[1],    &[at(3, UNKNOWN_OFFSET)], 0, 0,  None),
        ("appended in followers order",    &[1],    &[at(4, 10), at(2, 10), at(3, 1)], 10, 0, Some(&[1, 4, 2])),
        ("members are not added twice",    &[1, 2], &[at(2, 10)],            10, 0,  None),
    ];
    for (name, isr, followers, hw, epoch_start, want) in table {
        let got = expand(isr, followers, *hw, *epoch_start);
        assert_eq!(got.as_deref(), *want, "{name}");
    }
}

/// Kafka's lastCaughtUpTime rule, as the leader applies it to each fetch (the follower's state
/// plus the leader's log end and the time of the previous fetch).
struct Tracked {
    state: FollowerState,
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
}

impl Tracked {
    /// At leadership: unknown log end; an ISR member counts as caught up now.
    fn new(id: BrokerId, in_isr: bool, leader_leo: i64, now_ms: i64) -> Self {
        let last_caught_up_ms = if in_isr { now_ms } else { 0 };
        Self {
            state: FollowerState {
                id,
                log_end_offset: UNKNOWN_OFFSET,
                last_caught_up_ms,
            },
            last_fetch_leader_leo: leader_leo,
            last_fetch_ms: 0,
        }
    }

    fn fetch(&mut self, fetch_offset: i64, leader_leo: i64, now_ms: i64) {
        let s = &mut self.state;
        if fetch_offset >= leader_leo {
            s.last_caught_up_ms = s.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= self.last_fetch_leader_leo {
            s.last_caught_up_ms = s.last_caught_up_ms.max(self.last_fetch_ms);
        }
        s.log_end_offset = fetch_offset;
        self.last_fetch_leader_leo = leader_leo;
        self.last_fetch_ms = now_ms;
    }
}

#[test]
fn an_isr_member_gets_lag_max_after_leadership_and_an_outsider_needs_a_log_end() {
    let isr = Tracked::new(2, true, 40, NOW).state;
    let out = Tracked::new(3, false, 40, NOW).state;
    assert_eq!(shrink(&[1, 2], 1, &[isr], NOW + LAG_MAX, LAG_MAX), None);
    assert_eq!(
        shrink(&[1, 2], 1, &[isr], NOW + LAG_MAX + 1, LAG_MAX),
        Some(vec![1])
    );
    assert_eq!(expand(&[1], &[out], 40, 40), None, "unknown log end");
}

/// Leader 1 with followers 2 and 3. The leader writes a record every 100 ms except between
/// 3 s and 30 s. Follower 3 is down between 5 s and 25 s: it leaves the ISR once it has not
/// caught up for `lag_max`, even though the idle partition's HW equals its log end (expansion
/// is checked only for the follower whose fetch is served, as Kafka does), then re-enters on
/// its first fetch back and stays in while the writes resume.
#[test]
fn a_lagging_follower_leaves_and_re_enters_once_caught_up() {
    let (mut leo, mut hw, mut isr) = (0_i64, 0_i64, vec![1, 2, 3]);
    let epoch_start = 0;
    let mut tracked = [Tracked::new(2, true, leo, 0), Tracked::new(3, true, leo, 0)];
    let mut follower3_leo = 0;
    let (mut left_at, mut rejoined_at) = (None, None);
    for step in 1..=600_i64 {
        let now = step * 100;
        let previous_leo = leo;
        if !(3_000..30_000).contains(&now) {
            leo += 1;
        }
        // Follower 2 fetches every step, holding what the leader had at the step before.
        tracked[0].fetch(previous_leo, leo, now);
        let mut fetched = vec![tracked[0].state];
        // Follower 3 catches up at most 5 records per fetch.
        if !(5_000..25_000).contains(&now) {
            follower3_leo = (follower3_leo + 5).min(leo);
            tracked[1].fetch(follower3_leo, leo, now);
            fetched.push(tracked[1].state);
        }
        let followers = [tracked[0].state, tracked[1].state];
        let isr_leos = followers
            .iter()
            .filter(|f| isr.contains(&f.id))
            .map(|f| f.log_end_offset);
        hw = advance(hw, high_watermark(leo, isr_leos));
        if let Some(shrunk) = shrink(&isr, 1, &followers, now, LAG_MAX) {
            assert_eq!(shrunk, [1, 2], "only the lagging follower leaves, at {now}");
            assert!(left_at.is_none(), "it leaves once, at {now}");
            left_at = Some(now);
            isr = shrunk;
        }
        for f in &fetched {
            if let Some(expanded) = expand(&isr, &[*f], hw, epoch_start) {
                assert_eq!(expanded, [1, 2, 3], "at {now}");
                assert!(rejoined_at.is_none(), "it re-enters once, at {now}");
                rejoined_at = Some(now);
                isr = expanded;
            }
        }
    }
    let left_at = left_at.expect("follower 3 left the ISR");
    assert_eq!(left_at, 15_000, "lag_max after its last catch-up at 4.9 s");
    assert_eq!(
        rejoined_at,
        Some(25_000),
        "re-entered on its first fetch back: the idle log had nothing new"
    );
    assert_eq!(isr, [1, 2, 3], "and stayed in");
    assert_eq!(hw, leo - 1, "the HW follows the slowest ISR member");
}

#[test]
fn a_dead_follower_at_an_idle_watermark_re_enters_only_if_asked_about() {
    // Idle partition: LEO = HW = 50. Follower 3 died at 50 and was shrunk out. Expansion
    // checked for follower 2's fetch alone leaves it out; checked over every follower it would
    // re-enter at once, and leave again lag_max later, forever.
    let f2 = follower(2, 50, 0);
    let f3 = follower(3, 50, LAG_MAX + 1);
    assert_eq!(
        shrink(&[1, 2, 3], 1, &[f2, f3], NOW, LAG_MAX),
        Some(vec![1, 2])
    );
    assert_eq!(expand(&[1, 2], &[f2], 50, 0), None);
    assert_eq!(expand(&[1, 2], &[f2, f3], 50, 0), Some(vec![1, 2, 3]));
}

/// A silence row: name, ISR, last fetch per follower, expected ISR.
type SilenceRow<'a> = (&'a str, Isr<'a>, &'a [(BrokerId, i64)], Option<Isr<'a>>);

#[test]
fn silent_followers_leave_sooner_than_lagging_ones() {
    const SILENCE: i64 = 1_500;
    #[rustfmt::skip]
    let table: &[SilenceRow] = &[
        ("all fetching", &[1, 2, 3], &[(2, NOW - 100), (3, NOW - 500)], None),
        ("one silent past the bound", &[1, 2, 3], &[(2, NOW - 100), (3, NOW - SILENCE - 1)], Some(&[1, 2])),
        ("exactly at the bound stays", &[1, 2, 3], &[(2, NOW - SILENCE), (3, NOW)], None),
        ("both silent", &[1, 2, 3], &[(2, 0), (3, 0)], Some(&[1])),
        ("the leader is never dropped", &[1], &[(1, 0)], None),
        ("no entry: kept", &[1, 2], &[], None),
        ("a silent non-member changes nothing", &[1, 2], &[(2, NOW), (3, 0)], None),
    ];
    for (case, isr, last_fetch, want) in table {
        let got = crate::replication::drop_silent(isr, 1, last_fetch, NOW, SILENCE);
        assert_eq!(got.as_deref(), *want, "{case}");
    }
}
