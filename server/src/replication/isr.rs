//! The leader's in-sync-replica decisions, as plain functions over what it knows of each
//! follower (Kafka's `Partition.maybeShrinkIsr`, `maybeExpandIsr` and `Replica`'s
//! lastCaughtUpTime).
//!
//! A follower leaves the ISR when it has not caught up with the leader's log end for longer
//! than `replica_lag_time_max`, whether it is dead, stuck or slow, or sooner when it has not
//! fetched at all for `replica_fetch_silence_max` (dead, paused or cut off); it comes back once its log
//! end reaches the high watermark and the start of the leader's current epoch. The functions
//! only *propose* an ISR: the leader sends it to the controller, which commits it through the
//! metadata log (DESIGN.md §5). The leader itself is never dropped.
//!
//! **Order.** A proposed ISR keeps the current members in their current order (shrink only
//! removes, so the leader keeps its place, normally first) and appends new members in the order
//! the `followers` slice lists them, which callers keep in replica-assignment order. Stable
//! order keeps proposals small to compare and the metadata diff readable.

use crate::metadata::BrokerId;

/// A log end offset the leader has not yet heard in its current epoch.
pub const UNKNOWN_OFFSET: i64 = -1;

/// What the leader knows of one follower replica, from its fetches in the current epoch. The
/// leader keeps one for every follower from the moment it leads (log end [`UNKNOWN_OFFSET`],
/// last catch-up `now` for ISR members and 0 for the others, as Kafka's `resetReplicaState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's broker.
    pub id: BrokerId,
    /// The follower's log end: the offset of its latest fetch ([`UNKNOWN_OFFSET`] until it
    /// fetches in this epoch). Feeds the high watermark (for ISR members) and [`expand`].
    pub log_end_offset: i64,
    /// Kafka's lastCaughtUpTime: the latest time the follower held everything the leader had,
    /// judged by its fetches (a fetch from the leader's log end at that time, or one reaching
    /// the leader's log end of the follower's previous fetch, which dates to that fetch).
    /// Drives [`shrink`].
    pub last_caught_up_ms: i64,
}

/// Kafka's `isFollowerInSync`: a follower may (re)join the ISR once its log end reaches the
/// high watermark (it holds everything acknowledged) and the start offset of the leader's
/// current epoch (it has truncated any divergent tail and fetched in this epoch).
pub fn is_follower_in_sync(
    log_end_offset: i64,
    high_watermark: i64,
    leader_epoch_start_offset: i64,
) -> bool {
    log_end_offset >= high_watermark && log_end_offset >= leader_epoch_start_offset
}

/// The ISR without its followers that lag: those whose last catch-up is more than `lag_max_ms`
/// before `now_ms`, and members the leader holds no state for (not replicas it follows; a
/// leader must hold a state for every follower from the moment it leads). Never drops `leader`.
/// `None` if nothing changes.
pub fn shrink(
    isr: &[BrokerId],
    leader: BrokerId,
    followers: &[FollowerState],
    now_ms: i64,
    lag_max_ms: i64,
) -> Option<Vec<BrokerId>> {
    let keeps = |id: BrokerId| {
        id == leader
            || followers
                .iter()
                .find(|f| f.id == id)
                .is_some_and(|f| now_ms.saturating_sub(f.last_caught_up_ms) <= lag_max_ms)
    };
    let shrunk: Vec<BrokerId> = isr.iter().copied().filter(|&id| keeps(id)).collect();
    (shrunk.len() != isr.len()).then_some(shrunk)
}

/// The ISR without the followers that have not fetched at all for more than
/// `silence_max_ms` (`last_fetch` holds, per follower, when its latest fetch arrived, or when
/// this leader started leading). A live follower long-polls and so fetches at least every
/// `replica_fetch_wait_max_ms`; one silent for several of those is dead, paused or cut off,
/// and every acks=all write would otherwise wait for it until [`shrink`]'s much longer lag
/// bound or its fencing. Never drops `leader`; members without an entry are kept ([`shrink`]
/// handles them). `None` if nothing changes.
pub fn drop_silent(
    isr: &[BrokerId],
    leader: BrokerId,
    last_fetch: &[(BrokerId, i64)],
    now_ms: i64,
    silence_max_ms: i64,
) -> Option<Vec<BrokerId>> {
    let silent = |id: BrokerId| {
        id != leader
            && last_fetch
                .iter()
                .find(|(f, _)| *f == id)
                .is_some_and(|(_, at)| now_ms.saturating_sub(*at) > silence_max_ms)
    };
    let kept: Vec<BrokerId> = isr.iter().copied().filter(|&id| !silent(id)).collect();
    (kept.len() != isr.len()).then_some(kept)
}

/// The ISR with every follower outside it that [`is_follower_in_sync`] at `high_watermark`
/// and `leader_epoch_start_offset` (the start of the leader's latest epoch-cache entry),
/// appended in `followers` order. `None` if nothing changes.
///
/// Pass only the follower whose fetch is being served, as Kafka checks expansion on a
/// follower's own fetch: on an idle partition a dead follower's log end equals the high
/// watermark, so checked over every follower it would re-enter right after [`shrink`] dropped
/// it, and leave again `lag_max` later, forever.
pub fn expand(
    isr: &[BrokerId],
    followers: &[FollowerState],
    high_watermark: i64,
    leader_epoch_start_offset: i64,
) -> Option<Vec<BrokerId>> {
    let mut expanded = isr.to_vec();
    for f in followers {
        if !expanded.contains(&f.id)
            && is_follower_in_sync(f.log_end_offset, high_watermark, leader_epoch_start_offset)
        {
            expanded.push(f.id);
        }
    }
    (expanded.len() != isr.len()).then_some(expanded)
}

#[cfg(test)]
mod tests;
