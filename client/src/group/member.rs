//! The member's side of the KIP-848 heartbeat, as a synchronous state machine: what the next
//! heartbeat says and when it may leave, and what each answer means. Time is an argument; the
//! async shell (`heartbeat.rs`) moves the messages and runs the timers.
//!
//! The rules it keeps:
//!
//! - One heartbeat in flight: the next waits for the answer to the last.
//! - A heartbeat every `heartbeat_interval_ms` (the coordinator's), and at once after a change
//!   the coordinator must hear about: a join, a new subscription, a change in what is owned, a
//!   new stream, a leave.
//! - Every heartbeat reports `owned`: what the application side holds right now. Unset would
//!   mean "unchanged", which never acknowledges a revocation; sending it always costs a few
//!   bytes and cannot be misread.
//! - `UNKNOWN_MEMBER_ID` / `FENCED_MEMBER_EPOCH`: every partition is lost (never committed),
//!   and the member rejoins at epoch 0 with the same member id. A *loss count* tags each
//!   ownership generation, so a report of what was owned before a loss cannot reach the
//!   coordinator after it.
//! - A stream that ends, breaks, is refused (`NOT_COORDINATOR`, `COORDINATOR_NOT_AVAILABLE`)
//!   or goes unanswered for [`Membership::call_timeout`] loses nothing: the member finds the
//!   coordinator again and carries on with the same id and epoch, sending its subscription
//!   again. As in KIP-848, only a coordinator says a member was removed: one that could not
//!   be reached (dead, stopped, cut off, failing over) has not removed anyone, and a new
//!   coordinator gives every member it loads a full session from when it starts serving. So
//!   a coordinator's failure costs no partition; a member cut off from a live coordinator
//!   learns that it was removed when it reaches it again, and its commits are refused
//!   meanwhile.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cairn_proto::v1::{
    GroupHeartbeatRequest, GroupHeartbeatResponse, OwnedPartitions, Subscription,
};

use super::{TopicPartition, by_topic, from_wire};
use crate::error::Error;

/// Epoch of a join.
const JOIN_EPOCH: i32 = 0;
/// Epoch of a leave for good.
const LEAVE_EPOCH: i32 = -1;
/// Epoch of a static member leaving to restart: its partitions wait for it.
const TEMPORARY_LEAVE_EPOCH: i32 = -2;
/// How often to heartbeat until the coordinator says (the first heartbeat goes at once).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
/// The shortest deadline of a call to the coordinator: an answer needs a replicated write
/// when the group changes, which can take a moment on a busy cluster.
const MIN_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// What an answer (or the lack of one) means for the rest of the consumer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An answer: the assignment, when it differs from the last one passed on.
    Answered(Option<BTreeSet<TopicPartition>>),
    /// Every partition is lost; the member is rejoining.
    Lost,
    /// The heartbeat was refused for a reason a retry may cure: back off, then send again.
    Retry(Error),
    /// The heartbeat was refused for good (a bad group id, say).
    Fatal(Error),
    /// The member left (or its leave was answered, however).
    Left,
}

/// A member's heartbeat state.
#[derive(Debug)]
pub(crate) struct Membership {
    group: String,
    member_id: String,
    epoch: i32,
    instance_id: Option<String>,
    subscription: Vec<String>,
    /// The next heartbeat carries the subscription: on join, after a change, on a new stream.
    send_subscription: bool,
    /// What the application side holds (its last report in the current generation).
    owned: BTreeSet<TopicPartition>,
    /// Losses so far: the generation of ownership reports that count.
    losses: u64,
    /// The last assignment passed on; `None` after a loss, so the next one is passed on even
    /// if equal.
    assignment: Option<BTreeSet<TopicPartition>>,
    interval: Duration,
    /// The group's session timeout: bounds the call deadlines.
    session_timeout: Duration,
    /// The client's request timeout: the longest any call may take.
    max_call_timeout: Duration,
    /// When the heartbeat in flight was sent.
    in_flight: Option<Instant>,
    /// The heartbeat in flight is a leave.
    sent_leave: bool,
    /// Something changed that the coordinator must hear at once.
    urgent: bool,
    /// When the next regular heartbeat is due.
    next_due: Instant,
    /// No heartbeat before this (back-off after a refusal).
    hold_until: Option<Instant>,
    leaving: bool,
}

impl Membership {
    /// A member of `group` about to join as `member_id`; no call to the coordinator may take
    /// longer than `max_call_timeout`.
    pub fn new(
        group: String,
        member_id: String,
        instance_id: Option<String>,
        session_timeout: Duration,
        max_call_timeout: Duration,
        now: Instant,
    ) -> Self {
        Self {
            group,
            member_id,
            epoch: JOIN_EPOCH,
            instance_id,
            subscription: Vec::new(),
            send_subscription: true,
            owned: BTreeSet::new(),
            losses: 0,
            assignment: None,
            interval: DEFAULT_INTERVAL,
            session_timeout,
            max_call_timeout,
            in_flight: None,
            sent_leave: false,
            urgent: true,
            next_due: now,
            hold_until: None,
            leaving: false,
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The next heartbeat, if one may leave now; it is then in flight.
    pub fn request(&mut self, now: Instant) -> Option<GroupHeartbeatRequest> {
        if self.in_flight.is_some() || self.hold_until.is_some_and(|h| now < h) {
            return None;
        }
        self.hold_until = None;
        if !self.urgent && now < self.next_due {
            return None;
        }
        let epoch = match (self.leaving, &self.instance_id) {
            (false, _) => self.epoch,
            (true, Some(_)) => TEMPORARY_LEAVE_EPOCH,
            (true, None) => LEAVE_EPOCH,
        };
        let subscription = (self.send_subscription || epoch == JOIN_EPOCH).then(|| Subscription {
            topics: self.subscription.clone(),
        });
        self.in_flight = Some(now);
        self.sent_leave = self.leaving;
        self.urgent = false;
        self.send_subscription = false;
        Some(GroupHeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: epoch,
            instance_id: self.instance_id.clone(),
            subscription,
            owned: Some(OwnedPartitions {
                topics: by_topic(&self.owned),
            }),
        })
    }

    /// Applies the answer to the heartbeat in flight.
    pub fn on_answer(&mut self, answer: GroupHeartbeatResponse, now: Instant) -> Outcome {
        self.in_flight = None;
        let answered_leave = std::mem::take(&mut self.sent_leave);
        if let Some(error) = answer.error {
            let e = Error::from_stream_error(error);
            if answered_leave {
                return Outcome::Left;
            }
            if self.leaving {
                // The answer to the heartbeat before the leave: the leave goes next.
                self.urgent = true;
                return Outcome::Answered(None);
            }
            if e.is_member_lost() {
                self.lose(now);
                return Outcome::Lost;
            }
            if matches!(e, Error::InvalidArgument { .. }) {
                return Outcome::Fatal(e);
            }
            // Send the same heartbeat again once the shell's back-off is over.
            self.urgent = true;
            return Outcome::Retry(e);
        }
        if !answer.member_id.is_empty() {
            self.member_id = answer.member_id;
        }
        self.epoch = answer.member_epoch;
        if answer.heartbeat_interval_ms > 0 {
            self.interval =
                Duration::from_millis(answer.heartbeat_interval_ms.unsigned_abs().into());
        }
        if answer.session_timeout_ms > 0 {
            // The coordinator's session timeout is the one that counts.
            self.session_timeout =
                Duration::from_millis(answer.session_timeout_ms.unsigned_abs().into());
        }
        self.next_due = now + self.interval;
        if answered_leave || self.epoch < 0 {
            return Outcome::Left;
        }
        if self.leaving {
            // The answer to the heartbeat before the leave: nothing to pass on any more.
            self.urgent = true;
            return Outcome::Answered(None);
        }
        let Some(assignment) = answer.assignment else {
            return Outcome::Answered(None);
        };
        let assignment = from_wire(&assignment.topics);
        if self.assignment.as_ref() == Some(&assignment) {
            return Outcome::Answered(None);
        }
        self.assignment = Some(assignment.clone());
        Outcome::Answered(Some(assignment))
    }

    /// Waits until `until` before the next heartbeat (after a refusal or a failed connect).
    pub fn hold(&mut self, until: Instant) {
        self.hold_until = Some(until);
    }

    /// The application side owns `owned`, in its generation `losses`; a report from before
    /// the last loss is ignored.
    pub fn on_owned(&mut self, losses: u64, owned: BTreeSet<TopicPartition>) {
        if losses == self.losses && owned != self.owned {
            self.owned = owned;
            self.urgent = true;
        }
    }

    /// Subscribes to `topics` (joining, if the member has not yet).
    pub fn on_subscribe(&mut self, topics: Vec<String>) {
        if topics != self.subscription {
            self.subscription = topics;
            self.send_subscription = true;
            self.urgent = true;
        }
    }

    /// The stream ended or broke: the heartbeat in flight has no answer coming. Nothing is
    /// lost; the next stream starts with a full heartbeat.
    pub fn on_stream_closed(&mut self) {
        self.in_flight = None;
        self.sent_leave = false;
        self.send_subscription = true;
        self.urgent = true;
    }

    /// Asks to leave with the next heartbeat (after the answer to the one in flight).
    pub fn leave(&mut self) {
        self.leaving = true;
        self.urgent = true;
        self.hold_until = None;
    }

    /// The deadline of any call to the coordinator (a heartbeat's answer, finding the
    /// coordinator and opening a stream): about one heartbeat interval (at least
    /// [`MIN_CALL_TIMEOUT`]), at most a third of the session, so a dead, stopped or cut-off
    /// coordinator is noticed, and a new one tried, well within a session.
    pub fn call_timeout(&self) -> Duration {
        self.interval
            .max(MIN_CALL_TIMEOUT)
            .min(self.session_timeout / 3)
            .min(self.max_call_timeout)
    }

    /// The pause before the next attempt after `failures` consecutive failures: none after
    /// the first (a moved coordinator is followed at once), then the client's doubling
    /// `backoff`, capped at one heartbeat interval so that the member keeps knocking well
    /// within a session while a coordinator fails over.
    pub fn retry_delay(&self, failures: u32, backoff: impl Fn(u32) -> Duration) -> Duration {
        if failures <= 1 {
            Duration::ZERO
        } else {
            backoff(failures - 1).min(self.interval)
        }
    }

    /// Whether the heartbeat in flight has waited too long for its answer: the stream should
    /// be given up.
    pub fn answer_overdue(&self, now: Instant) -> bool {
        self.in_flight
            .is_some_and(|sent| now >= sent + self.call_timeout())
    }

    /// When the shell should next look at the state: a heartbeat due, or an answer overdue.
    pub fn next_wakeup(&self) -> Instant {
        match (self.in_flight, self.hold_until) {
            (Some(sent), _) => sent + self.call_timeout(),
            (None, Some(hold)) => hold,
            (None, None) => self.next_due,
        }
    }

    /// Drops every partition and gets ready to rejoin at epoch 0 with the same id.
    fn lose(&mut self, now: Instant) {
        self.epoch = JOIN_EPOCH;
        self.owned.clear();
        self.losses += 1;
        self.assignment = None;
        self.send_subscription = true;
        self.urgent = true;
        self.in_flight = None;
        self.sent_leave = false;
        self.next_due = now;
    }
}

/// A random member id: 32 hex digits. Two `RandomState`s seeded by the OS, mixed with the
/// time, the process id and a counter, so no dependency on a random-number crate is needed.
pub(crate) fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = (
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    );
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        std::hash::Hash::hash(&seed, &mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::v1::{ErrorStatus, TopicPartitions};

    const INTERVAL_MS: i32 = 200;

    fn member(now: Instant) -> Membership {
        let mut m = Membership::new(
            "g".into(),
            "m1".into(),
            None,
            Duration::from_secs(3),
            Duration::from_secs(1),
            now,
        );
        m.on_subscribe(vec!["t".into()]);
        m
    }

    fn set(parts: &[u32]) -> BTreeSet<TopicPartition> {
        parts.iter().map(|&p| TopicPartition::new("t", p)).collect()
    }

    fn answer(epoch: i32, parts: &[u32]) -> GroupHeartbeatResponse {
        GroupHeartbeatResponse {
            member_id: "m1".into(),
            member_epoch: epoch,
            heartbeat_interval_ms: INTERVAL_MS,
            assignment: Some(OwnedPartitions {
                topics: vec![TopicPartitions {
                    topic: "t".into(),
                    partitions: parts.to_vec(),
                }],
            }),
            error: None,
            session_timeout_ms: 0,
        }
    }

    fn refusal(reason: &str, code: tonic::Code) -> GroupHeartbeatResponse {
        GroupHeartbeatResponse {
            error: Some(ErrorStatus {
                code: code as i32,
                message: "no".into(),
                reason: reason.into(),
                metadata: Default::default(),
            }),
            ..Default::default()
        }
    }

    fn owned_of(r: &GroupHeartbeatRequest) -> BTreeSet<TopicPartition> {
        from_wire(&r.owned.as_ref().expect("always reported").topics)
    }

    #[test]
    fn joins_then_heartbeats_one_at_a_time_on_the_interval() {
        let t0 = Instant::now();
        let mut m = member(t0);
        let join = m.request(t0).expect("a join goes at once");
        assert_eq!((join.member_epoch, join.member_id.as_str()), (0, "m1"));
        assert!(owned_of(&join).is_empty());
        assert_eq!(join.subscription.expect("join subscribes").topics, ["t"]);
        assert!(m.request(t0).is_none(), "one in flight");

        let Outcome::Answered(Some(a)) = m.on_answer(answer(3, &[0, 1]), t0) else {
            panic!("first assignment is passed on")
        };
        assert_eq!(a, set(&[0, 1]));
        assert_eq!(m.epoch(), 3);
        assert!(m.request(t0).is_none(), "not due yet");
        let due = t0 + Duration::from_millis(INTERVAL_MS as u64);
        assert_eq!(m.next_wakeup(), due);
        let hb = m.request(due).expect("due");
        assert_eq!(hb.member_epoch, 3);
        assert!(hb.subscription.is_none(), "the subscription is sent once");
        // The same assignment again is not passed on.
        assert!(matches!(
            m.on_answer(answer(3, &[0, 1]), due),
            Outcome::Answered(None)
        ));
    }

    #[test]
    fn a_change_in_ownership_goes_at_once_after_the_answer_in_flight() {
        let t0 = Instant::now();
        let mut m = member(t0);
        m.request(t0).expect("join");
        m.on_answer(answer(1, &[0, 1]), t0);
        let t1 = t0 + Duration::from_millis(10);
        m.on_owned(0, set(&[0, 1]));
        let hb = m.request(t1).expect("owned changed: at once");
        assert_eq!(owned_of(&hb), set(&[0, 1]));
        // A revocation arrives; the release is reported while nothing is in flight.
        m.on_answer(answer(1, &[1]), t1);
        m.on_owned(0, set(&[1]));
        let hb = m.request(t1).expect("released: at once");
        assert_eq!(owned_of(&hb), set(&[1]));
        // A report that changes nothing is not urgent.
        m.on_answer(answer(2, &[1]), t1);
        m.on_owned(0, set(&[1]));
        assert!(m.request(t1).is_none());
    }

    #[test]
    fn refusals_that_fence_lose_everything_and_rejoin_with_the_same_id() {
        for (reason, code) in [
            ("UNKNOWN_MEMBER_ID", tonic::Code::NotFound),
            ("FENCED_MEMBER_EPOCH", tonic::Code::FailedPrecondition),
        ] {
            let t0 = Instant::now();
            let mut m = member(t0);
            m.request(t0).expect("join");
            m.on_answer(answer(4, &[0]), t0);
            m.on_owned(0, set(&[0]));
            m.request(t0).expect("report");
            assert!(matches!(
                m.on_answer(refusal(reason, code), t0),
                Outcome::Lost
            ));
            let rejoin = m.request(t0).expect("rejoin at once");
            assert_eq!(rejoin.member_epoch, 0, "{reason}");
            assert_eq!(rejoin.member_id, "m1", "{reason}");
            assert!(owned_of(&rejoin).is_empty(), "{reason}: nothing owned");
            assert!(rejoin.subscription.is_some(), "{reason}: a join subscribes");
            // A late report from before the loss does not count.
            m.on_owned(0, set(&[0]));
            m.on_answer(answer(5, &[0]), t0);
            let hb = m.request(t0 + Duration::from_secs(1)).expect("due");
            assert!(owned_of(&hb).is_empty(), "{reason}: stale report ignored");
            // The same assignment as before the loss is passed on again.
            m.on_owned(1, set(&[0]));
            assert!(matches!(
                m.on_answer(answer(5, &[0]), t0),
                Outcome::Answered(None)
            ));
        }
    }

    #[test]
    fn other_refusals_retry_and_bad_arguments_are_fatal() {
        let t0 = Instant::now();
        let mut m = member(t0);
        m.request(t0).expect("join");
        let busy = refusal("UNRELEASED_INSTANCE_ID", tonic::Code::FailedPrecondition);
        assert!(matches!(m.on_answer(busy, t0), Outcome::Retry(_)));
        let later = t0 + Duration::from_millis(500);
        m.hold(later);
        assert!(m.request(t0).is_none(), "held back");
        assert_eq!(m.next_wakeup(), later);
        assert_eq!(m.request(later).expect("retried").member_epoch, 0);
        let bad = refusal("INVALID_GROUP_ID", tonic::Code::InvalidArgument);
        assert!(matches!(m.on_answer(bad, later), Outcome::Fatal(_)));
    }

    #[test]
    fn a_silent_coordinator_or_a_broken_stream_loses_nothing() {
        let t0 = Instant::now();
        let mut m = member(t0);
        m.request(t0).expect("join");
        m.on_answer(answer(2, &[0]), t0);
        m.on_owned(0, set(&[0]));
        m.request(t0).expect("report");
        // No answer within the call deadline: the shell gives the stream up.
        assert!(!m.answer_overdue(t0 + Duration::from_millis(999)));
        assert!(m.answer_overdue(t0 + Duration::from_secs(1)));
        m.on_stream_closed();
        // Long past the session, still unreachable: the same id and epoch carry on, with the
        // subscription and what it owns, on the next stream. Only a coordinator removes.
        let later = t0 + Duration::from_secs(60);
        let again = m.request(later).expect("at once on the new stream");
        assert_eq!(again.member_epoch, 2);
        assert!(again.subscription.is_some());
        assert_eq!(owned_of(&again), set(&[0]));
        assert_eq!(m.epoch(), 2);
    }

    #[test]
    fn calls_and_retries_stay_well_within_the_session() {
        let t0 = Instant::now();
        let mut m = member(t0);
        m.request(t0).expect("join");
        // Session 1.5 s, heartbeats every 200 ms: calls get a third of the session.
        m.on_answer(
            GroupHeartbeatResponse {
                session_timeout_ms: 1_500,
                ..answer(2, &[0])
            },
            t0,
        );
        assert_eq!(m.call_timeout(), Duration::from_millis(500));
        // The first retry goes at once, later ones back off but never past the interval.
        let backoff = |n: u32| Duration::from_millis(100) * 2u32.pow(n);
        assert_eq!(m.retry_delay(1, backoff), Duration::ZERO);
        assert_eq!(m.retry_delay(2, backoff), Duration::from_millis(200));
        assert_eq!(m.retry_delay(30, backoff), Duration::from_millis(200));
        // A long session and interval: the call deadline is about one interval.
        m.on_answer(
            GroupHeartbeatResponse {
                session_timeout_ms: 45_000,
                heartbeat_interval_ms: 5_000,
                ..answer(2, &[0])
            },
            t0,
        );
        assert_eq!(
            m.call_timeout(),
            Duration::from_secs(1),
            "capped by the client's"
        );
    }

    #[test]
    fn leaving_waits_for_the_answer_in_flight() {
        for (instance, epoch) in [(None, -1), (Some("i-1".to_owned()), -2)] {
            let t0 = Instant::now();
            let mut m = Membership::new(
                "g".into(),
                "m1".into(),
                instance.clone(),
                Duration::from_secs(3),
                Duration::from_secs(1),
                t0,
            );
            m.on_subscribe(vec!["t".into()]);
            m.request(t0).expect("join");
            m.leave();
            assert!(m.request(t0).is_none(), "one in flight, even to leave");
            // The join's answer arrives while leaving: it is not passed on.
            assert!(matches!(
                m.on_answer(answer(1, &[0]), t0),
                Outcome::Answered(None)
            ));
            let leave = m.request(t0).expect("leave at once");
            assert_eq!(leave.member_epoch, epoch, "{instance:?}");
            assert_eq!(leave.instance_id, instance);
            assert!(matches!(m.on_answer(answer(epoch, &[]), t0), Outcome::Left));
        }
    }

    #[test]
    fn member_ids_are_32_hex_digits_and_differ() {
        let a = new_member_id();
        let b = new_member_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
