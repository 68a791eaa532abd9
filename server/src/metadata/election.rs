//! [`Election`]: when this voter starts a metadata Raft election, with a pre-vote (Raft thesis
//! §9.6) in front of it, because openraft 0.9 has none.
//!
//! openraft's own election timer is switched off (`enable_elect = false`). Instead, a voter that
//! has heard nothing from a leader for its election timeout asks every other voter "would you
//! vote for me?" (`cairn.v1.Raft/PreVote`) *without* raising its term. A voter says yes only if
//! it has not heard from a leader for the leader lease itself (openraft's followers refuse real
//! votes inside that lease anyway) and the candidate's log is at least as recent as its own.
//! Only with a majority of yeses does the candidate call `Trigger::elect`, and openraft runs the
//! real election. Two things follow:
//!
//! - A voter cut off from the others (or paused) never raises the term, so when it comes back
//!   it cannot depose a healthy controller (openraft steps down on seeing a higher vote).
//! - Failover is prompt and predictable: one election timeout (1.0–1.5 s by default) after the
//!   leader fell silent, with none of openraft's extra waits (its timer adds the leader lease,
//!   and twice the maximum timeout after seeing a greater log).
//!
//! The grant and timing rules are pure functions, table-tested; [`Election::run`] is the shell.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::{LogId, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::TypeConfig;
use crate::config::ClusterConfig;

/// How often the driver looks at the time since it last heard from a leader.
const POLL: Duration = Duration::from_millis(50);

/// A candidate's question to another voter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The candidate's node id.
    pub candidate: u64,
    /// The candidate's last log id (None: an empty log).
    pub last_log_id: Option<LogId<u64>>,
}

/// A voter's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteResponse {
    /// Whether the voter would vote for the candidate now.
    pub granted: bool,
    /// Why not, for the candidate's log.
    pub reason: String,
}

/// What a voter knows when asked for a pre-vote.
#[derive(Debug, Clone)]
pub struct Local {
    /// Whether this node is a leader that a quorum acknowledged within the lease.
    pub leading: bool,
    /// When this node last accepted a message from a leader.
    pub leader_contact: Option<Instant>,
    /// This node's last log id.
    pub last_log_id: Option<LogId<u64>>,
}

/// Whether a voter that knows `local` at `now` grants `req` a pre-vote, with the leader lease
/// `lease` (openraft's: `election_timeout_max`).
pub fn grant(
    req: &PreVoteRequest,
    local: &Local,
    now: Instant,
    lease: Duration,
) -> PreVoteResponse {
    let refuse = |reason: String| PreVoteResponse {
        granted: false,
        reason,
    };
    if local.leading {
        return refuse("this voter is the leader and has a quorum".to_owned());
    }
    if let Some(at) = local.leader_contact
        && now.saturating_duration_since(at) < lease
    {
        return refuse(format!(
            "this voter heard from the leader {} ms ago",
            now.saturating_duration_since(at).as_millis()
        ));
    }
    if req.last_log_id < local.last_log_id {
        return refuse(format!(
            "the candidate's log ({:?}) is behind this voter's ({:?})",
            req.last_log_id, local.last_log_id
        ));
    }
    PreVoteResponse {
        granted: true,
        reason: String::new(),
    }
}

/// Whether `granted` yeses (the candidate's own included) out of `voters` are a majority.
pub fn majority(granted: usize, voters: usize) -> bool {
    granted * 2 > voters
}

/// A random election timeout: between the leader lease (`max`) and `2 * max - min`, so no
/// voter asks before every other voter's lease could have run out.
pub fn timeout(min_ms: u64, max_ms: u64, random: u64) -> Duration {
    let spread = max_ms.saturating_sub(min_ms).max(1);
    Duration::from_millis(max_ms + random % spread)
}

/// This voter's election state, shared by the driver and the `PreVote` handler.
#[derive(Debug)]
pub struct Election {
    id: u64,
    /// openraft's leader lease: `election_timeout_max`.
    lease: Duration,
    min_ms: u64,
    max_ms: u64,
    /// When this node last accepted a message from a leader (AppendEntries, InstallSnapshot),
    /// and which leader.
    contact: Mutex<Option<(Instant, u64)>>,
    /// When this node's vote last changed (it voted for a candidate, or became one): an
    /// election is under way, which counts as activity like a leader's message.
    vote_change: Mutex<Option<Instant>>,
    /// When this node's leadership was last acknowledged by a quorum (leaders only).
    quorum_ack: Mutex<Option<Instant>>,
}

impl Election {
    /// The election state of node `id` with `cluster`'s timeouts.
    pub fn new(id: u64, cluster: &ClusterConfig) -> Self {
        Self {
            id,
            lease: Duration::from_millis(cluster.raft_election_timeout_max_ms),
            min_ms: cluster.raft_election_timeout_min_ms,
            max_ms: cluster.raft_election_timeout_max_ms,
            contact: Mutex::new(None),
            vote_change: Mutex::new(None),
            quorum_ack: Mutex::new(None),
        }
    }

    /// The leader lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Records that a message of `leader` was accepted now.
    pub fn heard_from_leader(&self, leader: u64) {
        *self.contact.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), leader));
    }

    /// The last leader this node heard from (other than itself) and how long ago: a new
    /// controller's evidence that its predecessor fell silent.
    pub fn last_leader(&self) -> Option<(u64, Duration)> {
        let contact = *self.contact.lock().unwrap_or_else(PoisonError::into_inner);
        contact
            .filter(|&(_, leader)| leader != self.id)
            .map(|(at, leader)| (leader, at.elapsed()))
    }

    /// The last sign of a leader or an election: a leader's message accepted, or this node's
    /// vote changing.
    fn activity(&self) -> Option<Instant> {
        let contact = self
            .contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|(at, _)| at);
        let vote = *self
            .vote_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        contact.max(vote)
    }

    /// Records that a quorum acknowledged this leader at `at`.
    pub fn quorum_acked(&self, at: Instant) {
        let mut ack = self
            .quorum_ack
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ack.is_none_or(|a| a < at) {
            *ack = Some(at);
        }
    }

    /// Forgets the quorum acknowledgements (this node stopped leading).
    pub fn clear_quorum_ack(&self) {
        *self
            .quorum_ack
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether a quorum acknowledged this leader within twice the lease (check-quorum: a
    /// leader cut off from its quorum stops acting as controller within two leases, 2 s by
    /// default). Twice, not once: the followers' own timers need a lease of silence plus a
    /// pre-vote round before they elect anyone, and a leader starved of CPU for about a lease
    /// on a loaded machine should not stop acting for nothing.
    pub fn has_quorum(&self, now: Instant) -> bool {
        self.quorum_ack
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| now.saturating_duration_since(at) < self.lease * 2)
    }

    /// Answers a candidate's pre-vote.
    pub fn answer(&self, raft: &Raft<TypeConfig>, req: &PreVoteRequest) -> PreVoteResponse {
        let leading = raft.metrics().borrow().state == ServerState::Leader;
        let last_log_id = raft.data_metrics().borrow().last_log;
        let local = Local {
            leading,
            leader_contact: self.activity(),
            last_log_id,
        };
        let answer = grant(req, &local, Instant::now(), self.lease);
        tracing::debug!(candidate = req.candidate, ?answer, "pre-vote");
        answer
    }

    /// Watches openraft's metrics for quorum acknowledgements of this leader.
    pub async fn watch_quorum(
        self: Arc<Self>,
        raft: Raft<TypeConfig>,
        shutdown: CancellationToken,
    ) {
        let mut metrics = raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    if let Some(ms) = m.millis_since_quorum_ack {
                        let at = Instant::now()
                            .checked_sub(Duration::from_millis(ms))
                            .unwrap_or_else(Instant::now);
                        self.quorum_acked(at);
                    }
                } else {
                    self.clear_quorum_ack();
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = metrics.changed() => if r.is_err() { return },
            }
        }
    }

    /// Starts elections for this voter when the leader falls silent, after a pre-vote, until
    /// `shutdown`. `peers` resolves the other voters' addresses and asks them.
    pub async fn run<P: PreVoter>(
        self: Arc<Self>,
        raft: Raft<TypeConfig>,
        peers: P,
        shutdown: CancellationToken,
    ) {
        let started = Instant::now();
        let mut last_attempt: Option<Instant> = None;
        let mut wait = self.random_timeout();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            let m = raft.metrics().borrow().clone();
            let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
            if m.state == ServerState::Leader || !voters.contains(&self.id) {
                last_attempt = None;
                continue;
            }
            let silent_since = [Some(started), self.activity(), last_attempt]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(started);
            let alone = voters.len() == 1;
            if !alone && silent_since.elapsed() < wait {
                continue;
            }
            let round = Instant::now();
            last_attempt = Some(round);
            wait = self.random_timeout();
            let last_log_id = raft.data_metrics().borrow().last_log;
            let req = PreVoteRequest {
                candidate: self.id,
                last_log_id,
            };
            let others: Vec<u64> = voters.iter().copied().filter(|&v| v != self.id).collect();
            let needed = voters.len() / 2;
            let yes = 1 + peers
                .ask(&others, needed, &req, Duration::from_millis(self.min_ms))
                .await;
            if self.activity().is_some_and(|a| a > round) {
                // A leader spoke, or another election began, while we asked: stand down.
                continue;
            }
            if !majority(yes, voters.len()) {
                tracing::info!(
                    yes,
                    voters = voters.len(),
                    "no leader heard from, but the pre-vote found no majority: not electing"
                );
                continue;
            }
            tracing::info!(
                yes,
                voters = voters.len(),
                "leader silent and pre-vote won: electing"
            );
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
    }

    fn random_timeout(&self) -> Duration {
        timeout(self.min_ms, self.max_ms, fastrand::u64(..))
    }
}

/// Asks other voters for pre-votes (the transport, in `network.rs`).
pub trait PreVoter: Send + Sync + 'static {
    /// Asks each of `voters` concurrently, each call bounded by `timeout`; returns how many
    /// granted, as soon as `needed` did (an unreachable voter does not hold up a majority).
    fn ask(
        &self,
        voters: &[u64],
        needed: usize,
        req: &PreVoteRequest,
        timeout: Duration,
    ) -> impl Future<Output = usize> + Send;
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    const LEASE: Duration = Duration::from_millis(1_000);

    fn log(term: u64, index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn ask(last_log_id: Option<LogId<u64>>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            last_log_id,
        }
    }

    #[test]
    fn grant_table() {
        let now = Instant::now();
        let ago = |ms: u64| Some(now - Duration::from_millis(ms));
        // (case, leading, leader contact, my log, candidate's log, granted)
        let cases = [
            (
                "never heard of a leader",
                false,
                None,
                log(1, 5),
                log(1, 5),
                true,
            ),
            (
                "leader silent past the lease",
                false,
                ago(1_001),
                log(1, 5),
                log(1, 6),
                true,
            ),
            (
                "leader heard within the lease",
                false,
                ago(999),
                log(1, 5),
                log(1, 9),
                false,
            ),
            (
                "candidate log shorter",
                false,
                ago(5_000),
                log(1, 5),
                log(1, 4),
                false,
            ),
            (
                "candidate log older term",
                false,
                None,
                log(2, 3),
                log(1, 9),
                false,
            ),
            (
                "candidate log newer term",
                false,
                None,
                log(1, 9),
                log(2, 3),
                true,
            ),
            ("both empty", false, None, None, None, true),
            (
                "this voter leads with a quorum",
                true,
                None,
                log(1, 5),
                log(1, 5),
                false,
            ),
        ];
        for (case, leading, contact, mine, theirs, want) in cases {
            let local = Local {
                leading,
                leader_contact: contact,
                last_log_id: mine,
            };
            let got = grant(&ask(theirs), &local, now, LEASE);
            assert_eq!(got.granted, want, "{case}: {}", got.reason);
            assert_eq!(got.reason.is_empty(), want, "{case}: a refusal says why");
        }
    }

    #[test]
    fn majorities() {
        for (yes, voters, want) in [
            (1, 1, true),
            (1, 2, false),
            (2, 2, true),
            (1, 3, false),
            (2, 3, true),
            (2, 5, false),
            (3, 5, true),
        ] {
            assert_eq!(majority(yes, voters), want, "{yes} of {voters}");
        }
    }

    #[test]
    fn timeouts_start_at_the_lease() {
        for r in [0, 1, 499, 500, 12_345, u64::MAX] {
            let t = timeout(500, 1_000, r);
            assert!(
                t >= Duration::from_millis(1_000) && t < Duration::from_millis(1_500),
                "{t:?}"
            );
        }
        assert_eq!(timeout(1_000, 1_000, 7), Duration::from_millis(1_000));
    }

    #[test]
    fn quorum_acks_expire_after_the_lease() {
        let e = Election::new(1, &ClusterConfig::default());
        let now = Instant::now();
        assert!(!e.has_quorum(now), "no ack yet");
        e.quorum_acked(now);
        assert!(e.has_quorum(now + e.lease()));
        assert!(e.has_quorum(now + e.lease() * 2 - Duration::from_millis(1)));
        assert!(!e.has_quorum(now + e.lease() * 2));
        e.clear_quorum_ack();
        assert!(!e.has_quorum(now));
    }
}
