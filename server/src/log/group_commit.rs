//! Group commit: many appenders, one fsync.
//!
//! Appenders write under the log's lock, release it, then ask for their end offset to become
//! durable. If no flush is running, the asker becomes the flusher: it snapshots what must be
//! synced (the caller's `lead` closure does that and the fsyncs, outside every lock), then
//! publishes the new durable offset and wakes everyone. Appenders that arrive during a flush wait
//! on a `Condvar` and are usually covered by the next one, so N concurrent appends cost far fewer
//! than N fsyncs.
//!
//! An fsync error is fatal and sticky (DESIGN.md §3): it is never retried, every waiter and every
//! later caller gets it, and nobody is acknowledged. Truncation takes the flusher role too, so it
//! never races a flush, and bumps a generation so that appends it removed before they became
//! durable are refused rather than acknowledged. This module knows nothing of segments or files.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a wait for durability ended without success.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// An fsync failed (now or earlier); the log is failed for good.
    Failed(Arc<io::Error>),
    /// A truncation happened since the append; it may have been removed.
    Truncated,
}

#[derive(Debug)]
struct CommitState {
    /// Every offset below this is on stable storage.
    durable: i64,
    /// A flusher (or a truncation) is running.
    flushing: bool,
    /// The first fsync error; once set, never cleared.
    failed: Option<Arc<io::Error>>,
    /// When the last flush finished, for `FsyncPolicy::Interval`.
    last_flush: Instant,
}

/// Shared durability state of one log.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    /// Signalled whenever a flush or truncation ends.
    done: Condvar,
    /// Flush rounds that ran (each syncs every file it needs once).
    rounds: AtomicU64,
    /// Truncations so far; appenders note it while holding the log's write lock.
    generation: AtomicU64,
    /// Mirrors `state.failed.is_some()`, so the append path checks it without the mutex.
    failed: AtomicBool,
}

impl GroupCommit {
    /// Starts with everything below `durable` on disk.
    pub(crate) fn new(durable: i64) -> Self {
        GroupCommit {
            state: Mutex::new(CommitState {
                durable,
                flushing: false,
                failed: None,
                last_flush: Instant::now(),
            }),
            done: Condvar::new(),
            rounds: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state
            .lock()
            .expect("group-commit state is only mutated by non-panicking code")
    }

    /// The sticky fsync error, if any.
    pub(crate) fn failure(&self) -> Option<Arc<io::Error>> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.lock().failed.clone()
    }

    /// Records a fatal error (an fsync, or a write that may have left a partial batch).
    /// The first error wins; it is returned.
    pub(crate) fn fail(&self, error: io::Error) -> Arc<io::Error> {
        let mut state = self.lock();
        let error = state.failed.get_or_insert_with(|| Arc::new(error)).clone();
        self.failed.store(true, Ordering::Release);
        self.done.notify_all();
        error
    }

    /// Every offset below this is durable.
    pub(crate) fn durable(&self) -> i64 {
        self.lock().durable
    }

    /// Flush rounds so far.
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// The current truncation generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// True if `interval` has passed since the last flush.
    pub(crate) fn due(&self, interval: Duration) -> bool {
        self.lock().last_flush.elapsed() >= interval
    }

    /// Returns once every offset below `upto` is durable. `generation` is the value of
    /// [`generation`](Self::generation) when the caller appended. If no flush is running, runs
    /// `lead` (outside the lock) to perform one: it returns the offset it made durable.
    pub(crate) fn wait_durable(
        &self,
        upto: i64,
        generation: u64,
        lead: impl Fn() -> io::Result<i64>,
    ) -> Result<(), CommitError> {
        let mut state = self.lock();
        loop {
            if let Some(e) = &state.failed {
                return Err(CommitError::Failed(e.clone()));
            }
            if self.generation() != generation {
                return Err(CommitError::Truncated);
            }
            if state.durable >= upto {
                return Ok(());
            }
            if state.flushing {
                state = self.wait(state);
                continue;
            }
            state = self.run_flush(state, &lead);
        }
    }

    /// Runs one flush round now (waiting for a running one to end first), even if everything
    /// appended is already durable: `flush`, `close` and rolls use it to sync sealed files.
    pub(crate) fn force(&self, lead: impl Fn() -> io::Result<i64>) -> Result<(), CommitError> {
        let mut state = self.lock();
        while state.flushing {
            state = self.wait(state);
        }
        if state.failed.is_none() {
            state = self.run_flush(state, &lead);
        }
        match &state.failed {
            Some(e) => Err(CommitError::Failed(e.clone())),
            None => Ok(()),
        }
    }

    /// Takes the flusher role, runs `lead` without the lock, publishes its outcome.
    fn run_flush<'a>(
        &'a self,
        mut state: MutexGuard<'a, CommitState>,
        lead: &impl Fn() -> io::Result<i64>,
    ) -> MutexGuard<'a, CommitState> {
        state.flushing = true;
        drop(state);
        // Appenders woken by the previous round are usually runnable but not yet written: one
        // yield lets them append first, so this round's fsync covers them too. On the 2-core
        // bench machine this took appends per fsync from ~4.6 to ~7 of 8 (BENCHMARKS.md).
        std::thread::yield_now();
        let result = lead();
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        state.flushing = false;
        state.last_flush = Instant::now();
        match result {
            Ok(durable) => state.durable = state.durable.max(durable),
            Err(e) => {
                state.failed.get_or_insert_with(|| Arc::new(e));
                self.failed.store(true, Ordering::Release);
            }
        }
        self.done.notify_all();
        state
    }

    fn wait<'a>(&self, state: MutexGuard<'a, CommitState>) -> MutexGuard<'a, CommitState> {
        self.done
            .wait(state)
            .expect("group-commit state is only mutated by non-panicking code")
    }

    /// Runs `f` while no flush runs and none can start (truncation uses this). If `f` cuts the
    /// log back it calls [`truncated`](Self::truncated) while holding the log's write lock.
    pub(crate) fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut state = self.lock();
        while state.flushing {
            state = self.wait(state);
        }
        state.flushing = true;
        drop(state);
        let result = f();
        let mut state = self.lock();
        state.flushing = false;
        self.done.notify_all();
        result
    }

    /// Called inside [`exclusive`](Self::exclusive), under the log's write lock, when the log is
    /// cut back to `new_end`.
    pub(crate) fn truncated(&self, new_end: i64) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        state.durable = state.durable.min(new_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_covers_what_was_appended_before_it() {
        let commit = GroupCommit::new(0);
        commit.wait_durable(10, 0, || Ok(12)).unwrap();
        assert_eq!(commit.durable(), 12);
        commit
            .wait_durable(11, 0, || panic!("already durable: no flush"))
            .unwrap();
        assert_eq!(commit.rounds(), 1);
    }

    #[test]
    fn an_fsync_error_is_sticky_and_never_retried() {
        let commit = GroupCommit::new(0);
        let err = commit.wait_durable(1, 0, || Err(io::Error::other("disk on fire")));
        assert!(matches!(err, Err(CommitError::Failed(_))));
        let again = commit.wait_durable(1, 0, || panic!("fsync must not be retried"));
        assert!(matches!(again, Err(CommitError::Failed(_))));
        assert!(commit.failure().is_some());
    }

    #[test]
    fn truncation_refuses_waiting_appends() {
        let commit = GroupCommit::new(5);
        let generation = commit.generation();
        commit.exclusive(|| commit.truncated(3));
        assert_eq!(commit.durable(), 3);
        let err = commit.wait_durable(4, generation, || Ok(4));
        assert!(matches!(err, Err(CommitError::Truncated)));
    }
}
