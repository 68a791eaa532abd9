//! The broker's background tasks: one tracker and one cancellation token, handed down to every
//! part that starts a long-lived task (see `broker.rs`).
//!
//! Why: shutdown must know when the last task that can touch a log is done before it flushes
//! and closes the logs. A detached `tokio::spawn` (an offsets cleaning pass, a follower
//! fetcher) could otherwise still write while the logs close. Tasks spawned here are counted
//! until they finish; `broker.rs` cancels the token, then waits for the count to reach zero.
//! This module sits below every layer that spawns (it knows only tokio), so passing it down
//! imports nothing upward.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A handle to the broker's tracked tasks; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// A fresh set: nothing tracked, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task` on the current runtime and tracks it until it ends. The task decides how
    /// to end on shutdown (watch [`Tasks::cancelled`], or finish its unit of work).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Spawns `task` on `runtime` and tracks it (for callers that hold a runtime handle
    /// rather than run inside one).
    pub fn spawn_on<F>(&self, task: F, runtime: &tokio::runtime::Handle) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, runtime)
    }

    /// Spawns `task`, tracked, and drops it at shutdown if it has not finished: for work that
    /// is safe to abandon at any await point (a load that can be redone, a proposal the
    /// next leader makes again).
    pub fn spawn_cancellable<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = cancel.cancelled() => {}
            }
        });
    }

    /// The token cancelled when shutdown begins stopping background work.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Resolves once shutdown has cancelled background work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// How many tracked tasks have not finished yet.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels the token, closes the tracker and waits until every tracked task has finished
    /// (a task spawned while waiting is waited for too).
    pub async fn cancel_and_wait(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn waits_for_a_task_that_finishes_after_cancellation() {
        let tasks = Tasks::new();
        let done = Arc::new(AtomicBool::new(false));
        let (flag, t) = (Arc::clone(&done), tasks.clone());
        tasks.spawn(async move {
            t.cancelled().await;
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
        });
        tasks.spawn_cancellable(std::future::pending());
        tasks.cancel_and_wait().await;
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(tasks.running(), 0);
    }
}
