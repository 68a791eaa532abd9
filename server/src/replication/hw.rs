//! The high watermark: the offset below which every in-sync replica holds the log, and so the
//! end of what consumers may read and of what `acks=all` may acknowledge (DESIGN.md §5).
//!
//! Two pure functions. The leader computes a candidate from its own log end and the log ends
//! its ISR followers reported on their latest fetches in the current leader epoch, then
//! [`advance`]s: the watermark a consumer saw never moves back, even when the candidate does
//! (an ISR that grows with a follower at exactly the watermark, a new leader that has not yet
//! heard from its followers).

/// The candidate high watermark: the smallest log end offset among the leader and every ISR
/// follower. Pass every ISR member other than the leader; one whose log end is not known in
/// the current leader epoch counts as `-1` (unknown), which holds the watermark where it is.
pub fn high_watermark(leader_leo: i64, isr_follower_leos: impl IntoIterator<Item = i64>) -> i64 {
    isr_follower_leos.into_iter().fold(leader_leo, i64::min)
}

/// The new high watermark given the `current` one and a `candidate`: it never moves backwards.
pub fn advance(current_hw: i64, candidate: i64) -> i64 {
    current_hw.max(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermark_is_the_smallest_isr_log_end() {
        #[rustfmt::skip]
        let table: &[(&str, i64, &[i64], i64)] = &[
            ("leader alone",                  10, &[],          10),
            ("followers caught up",           10, &[10, 10],    10),
            ("one follower behind",           10, &[10, 7],     7),
            ("slowest of many",               10, &[9, 4, 8],   4),
            ("follower ahead (leader truncated since)", 10, &[12], 10),
            ("unknown follower holds it at -1", 10, &[-1, 10],  -1),
            ("empty logs",                     0, &[0],         0),
        ];
        for (name, leader, followers, want) in table {
            assert_eq!(
                high_watermark(*leader, followers.iter().copied()),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn advance_never_moves_backwards() {
        #[rustfmt::skip]
        let table: &[(&str, i64, i64, i64)] = &[
            ("forward",            5, 8,  8),
            ("same",               5, 5,  5),
            ("backward is held",   5, 3,  5),
            ("unknown is held",    5, -1, 5),
            ("from nothing",       0, 4,  4),
        ];
        for (name, current, candidate, want) in table {
            assert_eq!(advance(*current, *candidate), *want, "{name}");
        }
    }

    #[test]
    fn a_new_leader_holds_its_watermark_until_its_followers_report() {
        // The new leader learned HW 15 as a follower; its log ends at 20. Until each ISR
        // follower fetches in the new epoch its log end is unknown (-1): the HW stays.
        let hw = advance(15, high_watermark(20, [-1, -1]));
        assert_eq!(hw, 15);
        let hw = advance(hw, high_watermark(20, [20, -1]));
        assert_eq!(hw, 15);
        let hw = advance(hw, high_watermark(20, [20, 18]));
        assert_eq!(hw, 18);
    }
}
