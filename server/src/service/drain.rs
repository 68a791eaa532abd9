//! Counting in-flight requests, so that a graceful shutdown waits for the requests that are
//! running and not for clients to hang up their idle connections.
//!
//! The edge layer ([`super::edge`]) holds a guard for each request until its response future
//! resolves. Streaming RPCs count only until their response stream starts: their bodies end
//! through the shutdown token instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Shared count of requests being handled.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

/// Decrements the count when dropped (response ready, or the request cancelled).
pub(crate) struct Guard(InFlight);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inner.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts one more running request until the guard is dropped.
    pub(crate) fn enter(&self) -> Guard {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        Guard(self.clone())
    }

    /// Requests being handled right now.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is being handled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a decrement between the check and the await wakes us.
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_returns_once_every_guard_is_gone() {
        let t = InFlight::default();
        t.wait_idle().await;
        let a = t.enter();
        let b = t.enter();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.wait_idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.unwrap();
        assert_eq!(t.count(), 0);
    }
}
