//! [`Leases`]: the controller's pure record of which brokers it has heard from, and when a
//! broker has gone silent long enough to be fenced (KRaft's `BrokerHeartbeatManager`).
//!
//! The rule (ARCHITECTURE.md, "Fencing is judged on evidence"): a broker is fenced only when
//! *this* controller, while it was running and acting as controller, went a whole session
//! without a heartbeat from it. Time is therefore measured on an **active clock** that advances
//! only on the controller's own ticks, by at most [`Leases::max_step`] per tick: a controller
//! that was paused (SIGSTOP, a long GC-like stall, a starved VM) or that could not act (it lost
//! its quorum) wakes up with its clock advanced by one step, not by the pause, so it never
//! fences brokers for heartbeats it was in no state to receive. A new term (a new controller, or
//! this one elected again) gives every broker a full session from then. The controller never
//! fences itself: it is evidently running.
//!
//! No I/O and no tokio: time is an input, so the rules are table-tested below.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::BrokerId;

/// Lease deadlines on the active clock, valid for one controller term.
#[derive(Debug)]
pub struct Leases {
    /// How long a broker may go without a heartbeat, on the active clock.
    session: Duration,
    /// The most one tick may advance the active clock (a longer gap was a pause).
    max_step: Duration,
    /// The term the deadlines were granted in; another term starts them afresh.
    term: Option<u64>,
    /// Time this controller has spent running and acting as controller in `term`.
    active: Duration,
    /// When the last tick was observed (wall of the monotonic clock), if any.
    last_tick: Option<Instant>,
    /// Per broker: the active-clock time its lease runs out.
    deadlines: HashMap<BrokerId, Duration>,
}

/// What one tick found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Whether this tick started a new term (every lease was granted afresh).
    pub new_term: bool,
    /// Live brokers whose lease ran out: fence them.
    pub expired: Vec<BrokerId>,
}

impl Leases {
    /// Leases of `session` length; a tick advances the active clock by at most `max_step`.
    pub fn new(session: Duration, max_step: Duration) -> Self {
        Self {
            session,
            max_step,
            term: None,
            active: Duration::ZERO,
            last_tick: None,
            deadlines: HashMap::new(),
        }
    }

    /// Records that this broker is *not* acting as controller at `now` (a follower, or a leader
    /// without a quorum): the active clock does not advance over this time.
    pub fn idle(&mut self, now: Instant) {
        self.last_tick = Some(now);
    }

    /// Grants `broker` a full session from now (a heartbeat or a registration arrived).
    pub fn renew(&mut self, broker: BrokerId) {
        self.deadlines.insert(broker, self.active + self.session);
    }

    /// Shortens `broker`'s lease by `silent`, the time this controller had already heard
    /// nothing from it before taking over: used once, at the start of a term, for the previous
    /// controller, whose Raft heartbeats this broker saw stop (that silence is why it was
    /// elected). A dead controller is then fenced one session after it fell silent, not one
    /// session after the election.
    pub fn already_silent(&mut self, broker: BrokerId, silent: Duration) {
        if let Some(deadline) = self.deadlines.get_mut(&broker) {
            *deadline = deadline.saturating_sub(silent).max(self.active);
        }
    }

    /// One controller tick at `now` in `term`, over the `live` (unfenced) brokers; `me` is this
    /// controller's own broker id. Returns which live brokers' leases ran out.
    pub fn tick(
        &mut self,
        now: Instant,
        term: u64,
        me: BrokerId,
        live: impl IntoIterator<Item = BrokerId>,
    ) -> Tick {
        let new_term = self.term != Some(term);
        if new_term {
            self.term = Some(term);
            self.active = Duration::ZERO;
            self.deadlines.clear();
        } else if let Some(last) = self.last_tick {
            self.active += now.saturating_duration_since(last).min(self.max_step);
        }
        self.last_tick = Some(now);
        let grace = self.active + self.session;
        let mut expired = Vec::new();
        for id in live {
            let deadline = *self.deadlines.entry(id).or_insert(grace);
            if id != me && deadline <= self.active {
                expired.push(id);
            }
        }
        expired.sort_unstable();
        Tick { new_term, expired }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_millis(3_000);
    const STEP: Duration = Duration::from_millis(400);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives `leases` with ticks every `every` from `start` for `span`, returning the first
    /// tick offset (from `start`) at which each broker expired.
    fn run(
        leases: &mut Leases,
        start: Instant,
        from: Duration,
        span: Duration,
        every: Duration,
        live: &[BrokerId],
    ) -> Vec<(Duration, BrokerId)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= from + span {
            for id in leases.tick(start + t, 1, 1, live.iter().copied()).expired {
                out.push((t, id));
            }
            t += every;
        }
        out
    }

    #[test]
    fn a_silent_broker_expires_after_one_session_of_running_time() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        let first = l.tick(start, 1, 1, [1, 2, 3]);
        assert!(first.new_term);
        assert!(first.expired.is_empty());
        // Broker 2 heartbeats every 500 ms; broker 3 never does.
        let mut t = ms(0);
        let mut fenced_3 = None;
        while t <= ms(6_000) {
            t += ms(100);
            if t.as_millis().is_multiple_of(500) {
                l.renew(2);
            }
            let tick = l.tick(start + t, 1, 1, [1, 2, 3]);
            assert!(
                !tick.expired.contains(&2),
                "a heartbeating broker expired at {t:?}"
            );
            if tick.expired.contains(&3) && fenced_3.is_none() {
                fenced_3 = Some(t);
            }
        }
        assert_eq!(
            fenced_3,
            Some(SESSION),
            "broker 3 expires exactly one session in"
        );
    }

    #[test]
    fn the_controller_never_fences_itself() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        let expired = run(&mut l, start, ms(0), ms(10_000), ms(200), &[1]);
        assert!(expired.is_empty(), "{expired:?}");
    }

    #[test]
    fn a_paused_controller_does_not_fence_on_resume() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        l.tick(start, 1, 1, [1, 2, 3]);
        l.renew(2);
        l.renew(3);
        // 1 s of normal ticks, then the controller is stopped for 20 s.
        assert!(run(&mut l, start, ms(200), ms(800), ms(200), &[1, 2, 3]).is_empty());
        let resumed = l.tick(start + ms(21_000), 1, 1, [1, 2, 3]);
        assert!(
            resumed.expired.is_empty(),
            "fenced on resume: {:?}",
            resumed.expired
        );
        // The brokers' heartbeats arrive right after the resume: nobody is ever fenced.
        l.renew(2);
        l.renew(3);
        assert!(
            l.tick(start + ms(21_100), 1, 1, [1, 2, 3])
                .expired
                .is_empty()
        );
    }

    #[test]
    fn time_without_quorum_does_not_count() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        l.tick(start, 1, 1, [1, 2]);
        // Cut off from its quorum for 30 s: not acting, the clock stands still.
        for s in 1..=30 {
            l.idle(start + Duration::from_secs(s));
        }
        let back = l.tick(start + ms(30_100), 1, 1, [1, 2]);
        assert!(back.expired.is_empty());
        // Then broker 2 stays silent for a full session of acting time: fenced.
        let expired = run(&mut l, start, ms(30_200), ms(3_200), ms(100), &[1, 2]);
        assert_eq!(expired.first().map(|e| e.1), Some(2));
    }

    #[test]
    fn a_new_term_grants_everyone_a_full_session() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        l.tick(start, 1, 1, [1, 2, 3]);
        // Broker 3 went silent 2.9 s ago in term 1...
        assert!(run(&mut l, start, ms(100), ms(2_800), ms(100), &[1, 2, 3]).is_empty());
        // ...then term 2 starts: 3 is not fenced before a full session of term 2.
        let t2 = l.tick(start + ms(3_000), 2, 1, [1, 2, 3]);
        assert!(t2.new_term);
        assert!(t2.expired.is_empty());
        let mut t = ms(3_000);
        let mut first = None;
        while t < ms(8_000) {
            t += ms(100);
            l.renew(2);
            if let Some(&id) = l.tick(start + t, 2, 1, [1, 2, 3]).expired.first() {
                first.get_or_insert((t, id));
            }
        }
        assert_eq!(first, Some((ms(6_000), 3)));
    }

    #[test]
    fn a_silent_previous_controller_keeps_only_the_rest_of_its_session() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        let t = l.tick(start, 1, 1, [1, 2, 3]);
        assert!(t.new_term);
        // Broker 3 led the term before and had been silent for 1.2 s when broker 1 was elected.
        l.already_silent(3, ms(1_200));
        let expired = run(&mut l, start, ms(100), ms(3_000), ms(100), &[1, 2, 3]);
        assert_eq!(expired.first(), Some(&(ms(1_800), 3)));
        // Silent longer than a session: fenced at the first tick.
        let mut l = Leases::new(SESSION, STEP);
        l.tick(start, 1, 1, [1, 2, 3]);
        l.already_silent(3, ms(10_000));
        assert_eq!(l.tick(start + ms(100), 1, 1, [1, 2, 3]).expired, vec![3]);
    }

    #[test]
    fn slow_ticks_count_at_most_one_step_each() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        l.tick(start, 1, 1, [1, 2]);
        // Ticks 1 s apart (a starved controller) advance 400 ms each: 8 ticks = 3.2 s.
        let expired = run(&mut l, start, ms(1_000), ms(10_000), ms(1_000), &[1, 2]);
        assert_eq!(expired.first(), Some(&(ms(8_000), 2)));
    }

    #[test]
    fn a_broker_that_registers_late_gets_a_full_session() {
        let start = Instant::now();
        let mut l = Leases::new(SESSION, STEP);
        assert!(run(&mut l, start, ms(0), ms(5_000), ms(100), &[1]).is_empty());
        // Broker 4 appears (registered) at 5.1 s.
        l.renew(4);
        let expired = run(&mut l, start, ms(5_100), ms(3_100), ms(100), &[1, 4]);
        assert_eq!(expired.first(), Some(&(ms(8_000), 4)));
    }
}
