//! Where a follower cuts its log before it fetches from a new leader: by leader epoch
//! (Kafka KIP-101, refined by KIP-279), never to its own high watermark.
//!
//! Truncating to the high watermark is what Kafka did before KIP-101, and it is wrong both
//! ways: the watermark a follower knows lags the leader's, so it can drop records the cluster
//! acknowledged (KIP-101 scenario 1), and after a double crash it can keep records the new
//! leader never had (scenario 2: the logs diverge for good). Epochs fix both: the follower asks
//! the leader where its own latest epoch ends in the *leader's* log and cuts there.
//!
//! The exchange (the follower's loop; the RPC is the caller's):
//!
//! 1. `asked = local.latest_epoch()`; if there is one, ask the leader for
//!    `end_offset_for(asked, leader_leo)`: the leader's largest epoch at or below `asked` and
//!    where it ends.
//! 2. [`truncation_offset`] turns the answer into a [`Truncation`]. If the leader answered an
//!    epoch below `asked` (the follower led epochs the leader never saw), the follower looks up
//!    where *it* ends that epoch: if it has that epoch, it cuts at the smaller end and is done;
//!    if not (KIP-279), it asks again about its own largest epoch below the answer, which is
//!    lower than the last epoch asked, so the loop ends.
//!
//! Kafka cuts the log at each intermediate step and derives the next question from the cut
//! log. Here the follower cuts once, at the end: the final point is never above the end of any
//! epoch asked about on the way (each answer's epoch is at or below the epoch asked, so its end
//! here is no later), so the intermediate cuts are implied. The cache passed may be the same
//! snapshot every round.
//!
//! Every cut is safe for acknowledged records: a record below the leader's high watermark is in
//! the leader's log in the same epoch at the same offset, and the follower only cuts where its
//! log and the leader's disagree on the epoch of an offset, or past the leader's log end.

use std::cmp::min;

use super::epoch_cache::LeaderEpochCache;

/// What a follower does to its log before fetching from the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Truncate the log to this offset (`Log::truncate_to`, then
    /// [`LeaderEpochCache::truncate_from_end`] with the log's new end), then fetch from the log
    /// end. An offset at or past the log end cuts nothing.
    To(i64),
    /// KIP-279's further round: cut nothing yet; ask the leader for the end of `epoch` (always
    /// below the epoch the leader just answered) and call [`truncation_offset`] again with the
    /// same cache, the same log end and the new answer.
    AskAgain { epoch: i32 },
    /// The follower shares no epoch with the leader: every record it holds carries an epoch
    /// the leader's log does not have at that offset (or it has no epoch to ask about). Drop
    /// the whole log and restart it empty at the leader's log start offset (`Log::reset_to`,
    /// Kafka's `truncateFullyAndStartAt`), then fetch.
    ///
    /// Kafka here truncates to the follower's high watermark and lets an out-of-range fetch
    /// reset the log; that is the very rule KIP-101 removed, and it can keep records the
    /// leader does not have. Nothing is lost by starting over: whatever was acknowledged is in
    /// the leader's log, or below its log start (deleted by retention there anyway).
    StartOver,
    /// The answer breaks the protocol (an epoch above the one asked, a negative epoch or
    /// offset): cut nothing, log it, and ask again after a backoff. Truncating on a nonsense
    /// answer could drop acknowledged records.
    InvalidAnswer,
}

/// The follower's truncation point given its epoch cache `local`, its log end `local_leo` and
/// the leader's answer to "where does epoch `e` end?", `e` being `local.latest_epoch()` in the
/// first round and then each [`Truncation::AskAgain`]'s epoch: `Some((epoch, end_offset))`,
/// the leader's largest epoch at or below `e` and its end, or `None` when the leader has no
/// epoch at or below `e` (Kafka's undefined answer; also pass `None` without asking when
/// `local` is empty).
///
/// Pure: the same inputs give the same answer, and nothing is changed.
pub fn truncation_offset(
    local: &LeaderEpochCache,
    local_leo: i64,
    leader_answer: Option<(i32, i64)>,
) -> Truncation {
    let Some(asked) = local.latest_epoch() else {
        // No epochs: an empty log (a rebuilt cache covers every batch). Nothing to compare.
        return Truncation::StartOver;
    };
    let Some((leader_epoch, leader_end)) = leader_answer else {
        // The leader's first epoch is above every epoch the follower has.
        return Truncation::StartOver;
    };
    // Checked against the first round's question: later ones ask about lower epochs, so this
    // is a bound, not exact.
    if leader_epoch > asked || leader_epoch < 0 || leader_end < 0 {
        return Truncation::InvalidAnswer;
    }
    match local.end_offset_for(leader_epoch, local_leo) {
        // The follower has the leader's epoch: both logs agree up to the smaller of its two
        // ends (when it is the follower's latest, its end is the follower's log end).
        Some((epoch, local_end)) if epoch == leader_epoch => {
            Truncation::To(min(min(leader_end, local_end), local_leo))
        }
        // The follower lacks the leader's epoch: what it wrote after its own `epoch` is in
        // epochs the leader does not have (the final cut is at or below its end). Compare
        // `epoch` itself.
        Some((epoch, _)) => Truncation::AskAgain { epoch },
        // Every local epoch is above the leader's answer, and the leader has none of them:
        // no record here matches the leader's at its offset (KIP-279 would cut to the
        // leader's end here, keeping such records).
        None => Truncation::StartOver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table row: name, the follower's epoch entries, its log end, the leader's answer, and
    /// the expected truncation.
    type Row<'a> = (
        &'a str,
        &'a [(i32, i64)],
        i64,
        Option<(i32, i64)>,
        Truncation,
    );

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::in_memory();
        for &(epoch, start) in entries {
            c.assign(epoch, start).expect("valid test entry");
        }
        c
    }

    #[test]
    fn truncation_offset_table() {
        use Truncation::*;
        // The follower's epochs: 0 from 0, 2 from 10, 5 from 20; its log ends at 30.
        let follower: &[(i32, i64)] = &[(0, 0), (2, 10), (5, 20)];
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("same epoch, leader ahead: nothing",    follower, 30, Some((5, 40)), To(30)),
            ("same epoch, leader behind: its end",   follower, 30, Some((5, 25)), To(25)),
            ("same epoch, ends together",            follower, 30, Some((5, 30)), To(30)),
            ("lower epoch the follower has",         follower, 30, Some((2, 15)), To(15)),
            ("lower epoch, follower's end smaller",  follower, 30, Some((2, 24)), To(20)),
            ("lower epoch the follower lacks",       follower, 30, Some((3, 24)), AskAgain { epoch: 2 }),
            ("lacks it, asks about its older epoch", follower, 30, Some((1, 12)), AskAgain { epoch: 0 }),
            ("below every follower epoch",           &[(4, 0), (6, 8)], 12, Some((3, 5)), StartOver),
            ("leader has no such epoch",             follower, 30, None,          StartOver),
            ("follower has no epochs",               &[],      0,  None,          StartOver),
            ("answer above the epoch asked",         follower, 30, Some((6, 40)), InvalidAnswer),
            ("negative epoch",                       follower, 30, Some((-1, 4)), InvalidAnswer),
            ("negative offset",                      follower, 30, Some((5, -1)), InvalidAnswer),
        ];
        for (name, entries, leo, answer, want) in table {
            assert_eq!(
                truncation_offset(&cache(entries), *leo, *answer),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn asking_again_ends_and_cuts_at_or_below_every_epoch_asked() {
        // Against every leader epoch history over epochs 0..8 (each epoch present or not, ends
        // spaced 10 apart): the rounds ask about strictly lower epochs, and the final cut is at
        // or below the follower's end of every epoch asked about after the first (the cut
        // Kafka makes at each intermediate step).
        let follower = cache(&[(0, 0), (2, 10), (5, 20), (7, 26)]);
        let leo = 30;
        for mask in 1_u32..(1 << 8) {
            let mut leader = LeaderEpochCache::in_memory();
            for (i, epoch) in (0..8).filter(|e| mask & (1 << e) != 0).enumerate() {
                leader.assign(epoch, 10 * i as i64).unwrap();
            }
            let leader_leo = 10 * i64::from(mask.count_ones());
            let mut asked = follower.latest_epoch().unwrap();
            let mut implied_cut = leo;
            let outcome = loop {
                let answer = leader.end_offset_for(asked, leader_leo);
                match truncation_offset(&follower, leo, answer) {
                    Truncation::AskAgain { epoch } => {
                        assert!(epoch < asked, "{mask:#b}: asked {asked}, then {epoch}");
                        let (_, end) = follower.end_offset_for(epoch, leo).unwrap();
                        implied_cut = implied_cut.min(end);
                        asked = epoch;
                    }
                    other => break other,
                }
            };
            match outcome {
                Truncation::To(offset) => assert!(offset <= implied_cut, "{mask:#b}"),
                Truncation::StartOver => {}
                other => panic!("{mask:#b}: {other:?}"),
            }
        }
    }
}
